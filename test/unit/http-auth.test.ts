/**
 * API keys over HTTP (coordinator/http.ts with coordinator/api-keys.ts):
 * authentication, public and admin paths, per-key job scoping, per-owner
 * uploads, per-key rate and job limits, secretEnv redaction, and open mode.
 * Every app is built without a port and driven through `app.request`.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createHttpApp } from '../../coordinator/http.js'
import { Coordinator } from '../../coordinator/coordinator.js'
import { SqliteStore } from '../../coordinator/store/sqlite.js'
import { Transfers } from '../../coordinator/transfers.js'
import { EmbeddedObjectStore } from '../../coordinator/objects/embedded.js'
import { ApiKeyAuth, keySha256, newApiKey } from '../../coordinator/api-keys.js'
import { REDACTED, SecretBox } from '../../coordinator/secrets.js'
import { silentLogger } from '../../common/log.js'
import { LIMITS } from '../../protocol/limits.js'

const T0 = 1_700_000_000_000
const JOB_UUID = '0190a0b0-1234-7abc-8def-0123456789ab'

interface Options {
  /** Check API keys (else the API is open). @default true */
  auth?: boolean
  objects?: boolean
  secrets?: SecretBox
  maxActiveJobsPerKey?: number
  requestsPerSecondPerKey?: number
  cacheMs?: number
}

interface Ctx {
  app: ReturnType<typeof createHttpApp>
  store: SqliteStore
  coordinator: Coordinator
  /** The HTTP app's clock (rate limiter, key cache): fixed until a test moves it. */
  clock: { t: number }
  /** Creates a key in the store; returns its id and the Authorization header. */
  key: (name: string, admin?: boolean) => Promise<{ id: string, auth: Record<string, string> }>
}

const open: Array<() => Promise<void>> = []

afterEach(async () => {
  for (const close of open.splice(0)) await close()
})

async function setup (o: Options = {}): Promise<Ctx> {
  const store = SqliteStore.open({ path: ':memory:' })
  await store.migrate()
  let now = T0
  const coordinatorClock = { now: () => now++ }
  const clock = { t: T0 }
  const httpClock = { now: () => clock.t }
  const root = mkdtempSync(join(tmpdir(), 'rgrid-http-auth-'))
  const objects = o.objects === true
    ? new EmbeddedObjectStore({ root, secret: new Uint8Array(32).fill(9), clock: coordinatorClock, publicUrl: () => 'http://localhost' })
    : null
  await objects?.start()
  const transfers = objects != null ? new Transfers({ objects, maxFileBytes: 1024 * 1024 }) : undefined
  const coordinator = new Coordinator({
    privateKey: await generateKeyPair('Ed25519'),
    store,
    log: silentLogger,
    clock: coordinatorClock,
    ...(transfers != null ? { transfers } : {}),
    ...(o.secrets != null ? { secrets: o.secrets } : {}),
    ...(o.maxActiveJobsPerKey != null ? { maxActiveJobsPerKey: o.maxActiveJobsPerKey } : {})
  })
  coordinator.announcer.stop()
  const auth = o.auth !== false
    ? new ApiKeyAuth({ store, clock: httpClock, ...(o.cacheMs != null ? { cacheMs: o.cacheMs } : {}) })
    : undefined
  const app = createHttpApp({
    api: coordinator,
    log: silentLogger,
    clock: httpClock,
    ...(auth != null ? { auth } : {}),
    ...(objects != null ? { objects } : {}),
    ...(o.requestsPerSecondPerKey != null ? { requestsPerSecondPerKey: o.requestsPerSecondPerKey } : {})
  })
  open.push(async () => {
    coordinator.auction.stop()
    await store.close()
    rmSync(root, { recursive: true, force: true })
  })
  const key = async (name: string, admin = false): Promise<{ id: string, auth: Record<string, string> }> => {
    const k = newApiKey()
    await store.createApiKey({ id: k.id, name, secretSha256: keySha256(k.secret), admin, createdAt: T0 })
    return { id: k.id, auth: { authorization: `Bearer ${k.key}` } }
  }
  return { app, store, coordinator, clock, key }
}

interface Answer { status: number, body: any, text: string, res: Response }

async function call (ctx: Ctx, path: string, init: RequestInit = {}): Promise<Answer> {
  const res = await ctx.app.request(path, init)
  const text = await res.text()
  let body: any = null
  try { body = JSON.parse(text) } catch { body = null }
  return { status: res.status, body, text, res }
}

