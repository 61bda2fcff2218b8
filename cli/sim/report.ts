/**
 * The run directory of a simulation: the resolved scenario, `summary.json`,
 * per-job timings (JSON and CSV), the fault timeline, SVG plots (jobs in each
 * state over time, wait-time CDF, per-node utilisation) and `report.html`
 * that shows them. Times are milliseconds since the first submission.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Scenario } from './scenario.js'
import { percentile } from '../../common/percentile.js'

export interface JobTiming {
  index: number
  id: string
  state: string
  node: string | null
  attempts: number
  submittedAt: number
  /** When its first announcement went out: in the submission's own tick. */
  announcedAt: number | null
  /** Times it was announced again before a node took it. */
  reannouncements: number
  awardedAt: number | null
  startedAt: number | null
  finishedAt: number | null
  /** More than 1 would be a duplicate result. */
  succeededAttempts: number
  durationMs: number
}

export interface FaultRecord { atMs: number, event: string, target: string }

const pct = (sorted: number[], p: number): number | null => sorted.length === 0 ? null : percentile(sorted, p)
const esc = (t: string): string => t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')

function polyline (points: Array<[number, number]>, w: number, h: number, maxX: number, maxY: number, color: string): string {
  return `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${points.map(([x, y]) => `${(40 + x / Math.max(1, maxX) * (w - 60)).toFixed(1)},${(h - 25 - y / Math.max(1, maxY) * (h - 45)).toFixed(1)}`).join(' ')}"/>`
}

function frame (w: number, h: number, xLabel: string, yLabel: string, maxX: string, maxY: string, body: string, legend: Array<[string, string]>): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="11">
<line x1="40" y1="${h - 25}" x2="${w - 20}" y2="${h - 25}" stroke="#999"/><line x1="40" y1="20" x2="40" y2="${h - 25}" stroke="#999"/>
<text x="40" y="${h - 8}">0</text><text x="${w - 60}" y="${h - 8}">${esc(maxX)} ${esc(xLabel)}</text><text x="4" y="24">${esc(maxY)}</text><text x="4" y="${h / 2}">${esc(yLabel)}</text>
${body}
${legend.map(([name, color], i) => `<text x="${60 + i * 120}" y="14" fill="${color}">${esc(name)}</text>`).join('\n')}
</svg>
`
}

export function writeReport (dir: string, s: Scenario, seed: number, jobs: JobTiming[], faults: FaultRecord[], mesh: { nodes: number, rssMiB: number[], gossipBytes?: number[] }): Record<string, unknown> {
  const final = new Set(['succeeded', 'failed', 'cancelled'])
  const waits = jobs.filter(j => j.startedAt != null).map(j => j.startedAt! - j.submittedAt).sort((a, b) => a - b)
  const turnarounds = jobs.filter(j => j.finishedAt != null).map(j => j.finishedAt! - j.submittedAt).sort((a, b) => a - b)
  const done = jobs.filter(j => j.finishedAt != null)
  const span = done.length === 0 ? 0 : (Math.max(...done.map(j => j.finishedAt!)) - Math.min(...jobs.map(j => j.submittedAt))) / 1000
  const summary = {
    scenario: s.name, seed, nodes: mesh.nodes,
    jobs: jobs.length,
    succeeded: jobs.filter(j => j.state === 'succeeded').length,
    failed: jobs.filter(j => j.state === 'failed').length,
    lost: jobs.filter(j => !final.has(j.state)).length,
    duplicates: jobs.filter(j => j.succeededAttempts > 1).length,
    reschedules: jobs.reduce((a, j) => a + Math.max(0, j.attempts - 1), 0),
    throughputPerSecond: span > 0 ? Math.round(jobs.filter(j => j.state === 'succeeded').length / span * 10) / 10 : 0,
    waitMs: { p50: pct(waits, 50), p95: pct(waits, 95), p99: pct(waits, 99) },
    turnaroundMs: { p50: pct(turnarounds, 50), p95: pct(turnarounds, 95), p99: pct(turnarounds, 99) },
    faults: faults.length,
    nodeMemoryMiB: mesh.rssMiB.length === 0 ? null : { mean: Math.round(mesh.rssMiB.reduce((a, b) => a + b, 0) / mesh.rssMiB.length), max: Math.max(...mesh.rssMiB) },
    /** Gossip payload bytes each node received and published (relays and protocol overhead not counted). */
    gossipBytesPerNode: (mesh.gossipBytes ?? []).length === 0 ? null : { mean: Math.round(mesh.gossipBytes!.reduce((a, b) => a + b, 0) / mesh.gossipBytes!.length), max: Math.max(...mesh.gossipBytes!) }
  }
  writeFileSync(join(dir, 'scenario.json'), JSON.stringify(s, null, 2) + '\n')
  writeFileSync(join(dir, 'summary.json'), JSON.stringify(summary, null, 2) + '\n')
  writeFileSync(join(dir, 'jobs.json'), JSON.stringify(jobs, null, 2) + '\n')
  writeFileSync(join(dir, 'faults.json'), JSON.stringify(faults, null, 2) + '\n')
  const cols: Array<keyof JobTiming> = ['index', 'id', 'state', 'node', 'attempts', 'submittedAt', 'announcedAt', 'reannouncements', 'awardedAt', 'startedAt', 'finishedAt', 'durationMs']
  writeFileSync(join(dir, 'jobs.csv'), [cols.join(','), ...jobs.map(j => cols.map(c => j[c] ?? '').join(','))].join('\n') + '\n')

  // Jobs in each state over time, sampled every 100 ms.
  const end = Math.max(1, ...jobs.map(j => j.finishedAt ?? j.submittedAt))
  const step = Math.max(100, Math.ceil(end / 400))
  const waiting: Array<[number, number]> = []
  const running: Array<[number, number]> = []
  const finished: Array<[number, number]> = []
  for (let t = 0; t <= end; t += step) {
    waiting.push([t, jobs.filter(j => j.submittedAt <= t && (j.startedAt == null || j.startedAt > t) && (j.finishedAt == null || j.finishedAt > t)).length])
    running.push([t, jobs.filter(j => j.startedAt != null && j.startedAt <= t && (j.finishedAt == null || j.finishedAt > t)).length])
    finished.push([t, jobs.filter(j => j.finishedAt != null && j.finishedAt <= t).length])
  }
  const maxY = Math.max(1, ...finished.map(p => p[1]), ...waiting.map(p => p[1]))
  const faultMarks = faults.map(f => `<line x1="${(40 + f.atMs / end * 700).toFixed(1)}" y1="20" x2="${(40 + f.atMs / end * 700).toFixed(1)}" y2="195" stroke="#c00" stroke-dasharray="3,3"><title>${esc(`${f.event} ${f.target}`)}</title></line>`).join('')
  writeFileSync(join(dir, 'states.svg'), frame(760, 220, 's', 'jobs', (end / 1000).toFixed(1), String(maxY),
    polyline(waiting, 760, 220, end, maxY, '#c77d00') + polyline(running, 760, 220, end, maxY, '#2f6fdf') + polyline(finished, 760, 220, end, maxY, '#2b9a48') + faultMarks,
    [['waiting', '#c77d00'], ['running', '#2f6fdf'], ['finished', '#2b9a48'], ['fault', '#c00']]))
  // Wait-time CDF.
  const maxWait = Math.max(1, waits.at(-1) ?? 1)
  writeFileSync(join(dir, 'wait-cdf.svg'), frame(760, 220, 'ms wait', 'share', String(maxWait), '1',
    polyline(waits.map((w, i) => [w, (i + 1) / waits.length * 100]), 760, 220, maxWait, 100, '#2f6fdf'), [['wait before start (CDF)', '#2f6fdf']]))
  // Per-node utilisation: busy time / (span × slots) is approximated as busy time / span.
  const byNode = new Map<string, number>()
  for (const j of jobs) if (j.node != null && j.startedAt != null && j.finishedAt != null) byNode.set(j.node, (byNode.get(j.node) ?? 0) + (j.finishedAt - j.startedAt))
  const nodes = [...byNode.entries()].sort((a, b) => a[0].localeCompare(b[0]))
  const barW = Math.max(4, Math.floor(700 / Math.max(1, nodes.length)) - 2)
  const maxBusy = Math.max(1, ...nodes.map(n => n[1]))
  writeFileSync(join(dir, 'utilisation.svg'), frame(760, 220, 'nodes', 'busy s', String(nodes.length), (maxBusy / 1000).toFixed(1),
    nodes.map(([peer, busy], i) => `<rect x="${42 + i * (barW + 2)}" y="${(195 - busy / maxBusy * 175).toFixed(1)}" width="${barW}" height="${(busy / maxBusy * 175).toFixed(1)}" fill="#2f6fdf"><title>${esc(`…${peer.slice(-8)}: ${(busy / 1000).toFixed(1)} s busy`)}</title></rect>`).join(''),
    [['job-seconds run per node', '#2f6fdf']]))
  writeFileSync(join(dir, 'report.html'), `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(s.name)}</title>
