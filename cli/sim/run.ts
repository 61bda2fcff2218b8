/**
 * Runs a scenario: starts a mesh of real processes on loopback with the sim
 * runtime, submits the generated workload on its schedule, plays the fault
 * timeline with real signals (SIGKILL, SIGSTOP/SIGCONT, SIGUSR2 cut/heal,
 * restarts, added nodes), waits for the jobs, then reads every job back from
 * the coordinator and writes the run directory (report.ts).
 */
import { mkdirSync, readFileSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalMesh } from '../local-mesh.js'
import { toMs, type Scenario } from './scenario.js'
import { generateWorkload } from './workload.js'
import { writeReport, type JobTiming, type FaultRecord } from './report.js'

export interface SimOptions {
  outDir: string
  seed?: number
  /** Progress lines. */
  log: (line: string) => void
}

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled'])

function nodeArgs (s: Scenario, meshDir: string): (i: number) => string[] {
  const groups = s.mesh.nodes.flatMap(g => Array.from({ length: g.count }, () => g))
  return i => {
    const g = groups[Math.min(i, groups.length - 1)]!
    return [
      '--slots', String(g.slots), '--cpus', String(g.cpus), '--memory-mb', String(g.memoryMb), '--fault-partition-signal',
      '--fault-control', join(meshDir, `node-${i}`, 'faults.json'),
      ...(Object.keys(g.labels).length > 0 ? ['--labels', Object.entries(g.labels).map(([k, v]) => `${k}=${v}`).join(',')] : []),
      ...(g.gossipDrop > 0 ? ['--fault-drop-gossip', String(g.gossipDrop)] : [])
    ]
  }
}

/** Resident memory of a process, in MiB (Linux). */
function rssMiB (pid: number | undefined): number | null {
  if (pid == null) return null
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find(l => l.startsWith('VmRSS:'))
    return line == null ? null : Math.round(Number(line.split(/\s+/)[1]) / 1024)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
}

export async function runScenario (s: Scenario, o: SimOptions): Promise<Record<string, unknown>> {
  const seed = o.seed ?? s.seed
  const workload = generateWorkload(s, seed)
  const total = s.mesh.nodes.reduce((a, g) => a + g.count, 0)
  mkdirSync(o.outDir, { recursive: true })
  const meshDir = join(o.outDir, 'mesh')
  const mesh = new LocalMesh({ dataDir: meshDir, nodes: total, runtime: 'sim', nodeArgs: nodeArgs(s, meshDir), logLevel: 'warn', startTimeoutMs: 60_000 })
  const faults: FaultRecord[] = []
  const ids: Array<{ index: number, id: string }> = []
  const w = s.workload
  let rss: number[] = []
  const gossip: number[] = []
  const jobEvents: Array<Record<string, unknown>> = []
  try {
    o.log(`starting ${total} nodes`)
    await mesh.start()
    await mesh.waitForNodes(total, 120_000)
    o.log(`submitting ${workload.length} jobs over ${s.duration}, ${s.events.length} events`)
    const events = [...s.events].sort((a, b) => toMs(a.at) - toMs(b.at))
    const t0 = Date.now()
    let nextJob = 0
    let nextEvent = 0
    const endMs = toMs(s.duration)
    while (nextJob < workload.length || nextEvent < events.length) {
      const t = Date.now() - t0
      while (nextEvent < events.length && toMs(events[nextEvent]!.at) <= t) {
        const e = events[nextEvent++]!
        faults.push({ atMs: Date.now() - t0, ...await applyEvent(mesh, e, meshDir) })
      }
      const due: typeof workload = []
      while (nextJob < workload.length && workload[nextJob]!.atMs <= t) due.push(workload[nextJob++]!)
      await Promise.all(due.map(async j => {
        const res = await fetch(`${mesh.httpUrl}/v1/jobs`, {
          method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ command: ['sim', String(j.durationMs), String(j.exitCode)], resources: { cpus: w.cpus, memoryMb: w.memoryMb }, maxAttempts: w.maxAttempts, timeoutSeconds: Math.max(60, Math.ceil(j.durationMs * 3 / 1000)) })
        })
        const body = await res.json() as { id?: string, error?: { message: string } }
        if (body.id == null) throw new Error(`submission refused: ${body.error?.message ?? res.status}`)
        ids.push({ index: j.index, id: body.id })
      }))
      if (t > endMs + 5_000) break
      await new Promise(resolve => setTimeout(resolve, 5))
    }
    // Paused nodes come back so the run can end; a still-cut node is healed.
    for (const p of mesh.processes) if (p.child.exitCode == null && p.child.signalCode == null) p.child.kill('SIGCONT')
    o.log('waiting for the jobs to end')
    const deadline = Date.now() + toMs(s.drain)
    for (;;) {
      const stats = await (await fetch(`${mesh.httpUrl}/v1/stats`)).json() as { jobs: Record<string, number> }
      const open = (stats.jobs.announced ?? 0) + (stats.jobs.claimed ?? 0) + (stats.jobs.running ?? 0)
      if (open === 0 || Date.now() > deadline) break
      await new Promise(resolve => setTimeout(resolve, 250))
    }
    rss = mesh.processes.filter(p => p.name.startsWith('node-')).map(p => rssMiB(p.child.pid)).filter((x): x is number => x != null)
    // Each node's own counters, from the status file it rewrites every 2 s.
    for (const p of mesh.processes.filter(x => x.name.startsWith('node-'))) {
      try {
        const st = JSON.parse(await readFile(join(meshDir, p.name, 'status.json'), 'utf8')) as { stats: { gossipBytesIn: number, gossipBytesOut: number } }
        gossip.push(st.stats.gossipBytesIn + st.stats.gossipBytesOut)
      } catch (err) {
        // A node killed by the scenario and not restarted left no current status.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      }
    }
    o.log('reading results')
    const timings: JobTiming[] = []
    ids.sort((a, b) => a.index - b.index)
    for (const { index, id } of ids) {
      const { events } = await (await fetch(`${mesh.httpUrl}/v1/jobs/${id}/events`)).json() as { events: Array<{ at: number, type: string, actor: string, attempt: number | null, detail: Record<string, unknown> }> }
      jobEvents.push(...events.map(e => ({ job: index, ...e, at: e.at - t0 })))
      const job = await (await fetch(`${mesh.httpUrl}/v1/jobs/${id}`)).json() as {
        state: string, createdAt: number, attempts: Array<{ number: number, node: string, state: string, awardedAt: number, startedAt: number | null, finishedAt: number | null }>, result: { finishedAt: number } | null
      }
      const last = job.attempts.at(-1)
      const firstStart = job.attempts.find(a => a.startedAt != null)
      timings.push({
        index, id, state: job.state, node: last?.node ?? null, attempts: job.attempts.length,
        submittedAt: job.createdAt - t0,
        // The first announcement goes out in the submission's own tick; the log records only re-announcements.
        announcedAt: job.createdAt - t0,
        reannouncements: events.filter(e => e.type === 'announced').length,
        awardedAt: last != null ? last.awardedAt - t0 : null,
        startedAt: firstStart?.startedAt != null ? firstStart.startedAt - t0 : null,
        finishedAt: job.result != null && TERMINAL.has(job.state) ? job.result.finishedAt - t0 : null,
        succeededAttempts: job.attempts.filter(a => a.state === 'succeeded').length,
        durationMs: workload[index]!.durationMs
      })
    }
    await writeFile(join(o.outDir, 'events.json'), JSON.stringify(jobEvents, null, 1) + '\n')
    return writeReport(o.outDir, s, seed, timings, faults, { nodes: mesh.nodePeerIds.length, rssMiB: rss, gossipBytes: gossip })
  } finally {
    await mesh.stop()
  }
}

