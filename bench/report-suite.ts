/** Renders the suite's part of docs/benchmarks.md: the latest full run in detail, older runs as one row each. */
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { SuiteResult } from './suite.js'
import type { ThroughputSection } from './mesh-bench.js'
import type { PeerResult } from './peers/types.js'

const f = (x: number | undefined | null): string => x != null && Number.isFinite(x) ? (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2)) : '-'
const ratio = (a: number | undefined, b: number | undefined): string => a != null && b != null && b > 0 && Number.isFinite(a) ? `${(a / b).toFixed(2)}×` : '-'

/** Targets from issue 10, for the "target" columns. */
export const TARGETS = { sim: 1000, process: 300, docker: 20, announceToAwardP99Ms: 20, submitToRunningP99Ms: 50, eventLoopP99Ms: 50 }

export function readSuites (resultsDir: string): SuiteResult[] {
  if (!existsSync(resultsDir)) return []
  return readdirSync(resultsDir).filter(n => n.startsWith('suite-') && n.endsWith('.json')).sort()
    .map(n => JSON.parse(readFileSync(join(resultsDir, n), 'utf8')) as SuiteResult)
}

/** Older result files predate the auction figures. */
function auctionText (a: { bidsPerJob: number, counterOfferShare: number, nextShare?: number, standbyShare?: number, jobsPerAnnouncement: number } | undefined): string {
  const share = (x: number | undefined): string => x == null ? '-' : `${Math.round(x * 100)}%`
  return a == null ? '-' : `${f(a.bidsPerJob)}, ${share(a.counterOfferShare)}, ${share(a.nextShare)}, ${share(a.standbyShare)}, ${f(a.jobsPerAnnouncement)}`
}

function tp (r: SuiteResult, runtime: string): ThroughputSection | undefined {
  return r.throughput.find(t => t.runtime === runtime)
}

function peer (r: SuiteResult, system: string): PeerResult | undefined {
  return r.peers.find(p => p.system === system && p.skipped == null)
}

