/**
 * Property-based fuzzing of every HTTP route (coordinator/http.ts), through
 * app.fetch without a port: random and mutated-valid JSON bodies, wrong
 * content types, invalid, deep and oversized JSON, hostile path params and
 * query strings. Never a 5xx or a thrown exception; every 4xx is exactly
 * `{"error":{"code","message"}}`; a 2xx only for a valid request (each route
 * has an oracle saying which requests are valid). The seed is not fixed:
 * fast-check prints it with any counterexample.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Hono } from 'hono'
import { createHttpApp } from '../../coordinator/http.js'
import { Coordinator } from '../../coordinator/coordinator.js'
import { SqliteStore } from '../../coordinator/store/sqlite.js'
import { Transfers } from '../../coordinator/transfers.js'
import { EmbeddedObjectStore } from '../../coordinator/objects/embedded.js'
import { SecretBox } from '../../coordinator/secrets.js'
import type { Logger } from '../../common/log.js'
import { newFencingToken } from '../../common/ids.js'
import { decodeJobSpec } from '../../protocol/codec.js'
import { LIMITS } from '../../protocol/limits.js'
import { uploadRequestSchema } from '../../protocol/schemas.js'
import * as A from '../helpers/fuzz-arbitraries.js'

const BODY_LIMIT = 2 * LIMITS.jobSpecBytes
const MAX_FILE_BYTES = 1024 * 1024
const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const MISSING = '0190a0b0-1234-7abc-8def-0123456789ab'
const NODE = '12D3KooWNode0001abcdefgh'
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled'])

// ---------------------------------------------------------------- the app under test

interface Ctx {
  app: Hono<any>
  store: SqliteStore
  coordinator: Coordinator
  /** `request failed` log lines (the stack of every 500). */
  errors: string[]
  /** Uploaded objects: sha256 -> size. */
  stored: Map<string, number>
  /** An object store and a secrets key (else neither). */
  withObjects: boolean
  close: () => Promise<void>
}

async function setup (withObjects: boolean): Promise<Ctx> {
  const store = SqliteStore.open({ path: ':memory:' })
  await store.migrate()
  let now = Date.now()
  const clock = { now: () => now++ }
  const errors: string[] = []
  const log: Logger = {
    debug: () => {}, info: () => {}, warn: () => {},
    error: (msg, fields) => { errors.push(`${msg} ${JSON.stringify(fields)}`) },
    child: () => log
  }
  const root = mkdtempSync(join(tmpdir(), 'rgrid-fuzz-http-'))
  const objects = withObjects ? new EmbeddedObjectStore({ root, secret: new Uint8Array(32).fill(9), clock, publicUrl: () => 'http://localhost' }) : null
  await objects?.start()
  const transfers = objects != null ? new Transfers({ objects, maxFileBytes: MAX_FILE_BYTES }) : undefined
  const secrets = withObjects ? new SecretBox(new Uint8Array(32).fill(3)) : undefined
  const coordinator = new Coordinator({
    privateKey: await generateKeyPair('Ed25519'), store, log, clock, ...(transfers != null ? { transfers } : {}), ...(secrets != null ? { secrets } : {})
  })
  coordinator.announcer.stop()
  // No `auth`: the API is open (no API keys), as with `--open`.
  const app = createHttpApp({ api: coordinator, log, ...(objects != null ? { objects } : {}) })
  return {
    app, store, coordinator, errors, stored: new Map(), withObjects,
    close: async () => {
      coordinator.auction.stop()
      await store.close()
      rmSync(root, { recursive: true, force: true })
    }
  }
}

/** Uploads content through POST /v1/uploads and the signed PUT, as a submitter does. */
async function upload (ctx: Ctx, content: string): Promise<string> {
  const sha = createHash('sha256').update(content).digest('hex')
  const size = Buffer.byteLength(content)
  const res = await ctx.app.request('/v1/uploads', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sha256: sha, size }) })
  expect(res.status).toBe(201)
  const grant = await res.json() as { url: string }
  const put = await ctx.app.request(grant.url, { method: 'PUT', body: content })
  expect(put.status).toBe(200)
  ctx.stored.set(sha, size)
  return sha
}