const get = (headers: Record<string, string> = {}): RequestInit => ({ method: 'GET', headers })
const post = (body: unknown, headers: Record<string, string> = {}): RequestInit =>
  ({ method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) })

/** An error answer: the status, and exactly `{error:{code,message}}` with that code. */
async function expectError (ctx: Ctx, path: string, init: RequestInit, status: number, code: string): Promise<Answer> {
  const a = await call(ctx, path, init)
  expect(a.status).toBe(status)
  expect(a.body).toEqual({ error: { code, message: expect.any(String) } })
  expect(a.body.error.message.length).toBeGreaterThan(0)
  return a
}

async function submit (ctx: Ctx, headers: Record<string, string>, spec: unknown = { command: ['echo', 'hi'] }): Promise<any> {
  const a = await call(ctx, '/v1/jobs', post(spec, headers))
  expect(a.status, a.text).toBe(201)
  return a.body
}

describe('authentication', () => {
  it('refuses a missing header with 401 unauthorized and a Bearer challenge', async () => {
    const ctx = await setup()
    const a = await expectError(ctx, '/v1/jobs', get(), 401, 'unauthorized')
    expect(a.res.headers.get('www-authenticate') ?? '').toMatch(/^Bearer/)
    await expectError(ctx, '/v1/jobs', post({ command: ['x'] }), 401, 'unauthorized')
    expect(await ctx.store.listJobs({})).toEqual([])
  })

  it('refuses malformed headers, unknown ids and wrong secrets with 401', async () => {
    const ctx = await setup()
    const alice = await ctx.key('alice')
    const good = alice.auth.authorization!
    expect((await call(ctx, '/v1/jobs', get(alice.auth))).status).toBe(200)

    const secret = good.slice(good.lastIndexOf('_') + 1)
    const unknownId = `Bearer rgk_${'0'.repeat(16)}_${secret}`
    const wrongSecret = `Bearer rgk_${alice.id}_${randomBytes(32).toString('base64url')}`
    for (const header of [
      'Basic dXNlcjpwYXNz',
      good.slice('Bearer '.length), // no scheme
      'Bearer',
      'Bearer rgk_nothex_abc',
      `${good}x`, // secret one character too long
      `Bearer rgk_${alice.id.toUpperCase()}_${secret}`,
      unknownId,
      wrongSecret
    ]) {
      const a = await expectError(ctx, '/v1/jobs', get({ authorization: header }), 401, 'unauthorized')
      expect(a.res.headers.get('www-authenticate') ?? '').toMatch(/^Bearer/)
    }
    // The valid key still works after all that.
    expect((await call(ctx, '/v1/jobs', get(alice.auth))).status).toBe(200)
  })

  it('refuses a revoked key once the cache has passed (clock)', async () => {
    const ctx = await setup()
    const alice = await ctx.key('alice')
    expect((await call(ctx, '/v1/jobs', get(alice.auth))).status).toBe(200)
    expect(await ctx.store.revokeApiKey({ id: alice.id, now: T0 + 1 })).toBe(true)
    // Within the 5 s cache the key is still trusted (documented behaviour).
    ctx.clock.t += 4_000
    expect((await call(ctx, '/v1/jobs', get(alice.auth))).status).toBe(200)
    ctx.clock.t += 1_001
    await expectError(ctx, '/v1/jobs', get(alice.auth), 401, 'unauthorized')
    await expectError(ctx, '/v1/jobs', post({ command: ['x'] }, alice.auth), 401, 'unauthorized')
  })

  it('refuses a revoked key at once with cacheMs 0', async () => {
    const ctx = await setup({ cacheMs: 0 })
    const alice = await ctx.key('alice')
    expect((await call(ctx, '/v1/jobs', get(alice.auth))).status).toBe(200)
    await ctx.store.revokeApiKey({ id: alice.id, now: T0 + 1 })
    const a = await expectError(ctx, '/v1/jobs', get(alice.auth), 401, 'unauthorized')
    expect(a.body.error.message).toContain('revoked')
  })
})

