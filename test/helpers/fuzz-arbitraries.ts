/**
 * fast-check arbitraries for the fuzz suites (test/unit/fuzz-*.test.ts):
 * generators of VALID wire messages of every type, mutations of them
 * (deleted, wrong-typed, extra and prototype-polluting fields, huge strings,
 * edge numbers, arrays past their limits), deeply nested JSON, and raw bytes.
 */
import fc from 'fast-check'
import { LIMITS } from '../../protocol/limits.js'

type Json = unknown
type Obj = Record<string, unknown>

// ---------------------------------------------------------------- raw JSON tokens

/** A piece of JSON text spliced verbatim into a serialized message (numbers JSON.stringify cannot write, deep nesting). */
export class RawJson {
  constructor (readonly text: string) {}
}

/** JSON.stringify, but {@link RawJson} values are written verbatim. */
export function toJsonText (value: unknown): string {
  const raws: string[] = []
  const text = JSON.stringify(value, (_k, v: unknown) => {
    if (v instanceof RawJson) { raws.push(v.text); return `\u0001RAW${raws.length - 1}\u0001` }
    if (typeof v === 'bigint') return v.toString()
    return v
  }) ?? 'null'
  if (raws.length === 0) return text
  return text.replace(/"\\u0001RAW(\d+)\\u0001"/g, (_m, i: string) => raws[Number(i)] ?? 'null')
}

/** The JS value of a message holding {@link RawJson} pieces, as JSON.parse would give it (what the HTTP layer and the frame decoders see). */
export function parsedJs (value: unknown): unknown {
  return JSON.parse(toJsonText(value))
}

const utf8 = new TextEncoder()
export const bytesOf = (text: string): Uint8Array => utf8.encode(text)

// ---------------------------------------------------------------- valid field values

const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
export const jobId = fc.stringMatching(JOB_ID)
export const token = fc.stringMatching(/^[0-9a-f]{32}$/)
export const sha256 = fc.stringMatching(/^[0-9a-f]{64}$/)
export const peerId = fc.stringMatching(/^[1-9A-HJ-NP-Za-km-z]{16,60}$/)
export const attempt = fc.integer({ min: 1, max: 1000 })
export const rid = fc.oneof(fc.nat({ max: 1000 }), fc.maxSafeNat())
const MAX_EPOCH = 8.64e15
export const epochMs = fc.oneof(fc.constantFrom(0, MAX_EPOCH, 1_700_000_000_000), fc.nat(), fc.maxSafeNat().map(n => n % (MAX_EPOCH + 1)))
/** Any text without NUL, sometimes beyond ASCII. */
const text = (maxLength: number, minLength = 0): fc.Arbitrary<string> =>
  fc.oneof(fc.string({ minLength, maxLength: Math.min(maxLength, 40) }), fc.string({ unit: 'binary', minLength, maxLength: Math.min(maxLength, 20) }))
    .filter(s => !s.includes('\u0000') && s.length >= minLength && s.length <= maxLength)
const shortText = text(256, 1)
const labelKey = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._/-]{0,20}$/)
const labelValue = fc.string({ maxLength: 63 })
export const labels = fc.dictionary(labelKey, labelValue, { maxKeys: 4 })
const argText = text(LIMITS.argChars)
const seg = fc.stringMatching(/^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,12}$/)
export const workPath = fc.array(seg, { minLength: 1, maxLength: 4 }).map(s => s.join('/'))
const patternSeg = fc.oneof(seg, fc.constantFrom('*', '**', '*.csv', 'a?c', '**/x'))
const outputPattern = fc.array(patternSeg, { minLength: 1, maxLength: 4 }).map(s => s.join('/')).filter(p => !p.split('/').some(s => s === '' || s === '.' || s === '..'))
export const httpUrl = fc.tuple(fc.constantFrom('http', 'https'), fc.oneof(fc.domain(), fc.constantFrom('127.0.0.1', 'localhost', '[::1]')),
  fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }), fc.array(seg, { maxLength: 4 }), fc.option(fc.stringMatching(/^[a-z]{1,5}=[a-z0-9]{0,10}$/), { nil: undefined }))
  .map(([s, host, port, path, q]) => `${s}://${host}${port != null ? `:${port}` : ''}/${path.join('/')}${q != null ? `?${q}` : ''}`)
