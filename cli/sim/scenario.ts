/**
 * `rgrid sim` scenarios: YAML naming the mesh, the workload and a timeline of
 * faults. Strict: an unknown key, a negative rate or an event after the end is
 * an error that names the line and the reason. Durations are strings like
 * `500ms`, `30s`, `2m`.
 */
import { z } from 'zod'
import { LineCounter, parseDocument } from 'yaml'

const durationText = z.string().regex(/^\d+(\.\d+)?(ms|s|m)$/, 'must be a duration like 500ms, 30s or 2m')
export const toMs = (d: string): number => {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(d)!
  return Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm'])
}

const label = z.record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._/-]*$/), z.string().max(63))
const nodeGroup = z.strictObject({
  count: z.number().int().min(1).max(200),
  slots: z.number().int().min(1).max(64).default(2),
  cpus: z.number().positive().max(256).default(2),
  memoryMb: z.number().int().min(64).default(2048),
  labels: label.default({}),
  /** Share of received gossip this group ignores (fault injection). */
  gossipDrop: z.number().min(0).max(0.99).default(0)
})

const distribution = z.union([
  z.strictObject({ fixed: durationText }),
  z.strictObject({ uniform: z.tuple([durationText, durationText]) }),
  z.strictObject({ exponential: durationText })
])

const arrival = z.union([
  z.strictObject({ fixed: z.number().positive().max(10_000) }),
  z.strictObject({ poisson: z.number().positive().max(10_000) }),
  z.strictObject({ bursts: z.strictObject({ every: durationText, size: z.number().int().min(1).max(10_000) }) }),
  z.strictObject({ trace: z.array(z.strictObject({ at: durationText, duration: durationText.optional(), exitCode: z.number().int().min(0).max(255).optional() })).min(1).max(100_000) }),
  /** A CSV file (`at,duration,exitCode` with a header), relative to the scenario; read by loadTraceFiles. */
  z.strictObject({ traceFile: z.string().min(1).max(1024) })
])

const target = z.string().regex(/^node-\d+$/, 'must name a node as node-N')
const event = z.union([
  z.strictObject({ at: durationText, kill: target }),
  z.strictObject({ at: durationText, restart: target }),
  z.strictObject({ at: durationText, pause: target }),
  z.strictObject({ at: durationText, resume: target }),
  z.strictObject({ at: durationText, cut: target }),
  z.strictObject({ at: durationText, heal: target }),
  z.strictObject({ at: durationText, addNodes: z.number().int().min(1).max(100) }),
  /** The node's messages (session requests, gossip it handles) are delayed this much from now on; 0ms restores it. */
  z.strictObject({ at: durationText, slow: target, delay: durationText }),
  /** The node ignores this share of received gossip from now on. */
  z.strictObject({ at: durationText, dropGossip: target, rate: z.number().min(0).max(0.99) })
])

export const scenarioSchema = z.strictObject({
  name: z.string().min(1).max(100),
  /** How long jobs keep arriving. */
  duration: durationText,
  /** After the arrivals end, how long to wait for the last jobs. @default 60s */
  drain: durationText.default('60s'),
  seed: z.number().int().min(0).max(2 ** 31).default(1),
  mesh: z.strictObject({ nodes: z.array(nodeGroup).min(1).max(50) }),
  workload: z.strictObject({
    arrival,
    duration: distribution.default({ fixed: '100ms' }),
    /** Share of jobs that end with exit code 1. */
    failRate: z.number().min(0).max(1).default(0),
    cpus: z.number().positive().max(256).default(1),
    memoryMb: z.number().int().min(4).default(128),
    maxAttempts: z.number().int().min(1).max(10).default(3)
  }),
  events: z.array(event).max(1000).default([])
})
export type Scenario = z.output<typeof scenarioSchema>

/** A scenario that failed validation: where and why. */
export class ScenarioError extends Error {
  override readonly name = 'ScenarioError'
  constructor (readonly file: string, readonly line: number | null, readonly reason: string) {
    super(`${file}${line != null ? `:${line}` : ''}: ${reason}`)
  }
}