async function submit (ctx: Ctx, spec: unknown): Promise<string> {
  const res = await ctx.app.request('/v1/jobs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(spec) })
  expect(res.status).toBe(201)
  return (await res.json() as { id: string }).id
}

/** Jobs in every state, with logs, a result and artifacts, for the id routes to find. */
async function seedJobs (ctx: Ctx): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < 3; i++) ids.push(await submit(ctx, { command: ['echo', String(i)], batch: `b${i}`, labels: { zone: 'a' } }))
  const claimed = await submit(ctx, { command: ['sleep', '1'] })
  await ctx.store.award({ jobId: claimed, attempt: 1, node: NODE, token: newFencingToken(), now: Date.now(), leaseMs: 600_000, detail: {} })
  const cancelled = await submit(ctx, { command: ['true'] })
  await ctx.coordinator.cancel(cancelled, 'test')
  const done = await submit(ctx, { command: ['true'] })
  const token = newFencingToken()
  const t = Date.now()
  await ctx.store.award({ jobId: done, attempt: 1, node: NODE, token, now: t, leaseMs: 600_000, detail: {} })
  await ctx.store.appendLogs({ jobId: done, attempt: 1, token, node: NODE, now: t + 1, maxLines: 1000, lines: Array.from({ length: 30 }, (_, i) => ({ stream: 'stdout' as const, at: t + i, text: `line ${i}` })) })
  const artifacts = ctx.withObjects ? [{ path: 'out/a.csv', size: 3, sha256: 'a'.repeat(64), contentType: 'text/csv' }] : []
  await ctx.store.recordResult({
    jobId: done, attempt: 1, token, node: NODE, now: t + 2,
    result: { attempt: 1, outcome: 'succeeded', exitCode: 0, stdout: 'ok', stderr: '', stdoutTruncated: false, stderrTruncated: false, startedAt: t + 1, finishedAt: t + 2, error: null, artifacts }
  })
  return [...ids, claimed, cancelled, done]
}

// ---------------------------------------------------------------- sending and checking

interface Sent { status: number, body: unknown, contentType: string }

const stats = { requests: 0, unsendable: 0, streams: 0, byStatus: new Map<number, number>() }

/** The request as a real client would send it, or null when no client could (the URL or a header is invalid). */
function build (path: string, init: RequestInit): Request | null {
  try {
    return new Request(new URL(path, 'http://localhost'), init)
  } catch {
    stats.unsendable++
    return null
  }
}

function headersJson (headers: Headers): string {
  const out: Record<string, string> = {}
  headers.forEach((v, k) => { out[k] = v })
  return JSON.stringify(out)
}

const show = (req: Request, body?: string | Uint8Array): string =>
  `${req.method} ${req.url.slice(0, 300)} ${headersJson(req.headers)}${body != null ? ` body ${body.length} ${JSON.stringify((typeof body === 'string' ? body : new TextDecoder().decode(body)).slice(0, 300))}` : ''}`

/**
 * Sends the request and checks what every response must satisfy: no
 * exception, no 5xx, and every 4xx exactly `{"error":{"code","message"}}`.
 */