const cpus = (max: number): fc.Arbitrary<number> => fc.oneof(fc.integer({ min: 1, max }), fc.double({ min: 0.001, max, noNaN: true, noDefaultInfinity: true }), fc.constantFrom(0.5, max))
const envKey = (prefix: string): fc.Arbitrary<string> => fc.stringMatching(/^[A-Z0-9_]{0,12}$/).map(s => prefix + s)

// ---------------------------------------------------------------- valid messages

const jobInput = fc.oneof(
  fc.record({ path: workPath, url: httpUrl, sha256 }, { requiredKeys: ['path', 'url'] }),
  fc.tuple(workPath, sha256, fc.boolean()).map(([path, h, withSha]) => withSha ? { path, object: `sha256:${h}`, sha256: h } : { path, object: `sha256:${h}` })
)

/** A job spec as a submitter writes it (defaults may be left out). */
export const jobSpec: fc.Arbitrary<Obj> = fc.record({
  image: fc.stringMatching(/^[a-z0-9][a-z0-9./:@_-]{0,40}$/),
  command: fc.tuple(text(64, 1), fc.array(argText, { maxLength: 5 })).map(([c, rest]) => [c, ...rest]),
  env: fc.dictionary(envKey('E_'), argText, { maxKeys: 4 }),
  secretEnv: fc.dictionary(envKey('S_'), argText, { maxKeys: 3 }),
  network: fc.boolean(),
  resources: fc.record({ cpus: cpus(256), memoryMb: fc.integer({ min: 4, max: 1024 * 1024 }), diskMb: fc.integer({ min: 1, max: 1024 * 1024 }) }, { requiredKeys: [] }),
  timeoutSeconds: fc.integer({ min: 1, max: 7 * 24 * 3600 }),
  labels,
  maxAttempts: fc.integer({ min: 1, max: 10 }),
  inputs: fc.uniqueArray(jobInput, { selector: i => i.path, maxLength: 3 }),
  batch: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/),
  outputs: fc.array(outputPattern.map(path => ({ path })), { maxLength: 3 })
}, { requiredKeys: ['command'] })

/** A job spec a coordinator without an object store accepts: URL inputs only, no outputs. */
export const jobSpecWithoutObjects: fc.Arbitrary<Obj> = jobSpec.map(s => {
  const out: Obj = { ...s }
  delete out.outputs
  if (Array.isArray(s.inputs)) out.inputs = (s.inputs as Obj[]).filter(i => i.url != null)
  return out
})

export const announcedJob = fc.record({
  jobId, attempt,
  image: text(512, 1),
  resources: fc.record({ cpus: cpus(256), memoryMb: fc.integer({ min: 4, max: 1024 * 1024 }), diskMb: fc.integer({ min: 1, max: 1024 * 1024 }) }, { requiredKeys: ['cpus', 'memoryMb'] }),
  labels,
  timeoutSeconds: fc.integer({ min: 1, max: 7 * 24 * 3600 }),
  network: fc.boolean()
}, { requiredKeys: ['jobId', 'attempt', 'resources', 'labels', 'timeoutSeconds'] })

const runningRef = fc.record({ jobId, attempt })
const runningWithToken = fc.record({ jobId, attempt, token })
const imagePatterns = fc.array(text(512, 1), { maxLength: 3 })

export const capacity = fc.record({
  slots: fc.integer({ min: 0, max: 1024 }),
  freeSlots: fc.integer({ min: 0, max: 1024 }),
  cpus: cpus(1024),
  memoryMb: fc.integer({ min: 1, max: 64 * 1024 * 1024 }),
  labels,
  runtime: fc.constantFrom('docker', 'process', 'sim'),
  version: shortText,
  network: fc.boolean(),
  images: fc.record({ allow: imagePatterns, deny: imagePatterns }, { requiredKeys: [] })
}, { requiredKeys: ['slots', 'freeSlots', 'cpus', 'memoryMb', 'labels', 'runtime', 'version'] })