/** Parses and checks a scenario. @throws ScenarioError naming the line. */
export function parseScenario (text: string, file = 'scenario.yaml'): Scenario {
  const lines = new LineCounter()
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false })
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!
    throw new ScenarioError(file, e.linePos?.[0].line ?? null, `not valid YAML: ${e.message.split('\n')[0]!}`)
  }
  const lineOf = (path: Array<string | number>): number | null => {
    for (let n = path.length; n >= 0; n--) {
      const node = doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined
      if (node?.range != null) return lines.linePos(node.range[0]).line
    }
    return null
  }
  const parsed = scenarioSchema.safeParse(doc.toJS())
  if (!parsed.success) {
    // Prefer the deepest issue (a union reports one per branch).
    const issue = parsed.error.issues[0]!
    const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol')
    const keys = issue.code === 'unrecognized_keys' ? ` (${(issue as { keys: string[] }).keys.join(', ')})` : ''
    throw new ScenarioError(file, lineOf(issue.code === 'unrecognized_keys' ? [...path, (issue as { keys: string[] }).keys[0]!] : path), `${path.join('.') || 'scenario'}: ${issue.message}${keys}`)
  }
  const s = parsed.data
  const endMs = toMs(s.duration)
  const total = s.mesh.nodes.reduce((a, g) => a + g.count, 0) + s.events.reduce((a, e) => a + ('addNodes' in e ? e.addNodes : 0), 0)
  for (const [i, e] of s.events.entries()) {
    if (toMs(e.at) > endMs) throw new ScenarioError(file, lineOf(['events', i, 'at']), `events.${i}.at: ${e.at} is after the end of the scenario (${s.duration})`)
    const t = Object.values(e).find(v => typeof v === 'string' && v.startsWith('node-'))
    if (typeof t === 'string' && Number(t.slice(5)) >= total) throw new ScenarioError(file, lineOf(['events', i]), `events.${i}: ${t} does not exist (the mesh has node-0 to node-${total - 1})`)
  }
  return s
}

/**
 * Replaces a `traceFile` arrival with the trace it names (CSV: a header
 * `at,duration,exitCode`, then one job per line, e.g. `1.5s,800ms,0`), read
 * through `read` so this module does no I/O itself. @throws ScenarioError
 */
export async function loadTraceFiles (s: Scenario, file: string, read: (path: string) => Promise<string>): Promise<Scenario> {
  const a = s.workload.arrival
  if (!('traceFile' in a)) return s
  const text = await read(a.traceFile)
  const rows = text.split(/\r?\n/).filter(l => l.trim() !== '')
  const header = rows.shift()?.split(',').map(h => h.trim())
  if (header?.[0] !== 'at') throw new ScenarioError(a.traceFile, 1, 'a trace file starts with the header at,duration,exitCode')
  const trace = rows.map((line, i) => {
    const [at, duration, exitCode] = line.split(',').map(x => x.trim())
    const entry = { at, ...(duration != null && duration !== '' ? { duration } : {}), ...(exitCode != null && exitCode !== '' ? { exitCode: Number(exitCode) } : {}) }
    const ok = arrival.safeParse({ trace: [entry] })
    if (!ok.success) throw new ScenarioError(a.traceFile, i + 2, `${line}: ${ok.error.issues[0]?.message ?? 'invalid'}`)
    return entry as { at: string, duration?: string, exitCode?: number }
  })
  if (trace.length === 0) throw new ScenarioError(a.traceFile, null, 'the trace has no jobs')
  const endMs = toMs(s.duration)
  const late = trace.findIndex(t => toMs(t.at) > endMs)
  if (late >= 0) throw new ScenarioError(a.traceFile, late + 2, `${trace[late]!.at} is after the end of the scenario (${s.duration}) named in ${file}`)
  return { ...s, workload: { ...s.workload, arrival: { trace } } }
}