async function send (ctx: Ctx, req: Request, what: string): Promise<Sent> {
  stats.requests++
  const errorsBefore = ctx.errors.length
  let res: Response
  try {
    res = await ctx.app.fetch(req)
  } catch (err) {
    throw new Error(`threw ${(err as Error).stack ?? String(err)}\nfor ${what}`)
  }
  stats.byStatus.set(res.status, (stats.byStatus.get(res.status) ?? 0) + 1)
  const contentType = res.headers.get('content-type') ?? ''
  if (({} as any).polluted !== undefined) throw new Error(`Object.prototype was polluted by ${what}`)
  if (contentType.startsWith('text/event-stream')) {
    stats.streams++
    await res.body?.cancel()
    if (res.status >= 500) throw new Error(`${res.status} for ${what}`)
    return { status: res.status, body: null, contentType }
  }
  const text = await res.text()
  if (res.status >= 500) throw new Error(`${res.status} ${text} for ${what}\n${ctx.errors.slice(errorsBefore).join('\n')}`)
  let body: unknown = null
  if (contentType.startsWith('application/json') && req.method !== 'HEAD') {
    try { body = JSON.parse(text) } catch { throw new Error(`invalid JSON response ${text.slice(0, 200)} for ${what}`) }
  }
  if (res.status >= 400 && req.method !== 'HEAD') {
    if (!contentType.startsWith('application/json')) throw new Error(`${res.status} with content-type ${contentType} for ${what}`)
    const e = body as { error?: { code?: unknown, message?: unknown } }
    const ok = e != null && typeof e === 'object' && Object.keys(e).join() === 'error' && e.error != null && typeof e.error === 'object' &&
      Object.keys(e.error).sort().join() === 'code,message' && typeof e.error.code === 'string' && e.error.code.length > 0 &&
      typeof e.error.message === 'string' && e.error.message.length > 0
    if (!ok) throw new Error(`${res.status} body is not {"error":{"code","message"}}: ${text.slice(0, 300)} for ${what}`)
  }
  return { status: res.status, body, contentType }
}

const errorCode = (s: Sent): string | undefined => (s.body as { error?: { code?: string } } | null)?.error?.code

/** Checks the status against the oracle: `ok` true wants a 2xx, false a 4xx, null either. */
function expectOutcome (s: Sent, ok: boolean | null, what: string): void {
  if (ok === true && (s.status < 200 || s.status > 299)) throw new Error(`valid request got ${s.status} ${JSON.stringify(s.body)} for ${what}`)
  if (ok === false && (s.status < 400 || s.status > 499)) throw new Error(`invalid request got ${s.status} for ${what}`)
}

// ---------------------------------------------------------------- hostile pieces of requests

/** A path segment as a client might write it: raw, percent-encoded, or crafted. */
const hostileSegment = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }).map(encodeURIComponent),
  fc.constantFrom('..', '.', '%2e%2e', '%00', '\u0000', '%', '%zz', '%E0%A4%A', '%2F', 'a%2Fb', '%ff', '\ud800', '😀', '%F0%9F%98%80', ' ', '%20', '+', '?', '#', ';', 'jobs', 'v1', ''),
  fc.nat({ max: 20_000 }).map(n => 'a'.repeat(n))
)

/** A query value: a valid-looking one, an edge number, or something hostile. */
const queryValue = fc.oneof(
  fc.constantFrom('', '0', '1', '50', '1000', '1001', '5000', '5001', '-1', '1e2', '1.5', ' 5', '0x10', 'NaN', 'Infinity', '9007199254740993', '1e400', '+5', '%2B5', '%35', '%00', '%', '%zz', '..', '%E0%A4%A', 'true', 'null',
    'announced', 'claimed', 'running', 'succeeded', 'failed', 'cancelled', 'Announced', 'b0', 'b1', 'batch-1', '-x', 'a'.repeat(64), 'a'.repeat(65)),
  fc.string({ maxLength: 20 }).map(encodeURIComponent),
  fc.string({ unit: 'binary', maxLength: 10 }),
  fc.nat({ max: 20_000 }).map(n => '9'.repeat(n))
)
const queryKey = fc.oneof({ arbitrary: fc.constantFrom('state', 'limit', 'batch', 'after', 'follow', '%73tate', 'limit[]', 'Limit'), weight: 4 }, { arbitrary: fc.string({ maxLength: 8 }), weight: 1 })
/** A query string (without `?`), sometimes with repeated keys. */
const queryString = fc.array(fc.tuple(queryKey, queryValue, fc.constantFrom('=', '', '==')), { maxLength: 5 })
  .map(pairs => pairs.map(([k, v, eq]) => eq === '' ? k : `${k}${eq}${v}`).join('&'))