export const announcement: fc.Arbitrary<Obj> = fc.record({
  v: fc.constant(1), type: fc.constant('announce'), sentAt: epochMs,
  jobs: fc.array(announcedJob, { maxLength: 4 }),
  taken: fc.array(runningRef, { maxLength: 4 })
}, { requiredKeys: ['v', 'type', 'sentAt', 'jobs'] }).filter(a => (a.jobs.length + (a.taken?.length ?? 0)) > 0)

export const heartbeat: fc.Arbitrary<Obj> = fc.oneof(
  fc.record({ v: fc.constant(1), type: fc.constant('node-heartbeat'), seq: fc.maxSafeNat(), sentAt: epochMs, capacity, running: fc.array(runningRef, { maxLength: 4 }) }),
  fc.record({ v: fc.constant(1), type: fc.constant('coordinator-beacon'), seq: fc.maxSafeNat(), sentAt: epochMs, addrs: fc.array(text(512, 1), { maxLength: 4 }) })
)

const artifact = fc.record({ path: workPath, size: fc.maxSafeNat(), sha256, contentType: text(256, 1) })

export const nodeFrame: fc.Arbitrary<Obj> = fc.oneof(
  fc.record({
    type: fc.constant('hello'), rid, capacity, running: fc.array(runningWithToken, { maxLength: 3 }),
    join: fc.record({ id: fc.stringMatching(/^[A-Za-z0-9_-]{8,64}$/), secret: text(128, 1) }),
    listenAddrs: fc.array(text(256, 1), { maxLength: 4 })
  }, { requiredKeys: ['type', 'rid', 'capacity', 'running'] }),
  fc.record({ type: fc.constant('bid'), rid, jobId, attempt, freeSlots: fc.integer({ min: 0, max: 1024 }), slots: fc.integer({ min: 1, max: 1024 }) }),
  fc.record({ type: fc.constant('started'), rid, jobId, attempt, token, startedAt: epochMs }),
  fc.record({
    type: fc.constant('result'), rid, jobId, attempt, token,
    outcome: fc.constantFrom('succeeded', 'failed', 'cancelled'),
    exitCode: fc.option(fc.integer({ min: -1, max: 1024 }), { nil: null }),
    stdout: fc.string({ maxLength: 100 }), stderr: fc.string({ maxLength: 100 }),
    stdoutTruncated: fc.boolean(), stderrTruncated: fc.boolean(),
    startedAt: fc.option(epochMs, { nil: null }), finishedAt: epochMs,
    error: fc.option(fc.record({ code: shortText, message: fc.string({ maxLength: 100 }), retryable: fc.boolean() }), { nil: null }),
    artifacts: fc.array(artifact, { maxLength: 3 })
  }, { requiredKeys: ['type', 'rid', 'jobId', 'attempt', 'token', 'outcome', 'exitCode', 'stdout', 'stderr', 'stdoutTruncated', 'stderrTruncated', 'startedAt', 'finishedAt', 'error'] }),
  fc.record({ type: fc.constant('pull'), rid, max: fc.integer({ min: 1, max: LIMITS.pullJobs }) }),
  fc.record({ type: fc.constant('renew'), rid, capacity, running: fc.array(runningWithToken, { maxLength: 3 }) }),
  fc.record({ type: fc.constant('outputs'), rid, jobId, attempt, token, files: fc.array(artifact, { minLength: 1, maxLength: 3 }) }),
  fc.record({
    type: fc.constant('log'), rid, jobId, attempt, token,
    lines: fc.array(fc.record({ stream: fc.constantFrom('stdout', 'stderr'), at: epochMs, text: fc.string({ maxLength: 80 }) }), { minLength: 1, maxLength: 4 })
  })
)
export const NODE_FRAME_TYPES = ['hello', 'bid', 'started', 'result', 'pull', 'renew', 'outputs', 'log']

