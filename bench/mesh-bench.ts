/**
 * The mesh sections of the benchmark suite: throughput per runtime, latency
 * on an idle mesh, and scale (10, 25, 50 nodes). Each starts a real mesh of
 * processes on loopback with LocalMesh and measures through the HTTP API,
 * /proc and `ss`.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalMesh } from '../cli/local-mesh.js'
import { cpuDelta, cpuOf, cpuSeconds, latency, rssMiB, socketBytes, summary, throughput, type Summary, type ThroughputRun } from './measure.js'
import { percentile } from '../common/percentile.js'

export type Runtime = 'sim' | 'process' | 'docker'

/**
 * How the coordinator spent a run: bids per job, the share of awards that were
 * counter-offers, that came with a result's ack (`nextShare`, session 1.1)
 * and that went to a node waiting on standby (`standbyShare`, session 1.2),
 * and how many jobs each announcement carried.
 */
export interface AuctionFigures { bidsPerJob: number, counterOfferShare: number, nextShare: number, standbyShare: number, jobsPerAnnouncement: number }

interface CoordinatorStats { auction: { bids: number, awards: number, counterOffers: number, chained: number, standby?: number }, announcer: { messages: number, jobs: number } }

async function coordinatorStats (url: string): Promise<CoordinatorStats> {
  return await (await fetch(`${url}/v1/stats`)).json() as CoordinatorStats
}

function auctionFigures (before: CoordinatorStats, after: CoordinatorStats): AuctionFigures {
  const awards = after.auction.awards - before.auction.awards
  const messages = after.announcer.messages - before.announcer.messages
  const round = (x: number): number => Number(x.toFixed(2))
  return {
    bidsPerJob: round((after.auction.bids - before.auction.bids) / Math.max(1, awards)),
    counterOfferShare: round((after.auction.counterOffers - before.auction.counterOffers) / Math.max(1, awards)),
    nextShare: round((after.auction.chained - before.auction.chained) / Math.max(1, awards)),
    standbyShare: round(((after.auction.standby ?? 0) - (before.auction.standby ?? 0)) / Math.max(1, awards)),
    jobsPerAnnouncement: round((after.announcer.jobs - before.announcer.jobs) / Math.max(1, messages))
  }
}

/** The trivial job of each runtime: no process, `true`, `true` in a cached image. */
export function trivialSpec (runtime: Runtime, image: string): Record<string, unknown> {
  if (runtime === 'sim') return { command: ['sim', '0', '0'] }
  if (runtime === 'docker') return { image, command: ['true'] }
  return { command: ['true'] }
}

export interface ThroughputSection {
  runtime: Runtime
  nodes: number
  slots: number
  clients: number
  throughput: ThroughputRun
  /** CPU ms per job, summed by role (coordinator, bootstrap, node agents, process hosts, benchmark client). */
  cpuMsPerJob: Record<string, number>
  auction: AuctionFigures
  /** The nodes' event-loop delay during the run: every node's 2 s windows, p99 of each window. */
  nodeEventLoopDelayMs: { windows: number, medianWindowP99: number, worstWindowP99: number, worstMax: number }
  /** Latency on the idle mesh, one job at a time (when asked for). */
  latencyMs?: { jobs: number, announceToAward: Summary, submitToRunning: Summary, submitToDone: Summary }
  /** The same jobs again on the same mesh, submitted `batch` per `POST /v1/jobs/batch` (when asked for). */
  batched?: { batch: number, clients: number, throughput: ThroughputRun, cpuMsPerJob: Record<string, number> }
}

