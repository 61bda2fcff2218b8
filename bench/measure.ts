/**
 * What every mesh benchmark measures the same way: submitting through the
 * HTTP API, waiting for results, latency and throughput runs, and per-process
 * CPU, memory and socket traffic read from /proc and `ss` (Linux).
 */
import { readFileSync } from 'node:fs'
import { Agent, request } from 'node:http'
import { cpus, totalmem } from 'node:os'
import { execFileSync } from 'node:child_process'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { childPids, type LocalMesh } from '../cli/local-mesh.js'
import { percentile } from '../common/percentile.js'

/** The repository root (from dist/bench/measure.js). */
export const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))))

export interface Summary { n: number, p50: number, p95: number, p99: number, max: number }

export function summary (values: number[]): Summary {
  const s = [...values].sort((a, b) => a - b)
  return { n: s.length, p50: percentile(s, 50), p95: percentile(s, 95), p99: percentile(s, 99), max: s.at(-1) ?? NaN }
}

export interface Machine { cpus: number, cpuModel: string, memoryGiB: number, node: string }

export function machine (): Machine {
  return { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version }
}

/** The short commit the benchmark ran on, or 'unknown' outside a git checkout. */
export function commit (): string {
  try {
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' }).trim() !== ''
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim() + (dirty ? '+' : '')
  } catch (err) {
    process.stderr.write(`no git commit: ${(err as Error).message}\n`)
    return 'unknown'
  }
}

export interface JobJson { id: string, state: string, createdAt: number, attempts: Array<{ node: string, awardedAt: number, startedAt: number | null, finishedAt: number | null }> }

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled'])

function headers (apiKey: string): Record<string, string> {
  return { 'content-type': 'application/json', ...(apiKey !== '' ? { authorization: `Bearer ${apiKey}` } : {}) }
}

/**
 * Keep-alive connections for submissions. The benchmark client shares the
 * machine's cores with the mesh, so it submits with node:http rather than
 * fetch: undici's fetch took 0.42–0.55 ms of CPU per request here, node:http
 * about 0.15 (docs/performance.md, change 12), CPU the mesh gets back.
 */
const submitAgent = new Agent({ keepAlive: true, maxSockets: 256 })

/** POSTs JSON over a kept-alive connection; resolves the status and the parsed reply. */
export async function postJson (url: string, path: string, body: unknown, apiKey = ''): Promise<{ status: number, body: any }> {
  const target = new URL(path, url)
  const payload = Buffer.from(JSON.stringify(body))
  return await new Promise((resolve, reject) => {
    // The URL itself, not its pieces: an IPv6 host keeps its brackets in `hostname`.
    const req = request(target, {
      method: 'POST', agent: submitAgent,
      headers: { ...headers(apiKey), 'content-length': String(payload.byteLength) }
    }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => { chunks.push(c) })
      res.on('error', reject)
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) })
        } catch {
          reject(new Error(`POST ${path}: ${res.statusCode ?? 0} with a body that is not JSON: ${text.slice(0, 200)}`))
        }
      })
    })
    req.on('error', reject)
    req.end(payload)
  })
}

/** Submits one job; resolves its id. */
export async function post (url: string, spec: unknown, apiKey = ''): Promise<string> {
  const res = await postJson(url, '/v1/jobs', spec, apiKey)
  if (res.status !== 201) throw new Error(`submit failed: ${res.status} ${JSON.stringify(res.body)}`)
  return (res.body as { id: string }).id
}

export async function getJob (url: string, id: string, apiKey = ''): Promise<JobJson> {
  return await (await fetch(`${url}/v1/jobs/${id}`, { headers: headers(apiKey) })).json() as JobJson
}

/** Job counts by state (admin stats). */
export async function counts (url: string, apiKey = ''): Promise<Record<string, number>> {
  return (await (await fetch(`${url}/v1/stats`, { headers: headers(apiKey) })).json() as { jobs: Record<string, number> }).jobs
}

export interface LatencyRun { announceToAward: number[], submitToRunning: number[], submitToDone: number[] }

/**
 * `n` jobs one at a time on an idle mesh. Times come from the coordinator's
 * own timestamps (submission, award) and the node's start time, all on one
 * machine clock. The announcement goes out in the submission's tick, so
 * announce→award is the award time minus the submission time.
 */
export async function latency (url: string, spec: unknown, n: number, apiKey = ''): Promise<LatencyRun> {
  const out: LatencyRun = { announceToAward: [], submitToRunning: [], submitToDone: [] }
  for (let i = 0; i < n; i++) {
    const id = await post(url, spec, apiKey)
    let j = await getJob(url, id, apiKey)
    const deadline = Date.now() + 30_000
    while (!TERMINAL.has(j.state)) {
      if (Date.now() > deadline) throw new Error(`job ${id} stuck in ${j.state}`)
      await new Promise(resolve => setTimeout(resolve, 1))
      j = await getJob(url, id, apiKey)
    }
    const a = j.attempts[0]
    if (j.state !== 'succeeded' || a == null || a.startedAt == null || a.finishedAt == null) throw new Error(`job ${id} ended ${j.state}`)
    out.announceToAward.push(a.awardedAt - j.createdAt)
    out.submitToRunning.push(a.startedAt - j.createdAt)
    out.submitToDone.push(a.finishedAt - j.createdAt)
  }
  return out
}