const inputSource = fc.record({ path: workPath, url: httpUrl, sha256: fc.option(sha256, { nil: null }), size: fc.option(fc.maxSafeNat(), { nil: null }) })

export const coordinatorFrame: fc.Arbitrary<Obj> = fc.oneof(
  fc.record({ type: fc.constant('welcome'), rid, open: fc.array(announcedJob, { maxLength: 3 }), revoked: fc.array(runningRef, { maxLength: 3 }) }),
  fc.record({
    type: fc.constant('award'), rid, jobId, attempt, token, spec: jobSpec,
    inputs: fc.array(inputSource, { maxLength: 3 }), maxFileBytes: fc.maxSafeNat(), maxJobBytes: fc.maxSafeNat()
  }, { requiredKeys: ['type', 'rid', 'jobId', 'attempt', 'token', 'spec'] }),
  fc.record({ type: fc.constant('refuse'), rid, jobId, attempt, reason: fc.constantFrom('taken', 'not-open', 'cancelled', 'unknown-job', 'requirements', 'overloaded') }),
  fc.record({ type: fc.constant('ack'), rid }),
  fc.record({ type: fc.constant('stale'), rid, jobId, attempt, reason: fc.string({ maxLength: 512 }) }),
  fc.record({ type: fc.constant('renewed'), rid, revoked: fc.array(runningRef, { maxLength: 3 }) }),
  fc.record({ type: fc.constant('open'), rid, jobs: fc.array(announcedJob, { maxLength: 3 }) }),
  fc.record({ type: fc.constant('error'), rid: fc.option(rid, { nil: null }), code: shortText, message: fc.string({ maxLength: 200 }) }),
  fc.record({ type: fc.constant('cancel'), jobId, attempt, token, reason: fc.string({ maxLength: 512 }) }),
  fc.record({ type: fc.constant('probe') }),
  fc.record({ type: fc.constant('uploads'), rid, files: fc.array(fc.record({ path: workPath, url: httpUrl }), { maxLength: 3 }) }),
  fc.record({ type: fc.constant('drain'), reason: fc.string({ maxLength: 512 }) }),
  fc.record({ type: fc.constant('reachability'), reachability: fc.constantFrom('public', 'outbound-only', 'unknown'), dialable: fc.array(fc.string({ maxLength: 60 }), { maxLength: 3 }) })
)
export const COORDINATOR_FRAME_TYPES = ['welcome', 'award', 'refuse', 'ack', 'stale', 'renewed', 'open', 'error', 'cancel', 'probe', 'uploads', 'drain', 'reachability']

/** The JSON payload of a join token (common/join-token.ts). */
export const joinTokenPayload: fc.Arbitrary<Obj> = fc.record({
  i: fc.stringMatching(/^[A-Za-z0-9_-]{8,64}$/),
  s: fc.stringMatching(/^[A-Za-z0-9_-]{43}$/),
  c: fc.array(peerId, { minLength: 1, maxLength: 3 }),
  a: fc.array(text(512, 1), { maxLength: 3 }),
  e: fc.option(fc.maxSafeNat(), { nil: null }),
  n: fc.stringMatching(/^[A-Za-z0-9_-]{43}$/)
})

// ---------------------------------------------------------------- hostile values

/** Numbers at the edges of JSON and of our ranges. */
export const EDGE_NUMBERS = [
  1e308, -1e308, -0, 2 ** 53 + 1, 2 ** 53, -(2 ** 53) - 1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, 0, -1, 1, 0.5, -0.5, 1e-300, 5e-324,
  MAX_EPOCH, MAX_EPOCH + 1, 63, 64, 255, 256, 257, 1000, 1001, 1023, 1024, 1025, 4096, 4097, 7 * 24 * 3600 + 1, 1024 * 1024 + 1, 64 * 1024 * 1024 + 1, 2 ** 31, 2 ** 32
]
/** Number tokens only raw JSON text can carry (1e999 parses to Infinity). */
export const RAW_NUMBERS = ['1e999', '-1e999', '1E400', '-0.0', '0e0', '1.0', '1.00000000000000000001', '100000000000000000000000000000', '1e-999', '-0', '4.0e0']
const EDGE_JS = [NaN, Infinity, -Infinity, undefined]

