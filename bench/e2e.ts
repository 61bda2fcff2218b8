/**
 * End-to-end benchmark of the spine: a real mesh of processes on loopback
 * (bootstrap, coordinator, N nodes, `process` runtime) measured through the
 * HTTP API.
 *
 * - latency: jobs submitted one at a time on an idle mesh; announce→award is
 *   the award time minus the submission time (the announcement goes out in
 *   the same tick), submit→running is the node's start time minus it.
 * - throughput: N trivial jobs (`true`) submitted by 32 concurrent clients;
 *   jobs/s from the first submission until the last result is recorded.
 *
 * Writes bench/results/e2e-<timestamp>.json and rewrites docs/benchmarks.md.
 * Usage: node dist/bench/e2e.js [--nodes 5] [--slots 4] [--latency-jobs 500] [--throughput-jobs 3000]
 */
import { parseArgs } from 'node:util'
import { mkdtempSync, rmSync, mkdirSync, writeFileSync } from 'node:fs'
import { tmpdir, cpus, totalmem } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { LocalMesh, childPids } from '../cli/local-mesh.js'
import { renderBenchmarks } from './report.js'
import { percentile } from '../common/percentile.js'

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))))

interface JobJson { id: string, state: string, createdAt: number, attempts: Array<{ awardedAt: number, startedAt: number | null, finishedAt: number | null }> }

function summary (values: number[]): { n: number, p50: number, p95: number, p99: number, max: number } {
  const s = [...values].sort((a, b) => a - b)
  return { n: s.length, p50: percentile(s, 50), p95: percentile(s, 95), p99: percentile(s, 99), max: s.at(-1) ?? NaN }
}

