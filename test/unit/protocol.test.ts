import { describe, it, expect } from 'vitest'
import {
  DecodeError, decodeAnnouncement, decodeCoordinatorFrame, decodeHeartbeatTopic, decodeJobSpec, decodeNodeFrame, decodeText, encode
} from '../../protocol/codec.js'
import { LIMITS } from '../../protocol/limits.js'
import { imageRefusal, mismatch, normalizeImage } from '../../protocol/matching.js'
import { jobSpecSchema, type AnnouncedJob, type NodeCapacity } from '../../protocol/schemas.js'

const JOB = '0190a0b0-1234-7abc-8def-0123456789ab'
const TOKEN = '0123456789abcdef0123456789abcdef'
const enc = (s: string): Uint8Array => new TextEncoder().encode(s)
const clone = <T>(v: T): T => structuredClone(v)

const capacity: NodeCapacity = { slots: 4, freeSlots: 2, cpus: 8, memoryMb: 16384, labels: { zone: 'a' }, runtime: 'process', version: '0.1.0' }
const announced: AnnouncedJob = { jobId: JOB, attempt: 1, image: 'alpine:3', resources: { cpus: 1, memoryMb: 256 }, labels: { zone: 'a' }, timeoutSeconds: 60 }
const SHA = 'a'.repeat(64)
const fullSpec = {
  image: 'alpine:3', command: ['echo', 'hi'], env: { A_1: 'x' }, secretEnv: { TOKEN: 's3cret' }, network: true, resources: { cpus: 0.5, memoryMb: 128, diskMb: 50 }, timeoutSeconds: 10, labels: { gpu: 'no' }, maxAttempts: 2,
  inputs: [{ path: 'bin/run.sh', object: `sha256:${SHA}` }, { path: 'data/in.csv', url: 'https://example.org/in.csv', sha256: SHA }],
  outputs: [{ path: 'out/**/*.csv' }]
}

type BytesDecoder = (bytes: Uint8Array) => unknown
interface Case { name: string, decode: BytesDecoder, limit: number, valid: Array<Record<string, unknown>> }

const cases: Case[] = [
  { name: 'decodeAnnouncement', decode: decodeAnnouncement, limit: LIMITS.announcementBytes, valid: [{ v: 1, type: 'announce', sentAt: 1_700_000_000_000, jobs: [announced], taken: [] }, { v: 1, type: 'announce', sentAt: 1_700_000_000_000, jobs: [], taken: [{ jobId: JOB, attempt: 2 }] }] },
  {
    name: 'decodeHeartbeatTopic', decode: decodeHeartbeatTopic, limit: LIMITS.heartbeatBytes,
    valid: [
      { v: 1, type: 'node-heartbeat', seq: 3, sentAt: 5, capacity, running: [{ jobId: JOB, attempt: 2 }] },
      { v: 1, type: 'coordinator-beacon', seq: 0, sentAt: 5, addrs: ['/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWabc'], denied: ['12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'] }
    ]
  },
  {
    name: 'decodeNodeFrame', decode: decodeNodeFrame, limit: LIMITS.sessionFrameBytes,
    valid: [
      { type: 'hello', rid: 0, capacity, running: [{ jobId: JOB, attempt: 1, token: TOKEN }] },
      { type: 'bid', rid: 1, jobId: JOB, attempt: 1, freeSlots: 2, slots: 4 },
      { type: 'started', rid: 2, jobId: JOB, attempt: 1, token: TOKEN, startedAt: 10 },
      {
        type: 'result', rid: 3, jobId: JOB, attempt: 1, token: TOKEN, outcome: 'failed', exitCode: 2, stdout: 'out', stderr: 'err',
        stdoutTruncated: false, stderrTruncated: true, startedAt: 10, finishedAt: 20, error: { code: 'exit', message: 'exited 2', retryable: false },
        artifacts: [{ path: 'out/a.csv', size: 3, sha256: SHA, contentType: 'text/csv' }]
      },
      { type: 'outputs', rid: 6, jobId: JOB, attempt: 1, token: TOKEN, files: [{ path: 'out/a.csv', size: 3, sha256: SHA, contentType: 'text/csv' }] },
      { type: 'log', rid: 7, jobId: JOB, attempt: 1, token: TOKEN, lines: [{ stream: 'stdout', at: 5, text: 'hello' }, { stream: 'stderr', at: 6, text: '' }] },
      { type: 'pull', rid: 4, max: 8 },
      { type: 'renew', rid: 5, capacity, running: [] }
    ]
  },
  {
    name: 'decodeCoordinatorFrame', decode: decodeCoordinatorFrame, limit: LIMITS.sessionFrameBytes,
    valid: [
      { type: 'welcome', rid: 0, open: [announced], revoked: [{ jobId: JOB, attempt: 1 }] },
      { type: 'award', rid: 1, jobId: JOB, attempt: 1, token: TOKEN, spec: fullSpec, inputs: [{ path: 'a', url: 'http://127.0.0.1:1/objects/inputs/x?sig=y', sha256: SHA, size: 3 }], maxFileBytes: 10, maxJobBytes: 20 },
      { type: 'uploads', rid: 7, files: [{ path: 'out/a.csv', url: 'http://127.0.0.1:1/objects/outputs/x' }] },
      { type: 'refuse', rid: 2, jobId: JOB, attempt: 1, reason: 'taken' },
      { type: 'ack', rid: 3 },
      { type: 'stale', rid: 4, jobId: JOB, attempt: 1, reason: 'token mismatch' },
      { type: 'renewed', rid: 5, revoked: [] },
      { type: 'open', rid: 6, jobs: [announced] },
      { type: 'error', rid: null, code: 'bad-frame', message: 'nope' },
      { type: 'cancel', jobId: JOB, attempt: 1, token: TOKEN, reason: 'cancelled by http' }
    ]
  }
]