export function renderSuite (resultsDir: string): string[] {
  const runs = readSuites(resultsDir).filter(r => r.mode === 'full')
  const lines = ['## The suite (`npm run bench`)', '']
  const r = runs.at(-1)
  if (r == null) return [...lines, 'No full run recorded yet.', '']
  lines.push(`Latest full run: ${r.date.slice(0, 16).replace('T', ' ')} UTC, commit ${r.commit}, ${r.machine.cpus} cores (${r.machine.cpuModel}), ${r.machine.memoryGiB} GiB, Node ${r.machine.node}.`,
    'Every process of the mesh (bootstrap, coordinator, nodes, their job processes or containers) and the benchmark client share these cores.', '')
  lines.push('### Throughput: trivial jobs through the whole path', '',
    'HTTP submit (one job per request, 32 concurrent clients) → announce → bid → award → run → result recorded; jobs/s from the first submission to the last result.' +
      (r.counts.warmupJobs != null ? ` Measured after a warm-up through the same path (${Object.entries(r.counts.warmupJobs).map(([k, v]) => `${k} ${v}`).join(', ')} jobs, the first 20 one at a time), as a mesh that has been up for a while is past V8's first tiers; for \`process\` the latency run's jobs come between the warm-up and the throughput run.` : ''), '',
    '| runtime | nodes×slots | jobs | jobs/s | target | the machine alone (jobs/s) | CPU ms per job (by role) | bids per job, counter-offer share, share with a result’s ack, share on standby, jobs per announcement | node event-loop delay p99, median / worst 2 s window (ms) |',
    '|---|---|---|---|---|---|---|---|---|')
  for (const t of r.throughput) {
    const cpu = Object.entries(t.cpuMsPerJob).map(([k, v]) => `${k} ${f(v)}`).join(', ')
    const ceiling = t.runtime === 'sim' ? null : r.ceilings?.[t.runtime]
    lines.push(`| ${t.runtime} | ${t.nodes}×${t.slots} | ${t.throughput.jobs} | ${f(t.throughput.jobsPerSecond)} | ≥ ${TARGETS[t.runtime]} | ${ceiling == null ? '-' : `${f(ceiling.perSecond)} (RGrid ${Math.round(100 * t.throughput.jobsPerSecond / ceiling.perSecond)}%)`} | ${cpu} | ${auctionText(t.auction)} | ${f(t.nodeEventLoopDelayMs.medianWindowP99)} / ${f(t.nodeEventLoopDelayMs.worstWindowP99)} |`)
  }
  for (const t of r.throughput) {
    if (t.batched == null) continue
    const cpu = Object.entries(t.batched.cpuMsPerJob).map(([k, v]) => `${k} ${f(v)}`).join(', ')
    lines.push('', `The same ${t.throughput.jobs} \`${t.runtime}\` jobs submitted ${t.batched.batch} per request (\`POST /v1/jobs/batch\`, ${t.batched.clients} clients) on the same mesh: ` +
      `${f(t.batched.throughput.jobsPerSecond)} jobs/s (submissions ${f(t.batched.throughput.submitPerSecond)}/s); CPU ms per job: ${cpu}.`)
  }
  if (r.ceilings != null) {
    const c = r.ceilings
    lines.push('', 'The machine alone: the same work with nothing of RGrid running, measured in the same run just before the mesh (bench/ceilings.ts); a reference rate, not a proven maximum. ' +
      `\`process\`: ${c.process.method}: ${f(c.process.perSecond)} spawns/s` +
      (c.processNode != null ? ` (with child_process instead: ${f(c.processNode.perSecond)}/s). ` : '. ') +
      (c.docker != null ? `Docker: ${c.docker.method}: ${f(c.docker.perSecond)} containers/s.` : 'Docker: not measured.'))
  }
  for (const [k, v] of Object.entries(r.skipped)) lines.push('', `Skipped: ${k}: ${v}`)
  const lat = tp(r, 'process')?.latencyMs
  if (lat != null) {
    lines.push('', `### Latency on an idle mesh (${lat.jobs} \`process\` jobs, one at a time)`, '',
      '| measure | p50 | p95 | p99 | max | target p99 |', '|---|---|---|---|---|---|',
      `| announce → award (ms) | ${f(lat.announceToAward.p50)} | ${f(lat.announceToAward.p95)} | ${f(lat.announceToAward.p99)} | ${f(lat.announceToAward.max)} | ≤ ${TARGETS.announceToAwardP99Ms} |`,
      `| submit → running (ms) | ${f(lat.submitToRunning.p50)} | ${f(lat.submitToRunning.p95)} | ${f(lat.submitToRunning.p99)} | ${f(lat.submitToRunning.max)} | ≤ ${TARGETS.submitToRunningP99Ms} |`,
      `| submit → done (ms) | ${f(lat.submitToDone.p50)} | ${f(lat.submitToDone.p95)} | ${f(lat.submitToDone.p99)} | ${f(lat.submitToDone.max)} | |`)
  }
  if (r.scale.length > 0) {
    lines.push('', '### Scale', '',
      'At rest: no jobs, a window after start-up settled; bytes are TCP bytes sent plus received on the node\'s sockets (gossip, pings, session renewals, everything), from `ss`. Per node: median (max).' +
      (r.counts.scaleWarmupPerNode != null ? ` Throughput after a warm-up of ${r.counts.scaleWarmupPerNode} jobs per node: each node is a separate V8 process, and with fewer jobs each the larger meshes were measured on colder code than the smaller ones.` : ''), '',
      '| nodes | bytes/s per node | CPU % per node | RSS MiB per node | coordinator bytes/s, CPU %, RSS | bootstrap bytes/s, CPU %, RSS | new node eligible (ms) | `sim` jobs/s | bids per job, counter-offer share, share with a result’s ack, share on standby, jobs per announcement |',
      '|---|---|---|---|---|---|---|---|---|')
    for (const s of r.scale) {
      const a = s.atRest
      lines.push(`| ${s.nodes} | ${f(a.bytesPerSecond.p50)} (${f(a.bytesPerSecond.max)}) | ${f(a.cpuPercent.p50)} (${f(a.cpuPercent.max)}) | ${f(a.rssMiB.p50)} (${f(a.rssMiB.max)}) | ` +
        `${f(a.coordinator.bytesPerSecond)}, ${f(a.coordinator.cpuPercent)}, ${f(a.coordinator.rssMiB)} | ${f(a.bootstrap.bytesPerSecond)}, ${f(a.bootstrap.cpuPercent)}, ${f(a.bootstrap.rssMiB)} | ${s.newNodeEligibleMs} | ${f(s.throughput.jobsPerSecond)} | ${auctionText(s.auction)} |`)
    }
  }
  if (r.recovery != null) {
    const m = r.recovery.msFromKillToRunningElsewhere
    lines.push('', `### Recovery: SIGKILL of a node → its job running elsewhere (${r.recovery.kills} kills; ${r.recovery.settings})`, '',
      `p50 ${f(m.p50)} ms, p95 ${f(m.p95)} ms, max ${f(m.max)} ms.`)
  }
  if (r.store.length > 0) {
    lines.push('', '### Coordinator store: awards per second through the real award path', '', '| backend | setup | awards/s | award p50 / p99 (ms) |', '|---|---|---|---|')
    for (const b of r.store) lines.push(`| ${b.backend} | ${b.setup} | ${f(b.awardsPerSecond)} | ${f(b.awardLatencyMs.p50)} / ${f(b.awardLatencyMs.p99)} |`)
  }
  lines.push(...renderPeers(r))
  if (runs.length > 1) {
    lines.push('', '### Every full run', '', '| date | commit | sim / process / docker jobs/s | announce→award p99 (ms) | submit→running p99 (ms) | Slurm sbatch/s | BullMQ jobs/s |', '|---|---|---|---|---|---|---|')
    for (const x of runs) {
      const l = tp(x, 'process')?.latencyMs
      lines.push(`| ${x.date.slice(0, 16).replace('T', ' ')} | ${x.commit} | ${f(tp(x, 'sim')?.throughput.jobsPerSecond)} / ${f(tp(x, 'process')?.throughput.jobsPerSecond)} / ${f(tp(x, 'docker')?.throughput.jobsPerSecond)} | ` +
        `${f(l?.announceToAward.p99)} | ${f(l?.submitToRunning.p99)} | ${f(peer(x, 'slurm')?.throughput?.jobsPerSecond)} | ${f(peer(x, 'bullmq')?.throughput?.jobsPerSecond)} |`)
    }
  }
  lines.push('')
  return lines
}