/** Header values a client can send (Latin-1, no line breaks), sometimes junk. */
const headerValue = fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('', '0', '5', '-1', '1e3', 'text/event-stream', '*/*', 'application/json', '9'.repeat(400)))

const CONTENT_TYPES = [
  'application/json', 'application/json; charset=utf-8', 'application/json;charset=UTF-16', 'application/JSON', 'Application/Json', 'application/jsonx',
  'application/json-patch+json', 'text/json', 'text/plain', 'text/plain;charset=UTF-8', 'multipart/form-data; boundary=x', 'application/x-www-form-urlencoded',
  'application/octet-stream', '', ' application/json', 'application/json\t', '*/*'
]
/** Content type: usually JSON, often not; undefined sends none. */
const contentType = fc.oneof(
  { arbitrary: fc.constant('application/json'), weight: 10 },
  { arbitrary: fc.constantFrom(...CONTENT_TYPES), weight: 3 },
  { arbitrary: fc.constant(undefined), weight: 1 },
  { arbitrary: fc.string({ maxLength: 30 }), weight: 1 }
)

/** How the body travels: as given (with a content-length), or streamed without one (chunked). */
const transport = fc.constantFrom('length' as const, 'stream' as const)

function requestInit (method: string, body: Uint8Array | null, type: string | undefined, how: 'length' | 'stream', extra: Record<string, string> = {}): RequestInit {
  const headers: Record<string, string> = { ...extra }
  if (type !== undefined) headers['content-type'] = type
  if (body == null) return { method, headers }
  if (how === 'length') return { method, headers: { ...headers, 'content-length': String(body.byteLength) }, body: body as Uint8Array<ArrayBuffer> }
  // Chunked, so the body limit has to count the bytes rather than trust a header.
  const chunks: Uint8Array[] = []
  for (let i = 0; i < body.byteLength; i += 16 * 1024) chunks.push(body.subarray(i, i + 16 * 1024))
  const stream = new ReadableStream<Uint8Array>({ start (c) { for (const x of chunks) c.enqueue(x); c.close() } })
  return { method, headers, body: stream, duplex: 'half' } as RequestInit
}

const bytesOf = A.bytesOf
/** A body of JSON text padded with whitespace to `size` bytes. */
function padded (json: string, size: number): Uint8Array {
  const body = bytesOf(json)
  if (body.byteLength >= size) return body
  const out = new Uint8Array(size).fill(0x20)
  out.set(body, 0)
  return out
}

/** Bodies for a JSON endpoint, tagged: valid, mutated, random, deep, around the body limit. */
function jsonBodies (valid: fc.Arbitrary<unknown>): fc.Arbitrary<{ kind: string, body: Uint8Array }> {
  return fc.oneof(
    { arbitrary: valid.map(v => ({ kind: 'valid', body: bytesOf(JSON.stringify(v)) })), weight: 3 },
    { arbitrary: A.mutated(valid, false).map(v => ({ kind: 'mutated', body: bytesOf(A.toJsonText(v)) })), weight: 6 },
    { arbitrary: fc.jsonValue().map(v => ({ kind: 'json-value', body: bytesOf(JSON.stringify(v) ?? 'null') })), weight: 1 },
    { arbitrary: fc.string({ unit: 'binary', maxLength: 500 }).map(s => ({ kind: 'random-text', body: bytesOf(s) })), weight: 1 },
    { arbitrary: fc.uint8Array({ maxLength: 2000 }).map(body => ({ kind: 'random-bytes', body })), weight: 1 },
    {
      arbitrary: fc.tuple(valid, fc.nat(), fc.constantFrom('', '}', ',', '{', '"', '\\', '\u0000', '\ufeff')).map(([v, at, s]) => {
        const t = JSON.stringify(v)
        const i = at % (t.length + 1)
        return { kind: 'broken-json', body: bytesOf(t.slice(0, i) + s + t.slice(i + 1)) }
      }),
      weight: 1
    },
    { arbitrary: A.deepRaw.map(r => ({ kind: 'deep', body: bytesOf(r.text) })), weight: 1 },
    {
      arbitrary: fc.tuple(valid, fc.oneof(fc.integer({ min: -2, max: 2 }), fc.integer({ min: 1, max: 200_000 }))).map(([v, over]) => ({ kind: 'limit', body: padded(JSON.stringify(v), BODY_LIMIT + over) })),
      weight: 1
    }
  )
}