function decodeError (fn: () => unknown): DecodeError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(DecodeError)
    return err as DecodeError
  }
  throw new Error('expected a DecodeError, but decoding succeeded')
}

function expectSchema (fn: () => unknown, field: string | RegExp | null): DecodeError {
  const err = decodeError(fn)
  expect(err.reason).toBe('schema')
  if (field instanceof RegExp) expect(err.field).toMatch(field)
  else expect(err.field).toBe(field)
  return err
}

describe.each(cases)('$name', ({ decode, limit, valid }) => {
  it('round-trips every valid message type through encode/decode', () => {
    for (const m of valid) expect(decode(encode(m))).toEqual(m)
  })

  it('accepts exactly the limit and rejects one byte more as oversized', () => {
    const body = encode(valid[0])
    const pad = (n: number): Uint8Array => enc(new TextDecoder().decode(body) + ' '.repeat(n - body.byteLength))
    expect(decode(pad(limit))).toEqual(valid[0])
    const err = decodeError(() => decode(pad(limit + 1)))
    expect(err.reason).toBe('oversized')
  })

  it('rejects a huge input before parsing it', () => {
    const huge = new Uint8Array(50 * 1024 * 1024).fill('['.charCodeAt(0))
    const t0 = performance.now()
    const err = decodeError(() => decode(huge))
    expect(err.reason).toBe('oversized')
    expect(performance.now() - t0).toBeLessThan(200)
  })

  it('rejects truncated JSON as syntax', () => {
    const bytes = encode(valid[0])
    for (const cut of [1, 5, Math.floor(bytes.byteLength / 2)]) {
      expect(decodeError(() => decode(bytes.subarray(0, bytes.byteLength - cut))).reason).toBe('syntax')
    }
    expect(decodeError(() => decode(new Uint8Array(0))).reason).toBe('syntax')
  })

  it('rejects invalid UTF-8 as encoding', () => {
    const text = JSON.stringify(valid[0])
    const at = text.indexOf('"') + 1
    for (const bad of [[0xff], [0xc3], [0xed, 0xa0, 0x80], [0xc0, 0xaf]]) {
      const bytes = new Uint8Array([...enc(text.slice(0, at)), ...bad, ...enc(text.slice(at))])
      expect(decodeError(() => decode(bytes)).reason).toBe('encoding')
    }
  })

  it('rejects JSON that is not an object as a schema error', () => {
    for (const v of ['null', '42', '[]', '"x"', 'true']) expectSchema(() => decode(enc(v)), null)
  })

  it('rejects an unknown extra field, naming it', () => {
    expectSchema(() => decode(encode({ ...valid[0], extra: 1 })), 'extra')
  })
})

