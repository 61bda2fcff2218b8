/**
 * Slurm as a peer in the side-by-side benchmark: a throw-away single-node
 * cluster (bench/peers/slurm-setup.sh, Debian's slurm-wlm) measured with
 *
 * - throughput: `sbatch --wrap true`, one job per submission from a few
 *   parallel sbatch processes, jobs/s from the first submission until the
 *   queue has drained;
 * - extra throughput: the same number of jobs as one `sbatch --array`;
 * - latency: `srun true` one at a time, wall time per call.
 *
 * Usage: node dist/bench/peers/slurm.js [--jobs 1000] [--latency-jobs 100] [--work-dir DIR]
 */
import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, existsSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { percentile } from '../../common/percentile.js'
import type { PeerResult, PeerSummary } from './types.js'

/** dist/bench/peers/slurm.js → repo root; tsc does not copy the .sh into dist. */
const ROOT = dirname(dirname(dirname(dirname(fileURLToPath(import.meta.url)))))
const SETUP = join(ROOT, 'bench', 'peers', 'slurm-setup.sh')
/** Parallel sbatch processes: enough to keep slurmctld busy on 2 cores without starving it of CPU. */
const SUBMITTERS = 4
/** Queue polls cost slurmctld a read lock each; 200 ms keeps that small against the runs' tens of seconds. */
const POLL_MS = 200

/** Options for {@link benchSlurm}. */
export interface SlurmBenchOptions {
  /** Jobs for the throughput figures. */
  jobs: number
  /** Sequential `srun true` calls for the latency figure. */
  latencyJobs: number
  /** Scratch directory; the cluster lives in `<workDir>/slurm-cluster` and is removed afterwards. */
  workDir: string
  signal?: AbortSignal
  log?: (line: string) => void
}

type Rate = { jobs: number, seconds: number, jobsPerSecond: number }

interface RunOpts { timeoutMs: number, signal?: AbortSignal, env?: NodeJS.ProcessEnv }

/**
 * Runs a command to completion and returns its stdout; rejects on failure,
 * timeout or abort, and on any stderr when `stderrIsError`: srun exits 0 even when
 * its task failed to launch, saying so only on stderr.
 */
function run (cmd: string, args: string[], o: RunOpts & { stderrIsError?: boolean }): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: o.timeoutMs, signal: o.signal, env: o.env ?? process.env, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      // err.message already carries the command and its stderr.
      if (err != null) reject(new Error(`${err.message.trim()}${err.killed ? ' (killed: timeout or abort)' : ''}`, { cause: err }))
      else if (o.stderrIsError === true && String(stderr).trim() !== '') reject(new Error(`${cmd} ${args.join(' ')}: ${String(stderr).trim()}`))
      else resolve(String(stdout))
    })
  })
}

function summary (values: number[]): PeerSummary {
  const s = [...values].sort((a, b) => a - b)
  return { n: s.length, p50: percentile(s, 50), p95: percentile(s, 95), p99: percentile(s, 99), max: s.at(-1) ?? NaN }
}

function rate (jobs: number, ms: number): Rate {
  const seconds = ms / 1000
  return { jobs, seconds: Number(seconds.toFixed(3)), jobsPerSecond: Number((jobs / seconds).toFixed(1)) }
}

function delay (ms: number, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted()
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve() }, ms)
    const onAbort = (): void => { clearTimeout(t); reject(signal?.reason) }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * The settings that matter, read back from the generated slurm.conf so the
 * docs can never drift from what was measured. Paths are left out: they
 * only say where the throw-away cluster lived.
 */
