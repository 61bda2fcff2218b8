/**
 * The jobs a scenario submits, generated from its seed alone: the same seed
 * gives the same arrivals, durations and exit codes, so two runs study the
 * same workload.
 */
import { toMs, type Scenario } from './scenario.js'

export interface PlannedJob { index: number, atMs: number, durationMs: number, exitCode: number }

/** mulberry32: small, fast and seedable. */
export function seeded (seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) | 0
    let t = Math.imul(s ^ (s >>> 15), 1 | s)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export function generateWorkload (s: Scenario, seed = s.seed): PlannedJob[] {
  const r = seeded(seed)
  const endMs = toMs(s.duration)
  const w = s.workload
  const duration = (): number => {
    const d = w.duration
    if ('fixed' in d) return toMs(d.fixed)
    if ('uniform' in d) { const [a, b] = d.uniform.map(toMs) as [number, number]; return Math.round(a + r() * (b - a)) }
    return Math.round(-Math.log(1 - r()) * toMs(d.exponential))
  }
  const times: Array<{ at: number, durationMs?: number, exitCode?: number }> = []
  const a = w.arrival
  if ('fixed' in a) for (let t = 0; t < endMs; t += 1000 / a.fixed) times.push({ at: t })
  else if ('poisson' in a) for (let t = -Math.log(1 - r()) * 1000 / a.poisson; t < endMs; t += -Math.log(1 - r()) * 1000 / a.poisson) times.push({ at: t })
  else if ('bursts' in a) for (let t = 0; t < endMs; t += toMs(a.bursts.every)) for (let i = 0; i < a.bursts.size; i++) times.push({ at: t })
  else if ('traceFile' in a) throw new Error('load the trace file first (loadTraceFiles)')
  else for (const e of a.trace) times.push({ at: toMs(e.at), ...(e.duration != null ? { durationMs: toMs(e.duration) } : {}), ...(e.exitCode != null ? { exitCode: e.exitCode } : {}) })
  return times.filter(t => t.at <= endMs).sort((x, y) => x.at - y.at).map((t, index) => ({
    index,
    atMs: Math.round(t.at),
    durationMs: t.durationMs ?? duration(),
    exitCode: t.exitCode ?? (r() < w.failRate ? 1 : 0)
  }))
}