describe('public and admin paths', () => {
  it('serves the public paths without a key', async () => {
    const ctx = await setup()
    const health = await call(ctx, '/healthz')
    expect(health.status).toBe(200)
    expect(health.body.ok).toBe(true)
    const openapi = await call(ctx, '/v1/openapi.json')
    expect(openapi.status).toBe(200)
    expect(typeof openapi.body.openapi).toBe('string')
    for (const path of ['/', `/jobs/${JOB_UUID}`]) {
      const a = await call(ctx, path)
      expect(a.status, path).toBe(200)
      expect(a.res.headers.get('content-type') ?? '').toMatch(/^text\/html/)
    }
    const js = await call(ctx, '/dashboard.js')
    expect(js.status).toBe(200)
    expect(js.res.headers.get('content-type') ?? '').toMatch(/^text\/javascript/)
  })

  it('/metrics, /v1/stats and /v1/cloud/events: 401 without a key, 403 for a non-admin key, 200 for an admin key', async () => {
    const ctx = await setup()
    const alice = await ctx.key('alice')
    const root = await ctx.key('root', true)
    for (const path of ['/metrics', '/v1/stats', '/v1/cloud/events']) {
      await expectError(ctx, path, get(), 401, 'unauthorized')
      await expectError(ctx, path, get(alice.auth), 403, 'forbidden')
      const a = await call(ctx, path, get(root.auth))
      expect(a.status, path).toBe(200)
    }
    expect((await call(ctx, '/v1/cloud/events', get(root.auth))).body).toEqual({ events: [] })
    expect((await call(ctx, '/metrics', get(root.auth))).text).toContain('rgrid_')
  })
})

describe('scoping jobs to their key', () => {
  it('lists, shows and cancels only the caller\'s jobs; an admin sees and cancels all', async () => {
    const ctx = await setup()
    const alice = await ctx.key('alice')
    const bob = await ctx.key('bob')
    const root = await ctx.key('root', true)
    const a1 = await submit(ctx, alice.auth)
    const a2 = await submit(ctx, alice.auth)
    const b1 = await submit(ctx, bob.auth)
    expect(a1.owner).toBe(alice.id)
    expect(b1.owner).toBe(bob.id)

    const ids = async (auth: Record<string, string>): Promise<string[]> => {
      const a = await call(ctx, '/v1/jobs', get(auth))
      expect(a.status).toBe(200)
      return (a.body.jobs as any[]).map(j => j.id).sort()
    }
    const aliceList = await call(ctx, '/v1/jobs', get(alice.auth))
    expect((aliceList.body.jobs as any[]).map(j => j.owner)).toEqual([alice.id, alice.id])
    expect(await ids(alice.auth)).toEqual([a1.id, a2.id].sort())
    expect(await ids(bob.auth)).toEqual([b1.id])
    expect(await ids(root.auth)).toEqual([a1.id, a2.id, b1.id].sort())

    // Alice's own job is hers to read.
    expect((await call(ctx, `/v1/jobs/${a1.id}`, get(alice.auth))).body).toMatchObject({ id: a1.id, owner: alice.id })

    // Bob: not found, not forbidden, on every per-job route.
    for (const [path, init] of [
      [`/v1/jobs/${a1.id}`, get(bob.auth)],
      [`/v1/jobs/${a1.id}/logs`, get(bob.auth)],
      [`/v1/jobs/${a1.id}/events`, get(bob.auth)],
      [`/v1/jobs/${a1.id}/explain`, get(bob.auth)],
      [`/v1/jobs/${a1.id}/artifacts`, get(bob.auth)],
      [`/v1/jobs/${a1.id}/cancel`, { method: 'POST', headers: bob.auth }]
    ] as Array<[string, RequestInit]>) {
      const a = await expectError(ctx, path, init, 404, 'not-found')
      // Indistinguishable from a job that does not exist.
      const missing = await call(ctx, path.replace(a1.id, JOB_UUID), init)
      expect(missing.status).toBe(404)
      expect(a.text).not.toContain(alice.id)
    }
    const still = await call(ctx, `/v1/jobs/${a1.id}`, get(alice.auth))
    expect(still.status).toBe(200)
    expect(still.body.state).toBe('announced')
    expect((await call(ctx, `/v1/jobs/${a1.id}/events`, get(alice.auth))).body.events.map((e: any) => e.type)).toEqual(['submitted'])

    // Root cancels bob's job.
    const cancel = await call(ctx, `/v1/jobs/${b1.id}/cancel`, { method: 'POST', headers: root.auth })
    expect(cancel.status).toBe(200)
    expect(cancel.body).toMatchObject({ id: b1.id, state: 'cancelled', owner: bob.id })
    expect((await call(ctx, `/v1/jobs/${b1.id}`, get(bob.auth))).body.state).toBe('cancelled')
    // Alice's jobs untouched.
    expect((await ctx.store.getJob(a1.id))?.state).toBe('announced')
    expect((await ctx.store.getJob(a2.id))?.state).toBe('announced')
  })
})