/** Lengths around every string limit in the schemas. */
const STRING_LENGTHS = [0, 1, 42, 43, 44, 63, 64, 65, 128, 129, 256, 257, 512, 513, 1024, 1025, 4096, 4097, 8192, 8193, LIMITS.outputBytes * 4, LIMITS.outputBytes * 4 + 1]
/** Lengths around every array limit in the schemas. */
const ARRAY_LENGTHS = [0, 2, 16, 17, 32, 33, 64, 65, 128, 129, 256, 257, 1000, 1001, 1024, 1025]
/** Keys that could reach Object.prototype or shadow its members. */
export const NASTY_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__', '', ' ', 'type', 'v', 'rid', 'extra']
/** Values that would pollute Object.prototype if merged naively (JSON.parse makes `__proto__` an own key). */
const POLLUTERS: unknown[] = [
  { polluted: true }, { prototype: { polluted: true } }, { constructor: { prototype: { polluted: true } } },
  JSON.parse('{"__proto__":{"polluted":true}}'), JSON.parse('{"constructor":{"prototype":{"polluted":true}},"__proto__":{"polluted":true}}')
]

/** Nesting `depth` levels of `[`, `{"a":` or a mix, as raw JSON text. */
export function deepText (depth: number, kind: 'array' | 'object' | 'mixed', inner = '1'): string {
  if (kind === 'array') return '['.repeat(depth) + inner + ']'.repeat(depth)
  if (kind === 'object') return '{"a":'.repeat(depth) + inner + '}'.repeat(depth)
  let open = ''
  let close = ''
  for (let i = 0; i < depth; i++) {
    if (i % 2 === 0) { open += '['; close = ']' + close } else { open += '{"__proto__":'; close = '}' + close }
  }
  return open + inner + close
}
export const deepRaw = fc.tuple(fc.oneof(fc.integer({ min: 1, max: 100 }), fc.integer({ min: 100, max: 12_000 }), fc.constant(10_000)), fc.constantFrom('array' as const, 'object' as const, 'mixed' as const))
  .map(([d, k]) => new RawJson(deepText(d, k)))

/**
 * A replacement value of a wrong (or right) type. `js` adds values only a JS
 * caller can pass (NaN, undefined, BigInt, Map, sparse arrays, null-prototype objects).
 */
function replacement (js: boolean): fc.Arbitrary<unknown> {
  const arbs: Array<fc.WeightedArbitrary<unknown>> = [
    { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 4 },
    { arbitrary: fc.constantFrom(...EDGE_NUMBERS), weight: 3 },
    { arbitrary: fc.constantFrom(null, true, false, '', [], {}, '\u0000', '\ud800', 'x'), weight: 2 },
    { arbitrary: fc.constantFrom(...POLLUTERS), weight: 1 },
    { arbitrary: js ? fc.constantFrom(...EDGE_JS) : fc.constantFrom(...RAW_NUMBERS).map(t => new RawJson(t)), weight: 2 }
  ]
  if (js) {
    arbs.push({
      arbitrary: fc.anything({ maxDepth: 3, withBigInt: true, withBoxedValues: true, withDate: true, withMap: true, withSet: true, withNullPrototype: true, withObjectString: true, withSparseArray: true, withTypedArray: true, withUnicodeString: true }),
      weight: 3
    })
  }
  return fc.oneof(...arbs)
}

// ---------------------------------------------------------------- mutations

export type Mutation =
  | { op: 'delete', at: number }
  | { op: 'replace', at: number, value: unknown }
  | { op: 'addKey', at: number, key: string, value: unknown }
  | { op: 'hugeString', at: number, length: number, char: string }
  | { op: 'edgeNumber', at: number, value: unknown }
  | { op: 'lengthen', at: number, length: number }
  | { op: 'manyKeys', at: number, count: number }
  | { op: 'deep', at: number, raw: RawJson }
  | { op: 'swapType', value: string }