describe('schema errors name the offending field', () => {
  const bid = { type: 'bid', rid: 1, jobId: JOB, attempt: 1, freeSlots: 2, slots: 4 }
  const frame = (patch: Record<string, unknown>): Uint8Array => encode({ ...bid, ...patch })

  it('session frames', () => {
    expectSchema(() => decodeNodeFrame(frame({ freeSlots: '2' })), 'freeSlots')
    expectSchema(() => decodeNodeFrame(frame({ slots: -1 })), 'slots')
    expectSchema(() => decodeNodeFrame(frame({ attempt: 0 })), 'attempt')
    expectSchema(() => decodeNodeFrame(frame({ jobId: 'not-a-uuid' })), 'jobId')
    expectSchema(() => decodeNodeFrame(frame({ jobId: JOB.toUpperCase() })), 'jobId')
    expectSchema(() => decodeNodeFrame(frame({ type: 'nope' })), 'type')
    expectSchema(() => decodeNodeFrame(encode({ type: 'started', rid: 1, jobId: JOB, attempt: 1, token: 'xyz', startedAt: 1 })), 'token')
    expectSchema(() => decodeNodeFrame(encode({ type: 'started', rid: 1, jobId: JOB, attempt: 1, token: TOKEN.toUpperCase(), startedAt: 1 })), 'token')
    expectSchema(() => decodeCoordinatorFrame(encode({ type: 'award', rid: 1, jobId: JOB, attempt: 1, token: TOKEN, spec: { command: [] } })), 'spec.command')
  })

  it('heartbeats and announcements', () => {
    const hb = { v: 1, type: 'node-heartbeat', seq: 0, sentAt: 1, capacity, running: [] }
    expectSchema(() => decodeHeartbeatTopic(encode({ ...hb, capacity: { ...capacity, slots: -1 } })), 'capacity.slots')
    expectSchema(() => decodeHeartbeatTopic(encode({ ...hb, capacity: { ...capacity, cpus: '8' } })), 'capacity.cpus')
    const ann = (jobs: unknown[]): Uint8Array => encode({ v: 1, type: 'announce', sentAt: 1, jobs })
    expectSchema(() => decodeAnnouncement(ann([])), 'jobs')
    expectSchema(() => decodeAnnouncement(ann(Array.from({ length: LIMITS.announcementJobs + 1 }, () => announced))), 'jobs')
    expect(decodeAnnouncement(ann(Array.from({ length: LIMITS.announcementJobs }, () => announced))).jobs).toHaveLength(LIMITS.announcementJobs)
    expectSchema(() => decodeAnnouncement(ann([announced, { ...announced, attempt: 0 }])), 'jobs[1].attempt')
    expectSchema(() => decodeAnnouncement(ann([{ ...announced, jobId: 'x' }])), 'jobs[0].jobId')
    // Taken notices: an announcement may carry only them, but not nothing at all.
    const taken = (n: number): Uint8Array => encode({ v: 1, type: 'announce', sentAt: 1, jobs: [], taken: Array.from({ length: n }, () => ({ jobId: JOB, attempt: 1 })) })
    expect(decodeAnnouncement(taken(3)).taken).toHaveLength(3)
    expectSchema(() => decodeAnnouncement(taken(0)), 'jobs')
    expectSchema(() => decodeAnnouncement(taken(LIMITS.announcementTaken + 1)), 'taken')
  })

  it('job specs', () => {
    expectSchema(() => decodeJobSpec({ command: ['x'], resources: { cpus: '2' } }), 'resources.cpus')
    expectSchema(() => decodeJobSpec({ command: ['x'], resources: { cpus: -1 } }), 'resources.cpus')
    expectSchema(() => decodeJobSpec({ command: ['x'], resources: { memoryMb: 1.5 } }), 'resources.memoryMb')
    expectSchema(() => decodeJobSpec({ command: [] }), 'command')
    expectSchema(() => decodeJobSpec({}), 'command')
    expectSchema(() => decodeJobSpec({ command: [''] }), /^command(\[0\])?$/)
    expectSchema(() => decodeJobSpec({ command: ['x', 3] }), 'command[1]')
    expectSchema(() => decodeJobSpec({ command: ['x'], env: { '1BAD': 'v' } }), /^env/)
    expectSchema(() => decodeJobSpec({ command: ['x'], env: { 'A-B': 'v' } }), /^env/)
    expectSchema(() => decodeJobSpec({ command: ['x'], timeoutSecond: 5 }), 'timeoutSecond')
    expectSchema(() => decodeJobSpec({ command: ['x'], resources: { gpus: 1 } }), 'resources.gpus')
    const labels = Object.fromEntries(Array.from({ length: LIMITS.labels + 1 }, (_, i) => [`k${i}`, 'v']))
    expectSchema(() => decodeJobSpec({ command: ['x'], labels }), 'labels')
    expectSchema(() => decodeJobSpec({ command: ['x'], maxAttempts: 0 }), 'maxAttempts')
    expectSchema(() => decodeJobSpec({ command: ['x'], image: 'has space' }), 'image')
    for (const v of [null, 42, [], 'x']) expectSchema(() => decodeJobSpec(v), null)
  })

  it('the message carries the field and the reason', () => {
    const err = expectSchema(() => decodeJobSpec({ command: ['x'], resources: { memoryMb: 2 } }), 'resources.memoryMb')
    expect(err.message).toMatch(/^invalid job spec: resources\.memoryMb: /)
  })
})

