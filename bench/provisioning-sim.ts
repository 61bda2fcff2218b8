/**
 * Policy simulation of the provisioner: replays job arrival traces (a
 * steady one and a bursty one) against the provisioner's own decision
 * functions (coordinator/provisioner/plan.ts) with a simulated clock, and
 * reports waiting time p50/p95 and server-hours paid for several settings.
 * Servers take `bootMs` to join; each runs one job per core; billing is per
 * started hour. Deterministic (seeded).
 *
 * Writes bench/results/provisioning-sim-<timestamp>.json, docs/provisioning-sim.svg,
 * and rewrites docs/benchmarks.md.
 * Usage: node dist/bench/provisioning-sim.js
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { planScaleDown, planScaleUp, type ManagedServer, type ServerTypeOffer } from '../coordinator/provisioner/plan.js'
import { renderBenchmarks } from './report.js'
import { seeded } from '../cli/sim/workload.js'
import { ROOT, commit } from './measure.js'
import { percentile } from '../common/percentile.js'

const TYPE: ServerTypeOffer = { name: 'cx22', cores: 2, memoryMb: 4096, hourlyEur: 0.0071 }
const SCAN_MS = 10_000
const BOOT_MS = 90_000

interface Job { arrive: number, durationMs: number, start: number | null }
interface Setting { name: string, scaleUpAfterMs: number, idleBeforeDeleteMs: number, hourEndWindowMs: number, cooldownMs: number, maxServers: number }


/** Steady: a job every ~20 s for 4 h. Bursty: 5 bursts of 300 jobs, 45 min apart. Jobs run 2–8 min. */
function trace (kind: 'steady' | 'bursty'): Job[] {
  const r = seeded(kind === 'steady' ? 1 : 2)
  const jobs: Job[] = []
  if (kind === 'steady') {
    for (let t = 0; t < 4 * 3_600_000; t += -Math.log(1 - r()) * 20_000) jobs.push({ arrive: t, durationMs: 120_000 + r() * 360_000, start: null })
  } else {
    for (let b = 0; b < 5; b++) for (let i = 0; i < 300; i++) jobs.push({ arrive: b * 2_700_000 + r() * 60_000, durationMs: 120_000 + r() * 360_000, start: null })
  }
  return jobs.sort((a, b) => a.arrive - b.arrive)
}

interface Server { id: number, createdAt: number, joinAt: number, deletedAt: number | null, running: Array<{ job: Job, endsAt: number }>, idleSince: number | null }

function simulate (jobs: Job[], s: Setting): { waitP50s: number, waitP95s: number, serverHours: number, peakServers: number, samples: Array<[number, number, number]> } {
  const servers: Server[] = []
  let nextId = 1
  let lastScaleUpAt = -Infinity
  const end = Math.max(...jobs.map(j => j.arrive)) + 3 * 3_600_000
  const samples: Array<[number, number, number]> = []
  for (let now = 0; now <= end; now += SCAN_MS) {
    // Run: finish jobs, start waiting ones on joined servers with a free core.
    for (const srv of servers) {
      if (srv.deletedAt != null) continue
      srv.running = srv.running.filter(r => r.endsAt > now)
      if (srv.running.length === 0 && srv.joinAt <= now) srv.idleSince ??= now
    }
    const waiting = jobs.filter(j => j.arrive <= now && j.start == null)
    for (const j of waiting) {
      const srv = servers.find(x => x.deletedAt == null && x.joinAt <= now && x.running.length < TYPE.cores)
      if (srv == null) break
      j.start = now
      srv.running.push({ job: j, endsAt: now + j.durationMs })
      srv.idleSince = null
    }
    const live = servers.filter(x => x.deletedAt == null)
    const still = jobs.filter(j => j.arrive <= now && j.start == null)
    const plan = planScaleUp({
      now, waiting: still.map(j => ({ cpus: 1, memoryMb: 512, openSince: j.arrive })),
      freeSlots: live.filter(x => x.joinAt <= now).reduce((a, x) => a + TYPE.cores - x.running.length, 0), type: TYPE,
      managed: live.length, pending: live.filter(x => x.joinAt > now).length, maxServers: s.maxServers, maxHourlyEur: 100,
      scaleUpAfterMs: s.scaleUpAfterMs, lastScaleUpAt, cooldownMs: s.cooldownMs
    })
    if (plan.create > 0) {
      lastScaleUpAt = now
      for (let i = 0; i < plan.create; i++) servers.push({ id: nextId++, createdAt: now, joinAt: now + BOOT_MS, deletedAt: null, running: [], idleSince: null })
    }
    const managed: ManagedServer[] = live.map(x => ({ id: x.id, name: String(x.id), createdAt: x.createdAt, joinedAt: x.joinAt <= now ? x.joinAt : null, idleSince: x.idleSince }))
    for (const { server } of planScaleDown({ now, servers: managed, idleBeforeDeleteMs: s.idleBeforeDeleteMs, joinDeadlineMs: 600_000, hourEndWindowMs: s.hourEndWindowMs })) {
      const srv = servers.find(x => x.id === server.id)!
      if (srv.running.length === 0) srv.deletedAt = now
    }
    if (now % 60_000 === 0) samples.push([now, still.length, live.length])
  }
  const waits = jobs.map(j => ((j.start ?? end) - j.arrive) / 1000).sort((a, b) => a - b)
  const pct = (p: number): number => Math.round(percentile(waits, p))
  const hours = servers.reduce((a, x) => a + Math.ceil(((x.deletedAt ?? end) - x.createdAt) / 3_600_000), 0)
  return { waitP50s: pct(50), waitP95s: pct(95), serverHours: hours, peakServers: Math.max(...samples.map(x => x[2])), samples }
}