function readSettings (clusterDir: string): Record<string, string> {
  const settings: Record<string, string> = {}
  for (const line of readFileSync(join(clusterDir, 'slurm.conf'), 'utf8').split('\n')) {
    const eq = line.indexOf('=')
    if (line.startsWith('#') || eq < 0 || line.includes(clusterDir)) continue
    const key = line.slice(0, eq)
    if (['SlurmctldHost', 'SlurmctldPort', 'SlurmdPort', 'ClusterName'].includes(key)) continue
    settings[key] = key === 'NodeName' || key === 'PartitionName' ? line : line.slice(eq + 1)
  }
  settings.munged = existsSync(join(clusterDir, 'run', 'munged.pid'))
    ? `--num-threads=${process.env.SLURM_BENCH_MUNGE_THREADS ?? '10'} (started by slurm-setup.sh)`
    : 'already running; used as found'
  settings.submitters = `${SUBMITTERS} parallel sbatch processes`
  return settings
}

/** Skip when the Slurm client and daemons are not installed, instead of failing the whole suite. */
async function missingBinary (signal?: AbortSignal): Promise<string | null> {
  for (const bin of ['slurmctld', 'slurmd', 'sbatch', 'srun', 'squeue', 'sinfo', 'munged']) {
    try {
      await run('sh', ['-c', `command -v ${bin}`], { timeoutMs: 5_000, signal })
    } catch (err) {
      signal?.throwIfAborted()
      return `${bin} not found (${(err as Error).message}); install slurm-wlm and munge`
    }
  }
  return null
}

/** Counts this cluster's unfinished jobs, remembering any that ended badly. */
async function unfinished (env: NodeJS.ProcessEnv, failed: Set<string>, signal?: AbortSignal): Promise<number> {
  // `-r` expands arrays to one line per task; `-t all` so failures are seen before MinJobAge purges them.
  const out = await run('squeue', ['-h', '-r', '-t', 'all', '-o', '%i %T'], { timeoutMs: 30_000, signal, env })
  let open = 0
  for (const line of out.split('\n')) {
    const [id, state] = line.trim().split(' ')
    if (id == null || state == null) continue
    if (['PENDING', 'CONFIGURING', 'RUNNING', 'COMPLETING', 'REQUEUED', 'RESIZING', 'SUSPENDED'].includes(state)) open++
    else if (state !== 'COMPLETED') failed.add(`${id} ${state}`)
  }
  return open
}

/** Waits until every submitted job has left the queue; returns when it was first seen empty. */
async function drain (env: NodeJS.ProcessEnv, timeoutMs: number, signal?: AbortSignal): Promise<number> {
  const failed = new Set<string>()
  const deadline = performance.now() + timeoutMs
  for (;;) {
    const open = await unfinished(env, failed, signal)
    if (failed.size > 0) throw new Error(`slurm jobs failed: ${[...failed].slice(0, 5).join(', ')}`)
    // Taken after the poll returns, so the figure errs towards slower by at most one poll.
    if (open === 0) return performance.now()
    if (performance.now() > deadline) throw new Error(`slurm queue did not drain in ${timeoutMs} ms (${open} jobs left)`)
    await delay(POLL_MS, signal)
  }
}