async function applyEvent (mesh: LocalMesh, e: Scenario['events'][number], meshDir: string): Promise<Omit<FaultRecord, 'atMs'>> {
  // Link faults go through each node's control file, which it re-reads every 200 ms.
  const control = async (node: string, change: Record<string, number>): Promise<void> => {
    const file = join(meshDir, node, 'faults.json')
    let current: Record<string, number> = {}
    try { current = JSON.parse(await readFile(file, 'utf8')) as Record<string, number> } catch (err) { if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err }
    await writeFile(file, JSON.stringify({ ...current, ...change }))
  }
  if ('slow' in e) { await control(e.slow, { delayMs: toMs(e.delay) }); return { event: `slow ${e.delay}`, target: e.slow } }
  if ('dropGossip' in e) { await control(e.dropGossip, { dropGossip: e.rate }); return { event: `drop ${Math.round(e.rate * 100)}% gossip`, target: e.dropGossip } }
  const proc = (name: string): LocalMesh['processes'][number] => {
    const p = mesh.processes.find(x => x.name === name)
    if (p == null) throw new Error(`no process ${name}`)
    return p
  }
  if ('kill' in e) { proc(e.kill).child.kill('SIGKILL'); return { event: 'kill', target: e.kill } }
  if ('pause' in e) { proc(e.pause).child.kill('SIGSTOP'); return { event: 'pause', target: e.pause } }
  if ('resume' in e) { proc(e.resume).child.kill('SIGCONT'); return { event: 'resume', target: e.resume } }
  if ('cut' in e) { proc(e.cut).child.kill('SIGUSR2'); return { event: 'cut', target: e.cut } }
  if ('heal' in e) { proc(e.heal).child.kill('SIGUSR2'); return { event: 'heal', target: e.heal } }
  if ('restart' in e) { await mesh.restart(e.restart); return { event: 'restart', target: e.restart } }
  const added = await mesh.addNodes(e.addNodes)
  return { event: 'add-nodes', target: added.join(',') }
}