function mutation (js: boolean, typeNames: string[]): fc.Arbitrary<Mutation> {
  const at = fc.nat()
  const swap: Array<fc.WeightedArbitrary<Mutation>> = typeNames.length === 0
    ? []
    : [{ arbitrary: fc.record({ op: fc.constant('swapType' as const), value: fc.oneof(fc.constantFrom(...typeNames, 'TYPE', 'hello ', ''), fc.string({ maxLength: 8 })) }), weight: 1 }]
  return fc.oneof<Array<fc.WeightedArbitrary<Mutation>>>(
    { arbitrary: fc.record({ op: fc.constant('delete' as const), at }), weight: 4 },
    { arbitrary: fc.record({ op: fc.constant('replace' as const), at, value: replacement(js) }), weight: 6 },
    { arbitrary: fc.record({ op: fc.constant('addKey' as const), at, key: fc.oneof(fc.constantFrom(...NASTY_KEYS), fc.string({ maxLength: 10 })), value: replacement(js) }), weight: 3 },
    {
      arbitrary: fc.record({
        op: fc.constant('hugeString' as const), at,
        length: fc.oneof(fc.constantFrom(...STRING_LENGTHS), fc.nat({ max: 20_000 })),
        char: fc.constantFrom('x', '€', '\u0000', '\ud800', 'a/', '../', '\\', ' ')
      }),
      weight: 2
    },
    { arbitrary: fc.record({ op: fc.constant('edgeNumber' as const), at, value: js ? fc.constantFrom(...EDGE_NUMBERS, ...EDGE_JS) : fc.oneof(fc.constantFrom(...EDGE_NUMBERS), fc.constantFrom(...RAW_NUMBERS).map(t => new RawJson(t))) }), weight: 3 },
    { arbitrary: fc.record({ op: fc.constant('lengthen' as const), at, length: fc.constantFrom(...ARRAY_LENGTHS) }), weight: 2 },
    { arbitrary: fc.record({ op: fc.constant('manyKeys' as const), at, count: fc.constantFrom(31, 32, 33, 64, 127, 128, 129) }), weight: 1 },
    { arbitrary: fc.record({ op: fc.constant('deep' as const), at, raw: deepRaw }), weight: 1 },
    ...swap
  )
}

/** Sets an own, enumerable property, even `__proto__`, as JSON.parse would. */
function put (obj: Obj | unknown[], key: string | number, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true })
}

/** Deep copy of a JSON-like tree that keeps own `__proto__` keys as data. Other values are shared. */
export function cloneTree<T> (v: T): T {
  if (Array.isArray(v)) return v.map(cloneTree) as T
  if (v != null && typeof v === 'object' && !(v instanceof RawJson) && (Object.getPrototypeOf(v) === Object.prototype)) {
    const out: Obj = {}
    for (const k of Object.keys(v)) put(out, k, cloneTree((v as Obj)[k]))
    return out as T
  }
  return v
}

interface Slot { parent: Obj | unknown[], key: string | number, value: unknown }

function slots (root: unknown): Slot[] {
  const out: Slot[] = []
  const walk = (v: unknown, depth: number): void => {
    if (depth > 8) return
    if (Array.isArray(v)) {
      v.forEach((x, i) => { out.push({ parent: v, key: i, value: x }); walk(x, depth + 1) })
    } else if (v != null && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
      for (const k of Object.keys(v)) { out.push({ parent: v as Obj, key: k, value: (v as Obj)[k] }); walk((v as Obj)[k], depth + 1) }
    }
  }
  walk(root, 0)
  return out
}

const isPlainObject = (v: unknown): v is Obj => v != null && typeof v === 'object' && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype

/** Applies mutations to a copy of a message. */
export function applyMutations (message: unknown, mutations: Mutation[]): unknown {
  let root: unknown = cloneTree(message)
  for (const m of mutations) {
    const all = slots(root)
    const pick = <S>(list: S[], at: number): S | undefined => list.length === 0 ? undefined : list[at % list.length]
    switch (m.op) {
      case 'delete': {
        const s = pick(all, m.at)
        if (s == null) break
        if (Array.isArray(s.parent)) s.parent.splice(s.key as number, 1)
        else delete s.parent[s.key as string]
        break
      }
      case 'replace': case 'edgeNumber': {
        const targets = m.op === 'edgeNumber' ? all.filter(s => typeof s.value === 'number') : all
        const s = pick(targets.length > 0 ? targets : all, m.at)
        // Copied: constants and fast-check's values must not be changed by later mutations.
        if (s == null) root = cloneTree(m.value)
        else put(s.parent, s.key, cloneTree(m.value))
        break
      }
      case 'deep': {
        const s = pick(all, m.at)
        if (s == null) root = m.raw
        else put(s.parent, s.key, m.raw)
        break
      }
      case 'addKey': {
        const objects = [root, ...all.map(s => s.value)].filter(isPlainObject)
        const o = pick(objects, m.at)
        if (o != null) put(o, m.key, cloneTree(m.value))
        break
      }
      case 'manyKeys': {
        const objects = [root, ...all.map(s => s.value)].filter(isPlainObject)
        const o = pick(objects, m.at)
        if (o != null) for (let i = 0; i < m.count; i++) put(o, `K${i}`, 'v')
        break
      }
      case 'hugeString': {
        const strings = all.filter(s => typeof s.value === 'string')
        const s = pick(strings.length > 0 ? strings : all, m.at)
        const huge = m.char.repeat(Math.ceil(m.length / m.char.length)).slice(0, m.length)
        if (s == null) root = huge
        else put(s.parent, s.key, huge)
        break
      }
      case 'lengthen': {
        const arrays = all.map(s => s.value).filter((v): v is unknown[] => Array.isArray(v))
        const a = pick(Array.isArray(root) ? [root, ...arrays] : arrays, m.at)
        if (a == null) break
        const fill = a.length > 0 ? a.slice() : ['x']
        // Copies of copies of a huge string (two lengthens after a hugeString) would outgrow what
        // JSON.stringify can write (~512 MB): keep one message within a budget far past every limit.
        const each = Math.max(1, ...fill.map(x => sizeWithin(x, LENGTHEN_BUDGET)))
        const target = Math.min(m.length, Math.max(a.length, Math.floor(LENGTHEN_BUDGET / each)))
        while (a.length < target) a.push(cloneTree(fill[a.length % fill.length]))
        if (a.length > m.length) a.length = m.length
        break
      }
      case 'swapType': {
        if (isPlainObject(root)) put(root, 'type', m.value)
        break
      }
    }
  }
  return root
}

/** Bytes a lengthened array may reach (64 MiB): far beyond every decoder's limit, far below what V8 can stringify. */
const LENGTHEN_BUDGET = 64 * 1024 * 1024

/** Roughly how many bytes `v` serializes to, counting no further than `budget`. */
function sizeWithin (v: unknown, budget: number): number {
  let total = 0
  const walk = (x: unknown): void => {
    if (total > budget) return
    if (typeof x === 'string') { total += x.length + 2; return }
    if (Array.isArray(x)) { total += 2; for (const y of x) { walk(y); total += 1; if (total > budget) return } return }
    if (x != null && typeof x === 'object') { total += 2; for (const k of Object.keys(x)) { total += k.length + 4; walk((x as Record<string, unknown>)[k]); if (total > budget) return } return }
    total += 8
  }
  walk(v)
  return total
}

/** A valid message with one to four mutations. `js`: replacements may be values only a JS caller can pass. */
export function mutated (valid: fc.Arbitrary<unknown>, js: boolean, typeNames: string[] = []): fc.Arbitrary<unknown> {
  return fc.tuple(valid, fc.array(mutation(js, typeNames), { minLength: 1, maxLength: 4 })).map(([v, ms]) => applyMutations(v, ms))
}

// ---------------------------------------------------------------- byte inputs

