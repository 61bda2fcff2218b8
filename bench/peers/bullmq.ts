/**
 * BullMQ peer benchmark: no-op jobs on a private Debian redis-server, workers in
 * separate processes (bullmq-worker.ts), the producer in this process.
 * - throughput: one `queue.add` per job, 32 in flight (RGrid's bench has 32 HTTP
 *   clients), first add → last completion, median of 3 runs, per worker layout;
 *   the best layout gives the main figure, the rest and `addBulk` are extras.
 * - latency: jobs added one at a time on an idle queue; enqueue→start is the
 *   worker's clock entering the processor minus the producer's just before
 *   `queue.add`; enqueue→completed is when the producer's QueueEvents sees it.
 * Usage: node dist/bench/peers/bullmq.js [--jobs 3000] [--latency-jobs 1000] [--layouts 2x16,10x8]
 * (bullmq 6 needs the ioredis package, a devDependency of this repository.)
 */
import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Queue, QueueEvents } from 'bullmq'
import { percentile } from '../../common/percentile.js'
import type { PeerResult, PeerSummary } from './types.js'

type Throughput = { jobs: number, seconds: number, jobsPerSecond: number }
/** How many worker processes, how many jobs each runs at once, and an optional command each job runs. */
export interface WorkerLayout { processes: number, concurrency: number, command?: string[] }

/** A process per core with 16 or 32 jobs in flight (best for no-op jobs here), and 10 as RGrid has 10 nodes. */
export const DEFAULT_LAYOUTS: WorkerLayout[] = [{ processes: 2, concurrency: 16 }, { processes: 2, concurrency: 32 }, { processes: 10, concurrency: 8 }]
const CLIENTS = 32
/** Throughput runs per figure, median kept: on a shared 2-core machine single runs vary 2-3x. */
const REPEATS = 3
const BULK = 1000
const HOST = '127.0.0.1'
const WORKER_JS = join(dirname(fileURLToPath(import.meta.url)), 'bullmq-worker.js')
const requireHere = createRequire(import.meta.url)
const pkgVersion = (name: string): string => (JSON.parse(readFileSync(requireHere.resolve(`${name}/package.json`), 'utf8')) as { version: string }).version
/** As an admin would set them: keep nothing of done jobs, keep some failures to look at. */
const JOB_OPTIONS = { removeOnComplete: true, removeOnFail: { count: 1000 } }
const VOLATILE = ['save ""', 'appendonly no']
const AOF = ['save ""', 'appendonly yes', 'appendfsync everysec']

/** Wall-clock ms with sub-ms resolution; the worker processes use the same clock. */
const wallNow = (): number => performance.timeOrigin + performance.now()

function summary (values: number[]): PeerSummary {
  const s = [...values].sort((a, b) => a - b)
  const r = (x: number): number => Math.round(x * 1000) / 1000
  return { n: s.length, p50: r(percentile(s, 50)), p95: r(percentile(s, 95)), p99: r(percentile(s, 99)), max: r(s.at(-1) ?? NaN) }
}

/** Rejects with the signal's reason as soon as it aborts, so no phase outlives an abort. */
async function raceAbort<T> (p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (signal == null) return await p
  signal.throwIfAborted()
  let onAbort = (): void => {}
  const aborted = new Promise<never>((_resolve, reject) => { onAbort = () => reject(signal.reason); signal.addEventListener('abort', onAbort, { once: true }) })
  try { return await Promise.race([p, aborted]) } finally { signal.removeEventListener('abort', onAbort) }
}

/** Ends a child: `polite` first, SIGKILL if it has not exited within `graceMs`. */
async function stopChild (child: ChildProcess, graceMs: number, polite: () => void): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
  polite()
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await exited
  clearTimeout(timer)
}

async function freePort (): Promise<number> {
  const srv = createServer()
  await new Promise<void>((resolve, reject) => { srv.once('error', reject); srv.listen(0, HOST, resolve) })
  const port = (srv.address() as { port: number }).port
  await new Promise<void>(resolve => srv.close(() => resolve()))
  return port
}