export interface MeshRunOptions {
  nodes: number
  slots: number
  jobs: number
  clients: number
  /** Jobs for the idle-mesh latency run before the throughput run; 0 for none. */
  latencyJobs: number
  /** Also run the throughput again with jobs submitted this many per request (4 clients); 0 or absent for none. */
  batch?: number
  /**
   * Jobs run through the whole path before anything is measured: the first 20 one at a time, the rest
   * from all clients. A node that
   * has seen a few hundred jobs still runs much of its code in V8's first tiers: decoding one session
   * frame cost about 200 µs of CPU in a fresh node process and about 11 µs after a few thousand
   * (docs/performance.md, change 12). A mesh that has been up for a while is past that; the figures
   * are meant to describe that mesh, as other benchmarks warm up before they measure.
   * @default 20
   */
  warmupJobs?: number
  image: string
  log: (line: string) => void
  signal?: AbortSignal
}

interface DelayWindow { seq: number, p50: number, p99: number, max: number, samples: number }

/** Reads every node's status file (rewritten every 2 s) and keeps windows not seen before. */
class DelaySampler {
  private readonly seen = new Map<string, number>()
  readonly p99s: number[] = []
  worstMax = 0

  constructor (private readonly dirs: string[]) {}

  sample (): void {
    for (const dir of this.dirs) {
      let status: { updatedAt: number, eventLoopDelayMs?: { lastWindow: DelayWindow | null } }
      try {
        status = JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8'))
      } catch (err) {
        // Not written yet, or caught mid-rename: the next sample reads it.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && !(err instanceof SyntaxError)) throw err
        continue
      }
      const w = status.eventLoopDelayMs?.lastWindow
      // A window without samples (cut short as its node turned busy) measured nothing.
      if (w == null || w.samples === 0) continue
      // Two calm windows can have the same figures: tell them apart by number.
      if (this.seen.get(dir) === w.seq) continue
      this.seen.set(dir, w.seq)
      this.p99s.push(w.p99)
      this.worstMax = Math.max(this.worstMax, w.max)
    }
  }
}

function roleOf (name: string): string {
  if (name.endsWith('+host')) return 'process hosts'
  if (name.startsWith('node-')) return 'node agents'
  if (name.startsWith('coordinator')) return 'coordinator'
  return name
}

/** Throughput (and optionally idle latency) of one runtime on a fresh mesh. */
/** A throughput run with the CPU it cost per job, by role (the benchmark client included). */
async function measuredThroughput (mesh: LocalMesh, run: () => Promise<ThroughputRun>, jobs: number): Promise<{ tp: ThroughputRun, cpuMsPerJob: Record<string, number> }> {
  const cpuBefore = cpuSeconds(mesh)
  const selfBefore = process.cpuUsage()
  const tp = await run()
  const self = process.cpuUsage(selfBefore)
  const delta = cpuDelta(cpuBefore, cpuSeconds(mesh))
  delta['benchmark client'] = (self.user + self.system) / 1e6
  const cpuMsPerJob: Record<string, number> = {}
  for (const [name, seconds] of Object.entries(delta)) {
    const role = roleOf(name)
    cpuMsPerJob[role] = (cpuMsPerJob[role] ?? 0) + seconds * 1000 / jobs
  }
  for (const k of Object.keys(cpuMsPerJob)) cpuMsPerJob[k] = Number(cpuMsPerJob[k]!.toFixed(3))
  return { tp, cpuMsPerJob }
}