function renderPeers (r: SuiteResult): string[] {
  const slurm = peer(r, 'slurm')
  const bull = peer(r, 'bullmq')
  const lines = ['', '### Side by side: Slurm and BullMQ, same machine, same run', '']
  if (slurm == null && bull == null) return [...lines, 'Neither peer ran (see skipped above).']
  const sim = tp(r, 'sim')?.throughput.jobsPerSecond
  const proc = tp(r, 'process')?.throughput.jobsPerSecond
  const lat = tp(r, 'process')?.latencyMs
  lines.push('Ratios are RGrid ÷ peer: above 1× RGrid is faster for throughput; for latency below 1× RGrid is faster.', '',
    '| figure | RGrid | Slurm | RGrid ÷ Slurm | BullMQ | RGrid ÷ BullMQ |', '|---|---|---|---|---|---|')
  const st = slurm?.throughput?.jobsPerSecond
  const bt = bull?.throughput?.jobsPerSecond
  lines.push(`| trivial jobs/s, one per submission (RGrid \`process\` vs \`sbatch --wrap true\`; BullMQ no-op) | ${f(proc)} | ${f(st)} | ${ratio(proc, st)} | ${f(bt)} | ${ratio(proc, bt)} |`)
  lines.push(`| no-process jobs/s (RGrid \`sim\` vs BullMQ no-op) | ${f(sim)} | | | ${f(bt)} | ${ratio(sim, bt)} |`)
  const srun = slurm?.latencyMs['srun true']
  const bStart = bull?.latencyMs['enqueue→start']
  if (lat != null) {
    lines.push(`| submit → running p50 (ms) (Slurm: whole \`srun true\`; BullMQ: enqueue → start) | ${f(lat.submitToRunning.p50)} | ${f(srun?.p50)} | ${ratio(lat.submitToRunning.p50, srun?.p50)} | ${f(bStart?.p50)} | ${ratio(lat.submitToRunning.p50, bStart?.p50)} |`)
    lines.push(`| submit → running p99 (ms) | ${f(lat.submitToRunning.p99)} | ${f(srun?.p99)} | ${ratio(lat.submitToRunning.p99, srun?.p99)} | ${f(bStart?.p99)} | ${ratio(lat.submitToRunning.p99, bStart?.p99)} |`)
    lines.push(`| submit → done p50 (ms) (Slurm: \`srun true\`) | ${f(lat.submitToDone.p50)} | ${f(srun?.p50)} | ${ratio(lat.submitToDone.p50, srun?.p50)} | ${f(bull?.latencyMs['enqueue→completed']?.p50)} | ${ratio(lat.submitToDone.p50, bull?.latencyMs['enqueue→completed']?.p50)} |`)
  }
  for (const p of [slurm, bull]) {
    if (p == null) continue
    lines.push('', `${p.system} ${p.version}. Settings: ${Object.entries(p.settings).map(([k, v]) => `\`${k}\` ${v}`).join('; ')}.`)
    const extra = Object.entries(p.extraThroughput)
    if (extra.length > 0) lines.push(`Other throughput figures: ${extra.map(([k, v]) => `${k}: ${f(v.jobsPerSecond)} jobs/s (${v.jobs} jobs)`).join('; ')}.`)
    const lats = Object.entries(p.latencyMs)
    if (lats.length > 0) lines.push(`Latency: ${lats.map(([k, v]) => `${k} p50 ${f(v.p50)} / p95 ${f(v.p95)} / p99 ${f(v.p99)} ms`).join('; ')}.`)
  }
  return lines
}