/** What a JSON endpoint must answer before its own checks: 413, 415 or invalid JSON; else the parsed body. */
function jsonGate (req: Request, body: Uint8Array): { status: number, code: string } | { value: unknown } {
  if (body.byteLength > BODY_LIMIT) return { status: 413, code: 'too-large' }
  if (!(req.headers.get('content-type') ?? '').toLowerCase().startsWith('application/json')) return { status: 415, code: 'unsupported-media-type' }
  try {
    return { value: JSON.parse(new TextDecoder().decode(body)) as unknown }
  } catch {
    return { status: 400, code: 'invalid-json' }
  }
}

function expectExactly (s: Sent, status: number, code: string | null, what: string): void {
  if (s.status !== status || (code != null && errorCode(s) !== code)) {
    throw new Error(`expected ${status}${code != null ? ` ${code}` : ''}, got ${s.status} ${JSON.stringify(s.body).slice(0, 300)} for ${what}`)
  }
}

// ---------------------------------------------------------------- properties

const startedAt = performance.now()
afterAll(() => {
  console.log(`fuzz-http: ${stats.requests} requests (${stats.streams} event streams, ${stats.unsendable} unsendable skipped) in ${Math.round(performance.now() - startedAt)} ms; statuses ${JSON.stringify(Object.fromEntries([...stats.byStatus].sort((a, b) => a[0] - b[0])))}`)
})

/** Job specs whose object inputs are sometimes among the uploaded ones. */
function specs (ctx: Ctx): fc.Arbitrary<Record<string, unknown>> {
  const shas = [...ctx.stored.keys()]
  return fc.tuple(ctx.withObjects ? A.jobSpec : A.jobSpecWithoutObjects, fc.array(fc.nat(), { maxLength: 3 })).map(([spec, picks]) => {
    if (!Array.isArray(spec.inputs) || shas.length === 0) return spec
    const inputs = (spec.inputs as Array<Record<string, unknown>>).map((input, i) => {
      const pick = picks[i]
      if (input.object == null || pick == null || pick % 4 === 0) return input
      const sha = shas[pick % shas.length]!
      return input.sha256 != null ? { ...input, object: `sha256:${sha}`, sha256: sha } : { ...input, object: `sha256:${sha}` }
    })
    return { ...spec, inputs }
  })
}

describe.each([
  { name: 'with an object store', withObjects: true, runs: 10_000 },
  { name: 'without an object store', withObjects: false, runs: 2_000 }
])('POST /v1/jobs ($name)', ({ withObjects, runs }) => {
  let ctx: Ctx
  beforeAll(async () => {
    ctx = await setup(withObjects)
    if (withObjects) for (const c of ['one', 'two', 'three']) await upload(ctx, c)
  })
  afterAll(async () => { await ctx.close() })

  it(`answers 201 exactly for valid specs, otherwise a 4xx error (${runs} runs)`, async () => {
    const kinds = new Map<string, number>()
    await fc.assert(fc.asyncProperty(jsonBodies(specs(ctx)), contentType, transport, async ({ kind, body }, type, how) => {
      const req = build('/v1/jobs', requestInit('POST', body, type, how))
      if (req == null) return
      const what = `${kind}: ${show(req, body)}`
      const s = await send(ctx, req, what)
      const gate = jsonGate(req, body)
      if ('status' in gate) { expectExactly(s, gate.status, gate.code, what); return }
      let spec: ReturnType<typeof decodeJobSpec>
      try {
        spec = decodeJobSpec(gate.value)
      } catch {
        expectExactly(s, 400, 'invalid-request', what)
        return
      }
      const objects = spec.inputs.filter(i => i.object != null)
      if (!ctx.withObjects && (objects.length > 0 || spec.outputs.length > 0)) { expectExactly(s, 400, 'invalid-request', what); return }
      if (objects.some(i => !ctx.stored.has(i.object!.slice('sha256:'.length)))) { expectExactly(s, 400, 'input-missing', what); return }
      if (!ctx.withObjects && Object.keys(spec.secretEnv).length > 0) { expectExactly(s, 400, 'invalid-request', what); return }
      expectExactly(s, 201, null, what)
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1)
      const summary = s.body as { id?: unknown, state?: unknown }
      if (typeof summary.id !== 'string' || !JOB_ID.test(summary.id) || summary.state !== 'announced') throw new Error(`bad 201 body ${JSON.stringify(s.body)}`)
    }), { numRuns: runs })
    console.log(`POST /v1/jobs ${withObjects ? 'with' : 'without'} objects: 201 by kind ${JSON.stringify(Object.fromEntries(kinds))}`)
    // Not vacuous: valid specs were created, mutated ones too.
    expect(kinds.get('valid') ?? 0).toBeGreaterThan(runs / 40) // about 6% without an object store, 55% with one
    // About 1–2% of mutated specs stay valid and, without an object store, acceptable: expect a handful at least.
    expect(kinds.get('mutated') ?? 0).toBeGreaterThan(runs / 400)
    expect(ctx.errors).toEqual([])
  })
})