<style>body{font:14px system-ui,sans-serif;margin:20px;max-width:820px}td,th{padding:2px 8px;text-align:left}code{font-size:12px}</style></head><body>
<h1>${esc(s.name)}</h1><p>seed ${seed}, ${mesh.nodes} nodes, ${jobs.length} jobs</p>
<table>${Object.entries(summary).filter(([, v]) => typeof v !== 'object' || v === null).map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(String(v))}</td></tr>`).join('')}
<tr><th>wait p50 / p95 / p99 (ms)</th><td>${summary.waitMs.p50} / ${summary.waitMs.p95} / ${summary.waitMs.p99}</td></tr>
<tr><th>turnaround p50 / p95 / p99 (ms)</th><td>${summary.turnaroundMs.p50} / ${summary.turnaroundMs.p95} / ${summary.turnaroundMs.p99}</td></tr></table>
<h2>Jobs in each state</h2><img src="states.svg" alt="jobs in each state over time">
<h2>Wait before start</h2><img src="wait-cdf.svg" alt="wait time CDF">
<h2>Work per node</h2><img src="utilisation.svg" alt="job-seconds per node">
<h2>Faults</h2><ul>${faults.map(f => `<li>${(f.atMs / 1000).toFixed(1)} s: ${esc(f.event)} <code>${esc(f.target)}</code></li>`).join('') || '<li>none</li>'}</ul>
<p>Per-job timings: <a href="jobs.csv">jobs.csv</a>, <a href="jobs.json">jobs.json</a>; the coordinator's event log of every job: <a href="events.json">events.json</a>; <a href="summary.json">summary.json</a>.</p>
</body></html>
`)
  return summary
}