async function ping (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const sock = connect(port, HOST, () => sock.write('PING\r\n'))
    sock.setTimeout(500, () => { sock.destroy(); resolve(false) })
    sock.once('data', d => { sock.destroy(); resolve(d.toString().startsWith('+PONG')) })
    sock.once('error', () => resolve(false))
  })
}

/** Runs `fn` against a fresh redis-server configured with `conf`, and always stops it. */
async function withRedis<T> (dir: string, conf: string[], signal: AbortSignal | undefined, fn: (port: number) => Promise<T>): Promise<T> {
  mkdirSync(dir, { recursive: true })
  const port = await freePort()
  // noeviction because BullMQ loses jobs if Redis evicts its keys; THP and overcommit are host settings left alone.
  const lines = [`bind ${HOST}`, `port ${port}`, `dir ${dir}`, 'daemonize no', 'logfile redis.log', 'loglevel warning', 'maxmemory-policy noeviction', ...conf]
  writeFileSync(join(dir, 'redis.conf'), lines.join('\n') + '\n')
  const child = spawn('redis-server', [join(dir, 'redis.conf')], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = '' // config errors go here, before the log file is open
  child.stdout!.on('data', d => { output += String(d) })
  child.stderr!.on('data', d => { output += String(d) })
  try {
    const deadline = Date.now() + 10_000
    while (!(await ping(port))) {
      signal?.throwIfAborted()
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`redis-server exited early (${child.exitCode ?? child.signalCode}): ${output.slice(-2000)} (see ${dir}/redis.log)`)
      if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer PING within 10 s`)
      await new Promise(resolve => setTimeout(resolve, 20))
    }
    return await fn(port)
  } finally {
    await stopChild(child, 5000, () => child.kill('SIGTERM'))
  }
}

/** The forked worker processes of one layout and what they have reported. */
class WorkerPool {
  readonly children: ChildProcess[] = []
  private readonly counts: number[] = []; private readonly lastAt: number[] = []
  private readonly started = new Map<string, number>(); private readonly waiters = new Set<() => void>()
  private ready = 0; private failure: Error | null = null; private stopping = false

  constructor (layout: WorkerLayout, port: number, queue: string, live: Set<ChildProcess>) {
    for (let i = 0; i < layout.processes; i++) {
      const child = fork(WORKER_JS, [JSON.stringify({ host: HOST, port, queue, ...layout })], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
      this.children.push(child)
      live.add(child)
      this.counts.push(0); this.lastAt.push(0)
      child.on('message', (m: { type: string, id?: string, at?: number, completed?: number, lastAt?: number, reason?: string }) => {
        if (m.type === 'ready') this.ready++
        else if (m.type === 'started') this.started.set(String(m.id), m.at!)
        else if (m.type === 'progress') { this.counts[i] = m.completed!; this.lastAt[i] = m.lastAt! }
        else if (m.type === 'failed') this.failure ??= new Error(`BullMQ job ${m.id} failed: ${m.reason}`)
        this.notify()
      })
      child.on('exit', (code, sig) => {
        live.delete(child)
        if (!this.stopping) this.failure ??= new Error(`BullMQ worker ${child.pid} exited (${code ?? sig})`)
        this.notify()
      })
    }
  }

  /** Re-checks pending `until` conditions; also for conditions on state outside the pool. */
  notify (): void { for (const w of this.waiters) w() }

  completed (): number { return this.counts.reduce((a, b) => a + b, 0) }
  lastCompletedAt (): number { return Math.max(...this.lastAt) }
  startedAt (id: string): number | undefined { return this.started.get(id) }

  /** Resolves once `cond` holds after some report; rejects on a failure or after `timeoutMs`. */
  async until (cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    let check = (): void => {}
    let timer: NodeJS.Timeout | undefined
    await new Promise<void>((resolve, reject) => {
      check = () => { if (this.failure != null) reject(this.failure); else if (cond()) resolve() }
      timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs)
      this.waiters.add(check)
      check()
    }).finally(() => { clearTimeout(timer); this.waiters.delete(check) })
  }

  async waitReady (): Promise<void> { await this.until(() => this.ready === this.children.length, 30_000, 'workers to be ready') }

  async stop (): Promise<void> {
    this.stopping = true
    // A phase abandoned by an abort may still wait here; let it go now, not at its timeout.
    this.failure ??= new Error('worker pool stopped')
    this.notify()
    await Promise.all(this.children.map(c => stopChild(c, 5000, () => { if (c.connected) c.send({ type: 'close' }); else c.kill('SIGTERM') })))
  }
}

/** The median of `repeats` throughput runs, by jobs/s, after a warm-up run (JIT, Lua script loading) if `warm`. */
async function throughputMedian (queue: Queue, pool: WorkerPool, n: number, bulk: boolean, warm: boolean, repeats = REPEATS): Promise<Throughput> {
  if (warm) await throughputRun(queue, pool, Math.min(200, n), false)
  const runs: Throughput[] = []
  for (let i = 0; i < repeats; i++) runs.push(await throughputRun(queue, pool, n, bulk))
  return runs.sort((a, b) => a.jobsPerSecond - b.jobsPerSecond)[Math.floor(repeats / 2)]!
}

async function throughputRun (queue: Queue, pool: WorkerPool, n: number, bulk: boolean): Promise<Throughput> {
  const base = pool.completed()
  const t0 = wallNow()
  if (bulk) {
    for (let i = 0; i < n && queue.closing == null; i += BULK) await queue.addBulk(Array.from({ length: Math.min(BULK, n - i) }, () => ({ name: 'noop', data: {} })))
  } else {
    let next = 0
    // `closing` ends the loops of a run abandoned by an abort once withPool closes the queue.
    await Promise.all(Array.from({ length: CLIENTS }, async () => { while (next++ < n && queue.closing == null) await queue.add('noop', {}) }))
  }
  await pool.until(() => pool.completed() - base >= n, 300_000, `${n} completions`)
  const seconds = (pool.lastCompletedAt() - t0) / 1000
  return { jobs: n, seconds: Math.round(seconds * 1000) / 1000, jobsPerSecond: Math.round(n / seconds) }
}

/**
 * Latency probes. Completion comes from QueueEvents as in `job.waitUntilFinished`, whose
 * status check fails with "Missing key" once removeOnComplete has deleted the job.
 */
async function latencyRun (queue: Queue, pool: WorkerPool, port: number, n: number): Promise<{ start: number[], done: number[] }> {
  const out = { start: [] as number[], done: [] as number[] }
  const doneAt = new Map<string, number>()
  const events = new QueueEvents(queue.name, { connection: { host: HOST, port } })
  events.on('completed', ({ jobId }) => { doneAt.set(jobId, wallNow()); pool.notify() })
  try {
    await events.waitUntilReady()
    for (let i = 0; i < n && queue.closing == null; i++) {
      const t0 = wallNow()
      const id = String((await queue.add('probe', { report: true })).id)
      // The worker's IPC start report and Redis's completion event can come in either order.
      await pool.until(() => doneAt.has(id) && pool.startedAt(id) !== undefined, 30_000, `job ${id} to start and complete`)
      out.start.push(pool.startedAt(id)! - t0)
      out.done.push(doneAt.get(id)! - t0)
      doneAt.clear()
    }
  } finally {
    await events.close()
  }
  return out
}

/** Runs `fn` with a started worker pool of `layout` and a producer queue; stops both. */
async function withPool<T> (port: number, queueName: string, layout: WorkerLayout, live: Set<ChildProcess>, signal: AbortSignal | undefined, fn: (queue: Queue, pool: WorkerPool) => Promise<T>): Promise<T> {
  const queue = new Queue(queueName, { connection: { host: HOST, port }, defaultJobOptions: JOB_OPTIONS })
  const pool = new WorkerPool(layout, port, queueName, live)
  try {
    await raceAbort(Promise.all([pool.waitReady(), queue.waitUntilReady()]), signal)
    return await raceAbort(fn(queue, pool), signal)
  } finally {
    await pool.stop()
    await queue.close()
  }
}

const label = (l: WorkerLayout): string => `${l.processes} processes × concurrency ${l.concurrency}`

/**
 * Measures BullMQ's throughput and enqueue→start latency for no-op jobs on
 * this machine. Starts and always stops its own redis-server and worker
 * processes under `o.workDir`; returns `skipped` when redis-server or the
 * ioredis client is not installed, and throws when a measurement fails.
 */
export async function benchBullmq (o: { jobs: number, latencyJobs: number, workDir: string, signal?: AbortSignal, log?: (line: string) => void, layouts?: WorkerLayout[] }): Promise<PeerResult> {
  const log = o.log ?? (() => {})
  const layouts = o.layouts ?? DEFAULT_LAYOUTS
  const bullmqVersion = pkgVersion('bullmq')
  const result: PeerResult = { system: 'bullmq', version: bullmqVersion, settings: {}, throughput: null, extraThroughput: {}, latencyMs: {} }
  const redisLine = spawnSync('redis-server', ['--version'], { encoding: 'utf8' })
  if ((redisLine.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') return { ...result, skipped: 'redis-server is not installed (Debian package redis-server)' }
  if (redisLine.error != null || redisLine.status !== 0) throw new Error(`redis-server --version failed: ${redisLine.error?.message ?? redisLine.stderr}`)
  let ioredisVersion: string
  try {
    ioredisVersion = pkgVersion('ioredis')
  } catch (err) {
    return { ...result, skipped: `the ioredis client, an optional peer dependency of bullmq 6, cannot be loaded: ${(err as Error).message.split('\n')[0]}` }
  }
  const redisVersion = /v=(\S+)/.exec(redisLine.stdout)?.[1] ?? redisLine.stdout.trim()
  result.version = `${bullmqVersion} (redis-server ${redisVersion}, ioredis ${ioredisVersion})`
  result.settings = {
    'redis-server': `Debian ${redisVersion}, a private instance on ${HOST}:<free port>; ${VOLATILE.join(', ')}, maxmemory-policy noeviction, other settings default`,
    persistence: 'none for the main figures: a Redis crash loses queued jobs; the extra figure "appendonly everysec" shows the cost of an AOF fsynced each second',
    client: `ioredis ${ioredisVersion} over TCP loopback; one Queue in the bench process, ${CLIENTS} queue.add calls in flight`,
    'job options': 'removeOnComplete: true, removeOnFail: { count: 1000 }, attempts 1 (default)',
    'worker options': 'defaults besides concurrency (lockDuration 30 s, stalledInterval 30 s, drainDelay 5 s)',
    'layouts measured': layouts.map(label).join('; '),
    measurement: `a ${Math.min(200, o.jobs)}-job warm-up per worker layout, then each figure the median of ${REPEATS} runs (one run for the \`true\` figure); latency after ${Math.min(20, o.latencyJobs)} warm-up probes`,
    clock: 'wall clock with sub-ms resolution (performance.timeOrigin + performance.now()) in producer and workers'
  }
  // Worker processes only: Redis outlives an abort until the queue has closed
  // (ioredis never finishes closing a connection whose server is gone) and is
  // then stopped by withRedis.
  const live = new Set<ChildProcess>()
  const onAbort = (): void => { for (const c of live) c.kill('SIGKILL') }
  o.signal?.addEventListener('abort', onAbort, { once: true })
  try {
    let best: { layout: WorkerLayout, tp: Throughput } | null = null
    await withRedis(join(o.workDir, 'redis-volatile'), VOLATILE, o.signal, async port => {
      for (const [i, layout] of layouts.entries()) {
        await withPool(port, `bench-${i}`, layout, live, o.signal, async (queue, pool) => {
          const tp = await throughputMedian(queue, pool, o.jobs, false, true)
          const bulk = await throughputMedian(queue, pool, o.jobs, true, false)
          // Proves the job options leave nothing behind, as they would in production.
          const left = await queue.getJobCounts('wait', 'active', 'completed', 'failed')
          log(`bullmq ${label(layout)}: add ${tp.jobsPerSecond} jobs/s, addBulk ${bulk.jobsPerSecond} jobs/s; left in Redis ${JSON.stringify(left)}`)
          result.extraThroughput[`add, ${label(layout)}`] = tp
          result.extraThroughput[`addBulk ${BULK}, ${label(layout)}`] = bulk
          if (best == null || tp.jobsPerSecond > best.tp.jobsPerSecond) {
            best = { layout, tp }
            result.throughput = tp
            result.extraThroughput.addBulk = bulk
          }
        })
      }
      const chosen = best!.layout
      result.settings.workers = `${label(chosen)} (the best layout measured), each a BullMQ Worker in its own Node process`
      await withPool(port, 'bench-latency', chosen, live, o.signal, async (queue, pool) => {
        await latencyRun(queue, pool, port, Math.min(20, o.latencyJobs)) // warm-up
        const lat = await latencyRun(queue, pool, port, o.latencyJobs)
        result.latencyMs['enqueue→start'] = summary(lat.start)
        result.latencyMs['enqueue→completed'] = summary(lat.done)
        log(`bullmq latency: enqueue→start p50 ${result.latencyMs['enqueue→start'].p50} ms`)
      })
      // RGrid's trivial job is a process (`true`); this is BullMQ doing the same work per job.
      // One run: at a few hundred jobs/s it lasts seconds, so it varies less than the others and would dominate the wall time.
      await withPool(port, 'bench-true', { ...chosen, command: ['true'] }, live, o.signal, async (queue, pool) => {
        const tp = await throughputMedian(queue, pool, o.jobs, false, true, 1)
        log(`bullmq processor running true: add ${tp.jobsPerSecond} jobs/s`)
        result.extraThroughput[`add, processor runs \`true\`, ${label(chosen)}`] = tp
      })
    })
    const chosen = best!.layout
    await withRedis(join(o.workDir, 'redis-aof'), AOF, o.signal, async port => {
      await withPool(port, 'bench-aof', chosen, live, o.signal, async (queue, pool) => {
        const tp = await throughputMedian(queue, pool, o.jobs, false, true)
        log(`bullmq appendonly everysec: add ${tp.jobsPerSecond} jobs/s`)
        result.extraThroughput[`add, appendonly everysec, ${label(chosen)}`] = tp
      })
    })
    return result
  } finally {
    o.signal?.removeEventListener('abort', onAbort)
    for (const c of live) c.kill('SIGKILL')
  }
}

if (process.argv[1]?.endsWith('bullmq.js')) {
  const { values } = parseArgs({ options: { jobs: { type: 'string' }, 'latency-jobs': { type: 'string' }, layouts: { type: 'string' } } })
  const layouts = values.layouts?.split(',').map(s => { const [p, c] = s.split('x').map(Number); return { processes: p!, concurrency: c! } })
  const workDir = mkdtempSync(join(tmpdir(), 'rgrid-bullmq-'))
  const t0 = performance.now()
  benchBullmq({ jobs: Number(values.jobs ?? 3000), latencyJobs: Number(values['latency-jobs'] ?? 1000), workDir, log: line => process.stderr.write(line + '\n'), layouts })
    .then(r => { process.stdout.write(JSON.stringify(r, null, 2) + '\n'); process.stderr.write(`wall time ${((performance.now() - t0) / 1000).toFixed(1)} s\n`) })
    .catch((err: unknown) => { process.stderr.write(`bullmq bench: ${(err as Error).stack ?? String(err)}\n`); process.exitCode = 1 })
    .finally(() => rmSync(workDir, { recursive: true, force: true }))
}