async function sbatchThroughput (jobs: number, env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<Rate> {
  let next = 0
  const submitter = async (): Promise<void> => {
    while (next < jobs) {
      next++
      const out = await run('sbatch', ['-o', '/dev/null', '-e', '/dev/null', '--wrap', 'true'], { timeoutMs: 60_000, signal, env })
      if (!out.startsWith('Submitted batch job')) throw new Error(`unexpected sbatch output: ${out}`)
    }
  }
  const t0 = performance.now()
  await Promise.all(Array.from({ length: Math.min(SUBMITTERS, jobs) }, submitter))
  return rate(jobs, await drain(env, 120_000 + jobs * 200, signal) - t0)
}

async function arrayThroughput (jobs: number, env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<Rate> {
  const t0 = performance.now()
  await run('sbatch', ['-o', '/dev/null', '-e', '/dev/null', `--array=1-${jobs}`, '--wrap', 'true'], { timeoutMs: 60_000, signal, env })
  return rate(jobs, await drain(env, 120_000 + jobs * 200, signal) - t0)
}

async function srunLatency (n: number, env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<number[]> {
  const ms: number[] = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    await run('srun', ['-Q', 'true'], { timeoutMs: 60_000, signal, env, stderrIsError: true })
    ms.push(performance.now() - t0)
  }
  return ms
}

/**
 * Benchmarks Slurm on a throw-away single-node cluster. Returns `skipped`
 * when Slurm is missing or the cluster cannot start here; throws when a
 * measurement fails on a cluster that did start. The cluster is always
 * stopped and its directory removed.
 */
export async function benchSlurm (o: SlurmBenchOptions): Promise<PeerResult> {
  const log = o.log ?? (() => {})
  const result: PeerResult = { system: 'slurm', version: 'unknown', settings: {}, throughput: null, extraThroughput: {}, latencyMs: {} }
  const missing = await missingBinary(o.signal)
  if (missing != null) return { ...result, skipped: missing }
  // The clients refuse to start without a reachable config; the daemon does not.
  result.version = await run('slurmctld', ['-V'], { timeoutMs: 10_000, signal: o.signal })
    .then(out => out.trim(), (err: Error) => { o.signal?.throwIfAborted(); log(`slurm: no version: ${err.message}`); return 'unknown' })

  const clusterDir = join(o.workDir, 'slurm-cluster')
  const env = { ...process.env, SLURM_CONF: join(clusterDir, 'slurm.conf') }
  try {
    try {
      const t0 = performance.now()
      await run('bash', [SETUP, clusterDir], { timeoutMs: 120_000, signal: o.signal })
      log(`slurm: cluster up in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    } catch (err) {
      o.signal?.throwIfAborted()
      return { ...result, skipped: `slurm cluster did not start: ${(err as Error).message}` }
    }
    result.settings = readSettings(clusterDir)

    // The first allocation pays for cold caches in slurmctld and slurmd.
    await srunLatency(3, env, o.signal)
    const lat = await srunLatency(o.latencyJobs, env, o.signal)
    result.latencyMs['srun true'] = summary(lat)
    log(`slurm: srun true p50 ${result.latencyMs['srun true'].p50.toFixed(0)} ms over ${o.latencyJobs} (${(lat.reduce((a, b) => a + b, 0) / 1000).toFixed(1)} s)`)

    result.throughput = await sbatchThroughput(o.jobs, env, o.signal)
    log(`slurm: sbatch --wrap true ${result.throughput.jobsPerSecond} jobs/s (${o.jobs} in ${result.throughput.seconds} s)`)

    result.extraThroughput['sbatch --array'] = await arrayThroughput(o.jobs, env, o.signal)
    log(`slurm: sbatch --array ${result.extraThroughput['sbatch --array'].jobsPerSecond} jobs/s`)
    return result
  } finally {
    // Never abortable: daemons must not outlive the benchmark.
    const t0 = performance.now()
    await run('bash', [SETUP, 'stop', clusterDir], { timeoutMs: 60_000 })
      .then(() => log(`slurm: cluster stopped in ${((performance.now() - t0) / 1000).toFixed(1)} s`))
      .catch((err: Error) => log(`slurm: stopping the cluster failed: ${err.message}`))
  }
}

if (process.argv[1]?.endsWith('slurm.js')) {
  const { values } = parseArgs({ options: { jobs: { type: 'string' }, 'latency-jobs': { type: 'string' }, 'work-dir': { type: 'string' } } })
  const workDir = values['work-dir'] ?? mkdtempSync(join(tmpdir(), 'rgrid-slurm-'))
  const ac = new AbortController()
  process.once('SIGINT', () => ac.abort(new Error('interrupted')))
  const t0 = performance.now()
  try {
    const res = await benchSlurm({
      jobs: Number(values.jobs ?? 1000),
      latencyJobs: Number(values['latency-jobs'] ?? 100),
      workDir,
      signal: ac.signal,
      log: line => console.error(line)
    })
    console.error(`slurm: benchSlurm took ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    console.log(JSON.stringify(res, null, 2))
  } finally {
    if (values['work-dir'] == null) rmSync(workDir, { recursive: true, force: true })
  }
}