const SETTINGS: Setting[] = [
  { name: 'default (30 s, idle 10 min, keep to hour end)', scaleUpAfterMs: 30_000, idleBeforeDeleteMs: 600_000, hourEndWindowMs: 300_000, cooldownMs: 60_000, maxServers: 50 },
  { name: 'eager (0 s, idle 2 min, no hour rule)', scaleUpAfterMs: 0, idleBeforeDeleteMs: 120_000, hourEndWindowMs: 0, cooldownMs: 10_000, maxServers: 50 },
  { name: 'frugal (5 min, idle 10 min, keep to hour end, max 10)', scaleUpAfterMs: 300_000, idleBeforeDeleteMs: 600_000, hourEndWindowMs: 300_000, cooldownMs: 300_000, maxServers: 10 }
]

function svg (runs: Array<{ trace: string, setting: string, samples: Array<[number, number, number]> }>): string {
  const w = 760
  const h = 180
  const charts = runs.filter(r => r.trace === 'bursty')
  const colors = ['#2f6fdf', '#c77d00', '#2b9a48']
  const maxT = Math.max(...charts.flatMap(c => c.samples.map(s => s[0])))
  const maxS = Math.max(1, ...charts.flatMap(c => c.samples.map(s => s[2])))
  const lines = charts.map((c, i) => `<polyline fill="none" stroke="${colors[i % 3]!}" stroke-width="1.5" points="${c.samples.map(([t, , n]) => `${(40 + t / maxT * (w - 60)).toFixed(1)},${(h - 25 - n / maxS * (h - 45)).toFixed(1)}`).join(' ')}"/>`)
  const legend = charts.map((c, i) => `<text x="${50 + i * 250}" y="14" fill="${colors[i % 3]!}" font-size="11">${c.setting.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</text>`)
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif">
<text x="4" y="${h / 2}" font-size="11" transform="rotate(-90 10,${h / 2})">servers</text>
<line x1="40" y1="${h - 25}" x2="${w - 20}" y2="${h - 25}" stroke="#999"/><line x1="40" y1="20" x2="40" y2="${h - 25}" stroke="#999"/>
<text x="40" y="${h - 8}" font-size="10">0 h</text><text x="${w - 50}" y="${h - 8}" font-size="10">${(maxT / 3_600_000).toFixed(1)} h</text><text x="22" y="24" font-size="10">${maxS}</text>
${lines.join('\n')}
${legend.join('\n')}
</svg>
`
}

function main (): void {
  const runs = []
  for (const kind of ['steady', 'bursty'] as const) {
    for (const s of SETTINGS) {
      const r = simulate(trace(kind), s)
      runs.push({ trace: kind, setting: s.name, jobs: trace(kind).length, waitP50s: r.waitP50s, waitP95s: r.waitP95s, serverHours: r.serverHours, peakServers: r.peakServers, samples: r.samples })
      process.stderr.write(`${kind.padEnd(6)} ${s.name.padEnd(55)} wait p50 ${r.waitP50s} s, p95 ${r.waitP95s} s, ${r.serverHours} server-hours, peak ${r.peakServers}\n`)
    }
  }
  const result = {
    benchmark: 'provisioning-sim', date: new Date().toISOString(), commit: commit(),
    config: { serverType: TYPE, scanMs: SCAN_MS, bootMs: BOOT_MS, billing: 'per started hour' },
    runs: runs.map(({ samples: _s, ...rest }) => rest)
  }
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true })
  const file = join(ROOT, 'bench', 'results', `provisioning-sim-${result.date.replace(/[:.]/g, '-')}.json`)
  writeFileSync(file, JSON.stringify(result, null, 2) + '\n')
  writeFileSync(join(ROOT, 'docs', 'provisioning-sim.svg'), svg(runs))
  writeFileSync(join(ROOT, 'docs', 'benchmarks.md'), renderBenchmarks(join(ROOT, 'bench', 'results')))
  process.stdout.write(`written to ${file} and docs/provisioning-sim.svg\n`)
}

main()