describe('uploads are per owner', () => {
  it('an object uploaded by alice is hers: bob cannot name it and is offered his own upload', async () => {
    const ctx = await setup({ objects: true })
    const alice = await ctx.key('alice')
    const bob = await ctx.key('bob')
    const content = 'alice-data,1,2,3\n'
    const sha = createHash('sha256').update(content).digest('hex')
    const size = Buffer.byteLength(content)

    const grant = await call(ctx, '/v1/uploads', post({ sha256: sha, size }, alice.auth))
    expect(grant.status).toBe(201)
    expect(grant.body.object).toBe(`sha256:${sha}`)
    expect(typeof grant.body.url).toBe('string')
    const put = await ctx.app.request(grant.body.url as string, { method: 'PUT', body: content })
    expect(put.status).toBe(200)

    const spec = { command: ['cat', 'in.csv'], inputs: [{ path: 'in.csv', object: `sha256:${sha}` }] }
    const job = await call(ctx, '/v1/jobs', post(spec, alice.auth))
    expect(job.status).toBe(201)
    expect(job.body.owner).toBe(alice.id)

    const refused = await expectError(ctx, '/v1/jobs', post(spec, bob.auth), 400, 'input-missing')
    expect(refused.body.error.message).toContain(sha)
    expect((await call(ctx, '/v1/jobs', get(bob.auth))).body.jobs).toEqual([])

    const bobGrant = await call(ctx, '/v1/uploads', post({ sha256: sha, size }, bob.auth))
    expect(bobGrant.status).toBe(201)
    expect(bobGrant.body.url).not.toBeNull()
    expect(typeof bobGrant.body.url).toBe('string')

    const again = await call(ctx, '/v1/uploads', post({ sha256: sha, size }, alice.auth))
    expect(again.status).toBe(200)
    expect(again.body).toEqual({ object: `sha256:${sha}`, url: null, expiresAt: null })

    // Uploads need a key too.
    await expectError(ctx, '/v1/uploads', post({ sha256: sha, size }), 401, 'unauthorized')
  })
})