describe('decodeJobSpec', () => {
  it('applies defaults', () => {
    expect(decodeJobSpec({ command: ['true'] })).toEqual({
      command: ['true'], env: {}, secretEnv: {}, network: false, resources: { cpus: 1, memoryMb: 256, diskMb: 1024 }, timeoutSeconds: 3600, labels: {}, maxAttempts: 3, inputs: [], outputs: []
    })
    expect(decodeJobSpec({ command: ['true'], resources: { cpus: 2 } }).resources).toEqual({ cpus: 2, memoryMb: 256, diskMb: 1024 })
  })

  it('keeps given values', () => {
    expect(decodeJobSpec(clone(fullSpec))).toEqual(fullSpec)
    expect(jobSpecSchema.parse(decodeJobSpec(clone(fullSpec)))).toEqual(fullSpec)
  })

  it('refuses input and output paths that could leave the work dir, naming the field', () => {
    const bad: Array<[unknown, RegExp]> = [
      [{ inputs: [{ path: '../x', url: 'https://h/x' }] }, /inputs\[0\]\.path: path must stay inside/],
      [{ inputs: [{ path: 'a/../../x', url: 'https://h/x' }] }, /inputs\[0\]\.path/],
      [{ inputs: [{ path: '/etc/passwd', url: 'https://h/x' }] }, /must be relative/],
      [{ inputs: [{ path: 'a\\b', url: 'https://h/x' }] }, /separator/],
      [{ inputs: [{ path: 'a//b', url: 'https://h/x' }] }, /inputs\[0\]\.path/],
      [{ inputs: [{ path: './a', url: 'https://h/x' }] }, /inputs\[0\]\.path/],
      [{ inputs: [{ path: 'a\u0000b', url: 'https://h/x' }] }, /NUL/],
      [{ inputs: [{ path: 'a', url: 'file:///etc/passwd' }] }, /http or https/],
      [{ inputs: [{ path: 'a' }] }, /exactly one of url and object/],
      [{ inputs: [{ path: 'a', url: 'https://h/x', object: `sha256:${SHA}` }] }, /exactly one of url and object/],
      [{ inputs: [{ path: 'a', object: `sha256:${SHA}`, sha256: 'b'.repeat(64) }] }, /contradicts/],
      [{ inputs: [{ path: 'a', object: 'sha1:abc' }] }, /object id/],
      [{ inputs: [{ path: 'a', url: 'https://h/1' }, { path: 'a', url: 'https://h/2' }] }, /same path/],
      [{ outputs: [{ path: '../*' }] }, /outputs\[0\]\.path/],
      [{ outputs: [{ path: '/tmp/*' }] }, /must be relative/]
    ]
    for (const [extra, message] of bad) {
      const err = decodeError(() => decodeJobSpec({ command: ['true'], ...(extra as object) }))
      expect(err.message, JSON.stringify(extra)).toMatch(message)
    }
    expect(decodeJobSpec({ command: ['true'], inputs: [{ path: 'deep/er/file..txt', url: 'http://h/x' }], outputs: [{ path: 'out/**/*.csv' }] }).inputs).toHaveLength(1)
  })

  it('checks the UTF-8 size of text, not its length (decodeText)', () => {
    const spec = JSON.stringify({ command: ['x'], env: { A: '€'.repeat(LIMITS.argChars) } })
    expect(spec.length).toBeLessThan(LIMITS.jobSpecBytes)
    expect(decodeText(jobSpecSchema, spec, LIMITS.jobSpecBytes, 'job spec').env.A).toHaveLength(LIMITS.argChars)
    const big = JSON.stringify({ command: ['x'], env: Object.fromEntries(Array.from({ length: 4 }, (_, i) => [`A${i}`, '€'.repeat(LIMITS.argChars)])) })
    expect(big.length).toBeLessThan(LIMITS.jobSpecBytes)
    expect(decodeError(() => decodeText(jobSpecSchema, big, LIMITS.jobSpecBytes, 'job spec')).reason).toBe('oversized')
  })
})

