/**
 * Property-based fuzzing of every wire decoder: random bytes, valid
 * messages of every type (unchanged and mutated), deep nesting, prototype
 * keys and inputs around the size limits. A decoder either returns a value
 * that decodes again to itself, or throws its typed error; nothing else.
 * The seed is not fixed: fast-check prints it with any counterexample.
 */
import { afterAll, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import {
  DecodeError, decodeAnnouncement, decodeBytes, decodeCoordinatorFrame, decodeHeartbeatTopic, decodeJobSpec, decodeNodeFrame, encode
} from '../../protocol/codec.js'
import { jobSpecSchema } from '../../protocol/schemas.js'
import { LIMITS } from '../../protocol/limits.js'
import { decodeJoinToken, encodeJoinToken, InvalidJoinTokenError, MAX_TOKEN_CHARS, type JoinToken } from '../../common/join-token.js'
import * as A from '../helpers/fuzz-arbitraries.js'

const RUNS = 10_000
const REASONS: ReadonlySet<string> = new Set(['oversized', 'encoding', 'syntax', 'schema'])

const prototypeKeys = (): string[] => [Object.prototype, Array.prototype, Function.prototype].map(p => Reflect.ownKeys(p).map(String).sort().join(','))
const PROTOTYPES_BEFORE = prototypeKeys()

function assertNoPollution (): void {
  if (({} as any).polluted !== undefined || ([] as any).polluted !== undefined || (Object as any).polluted !== undefined) {
    throw new Error('Object.prototype was polluted')
  }
}

afterAll(() => {
  assertNoPollution()
  expect(prototypeKeys()).toEqual(PROTOTYPES_BEFORE)
})

/** Counts outcomes per input kind, so a test can show it did not pass vacuously. */
class Tally {
  readonly accepted = new Map<string, number>()
  readonly rejected = new Map<string, number>()
  readonly reasons = new Map<string, number>()
  readonly types = new Set<string>()
  private bump (m: Map<string, number>, k: string): void { m.set(k, (m.get(k) ?? 0) + 1) }
  accept (kind: string, type: unknown): void {
    this.bump(this.accepted, kind)
    if (typeof type === 'string') this.types.add(type)
  }

  reject (kind: string, reason: string): void {
    this.bump(this.rejected, kind)
    this.bump(this.reasons, reason)
  }

  total (kind: string): number { return (this.accepted.get(kind) ?? 0) + (this.rejected.get(kind) ?? 0) }
  acceptedShare (kind: string): number { return (this.accepted.get(kind) ?? 0) / Math.max(1, this.total(kind)) }
  summary (): string {
    const kinds = [...new Set([...this.accepted.keys(), ...this.rejected.keys()])].sort()
    return kinds.map(k => `${k} ${this.accepted.get(k) ?? 0}/${this.total(k)}`).join(', ') + ` | reasons ${JSON.stringify(Object.fromEntries(this.reasons))}`
  }
}

/** The error must be a DecodeError with a known reason and a message; anything else is rethrown as the failure. */
function checkDecodeError (err: unknown): DecodeError {
  if (!(err instanceof DecodeError)) {
    const e = err as Error
    throw new Error(`threw ${e?.name ?? typeof err} instead of DecodeError: ${e?.message ?? String(err)}\n${e?.stack ?? ''}`)
  }
  if (!REASONS.has(err.reason)) throw new Error(`unknown DecodeError reason ${String(err.reason)}`)
  if (typeof err.message !== 'string' || err.message.length === 0) throw new Error('DecodeError without a message')
  if (err.field !== null && typeof err.field !== 'string') throw new Error(`bad DecodeError field ${String(err.field)}`)
  return err
}

const show = (bytes: Uint8Array): string => {
  const t = new TextDecoder().decode(bytes.subarray(0, 300))
  return `${bytes.byteLength} bytes: ${JSON.stringify(t)}${bytes.byteLength > 300 ? '…' : ''}`
}

interface BytesCase {
  name: string
  decode: (bytes: Uint8Array) => unknown
  limit: number
  valid: fc.Arbitrary<Record<string, unknown>>
  types: string[]
}

const bytesDecoders: BytesCase[] = [
  { name: 'decodeAnnouncement', decode: decodeAnnouncement, limit: LIMITS.announcementBytes, valid: A.announcement, types: ['announce'] },
  { name: 'decodeHeartbeatTopic', decode: decodeHeartbeatTopic, limit: LIMITS.heartbeatBytes, valid: A.heartbeat, types: ['node-heartbeat', 'coordinator-beacon'] },
  { name: 'decodeNodeFrame', decode: decodeNodeFrame, limit: LIMITS.sessionFrameBytes, valid: A.nodeFrame, types: A.NODE_FRAME_TYPES },
  { name: 'decodeCoordinatorFrame', decode: decodeCoordinatorFrame, limit: LIMITS.sessionFrameBytes, valid: A.coordinatorFrame, types: A.COORDINATOR_FRAME_TYPES },
  // The job spec as bytes with its own limit (decodeJobSpec itself takes a parsed value; see below).
  {
    name: 'decodeBytes(jobSpecSchema)',
    decode: (b: Uint8Array) => decodeBytes(jobSpecSchema, b, LIMITS.jobSpecBytes, 'job spec'),
    limit: LIMITS.jobSpecBytes,
    valid: A.jobSpec,
    types: []
  }
]

describe.each(bytesDecoders)('fuzz $name', ({ decode, limit, valid, types }) => {
  it(`returns a re-decodable message or throws DecodeError (${RUNS} runs)`, () => {
    const tally = new Tally()
    fc.assert(fc.property(A.byteCases(valid, limit, types), (input) => {
      let value: unknown
      try {
        value = decode(input.bytes)
      } catch (err) {
        const e = checkDecodeError(err)
        assertNoPollution()
        tally.reject(input.kind, e.reason)
        if (input.kind === 'valid') throw new Error(`a valid message was rejected (${e.message}): ${show(input.bytes)}`)
        if (input.kind === 'limit' && (input.over ?? 0) <= 0) throw new Error(`a valid message within the limit was rejected: ${e.message}`)
        if (input.bytes.byteLength > limit && e.reason !== 'oversized') throw new Error(`${input.bytes.byteLength} bytes rejected as ${e.reason}, not oversized`)
        if (input.kind === 'deep' && input.bytes.byteLength <= limit && e.reason !== 'schema') throw new Error(`deep nesting rejected as ${e.reason}`)
        return
      }
      assertNoPollution()
      if (input.bytes.byteLength > limit) throw new Error(`accepted ${input.bytes.byteLength} bytes, over the limit of ${limit}`)
      if (input.kind === 'deep') throw new Error('accepted deep nesting')
      // Whatever was accepted encodes to a message that decodes to the same thing.
      const again = decode(encode(value))
      if (JSON.stringify(again) !== JSON.stringify(value)) throw new Error(`not a fixpoint: ${JSON.stringify(value)} -> ${JSON.stringify(again)}`)
      tally.accept(input.kind, (value as { type?: unknown }).type)
    }), { numRuns: RUNS })

    console.log(`${expect.getState().currentTestName}: ${tally.summary()}`)
    // Not vacuous: valid messages of every type decoded, a fair share of mutated ones too, and every rejection path was reached.
    expect(tally.accepted.get('valid') ?? 0).toBeGreaterThan(RUNS / 20)
    for (const t of types) expect(tally.types, `type ${t} never decoded`).toContain(t)
    expect(tally.acceptedShare('mutated')).toBeGreaterThan(0.05)
    expect(tally.acceptedShare('mutated')).toBeLessThan(0.9)
    for (const reason of REASONS) expect(tally.reasons.get(reason) ?? 0, `reason ${reason}`).toBeGreaterThan(20)
  })

  it('rejects 10,000- and 100,000-deep nesting with a DecodeError, not a stack overflow', () => {
    for (const depth of [10_000, 100_000, Math.floor((limit - 2) / 2), Math.floor((limit - 10) / 5)]) {
      for (const kind of ['array', 'object', 'mixed'] as const) {
        const text = A.deepText(depth, kind)
        let err: unknown
        try { decode(A.bytesOf(text)) } catch (e) { err = e }
        const e = checkDecodeError(err)
        expect(e.reason).toBe(text.length > limit ? 'oversized' : 'schema')
      }
    }
  })
})

describe('fuzz decodeJobSpec (parsed values)', () => {
  /** RawJson pieces (deep nesting) as the JS values JSON.parse makes of them. */
  const materialize = (v: unknown): unknown => {
    if (v instanceof A.RawJson) return JSON.parse(v.text)
    if (Array.isArray(v)) { v.forEach((x, i) => { if (x instanceof A.RawJson) v[i] = JSON.parse(x.text) }); return v }
    if (v != null && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
      for (const k of Object.keys(v)) {
        const x = (v as Record<string, unknown>)[k]
        if (x instanceof A.RawJson) Object.defineProperty(v, k, { value: JSON.parse(x.text), enumerable: true, writable: true, configurable: true })
        else materialize(x)
      }
    }
    return v
  }
  const anything = fc.anything({ withBigInt: true, withBoxedValues: true, withDate: true, withMap: true, withSet: true, withNullPrototype: true, withObjectString: true, withSparseArray: true, withTypedArray: true, withUnicodeString: true })
  const cases = fc.oneof(
    { arbitrary: fc.jsonValue().map(value => ({ kind: 'json-value', value })), weight: 1 },
    { arbitrary: anything.map(value => ({ kind: 'anything', value })), weight: 1 },
    { arbitrary: A.jobSpec.map(value => ({ kind: 'valid', value })), weight: 2 },
    // What the HTTP layer hands over: JSON.parse of a mutated spec (own __proto__ keys, 1e999 = Infinity, ...).
    { arbitrary: A.mutated(A.jobSpec, false).map(v => ({ kind: 'mutated', value: A.parsedJs(v) })), weight: 5 },
    // What a JS caller could pass: NaN, undefined, BigInt, Map, sparse arrays, null-prototype objects.
    { arbitrary: A.mutated(A.jobSpec, true).map(v => ({ kind: 'mutated-js', value: materialize(v) })), weight: 3 },
    { arbitrary: A.deepRaw.map(r => ({ kind: 'deep', value: JSON.parse(r.text) as unknown })), weight: 1 }
  )

  it(`returns a re-decodable spec or throws DecodeError (${RUNS} runs)`, () => {
    const tally = new Tally()
    fc.assert(fc.property(cases, ({ kind, value }) => {
      let spec: unknown
      try {
        spec = decodeJobSpec(value)
      } catch (err) {
        const e = checkDecodeError(err)
        assertNoPollution()
        expect(e.reason).toBe('schema')
        tally.reject(kind, e.reason)
        if (kind === 'valid') throw new Error(`a valid spec was rejected (${e.message}): ${A.toJsonText(value)}`)
        return
      }
      assertNoPollution()
      if (kind === 'deep') throw new Error('accepted deep nesting')
      const again = decodeJobSpec(JSON.parse(JSON.stringify(spec)))
      if (JSON.stringify(again) !== JSON.stringify(spec)) throw new Error(`not a fixpoint: ${JSON.stringify(spec)} -> ${JSON.stringify(again)}`)
      tally.accept(kind, 'spec')
    }), { numRuns: RUNS })

    console.log(`decodeJobSpec: ${tally.summary()}`)
    expect(tally.accepted.get('valid') ?? 0).toBeGreaterThan(RUNS / 20)
    expect(tally.acceptedShare('mutated')).toBeGreaterThan(0.05)
    expect(tally.acceptedShare('mutated-js')).toBeGreaterThan(0.05)
    expect(tally.reasons.get('schema') ?? 0).toBeGreaterThan(RUNS / 2)
  })

  it('rejects 10,000- and 100,000-deep values with a DecodeError', () => {
    for (const depth of [10_000, 100_000]) {
      for (const kind of ['array', 'object', 'mixed'] as const) {
        const deep: unknown = JSON.parse(A.deepText(depth, kind))
        for (const value of [deep, { command: ['x'], env: { A: deep } }, { command: deep }, { command: ['x'], labels: deep }, { command: ['x'], resources: deep }]) {
          let err: unknown
          try { decodeJobSpec(value) } catch (e) { err = e }
          expect(checkDecodeError(err).reason).toBe('schema')
        }
      }
    }
  })
})

describe('fuzz decodeJoinToken', () => {
  const PREFIX = 'rgrid1.'
  const b64 = (text: string): string => Buffer.from(text).toString('base64url')
  const ws = fc.constantFrom('', ' ', '\n', '\t ', '\r\n')
  /** Pads the payload JSON with trailing spaces so the token has about `length` characters. */
  const padTo = (json: string, length: number): string => {
    const bytes = Math.max(Buffer.byteLength(json), Math.floor((length - PREFIX.length) * 3 / 4))
    return PREFIX + b64(json + ' '.repeat(bytes - Buffer.byteLength(json)))
  }

  const cases = fc.oneof(
    { arbitrary: fc.string({ unit: 'binary', maxLength: 300 }).map(text => ({ kind: 'random', text })), weight: 1 },
    { arbitrary: fc.string({ unit: 'binary', maxLength: 300 }).map(text => ({ kind: 'random-prefixed', text: PREFIX + text })), weight: 1 },
    { arbitrary: fc.stringMatching(/^[A-Za-z0-9_=+/-]{0,400}$/).map(text => ({ kind: 'random-b64', text: PREFIX + text })), weight: 1 },
    { arbitrary: fc.jsonValue().map(v => ({ kind: 'json-value', text: PREFIX + b64(JSON.stringify(v) ?? 'null') })), weight: 1 },
    { arbitrary: fc.tuple(ws, A.joinTokenPayload, ws).map(([a, p, b]) => ({ kind: 'valid', text: a + PREFIX + b64(JSON.stringify(p)) + b })), weight: 2 },
    { arbitrary: A.mutated(A.joinTokenPayload, false).map(p => ({ kind: 'mutated', text: PREFIX + b64(A.toJsonText(p)) })), weight: 5 },
    {
      arbitrary: fc.tuple(A.joinTokenPayload, fc.nat(), fc.constantFrom('', '!', '=', '.', '\u0000', 'é', ' x', 'rgrid1.'), fc.constantFrom('replace', 'cut', 'prefix'))
        .map(([p, at, s, op]) => {
          const t = PREFIX + b64(JSON.stringify(p))
          const i = at % t.length
          const text = op === 'replace' ? t.slice(0, i) + s + t.slice(i + 1) : op === 'cut' ? t.slice(0, i) : s + t
          return { kind: 'text-edited', text }
        }),
      weight: 2
    },
    { arbitrary: A.deepRaw.map(r => ({ kind: 'deep', text: PREFIX + b64(r.text) })), weight: 1 },
    {
      arbitrary: fc.tuple(A.joinTokenPayload, fc.integer({ min: -8, max: 8 }), fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 100_000 })))
        .map(([p, near, far]) => ({ kind: 'limit', text: padTo(JSON.stringify(p), MAX_TOKEN_CHARS + near + far) })),
      weight: 1
    }
  )

  it(`returns a re-encodable token or throws InvalidJoinTokenError (${RUNS} runs)`, () => {
    const tally = new Tally()
    fc.assert(fc.property(cases, ({ kind, text }) => {
      let token: JoinToken
      try {
        token = decodeJoinToken(text)
      } catch (err) {
        if (!(err instanceof InvalidJoinTokenError)) throw new Error(`threw ${(err as Error)?.name} instead of InvalidJoinTokenError: ${(err as Error)?.message}\n${(err as Error)?.stack ?? ''}`)
        if (err.message.length === 0) throw new Error('InvalidJoinTokenError without a message')
        assertNoPollution()
        tally.reject(kind, 'invalid')
        if (kind === 'valid') throw new Error(`a valid token was rejected (${err.message}): ${text}`)
        if (kind === 'limit' && text.trim().length <= MAX_TOKEN_CHARS) throw new Error(`a valid token of ${text.length} characters was rejected: ${err.message}`)
        return
      }
      assertNoPollution()
      if (text.trim().length > MAX_TOKEN_CHARS) throw new Error(`accepted a token of ${text.trim().length} characters`)
      if (kind === 'deep') throw new Error('accepted deep nesting')
      const again = decodeJoinToken(encodeJoinToken(token))
      if (JSON.stringify(again) !== JSON.stringify(token)) throw new Error(`not a fixpoint: ${JSON.stringify(token)} -> ${JSON.stringify(again)}`)
      tally.accept(kind, 'token')
    }), { numRuns: RUNS })

    console.log(`decodeJoinToken: ${tally.summary()}`)
    expect(tally.accepted.get('valid') ?? 0).toBeGreaterThan(RUNS / 20)
    expect(tally.accepted.get('limit') ?? 0).toBeGreaterThan(10)
    expect(tally.rejected.get('limit') ?? 0).toBeGreaterThan(10)
    expect(tally.acceptedShare('mutated')).toBeGreaterThan(0.05)
  })
})