export interface ThroughputRun { jobs: number, seconds: number, jobsPerSecond: number, submitPerSecond: number }

/**
 * `n` trivial jobs from `clients` concurrent HTTP clients, one job per
 * request (or `batch` per `POST /v1/jobs/batch`); jobs/s from the first
 * submission until the last result is recorded. Any failed job fails the run.
 */
export async function throughput (url: string, spec: unknown, n: number, clients: number, apiKey = '', batch = 1): Promise<ThroughputRun> {
  const before = await counts(url, apiKey)
  const start = performance.now()
  let next = 0
  await Promise.all(Array.from({ length: clients }, async () => {
    while (next < n) {
      const take = Math.min(batch, n - next)
      next += take
      if (batch === 1) { await post(url, spec, apiKey); continue }
      const res = await postJson(url, '/v1/jobs/batch', { jobs: Array.from({ length: take }, () => spec) }, apiKey)
      if (res.status !== 201) throw new Error(`batch submit: ${res.status} ${JSON.stringify(res.body)}`)
    }
  }))
  const submitted = performance.now()
  const target = (before.succeeded ?? 0) + n
  const deadline = Date.now() + 300_000
  while (true) {
    const c = await counts(url, apiKey)
    if ((c.failed ?? 0) > (before.failed ?? 0)) throw new Error(`${(c.failed ?? 0) - (before.failed ?? 0)} jobs failed during the throughput run: ${await failures(url, apiKey)}`)
    if ((c.succeeded ?? 0) >= target) break
    if (Date.now() > deadline) throw new Error(`throughput run did not finish: ${JSON.stringify(c)}`)
    // Each poll is a GROUP BY over all jobs on the coordinator: poll gently.
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  const seconds = (performance.now() - start) / 1000
  return { jobs: n, seconds, jobsPerSecond: n / seconds, submitPerSecond: n / ((submitted - start) / 1000) }
}

/** Why the most recent failed jobs failed, for the error that ends a run. */
async function failures (url: string, apiKey: string): Promise<string> {
  const { jobs } = await (await fetch(`${url}/v1/jobs?state=failed&limit=3`, { headers: headers(apiKey) })).json() as { jobs: Array<{ id: string }> }
  const out: string[] = []
  for (const { id } of jobs) {
    const j = await (await fetch(`${url}/v1/jobs/${id}`, { headers: headers(apiKey) })).json() as { result: unknown, attempts: unknown }
    out.push(`${id}: ${JSON.stringify(j.result)} attempts ${JSON.stringify(j.attempts)}`)
  }
  return out.join('; ')
}

/** CPU seconds (user+system) used so far by a pid, from /proc. */
export function cpuOf (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100 // USER_HZ on Linux
}

/** Resident set size of a pid in MiB, from /proc. */
export function rssMiB (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m == null ? NaN : Number(m[1]) / 1024
}

/**
 * CPU seconds used so far by each mesh process, with its long-lived helper
 * children (a node's process-runtime host or its rgrid-spawn) counted
 * separately as `name+host`.
 * Jobs' own processes are not counted.
 */
export function cpuSeconds (mesh: LocalMesh): Record<string, number> {
  const out: Record<string, number> = {}
  for (const p of mesh.processes) {
    const pid = p.child.pid
    if (pid == null || p.child.exitCode != null) continue
    try {
      out[p.name] = cpuOf(pid)
      const helpers = childPids(pid).filter(c => /process-host\.js|rgrid-spawn/.test(cmdline(c)))
      if (helpers.length > 0) out[`${p.name}+host`] = helpers.reduce((sum, c) => sum + cpuOf(c), 0)
    } catch (err) {
      process.stderr.write(`no CPU figure for ${p.name}: ${(err as Error).message}\n`)
    }
  }
  return out
}

/** A pid's command line, or '' if it ended meanwhile (a job's process does). */
function cmdline (pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ESRCH') return ''
    throw err
  }
}

/** Differences of two {@link cpuSeconds} readings, rounded. */
export function cpuDelta (before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, Number((v - (before[k] ?? 0)).toFixed(2))]))
}

/**
 * TCP bytes sent plus received so far on each socket a pid holds, summed, from
 * `ss -tinp` (bytes_acked and bytes_received). Sockets closed between two
 * readings drop out, so use it on a mesh at rest, where connections persist.
 */
export function socketBytes (pids: number[]): Map<number, number> {
  const out = new Map<number, number>(pids.map(p => [p, 0]))
  const text = execFileSync('ss', ['-tinpH', 'state', 'established'], { encoding: 'utf8', maxBuffer: 64 * 2 ** 20 })
  // Each socket is a line naming its users (pid=N) followed by an indented line of counters.
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const pidMatch = /pid=(\d+)/.exec(lines[i]!)
    if (pidMatch == null) continue
    const pid = Number(pidMatch[1])
    if (!out.has(pid)) continue
    const info = lines[i + 1] ?? ''
    const sent = /bytes_acked:(\d+)/.exec(info)
    const received = /bytes_received:(\d+)/.exec(info)
    out.set(pid, out.get(pid)! + Number(sent?.[1] ?? 0) + Number(received?.[1] ?? 0))
  }
  return out
}