/** mulberry32: a small seeded PRNG, so a failure can be replayed. */
function rng (seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

describe('fuzz: decoders throw nothing but DecodeError', () => {
  const rand = rng(0x5eed)
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!
  const weird: unknown[] = [
    null, true, 0, -1, 1.5, 1e308, -0, Number.MAX_SAFE_INTEGER + 2, '', 'x', 'x'.repeat(600), '\u0000', '\ud800', [], [null], {}, { a: 1 },
    '__proto__', 'constructor', 'toString', JOB, TOKEN, [[[[[[[[[[[]]]]]]]]]]]
  ]
  const keys = ['__proto__', 'constructor', 'type', 'rid', 'jobId', 'attempt', 'extra', 'hasOwnProperty', '']

  function mutate (v: unknown, depth = 0): unknown {
    if (rand() < 0.15 || depth > 6) return pick(weird)
    if (Array.isArray(v)) {
      const out = v.map(x => rand() < 0.3 ? mutate(x, depth + 1) : x)
      if (rand() < 0.2) out.push(pick(weird))
      if (rand() < 0.2) out.shift()
      return out
    }
    if (v != null && typeof v === 'object') {
      const out: Record<string, unknown> = {}
      for (const [k, x] of Object.entries(v)) {
        if (rand() < 0.1) continue
        out[rand() < 0.05 ? pick(keys) : k] = rand() < 0.3 ? mutate(x, depth + 1) : x
      }
      if (rand() < 0.1) Object.defineProperty(out, pick(keys), { value: pick(weird), enumerable: true })
      return out
    }
    return rand() < 0.5 ? pick(weird) : v
  }

  function randomBytes (): Uint8Array {
    const n = Math.floor(rand() * 200)
    const mode = rand()
    const alphabet = '{}[]":,0123456789.-+eEtrufalsn \\u"abc'
    const out = new Uint8Array(n)
    for (let i = 0; i < n; i++) out[i] = mode < 0.5 ? Math.floor(rand() * 256) : alphabet.charCodeAt(Math.floor(rand() * alphabet.length))
    return out
  }

  function byteMutation (bytes: Uint8Array): Uint8Array {
    const out = Uint8Array.from(bytes)
    for (let i = 0, n = 1 + Math.floor(rand() * 4); i < n && out.length > 0; i++) out[Math.floor(rand() * out.length)] = Math.floor(rand() * 256)
    return out
  }

  const all: Array<{ name: string, decode: (bytes: Uint8Array) => unknown, valid: unknown[] }> = [
    ...cases,
    { name: 'decodeJobSpec', decode: (b) => decodeJobSpec(JSON.parse(new TextDecoder().decode(b))), valid: [fullSpec, { command: ['true'] }] }
  ]

  it.each(all)('$name', ({ name, decode, valid }) => {
    const reasons = new Map<string, number>()
    let accepted = 0
    for (let i = 0; i < 2000; i++) {
      const base = encode(pick(valid))
      let input: Uint8Array
      const r = rand()
      if (r < 0.3) input = randomBytes()
      else if (r < 0.5) input = byteMutation(base)
      else input = encode(mutate(clone(pick(valid))))
      try {
        decode(input)
        accepted++
      } catch (err) {
        if (name === 'decodeJobSpec' && err instanceof SyntaxError) continue // JSON.parse in the harness, not the decoder
        if (!(err instanceof DecodeError)) throw new Error(`input ${JSON.stringify(new TextDecoder().decode(input))} threw ${String(err)}`)
        reasons.set(err.reason, (reasons.get(err.reason) ?? 0) + 1)
      }
    }
    // The fuzz must have reached the schema stage, and most mutations are rejected.
    expect(reasons.get('schema') ?? 0).toBeGreaterThan(200)
    if (name !== 'decodeJobSpec') {
      expect(reasons.get('syntax') ?? 0).toBeGreaterThan(50)
      expect(reasons.get('encoding') ?? 0).toBeGreaterThan(50)
    }
    expect(accepted).toBeLessThan(2000)
  })
})

describe('mismatch', () => {
  const job = (resources: { cpus: number, memoryMb: number }, labels: Record<string, string> = {}): Pick<AnnouncedJob, 'resources' | 'labels'> => ({ resources, labels })

  it('accepts a job that fits, including exactly equal resources and extra node labels', () => {
    expect(mismatch(capacity, job({ cpus: 1, memoryMb: 256 }))).toBeNull()
    expect(mismatch(capacity, job({ cpus: 8, memoryMb: 16384 }, { zone: 'a' }))).toBeNull()
  })

  it('rejects too many cpus', () => {
    expect(mismatch(capacity, job({ cpus: 8.5, memoryMb: 256 }))).toMatch(/cpus/)
  })

  it('rejects too much memory', () => {
    expect(mismatch(capacity, job({ cpus: 1, memoryMb: 16385 }))).toMatch(/MiB/)
  })

  it('rejects a missing or different label', () => {
    expect(mismatch(capacity, job({ cpus: 1, memoryMb: 256 }, { zone: 'b' }))).toBe('needs label zone=b')
    expect(mismatch(capacity, job({ cpus: 1, memoryMb: 256 }, { gpu: 'yes' }))).toBe('needs label gpu=yes')
    expect(mismatch(capacity, job({ cpus: 1, memoryMb: 256 }, { constructor: 'x' }))).toBe('needs label constructor=x')
  })
})

describe('text no store could keep, and keys a schema would drop', () => {
  it('refuses lone UTF-16 surrogates anywhere (PostgreSQL jsonb cannot store them)', () => {
    for (const text of ['{"command":["\\ud800"]}', '{"command":["x"],"labels":{"a":"\\udfff"}}', '{"command":["x"],"env":{"A":"ok\\udc00"}}']) {
      expect(() => decodeJobSpec(JSON.parse(text))).toThrow(/lone UTF-16 surrogate/)
    }
    expect(decodeJobSpec(JSON.parse('{"command":["\\ud83d\\ude00"]}')).command).toEqual(['😀'])
  })

  it('refuses a __proto__ key instead of silently dropping the variable', () => {
    expect(() => decodeJobSpec(JSON.parse('{"command":["x"],"env":{"__proto__":"v"}}'))).toThrow(/__proto__/)
  })

  it('a secret named like an Object.prototype member is not mistaken for a duplicate of env', () => {
    expect(decodeJobSpec({ command: ['x'], secretEnv: { constructor: 'v' } }).secretEnv).toEqual({ constructor: 'v' })
    expect(() => decodeJobSpec({ command: ['x'], env: { A: '1' }, secretEnv: { A: '2' } })).toThrow(/both in env and secretEnv/)
  })
})

describe('image policy matching', () => {
  it('normalises references as Docker resolves them', () => {
    expect(normalizeImage('busybox')).toEqual({ repo: 'docker.io/library/busybox', tag: 'latest', digest: null })
    expect(normalizeImage('evil/miner:1')).toEqual({ repo: 'docker.io/evil/miner', tag: '1', digest: null })
    expect(normalizeImage('index.docker.io/evil/miner@sha256:ab')).toEqual({ repo: 'docker.io/evil/miner', tag: null, digest: 'sha256:ab' })
    expect(normalizeImage('localhost:5000/x/y:2')).toEqual({ repo: 'localhost:5000/x/y', tag: '2', digest: null })
  })

  it('a deny pattern catches every spelling of the image', () => {
    const deny = { deny: ['evil/miner:*'] }
    for (const image of ['evil/miner', 'evil/miner:latest', 'docker.io/evil/miner:1', 'evil/miner@sha256:0123', 'index.docker.io/evil/miner:2']) {
      expect(imageRefusal(deny, image), image).toMatch(/denied/)
    }
    expect(imageRefusal(deny, 'good/miner')).toBeNull()
    expect(imageRefusal({ deny: ['evil/*'] }, 'docker.io/evil/anything:3')).toMatch(/denied/)
    expect(imageRefusal({ deny: ['busybox'] }, 'library/busybox:1.36')).toMatch(/denied/)
  })

  it('an allow list admits only matching images; deny wins; * matches all', () => {
    const policy = { allow: ['python:3.*', 'rgrid-test/*'], deny: ['python:3.8'] }
    expect(imageRefusal(policy, 'python:3.12')).toBeNull()
    expect(imageRefusal(policy, 'docker.io/library/python:3.12')).toBeNull()
    expect(imageRefusal(policy, 'rgrid-test/busybox')).toBeNull()
    expect(imageRefusal(policy, 'python:3.8')).toMatch(/denied/)
    expect(imageRefusal(policy, 'python')).toMatch(/allow-list/) // python:latest
    expect(imageRefusal(policy, 'node:24')).toMatch(/allow-list/)
    expect(imageRefusal({ allow: ['*'] }, 'anything/at:all')).toBeNull()
  })
})