describe('limits', () => {
  it('rate-limits each key on its own: the 11th request at 5/s in one instant is 429 with Retry-After', async () => {
    const ctx = await setup({ requestsPerSecondPerKey: 5 })
    const alice = await ctx.key('alice')
    const bob = await ctx.key('bob')
    for (let i = 0; i < 10; i++) expect((await call(ctx, '/v1/jobs', get(alice.auth))).status, `request ${i + 1}`).toBe(200)
    const limited = await expectError(ctx, '/v1/jobs', get(alice.auth), 429, 'rate-limited')
    expect(Number(limited.res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    await expectError(ctx, '/v1/jobs', post({ command: ['x'] }, alice.auth), 429, 'rate-limited')
    expect(await ctx.store.listJobs({})).toEqual([])

    // Another key is unaffected; public paths and admin keys are not limited.
    expect((await call(ctx, '/v1/jobs', get(bob.auth))).status).toBe(200)
    const root = await ctx.key('root', true)
    for (let i = 0; i < 30; i++) expect((await call(ctx, '/v1/jobs', get(root.auth))).status, `admin request ${i + 1}`).toBe(200)
    expect((await call(ctx, '/healthz', get(alice.auth))).status).toBe(200)

    ctx.clock.t += 1_000
    expect((await call(ctx, '/v1/jobs', get(alice.auth))).status).toBe(200)
  })

  it('caps unfinished jobs per key: the third is 429 too-many-jobs naming the limit; cancelling frees a place', async () => {
    const ctx = await setup({ maxActiveJobsPerKey: 2 })
    const alice = await ctx.key('alice')
    const bob = await ctx.key('bob')
    const first = await submit(ctx, alice.auth)
    await submit(ctx, alice.auth)
    const third = await expectError(ctx, '/v1/jobs', post({ command: ['x'] }, alice.auth), 429, 'too-many-jobs')
    expect(third.body.error.message).toMatch(/\b2 unfinished jobs\b/)
    expect(Number(third.res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect(await ctx.store.countActiveJobs(alice.id)).toBe(2)

    // Per key: bob still may submit.
    await submit(ctx, bob.auth)

    expect((await call(ctx, `/v1/jobs/${first.id}/cancel`, { method: 'POST', headers: alice.auth })).status).toBe(200)
    await submit(ctx, alice.auth)
    await expectError(ctx, '/v1/jobs', post({ command: ['x'] }, alice.auth), 429, 'too-many-jobs')
  })

  it('refuses a body over the limit with 413 too-large', async () => {
    const ctx = await setup()
    const alice = await ctx.key('alice')
    const limit = 2 * LIMITS.jobSpecBytes
    const base = JSON.stringify({ command: ['x'] })
    const padded = base.slice(0, -1) + ' '.repeat(limit + 1 - base.length) + '}'
    await expectError(ctx, '/v1/jobs', post(padded, alice.auth), 413, 'too-large')
    expect(await ctx.store.listJobs({})).toEqual([])
  })
})

describe('secretEnv', () => {
  it('seals secrets: listings show [redacted], the store keeps a sealed string the key opens', async () => {
    const secretKey = randomBytes(32)
    const ctx = await setup({ secrets: new SecretBox(secretKey) })
    const alice = await ctx.key('alice')
    const created = await call(ctx, '/v1/jobs', post({ command: ['sh', '-c', 'echo $TOKEN'], secretEnv: { TOKEN: 'hunter2-xyz' } }, alice.auth))
    expect(created.status).toBe(201)
    const id = created.body.id as string
    expect(REDACTED).toBe('[redacted]')

    const one = await call(ctx, `/v1/jobs/${id}`, get(alice.auth))
    expect(one.status).toBe(200)
    expect(one.body.spec.secretEnv).toEqual({ TOKEN: '[redacted]' })
    const list = await call(ctx, '/v1/jobs', get(alice.auth))
    expect(list.status).toBe(200)
    expect(list.body.jobs).toHaveLength(1)
    expect(list.body.jobs[0].spec.secretEnv).toEqual({ TOKEN: '[redacted]' })

    const others = await Promise.all([`/v1/jobs/${id}/events`, `/v1/jobs/${id}/explain`].map(async p => await call(ctx, p, get(alice.auth))))
    for (const a of [created, one, list, ...others]) expect(a.text).not.toContain('hunter2-xyz')

    const sealed = await ctx.store.jobSecrets(id)
    expect(typeof sealed).toBe('string')
    expect(sealed).not.toContain('hunter2-xyz')
    expect(new SecretBox(secretKey).open(id, sealed!)).toEqual({ TOKEN: 'hunter2-xyz' })
    expect(() => new SecretBox(randomBytes(32)).open(id, sealed!)).toThrow()
    expect(JSON.stringify(await ctx.store.getJob(id))).not.toContain('hunter2-xyz')
  })

  it('a coordinator without a secrets key refuses secretEnv with 400', async () => {
    const ctx = await setup()
    const alice = await ctx.key('alice')
    const a = await expectError(ctx, '/v1/jobs', post({ command: ['x'], secretEnv: { TOKEN: 'hunter2-xyz' } }, alice.auth), 400, 'invalid-request')
    expect(a.body.error.message).toContain('secretEnv')
    expect(a.text).not.toContain('hunter2-xyz')
    expect(await ctx.store.listJobs({})).toEqual([])
  })
})

describe('open mode (no auth)', () => {
  it('serves requests without a key; jobs have no owner; admin paths are open', async () => {
    const ctx = await setup({ auth: false })
    const job = await submit(ctx, {})
    expect(job.owner).toBeNull()
    const one = await call(ctx, `/v1/jobs/${job.id}`)
    expect(one.status).toBe(200)
    expect(one.body.owner).toBeNull()
    const list = await call(ctx, '/v1/jobs')
    expect(list.status).toBe(200)
    expect(list.body.jobs.map((j: any) => [j.id, j.owner])).toEqual([[job.id, null]])
    expect((await ctx.store.getJob(job.id))?.owner).toBeNull()
    expect((await call(ctx, '/metrics')).status).toBe(200)
    expect((await call(ctx, '/v1/cloud/events')).status).toBe(200)
    expect((await call(ctx, `/v1/jobs/${job.id}/cancel`, { method: 'POST' })).body.state).toBe('cancelled')
  })
})