async function post (url: string, spec: unknown): Promise<string> {
  const res = await fetch(`${url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(spec) })
  const body = await res.json() as { id: string }
  if (res.status !== 201) throw new Error(`submit failed: ${res.status} ${JSON.stringify(body)}`)
  return body.id
}

async function job (url: string, id: string): Promise<JobJson> {
  return await (await fetch(`${url}/v1/jobs/${id}`)).json() as JobJson
}

async function counts (url: string): Promise<Record<string, number>> {
  return (await (await fetch(`${url}/v1/stats`)).json() as { jobs: Record<string, number> }).jobs
}

async function latency (url: string, n: number): Promise<{ announceToAward: number[], submitToRunning: number[], submitToDone: number[] }> {
  const out = { announceToAward: [] as number[], submitToRunning: [] as number[], submitToDone: [] as number[] }
  for (let i = 0; i < n; i++) {
    const id = await post(url, { command: ['true'] })
    let j = await job(url, id)
    const deadline = Date.now() + 30_000
    while (!['succeeded', 'failed', 'cancelled'].includes(j.state)) {
      if (Date.now() > deadline) throw new Error(`job ${id} stuck in ${j.state}`)
      await new Promise(resolve => setTimeout(resolve, 1))
      j = await job(url, id)
    }
    const a = j.attempts[0]
    if (j.state !== 'succeeded' || a == null || a.startedAt == null || a.finishedAt == null) throw new Error(`job ${id} ended ${j.state}`)
    out.announceToAward.push(a.awardedAt - j.createdAt)
    out.submitToRunning.push(a.startedAt - j.createdAt)
    out.submitToDone.push(a.finishedAt - j.createdAt)
  }
  return out
}

async function throughput (url: string, n: number, clients: number): Promise<{ jobs: number, seconds: number, jobsPerSecond: number, submitPerSecond: number }> {
  const before = await counts(url)
  const start = performance.now()
  let next = 0
  await Promise.all(Array.from({ length: clients }, async () => {
    while (next < n) {
      next++
      await post(url, { command: ['true'] })
    }
  }))
  const submitted = performance.now()
  const target = (before.succeeded ?? 0) + n
  const deadline = Date.now() + 300_000
  while (true) {
    const c = await counts(url)
    if ((c.failed ?? 0) > (before.failed ?? 0)) throw new Error(`${(c.failed ?? 0) - (before.failed ?? 0)} jobs failed during the throughput run`)
    if ((c.succeeded ?? 0) >= target) break
    if (Date.now() > deadline) throw new Error(`throughput run did not finish: ${JSON.stringify(c)}`)
    // Each poll is a GROUP BY over all jobs on the coordinator: poll gently.
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  const seconds = (performance.now() - start) / 1000
  return { jobs: n, seconds, jobsPerSecond: n / seconds, submitPerSecond: n / ((submitted - start) / 1000) }
}

/** CPU seconds (user+system) used so far by a pid, from /proc. */
function cpuOf (pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100 // USER_HZ on Linux
}

/**
 * CPU seconds used so far by each mesh process, with its long-lived helper
 * children (a node's process-runtime host) counted separately as `name+host`.
 * Jobs' own processes are not counted.
 */
function cpuSeconds (mesh: LocalMesh): Record<string, number> {
  const out: Record<string, number> = {}
  for (const p of mesh.processes) {
    const pid = p.child.pid
    if (pid == null) continue
    try {
      out[p.name] = cpuOf(pid)
      const helpers = childPids(pid).filter(c => readFileSync(`/proc/${c}/cmdline`, 'utf8').includes('process-host.js'))
      if (helpers.length > 0) out[`${p.name}+host`] = helpers.reduce((sum, c) => sum + cpuOf(c), 0)
    } catch (err) {
      process.stderr.write(`no CPU figure for ${p.name}: ${(err as Error).message}\n`)
    }
  }
  return out
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      nodes: { type: 'string' }, slots: { type: 'string' }, 'latency-jobs': { type: 'string' }, 'throughput-jobs': { type: 'string' }, clients: { type: 'string' }
    }
  })
  const nodes = Number(values.nodes ?? 5)
  const slots = Number(values.slots ?? 4)
  const latencyJobs = Number(values['latency-jobs'] ?? 500)
  const throughputJobs = Number(values['throughput-jobs'] ?? 3000)
  const clients = Number(values.clients ?? 32)
  const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-bench-'))
  const mesh = new LocalMesh({ dataDir, nodes, slots, runtime: 'process', logLevel: 'warn' })
  try {
    await mesh.start()
    await mesh.waitForNodes(nodes)
    // Warm up: the first jobs pay for JIT and connection set-up.
    await latency(mesh.httpUrl, 20)
    process.stderr.write(`latency: ${latencyJobs} jobs one at a time on ${nodes} nodes…\n`)
    const lat = await latency(mesh.httpUrl, latencyJobs)
    process.stderr.write(`throughput: ${throughputJobs} jobs, ${clients} clients…\n`)
    const cpuBefore = cpuSeconds(mesh)
    const selfBefore = process.cpuUsage()
    const tp = await throughput(mesh.httpUrl, throughputJobs, clients)
    const self = process.cpuUsage(selfBefore)
    const cpuAfter = cpuSeconds(mesh)
    cpuAfter['bench-client'] = (self.user + self.system) / 1e6
    const cpuDuringThroughput = Object.fromEntries(Object.entries(cpuAfter).map(([k, v]) => [k, Number((v - (cpuBefore[k] ?? 0)).toFixed(2))]))
    process.stderr.write(`CPU seconds during throughput: ${JSON.stringify(cpuDuringThroughput)}\n`)
    const stats = await (await fetch(`${mesh.httpUrl}/v1/stats`)).json()
    let commit = 'unknown'
    try { commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim() } catch (err) { process.stderr.write(`no git commit: ${(err as Error).message}\n`) }
    const result = {
      benchmark: 'e2e',
      date: new Date().toISOString(),
      commit,
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
      config: { nodes, slots, runtime: 'process', latencyJobs, throughputJobs, clients },
      latencyMs: { announceToAward: summary(lat.announceToAward), submitToRunning: summary(lat.submitToRunning), submitToDone: summary(lat.submitToDone) },
      throughput: tp,
      cpuSecondsDuringThroughput: cpuDuringThroughput,
      coordinatorStats: stats
    }
    const resultsDir = join(ROOT, 'bench', 'results')
    mkdirSync(resultsDir, { recursive: true })
    const file = join(resultsDir, `e2e-${result.date.replace(/[:.]/g, '-')}.json`)
    writeFileSync(file, JSON.stringify(result, null, 2) + '\n')
    writeFileSync(join(ROOT, 'docs', 'benchmarks.md'), renderBenchmarks(resultsDir))
    process.stdout.write(JSON.stringify({ latencyMs: result.latencyMs, throughput: tp }, null, 2) + `\nwritten to ${file} and docs/benchmarks.md\n`)
  } finally {
    await mesh.stop()
    rmSync(dataDir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