export async function runThroughput (runtime: Runtime, o: MeshRunOptions): Promise<ThroughputSection> {
  const dataDir = mkdtempSync(join(tmpdir(), `rgrid-bench-${runtime}-`))
  const mesh = new LocalMesh({ dataDir, nodes: o.nodes, slots: o.slots, runtime, logLevel: 'warn', startTimeoutMs: 60_000 })
  const spec = trivialSpec(runtime, o.image)
  try {
    await mesh.start()
    await mesh.waitForNodes(o.nodes, 60_000)
    // Warm up: the first jobs pay for JIT, connection set-up and (Docker) the first container.
    await latency(mesh.httpUrl, spec, 20)
    const more = (o.warmupJobs ?? 20) - 20
    if (more > 0) {
      o.log(`${runtime}: warm-up, ${more} more jobs from ${o.clients} clients`)
      await throughput(mesh.httpUrl, spec, more, o.clients)
    }
    let lat: ThroughputSection['latencyMs']
    if (o.latencyJobs > 0) {
      o.log(`${runtime}: latency, ${o.latencyJobs} jobs one at a time on ${o.nodes} idle nodes`)
      const l = await latency(mesh.httpUrl, spec, o.latencyJobs)
      lat = { jobs: o.latencyJobs, announceToAward: summary(l.announceToAward), submitToRunning: summary(l.submitToRunning), submitToDone: summary(l.submitToDone) }
    }
    o.log(`${runtime}: throughput, ${o.jobs} jobs from ${o.clients} clients on ${o.nodes}×${o.slots} slots`)
    const sampler = new DelaySampler(Array.from({ length: o.nodes }, (_, i) => join(dataDir, `node-${i}`)))
    sampler.sample()
    const timer = setInterval(() => { sampler.sample() }, 500)
    const statsBefore = await coordinatorStats(mesh.httpUrl)
    let tp: ThroughputRun
    let cpuMsPerJob: Record<string, number>
    try {
      ({ tp, cpuMsPerJob } = await measuredThroughput(mesh, () => throughput(mesh.httpUrl, spec, o.jobs, o.clients), o.jobs))
    } finally {
      clearInterval(timer)
    }
    sampler.sample()
    const auction = auctionFigures(statsBefore, await coordinatorStats(mesh.httpUrl))
    let batched: ThroughputSection['batched']
    if (o.batch != null && o.batch > 1) {
      o.log(`${runtime}: throughput again, ${o.jobs} jobs submitted ${o.batch} per request from 4 clients`)
      const b = await measuredThroughput(mesh, () => throughput(mesh.httpUrl, spec, o.jobs, 4, '', o.batch), o.jobs)
      batched = { batch: o.batch, clients: 4, throughput: b.tp, cpuMsPerJob: b.cpuMsPerJob }
    }
    const p99s = [...sampler.p99s].sort((a, b) => a - b)
    return {
      runtime,
      nodes: o.nodes,
      slots: o.slots,
      clients: o.clients,
      throughput: tp,
      cpuMsPerJob,
      auction,
      nodeEventLoopDelayMs: { windows: p99s.length, medianWindowP99: percentile(p99s, 50), worstWindowP99: p99s.at(-1) ?? NaN, worstMax: sampler.worstMax },
      ...(lat != null ? { latencyMs: lat } : {}),
      ...(batched != null ? { batched } : {})
    }
  } finally {
    await mesh.stop()
    rmSync(dataDir, { recursive: true, force: true })
  }
}

export interface ScalePoint {
  nodes: number
  /** Per node agent, over a window with no jobs: TCP bytes sent+received per second, CPU %, RSS. */
  atRest: { windowSeconds: number, bytesPerSecond: Summary, cpuPercent: Summary, rssMiB: Summary, coordinator: { bytesPerSecond: number, cpuPercent: number, rssMiB: number }, bootstrap: { bytesPerSecond: number, cpuPercent: number, rssMiB: number } }
  /** From starting one more node process until the coordinator lists it with an open session, in ms. */
  newNodeEligibleMs: number
  throughput: ThroughputRun
  auction: AuctionFigures
}

/**
 * At-rest cost, a new node's time to eligibility and `sim` throughput for a mesh of `nodes`.
 * `warmupJobs` run from all clients after the at-rest window and the new node's join, before the
 * throughput is measured (see {@link MeshRunOptions.warmupJobs}). @default 0
 */