describe('other routes', () => {
  let ctx: Ctx
  let ids: string[]
  beforeAll(async () => {
    ctx = await setup(true)
    await upload(ctx, 'stored')
    ids = await seedJobs(ctx)
  })
  afterAll(async () => { await ctx.close() })

  it('POST /v1/uploads: 2xx exactly for a valid {sha256, size} (3000 runs)', async () => {
    const valid = fc.record({ sha256: fc.oneof(A.sha256, fc.constantFrom(...ctx.stored.keys())), size: fc.oneof(fc.nat({ max: 2 * MAX_FILE_BYTES }), fc.maxSafeNat(), fc.constantFrom(MAX_FILE_BYTES, MAX_FILE_BYTES + 1, 6)) })
    let granted = 0
    await fc.assert(fc.asyncProperty(jsonBodies(valid), contentType, transport, async ({ kind, body }, type, how) => {
      const req = build('/v1/uploads', requestInit('POST', body, type, how))
      if (req == null) return
      const what = `${kind}: ${show(req, body)}`
      const s = await send(ctx, req, what)
      const gate = jsonGate(req, body)
      if ('status' in gate) { expectExactly(s, gate.status, gate.code, what); return }
      const parsed = uploadRequestSchema.safeParse(gate.value)
      if (!parsed.success) { expectExactly(s, 400, 'invalid-request', what); return }
      if (parsed.data.size > MAX_FILE_BYTES) { expectExactly(s, 413, 'too-large', what); return }
      const dedup = ctx.stored.get(parsed.data.sha256) === parsed.data.size
      expectExactly(s, dedup ? 200 : 201, null, what)
      granted++
    }), { numRuns: 3000 })
    console.log(`POST /v1/uploads: ${granted} granted of 3000`)
    expect(granted).toBeGreaterThan(150)
    expect(ctx.errors).toEqual([])
  })

  it('GET /v1/jobs: query strings (3000 runs)', async () => {
    let ok = 0
    await fc.assert(fc.asyncProperty(queryString, fc.constantFrom('GET', 'HEAD'), async (query, method) => {
      const req = build(`/v1/jobs?${query}`, { method })
      if (req == null) return
      const what = show(req)
      const s = await send(ctx, req, what)
      const q = new URL(req.url).searchParams
      const state = q.get('state')
      const limit = q.get('limit')
      const batch = q.get('batch')
      const limitN = limit == null ? 50 : Number(limit)
      const valid = (state == null || ['announced', 'claimed', 'running', 'succeeded', 'failed', 'cancelled'].includes(state)) &&
        Number.isInteger(limitN) && limitN >= 1 && limitN <= 1000 && (batch == null || /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(batch))
      expectOutcome(s, valid, what)
      if (valid) ok++
      if (valid && method === 'GET') {
        const jobs = (s.body as { jobs: Array<{ state: string, spec: { batch?: string } }> }).jobs
        if (jobs.length > limitN || jobs.some(j => (state != null && j.state !== state) || (batch != null && j.spec.batch !== batch))) throw new Error(`wrong jobs listed for ${what}`)
      }
    }), { numRuns: 3000 })
    expect(ok).toBeGreaterThan(300)
    expect(ctx.errors).toEqual([])
  })

  it('job id routes: hostile ids, queries and headers (6000 runs)', async () => {
    const JOB_READ_ROUTES = ['', '/logs', '/explain', '/artifacts', '/events']
    const ROUTES = ['', '/logs', '/explain', '/artifacts', '/events', '/cancel'] as const
    const id = fc.oneof(
      { arbitrary: fc.constantFrom(...ids), weight: 4 },
      { arbitrary: fc.constantFrom(MISSING, MISSING.toUpperCase(), `${MISSING}x`, ` ${MISSING}`, `${MISSING}%00`, MISSING.slice(1)), weight: 2 },
      // An existing id with some characters percent-encoded: the same id.
      { arbitrary: fc.tuple(fc.constantFrom(...ids), fc.nat()).map(([x, at]) => { const i = at % x.length; return x.slice(0, i) + encodeURIComponent(x[i]!).replace(/^[0-9a-f-]$/, c => `%${c.charCodeAt(0).toString(16)}`) + x.slice(i + 1) }), weight: 1 },
      { arbitrary: A.jobId, weight: 1 },
      { arbitrary: hostileSegment, weight: 3 }
    )
    let ok = 0
    await fc.assert(fc.asyncProperty(id, fc.constantFrom(...ROUTES), fc.constantFrom('GET', 'POST', 'HEAD', 'PUT', 'DELETE'), queryString,
      fc.record({ 'last-event-id': headerValue, accept: headerValue }, { requiredKeys: [] }), async (rawId, route, method, query, headers) => {
        const req = build(`/v1/jobs/${rawId}${route}${query !== '' ? `?${query}` : ''}`, { method, headers })
        if (req == null) return
        const what = show(req)
        // The oracle reads the URL as the client library normalized it (`..` segments, `#`).
        const url = new URL(req.url)
        const m = /^\/v1\/jobs\/([^/]+)(\/[a-z]+)?$/.exec(url.pathname)
        let decoded: string | null = null
        if (m != null) { try { decoded = decodeURIComponent(m[1]!) } catch { decoded = null } }
        const job = decoded != null && JOB_ID.test(decoded) ? await ctx.store.getJob(decoded) : null
        const sub = m?.[2] ?? ''
        const get = method === 'GET' || method === 'HEAD'
        let valid: boolean | null
        if (m == null) valid = null // another route (e.g. `..` left /v1/jobs): only the general checks
        else if (sub === '/cancel') valid = method === 'POST' && job != null && !TERMINAL.has(job.state)
        else if (!JOB_READ_ROUTES.includes(sub) || !get) valid = false
        else if (sub === '/logs') {
          const q = url.searchParams
          const after = Number(q.get('after') ?? req.headers.get('last-event-id') ?? '0')
          const limit = Number(q.get('limit') ?? 1000)
          valid = job != null && Number.isSafeInteger(after) && after >= 0 && Number.isInteger(limit) && limit >= 1 && limit <= 5000
        } else valid = job != null
        const s = await send(ctx, req, what)
        expectOutcome(s, valid, what)
        if (valid === true) ok++
        // Only a known sub-route judges the id; an unknown one (`/a`) is simply not found.
        if (m != null && decoded != null && !JOB_ID.test(decoded) && valid === false && get && JOB_READ_ROUTES.includes(sub) && s.status !== 400) throw new Error(`a malformed id got ${s.status} for ${what}`)
      }), { numRuns: 6000 })
    // The live log stream is one path among many: reach it once for certain, fuzzed or not.
    const streamsBefore = stats.streams
    const follow = await send(ctx, new Request(`http://localhost/v1/jobs/${ids[0]!}/logs?follow=1&after=-0`, { headers: { 'last-event-id': '0' } }), 'a plain follow request')
    expect(follow.status).toBe(200)
    expect(stats.streams).toBe(streamsBefore + 1)
    console.log(`job id routes: ${ok} valid of 6000, ${stats.streams} live log streams`)
    expect(ok).toBeGreaterThan(300)
    expect(ctx.errors).toEqual([])
  })

  it('fixed routes: any query, header or method (3000 runs)', async () => {
    const ROUTES = ['/healthz', '/metrics', '/v1/openapi.json', '/v1/nodes', '/v1/stats', '/v1/stats/history', '/v1/cloud/events', '/', '/dashboard.js', '/jobs/', '/v1/jobs']
    const extra = fc.oneof(fc.constant(''), fc.constant('/'), hostileSegment.map(s => `/${s}`))
    let ok = 0
    await fc.assert(fc.asyncProperty(fc.constantFrom(...ROUTES), extra, fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'), queryString,
      fc.record({ accept: headerValue, 'content-type': fc.constantFrom(...CONTENT_TYPES) }, { requiredKeys: [] }), fc.option(fc.uint8Array({ maxLength: 300 }), { nil: undefined }),
      async (route, tail, method, query, headers, body) => {
        const path = route === '/jobs/' ? `/jobs/${tail.slice(1)}` : route + (tail === '' || route === '/' ? '' : tail)
        const init: RequestInit = { method, headers, ...(body != null && method !== 'GET' && method !== 'HEAD' ? { body: body as Uint8Array<ArrayBuffer> } : {}) }
        const req = build(`${path}${query !== '' ? `?${query}` : ''}`, init)
        if (req == null) return
        const what = show(req)
        const url = new URL(req.url)
        const get = method === 'GET' || method === 'HEAD'
        let valid: boolean | null = null
        if (['/healthz', '/metrics', '/v1/openapi.json', '/v1/nodes', '/v1/stats', '/v1/stats/history', '/', '/dashboard.js'].includes(url.pathname)) valid = get
        else if (url.pathname === '/v1/cloud/events') {
          const limit = Number(url.searchParams.get('limit') ?? 100)
          valid = get && Number.isInteger(limit) && limit >= 1 && limit <= 1000
        } else if (url.pathname.startsWith('/jobs/')) {
          let id: string | null = null
          try { id = decodeURIComponent(url.pathname.slice('/jobs/'.length)) } catch {}
          valid = get && id != null && JOB_ID.test(id)
        } else if (!url.pathname.startsWith('/v1/jobs') && !url.pathname.startsWith('/v1/uploads') && !url.pathname.startsWith('/objects/')) valid = false
        const s = await send(ctx, req, what)
        expectOutcome(s, valid, what)
        if (valid === true) ok++
      }), { numRuns: 3000 })
    expect(ok).toBeGreaterThan(150)
    expect(ctx.errors).toEqual([])
  })

  it('any path, any method (2000 runs)', async () => {
    const path = fc.array(hostileSegment, { minLength: 0, maxLength: 6 }).map(s => '/' + s.join('/'))
    await fc.assert(fc.asyncProperty(fc.oneof(path, path.map(p => `/v1${p}`), path.map(p => `/objects${p}`)), fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH'), queryString,
      fc.option(fc.uint8Array({ maxLength: 300 }), { nil: undefined }), async (p, method, query, body) => {
        const init: RequestInit = { method, headers: { 'content-type': 'application/json' }, ...(body != null && method !== 'GET' && method !== 'HEAD' ? { body: body as Uint8Array<ArrayBuffer> } : {}) }
        const req = build(`${p}${query !== '' ? `?${query}` : ''}`, init)
        if (req == null) return
        await send(ctx, req, show(req))
      }), { numRuns: 2000 })
    expect(ctx.errors).toEqual([])
  })
})