export interface ByteCase { kind: string, bytes: Uint8Array, /** For 'limit' cases: bytes beyond the limit (<= 0: fits). */ over?: number }

const JSON_ALPHABET = [...'{}[]":,0123456789.-+eE tfnrual\\/', '\\u', '\\ud800', 'true', 'null', '"type"', '"__proto__"']

/** Invalid UTF-8 sequences (lone continuation, truncated, overlong, surrogate, beyond U+10FFFF). */
const BAD_UTF8 = [[0xff], [0xc3], [0x80], [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82]]

function byteEdit (bytes: Uint8Array, op: number, at: number, value: number): Uint8Array {
  const i = bytes.length === 0 ? 0 : at % bytes.length
  switch (op) {
    case 0: { const out = Uint8Array.from(bytes); if (out.length > 0) out[i] = value; return out }
    case 1: return bytes.slice(0, i)
    case 2: { const bad = BAD_UTF8[value % BAD_UTF8.length]!; return Uint8Array.from([...bytes.subarray(0, i), ...bad, ...bytes.subarray(i)]) }
    case 3: return Uint8Array.from([0xef, 0xbb, 0xbf, ...bytes])
    case 4: return Uint8Array.from([...bytes.subarray(0, i), ...bytes.subarray(i + 1)])
    default: return Uint8Array.from([...bytes, ...bytes.subarray(0, i)])
  }
}

/**
 * Every kind of hostile input for a bytes decoder, tagged with its kind:
 * random bytes and text, valid messages (unchanged, mutated, byte-edited),
 * deep nesting, and inputs right at and past the size limit.
 */
export function byteCases (valid: fc.Arbitrary<Obj>, limit: number, typeNames: string[]): fc.Arbitrary<ByteCase> {
  const enc = (kind: string) => (v: unknown): ByteCase => ({ kind, bytes: bytesOf(toJsonText(v)) })
  return fc.oneof(
    { arbitrary: fc.uint8Array({ maxLength: 4096 }).map(bytes => ({ kind: 'random-bytes', bytes })), weight: 1 },
    { arbitrary: fc.string({ unit: 'binary', maxLength: 1000 }).map(s => ({ kind: 'random-text', bytes: bytesOf(s) })), weight: 1 },
    { arbitrary: fc.array(fc.constantFrom(...JSON_ALPHABET), { maxLength: 200 }).map(a => ({ kind: 'json-alphabet', bytes: bytesOf(a.join('')) })), weight: 1 },
    { arbitrary: fc.jsonValue().map(enc('json-value')), weight: 1 },
    { arbitrary: valid.map(enc('valid')), weight: 2 },
    { arbitrary: mutated(valid, false, typeNames).map(enc('mutated')), weight: 7 },
    {
      arbitrary: fc.tuple(valid, fc.array(fc.tuple(fc.nat({ max: 5 }), fc.nat(), fc.nat({ max: 255 })), { minLength: 1, maxLength: 3 }))
        .map(([v, edits]) => ({ kind: 'byte-edited', bytes: edits.reduce((b, [op, at, x]) => byteEdit(b, op, at, x), bytesOf(toJsonText(v))) })),
      weight: 2
    },
    { arbitrary: deepRaw.map(r => ({ kind: 'deep', bytes: bytesOf(r.text) })), weight: 1 },
    {
      // Padded with whitespace to exactly the limit plus `over` bytes: fits iff over <= 0.
      arbitrary: fc.tuple(valid, fc.oneof(fc.integer({ min: -2, max: 2 }), fc.integer({ min: 1, max: 100_000 })), fc.constantFrom(' ', '\n', '\t')).map(([v, over, ws]) => {
        const body = bytesOf(toJsonText(v))
        const size = limit + over
        if (body.byteLength > size) return { kind: 'limit', bytes: body, over: body.byteLength - limit }
        const bytes = new Uint8Array(size).fill(ws.charCodeAt(0))
        bytes.set(body, 0)
        return { kind: 'limit', bytes, over }
      }),
      weight: 1
    }
  )
}
