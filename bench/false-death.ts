/**
 * False declarations of death under load: every node runs CPU-bound jobs
 * that keep both cores saturated for the whole run (default 10 minutes),
 * and nobody dies. Any attempt the coordinator declares `lost` is a false
 * declaration; the target is 0. Also reports how often the failure detector
 * grew suspicious (probes) and how often the coordinator held back because
 * its own event loop lagged, with the machine's CPU use over the run.
 *
 * Writes bench/results/false-death-<timestamp>.json.
 * Usage: node dist/bench/false-death.js [--minutes 10] [--nodes 3] [--slots 2] [--job-seconds 30]
 */
import { parseArgs } from 'node:util'
import { mkdtempSync, rmSync, mkdirSync, writeFileSync, readFileSync } from 'node:fs'
import { tmpdir, cpus } from 'node:os'
import { join } from 'node:path'
import { LocalMesh } from '../cli/local-mesh.js'
import { ROOT, commit } from './measure.js'
import { renderBenchmarks } from './report.js'


interface JobJson { id: string, state: string, attempts: Array<{ number: number, node: string, state: string }> }
interface Stats { jobs: Record<string, number>, reaper: { probes: number, lost: number, cleared: number, heldBackForLag: number, failures: number } }

/** Busy and total jiffies of all CPUs, from /proc/stat. */
function cpuTimes (): { busy: number, total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  const total = fields.reduce((a, b) => a + b, 0)
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0)
  return { busy: total - idle, total }
}

async function main (): Promise<void> {
  const { values } = parseArgs({ options: { minutes: { type: 'string' }, nodes: { type: 'string' }, slots: { type: 'string' }, 'job-seconds': { type: 'string' } } })
  const minutes = Number(values.minutes ?? 10)
  const nodes = Number(values.nodes ?? 3)
  const slots = Number(values.slots ?? 2)
  const jobSeconds = Number(values['job-seconds'] ?? 30)
  const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-false-death-'))
  const mesh = new LocalMesh({ dataDir, nodes, slots, runtime: 'process', logLevel: 'warn' })
  // A pure CPU loop in its own process: no I/O, no sleeps, for jobSeconds.
  const burn = [process.execPath, '-e', `const end = Date.now() + ${jobSeconds * 1000}; let x = 0; while (Date.now() < end) x++`]
  const ids: string[] = []
  const open = new Set<string>()
  let stats: Stats | null = null
  let cpu = { busy: 0, total: 0 }
  let alive = false
  const startedAt = Date.now()
  try {
    await mesh.start()
    await mesh.waitForNodes(nodes)
    const cpu0 = cpuTimes()
    const endAt = Date.now() + minutes * 60_000
    let lastReport = 0
    while (Date.now() < endAt) {
      // Keep every slot busy, with a few waiting so a slot never idles between jobs.
      for (const id of [...open]) {
        const job = await (await fetch(`${mesh.httpUrl}/v1/jobs/${id}`)).json() as JobJson
        if (job.state === 'succeeded' || job.state === 'failed' || job.state === 'cancelled') open.delete(id)
      }
      while (open.size < nodes * slots + 2) {
        const res = await fetch(`${mesh.httpUrl}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ command: burn, timeoutSeconds: jobSeconds * 4 }) })
        const { id } = await res.json() as { id: string }
        ids.push(id)
        open.add(id)
      }
      if (Date.now() - lastReport > 60_000) {
        lastReport = Date.now()
        const s = await (await fetch(`${mesh.httpUrl}/v1/stats`)).json() as Stats
        process.stderr.write(`${Math.round((Date.now() - startedAt) / 1000)} s: ${ids.length} jobs submitted, reaper ${JSON.stringify(s.reaper)}\n`)
      }
      await new Promise(resolve => setTimeout(resolve, 1000))
    }
    const cpu1 = cpuTimes()
    cpu = { busy: cpu1.busy - cpu0.busy, total: cpu1.total - cpu0.total }
    stats = await (await fetch(`${mesh.httpUrl}/v1/stats`)).json() as Stats
    alive = mesh.processes.every(p => p.child.exitCode === null && p.child.signalCode === null)
    for (const id of open) await fetch(`${mesh.httpUrl}/v1/jobs/${id}/cancel`, { method: 'POST' })
  } finally {
    const lost: Array<{ job: string, attempt: number, node: string }> = []
    let succeeded = 0
    if (stats != null) {
      for (const id of ids) {
        const job = await (await fetch(`${mesh.httpUrl}/v1/jobs/${id}`)).json() as JobJson
        if (job.state === 'succeeded') succeeded++
        for (const a of job.attempts) if (a.state === 'lost') lost.push({ job: id, attempt: a.number, node: a.node })
      }
    }
    await mesh.stop()
    rmSync(dataDir, { recursive: true, force: true })
    if (stats != null) write({ minutes, nodes, slots, jobSeconds, ids: ids.length, succeeded, lost, stats, cpu, alive })
  }
}

function write (r: { minutes: number, nodes: number, slots: number, jobSeconds: number, ids: number, succeeded: number, lost: Array<{ job: string, attempt: number, node: string }>, stats: Stats, cpu: { busy: number, total: number }, alive: boolean }): void {
  const result = {
    benchmark: 'false-death', date: new Date().toISOString(), commit: commit(), machine: { cpus: cpus().length, node: process.version },
    config: { minutes: r.minutes, nodes: r.nodes, slots: r.slots, jobSeconds: r.jobSeconds, defaults: 'heartbeat 1 s, silence 3 s, probe grace 1.5 s, lease 15 s' },
    jobsSubmitted: r.ids,
    jobsSucceeded: r.succeeded,
    cpuBusyPercent: Math.round(1000 * r.cpu.busy / Math.max(1, r.cpu.total)) / 10,
    everyProcessAlive: r.alive,
    falseDeclarations: r.lost.length,
    lostAttempts: r.lost,
    reaper: r.stats.reaper
  }
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true })
  const file = join(ROOT, 'bench', 'results', `false-death-${result.date.replace(/[:.]/g, '-')}.json`)
  writeFileSync(file, JSON.stringify(result, null, 2) + '\n')
  writeFileSync(join(ROOT, 'docs', 'benchmarks.md'), renderBenchmarks(join(ROOT, 'bench', 'results')))
  process.stdout.write(`${JSON.stringify({ falseDeclarations: result.falseDeclarations, cpuBusyPercent: result.cpuBusyPercent, reaper: result.reaper, jobsSucceeded: result.jobsSucceeded })}\nwritten to ${file}\n`)
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