export async function runScalePoint (nodes: number, o: { jobs: number, clients: number, restSeconds: number, warmupJobs?: number, log: (line: string) => void }): Promise<ScalePoint> {
  const dataDir = mkdtempSync(join(tmpdir(), `rgrid-bench-scale-${nodes}-`))
  const mesh = new LocalMesh({ dataDir, nodes, slots: 4, runtime: 'sim', logLevel: 'warn', startTimeoutMs: 120_000 })
  try {
    o.log(`scale: starting ${nodes} nodes`)
    await mesh.start()
    await mesh.waitForNodes(nodes, 120_000)
    // Let start-up traffic (identify, mesh grafting, history sync) settle before the at-rest window.
    await settle(mesh, 5_000)
    const procs = mesh.processes.filter(p => p.child.pid != null && p.child.exitCode == null)
    const pids = procs.map(p => p.child.pid!)
    const cpu0 = new Map(pids.map(pid => [pid, cpuOf(pid)]))
    const bytes0 = socketBytes(pids)
    const t0 = performance.now()
    await settle(mesh, o.restSeconds * 1000)
    const seconds = (performance.now() - t0) / 1000
    const bytes1 = socketBytes(pids)
    const row = (pid: number): { bytesPerSecond: number, cpuPercent: number, rssMiB: number } => ({
      bytesPerSecond: Math.round((bytes1.get(pid)! - bytes0.get(pid)!) / seconds),
      cpuPercent: Number((100 * (cpuOf(pid) - cpu0.get(pid)!) / seconds).toFixed(2)),
      rssMiB: Number(rssMiB(pid).toFixed(1))
    })
    const nodeRows = procs.filter(p => p.name.startsWith('node-')).map(p => row(p.child.pid!))
    const coordinator = row(procs.find(p => p.name.startsWith('coordinator'))!.child.pid!)
    const bootstrap = row(procs.find(p => p.name === 'bootstrap')!.child.pid!)
    o.log(`scale ${nodes}: a new node joins`)
    const joinStart = performance.now()
    const [added] = await mesh.addNodes(1)
    await mesh.waitForNodes(nodes + 1, 60_000)
    const newNodeEligibleMs = Math.round(performance.now() - joinStart)
    if (added == null) throw new Error('the new node printed no peer id')
    o.log(`scale ${nodes}: throughput, ${o.jobs} sim jobs`)
    await latency(mesh.httpUrl, trivialSpec('sim', ''), 20)
    if ((o.warmupJobs ?? 0) > 0) await throughput(mesh.httpUrl, trivialSpec('sim', ''), o.warmupJobs ?? 0, o.clients)
    const statsBefore = await coordinatorStats(mesh.httpUrl)
    const tp = await throughput(mesh.httpUrl, trivialSpec('sim', ''), o.jobs, o.clients)
    const auction = auctionFigures(statsBefore, await coordinatorStats(mesh.httpUrl))
    return {
      nodes,
      atRest: {
        windowSeconds: Number(seconds.toFixed(1)),
        bytesPerSecond: summary(nodeRows.map(r => r.bytesPerSecond)),
        cpuPercent: summary(nodeRows.map(r => r.cpuPercent)),
        rssMiB: summary(nodeRows.map(r => r.rssMiB)),
        coordinator,
        bootstrap
      },
      newNodeEligibleMs,
      throughput: tp,
      auction
    }
  } finally {
    await mesh.stop()
    rmSync(dataDir, { recursive: true, force: true })
  }
}

/**
 * Waits `ms` while checking every mesh process stays alive: a measurement
 * window is a wait by definition, but a crash inside it must end the run.
 */
async function settle (mesh: LocalMesh, ms: number): Promise<void> {
  const until = performance.now() + ms
  while (performance.now() < until) {
    const dead = mesh.processes.find(p => p.child.exitCode != null || p.child.signalCode != null)
    if (dead != null) throw new Error(`${dead.name} exited during the benchmark; see ${dead.logFile}`)
    await new Promise(resolve => setTimeout(resolve, Math.max(0, Math.min(250, until - performance.now()))))
  }
}
