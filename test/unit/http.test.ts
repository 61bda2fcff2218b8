import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createHttpApp } from '../../coordinator/http.js'
import { Coordinator } from '../../coordinator/coordinator.js'
import { SqliteStore } from '../../coordinator/store/sqlite.js'
import type { ResultRecord } from '../../coordinator/store/types.js'
import { silentLogger } from '../../common/log.js'
import { newFencingToken } from '../../common/ids.js'
import { LIMITS } from '../../protocol/limits.js'

const T0 = 1_700_000_000_000
const MISSING = '0190a0b0-1234-7abc-8def-0123456789ab'
const NODE = '12D3KooWNode0001abcdefgh'

let store: SqliteStore
let coordinator: Coordinator
let app: ReturnType<typeof createHttpApp>
let now: number

beforeEach(async () => {
  store = SqliteStore.open({ path: ':memory:' })
  await store.migrate()
  now = T0
  // A clock that steps 1 ms per reading, so every job has its own creation time.
  const clock = { now: () => now++ }
  coordinator = new Coordinator({ privateKey: await generateKeyPair('Ed25519'), store, log: silentLogger, clock })
  coordinator.announcer.stop()
  app = createHttpApp({ api: coordinator, log: silentLogger })
})

afterEach(async () => {
  coordinator.auction.stop()
  await store.close()
})

const json = (body: unknown, headers: Record<string, string> = {}): RequestInit =>
  ({ method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) })

async function call (path: string, init?: RequestInit): Promise<{ status: number, body: any, res: Response }> {
  const res = await app.request(path, init)
  const text = await res.text()
  expect(res.headers.get('content-type') ?? '').toMatch(/^application\/json/)
  return { status: res.status, body: JSON.parse(text), res }
}

/** Every error response: the status, and `{error:{code,message}}` with nothing else. */
async function expectError (path: string, init: RequestInit | undefined, status: number, code: string): Promise<string> {
  const { status: got, body } = await call(path, init)
  expect(got).toBe(status)
  expect(Object.keys(body)).toEqual(['error'])
  expect(Object.keys(body.error).sort()).toEqual(['code', 'message'])
  expect(body.error.code).toBe(code)
  expect(typeof body.error.message).toBe('string')
  expect(body.error.message.length).toBeGreaterThan(0)
  return body.error.message as string
}

async function submit (spec: unknown = { command: ['echo', 'hi'] }): Promise<string> {
  const { status, body } = await call('/v1/jobs', json(spec))
  expect(status).toBe(201)
  return body.id as string
}

describe('POST /v1/jobs', () => {
  it('accepts a valid spec: 201, summary, Location', async () => {
    const { status, body, res } = await call('/v1/jobs', json({ command: ['echo', 'hi'], labels: { zone: 'a' } }))
    expect(status).toBe(201)
    expect(body.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    expect(body.state).toBe('announced')
    expect(body.attempt).toBe(1)
    expect(res.headers.get('location')).toBe(`/v1/jobs/${body.id}`)
    expect((await store.getJob(body.id))?.state).toBe('announced')
  })

  it('GET returns the stored job with defaults applied, no attempts, no result', async () => {
    const id = await submit({ command: ['echo', 'hi'] })
    const { status, body } = await call(`/v1/jobs/${id}`)
    expect(status).toBe(200)
    expect(body).toMatchObject({ id, state: 'announced', attempts: [], result: null })
    expect(body.spec).toEqual({
      command: ['echo', 'hi'], env: {}, secretEnv: {}, network: false, resources: { cpus: 1, memoryMb: 256, diskMb: 1024 }, timeoutSeconds: 3600, labels: {}, maxAttempts: 3, inputs: [], outputs: []
    })
  })

  it('rejects malformed JSON with invalid-json', async () => {
    await expectError('/v1/jobs', json('{"command": ["x"'), 400, 'invalid-json')
    await expectError('/v1/jobs', json(''), 400, 'invalid-json')
  })

  it('rejects spec errors with invalid-request naming the field', async () => {
    expect(await expectError('/v1/jobs', json({ command: ['x'], resources: { memoryMb: 1 } }), 400, 'invalid-request')).toContain('resources.memoryMb')
    expect(await expectError('/v1/jobs', json({ command: [] }), 400, 'invalid-request')).toContain('command')
    expect(await expectError('/v1/jobs', json({ command: ['x'], resources: { cpus: 'two' } }), 400, 'invalid-request')).toContain('resources.cpus')
    expect(await expectError('/v1/jobs', json(null), 400, 'invalid-request')).toMatch(/object/)
    expect(await store.listJobs({})).toEqual([])
  })

  it('rejects an unknown field, naming it', async () => {
    const message = await expectError('/v1/jobs', json({ command: ['x'], timeoutSecond: 5 }), 400, 'invalid-request')
    expect(message).toContain('timeoutSecond')
  })

  it('rejects a body that is not application/json with 415', async () => {
    await expectError('/v1/jobs', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{"command":["x"]}' }, 415, 'unsupported-media-type')
    await expectError('/v1/jobs', { method: 'POST', body: '{"command":["x"]}' }, 415, 'unsupported-media-type')
    // charset parameters are fine
    expect((await call('/v1/jobs', json({ command: ['x'] }, { 'content-type': 'application/json; charset=utf-8' }))).status).toBe(201)
  })

  it('rejects a body over the limit with 413 too-large, and accepts one at the limit', async () => {
    const limit = 2 * LIMITS.jobSpecBytes
    const padded = (size: number): string => {
      const base = JSON.stringify({ command: ['x'] })
      return base.slice(0, -1) + ' '.repeat(size - base.length) + '}'
    }
    expect((await call('/v1/jobs', json(padded(limit)))).status).toBe(201)
    await expectError('/v1/jobs', json(padded(limit + 1)), 413, 'too-large')
    await expectError('/v1/jobs', json(padded(limit + 1), { 'content-length': String(limit + 1) }), 413, 'too-large')
    expect(await store.listJobs({})).toHaveLength(1)
  })

  it('honours maxBodyBytes', async () => {
    app = createHttpApp({ api: coordinator, log: silentLogger, maxBodyBytes: 32 })
    await expectError('/v1/jobs', json({ command: ['x'.repeat(40)] }), 413, 'too-large')
    expect((await call('/v1/jobs', json({ command: ['x'] }))).status).toBe(201)
  })
})

describe('GET /v1/jobs', () => {
  it('lists newest first, filters by state, honours limit', async () => {
    const a = await submit()
    const b = await submit()
    const c = await submit()
    await call(`/v1/jobs/${b}/cancel`, { method: 'POST' })

    const all = await call('/v1/jobs')
    expect(all.status).toBe(200)
    expect(all.body.jobs.map((j: any) => j.id)).toEqual([c, b, a])
    expect(all.body.jobs[0]).toMatchObject({ id: c, state: 'announced', attempt: 1, spec: { command: ['echo', 'hi'] } })

    const announced = await call('/v1/jobs?state=announced')
    expect(announced.body.jobs.map((j: any) => j.id)).toEqual([c, a])
    const cancelled = await call('/v1/jobs?state=cancelled')
    expect(cancelled.body.jobs.map((j: any) => j.id)).toEqual([b])

    const two = await call('/v1/jobs?limit=2')
    expect(two.body.jobs.map((j: any) => j.id)).toEqual([c, b])
  })

  it('rejects a bad state or limit', async () => {
    expect(await expectError('/v1/jobs?state=done', undefined, 400, 'invalid-request')).toContain('state')
    for (const limit of ['0', 'abc', '5000', '1.5', '-1', '']) {
      expect(await expectError(`/v1/jobs?limit=${limit}`, undefined, 400, 'invalid-request')).toContain('limit')
    }
    expect((await call('/v1/jobs?limit=1000')).status).toBe(200)
  })
})

describe('GET /v1/jobs/:id', () => {
  it('404s a well-formed id that does not exist', async () => {
    const { status, body } = await call(`/v1/jobs/${MISSING}`)
    expect(status).toBe(404)
    expect(body).toEqual({ error: { code: 'not-found', message: expect.stringContaining(MISSING) } })
    await expectError(`/v1/jobs/${MISSING}/events`, undefined, 404, 'not-found')
    await expectError(`/v1/jobs/${MISSING}/cancel`, { method: 'POST' }, 404, 'not-found')
  })

  it('400s an id that is not a job id', async () => {
    await expectError('/v1/jobs/not-a-uuid', undefined, 400, 'invalid-request')
    await expectError(`/v1/jobs/${MISSING.toUpperCase()}`, undefined, 400, 'invalid-request')
    await expectError('/v1/jobs/not-a-uuid/events', undefined, 400, 'invalid-request')
    await expectError('/v1/jobs/not-a-uuid/cancel', { method: 'POST' }, 400, 'invalid-request')
  })

  it('shows attempts and the result of a finished job, without the fencing token', async () => {
    const id = await submit({ command: ['echo', 'hi'] })
    const token = newFencingToken()
    await store.award({ jobId: id, attempt: 1, node: NODE, token, now: T0 + 100, leaseMs: 30_000, detail: { bids: 1 } })
    const result: ResultRecord = {
      attempt: 1, outcome: 'succeeded', exitCode: 0, stdout: 'hi\n', stderr: '', stdoutTruncated: false, stderrTruncated: false,
      startedAt: T0 + 110, finishedAt: T0 + 120, error: null, artifacts: []
    }
    expect(await store.recordResult({ jobId: id, attempt: 1, token, node: NODE, now: T0 + 130, result })).toBe('recorded')

    const { status, body } = await call(`/v1/jobs/${id}`)
    expect(status).toBe(200)
    expect(body.state).toBe('succeeded')
    expect(body.attempts).toHaveLength(1)
    expect(body.attempts[0]).toEqual({ number: 1, node: NODE, state: 'succeeded', awardedAt: T0 + 100, startedAt: T0 + 110, finishedAt: T0 + 120 })
    expect(body.result).toEqual(result)
    const events = await call(`/v1/jobs/${id}/events`)
    // No started report came (the job ended within the node's hold): the result logs the start.
    expect(events.body.events.map((e: any) => e.type)).toEqual(['submitted', 'awarded', 'started', 'finished'])
    expect(JSON.stringify(body) + JSON.stringify(events.body)).not.toContain(token)

    await expectError(`/v1/jobs/${id}/cancel`, { method: 'POST' }, 409, 'conflict')
  })
})

describe('POST /v1/jobs/:id/cancel', () => {
  it('cancels an announced job once, then conflicts; events list submitted then cancelled', async () => {
    const id = await submit()
    const first = await call(`/v1/jobs/${id}/cancel`, { method: 'POST' })
    expect(first.status).toBe(200)
    expect(first.body).toMatchObject({ id, state: 'cancelled', stoppedAttempt: null })
    expect((await store.getJob(id))?.state).toBe('cancelled')

    expect(await expectError(`/v1/jobs/${id}/cancel`, { method: 'POST' }, 409, 'conflict')).toContain('cancelled')

    const { status, body } = await call(`/v1/jobs/${id}/events`)
    expect(status).toBe(200)
    expect(body.events.map((e: any) => e.type)).toEqual(['submitted', 'cancelled'])
    expect(body.events[1]).toMatchObject({ jobId: id, actor: 'http', attempt: 1 })
  })

  it('cancels a claimed job and reports the stopped attempt', async () => {
    const id = await submit()
    await store.award({ jobId: id, attempt: 1, node: NODE, token: newFencingToken(), now: T0 + 5, leaseMs: 30_000, detail: {} })
    const { status, body } = await call(`/v1/jobs/${id}/cancel`, { method: 'POST' })
    expect(status).toBe(200)
    expect(body).toMatchObject({ id, state: 'cancelled', stoppedAttempt: 1 })
    expect((await call(`/v1/jobs/${id}`)).body.attempts[0].state).toBe('cancelled')
  })
})

describe('other routes', () => {
  it('GET /v1/nodes lists no nodes', async () => {
    expect(await call('/v1/nodes')).toMatchObject({ status: 200, body: { nodes: [] } })
  })

  it('GET /v1/nodes lists a node known to the store', async () => {
    const capacity = { slots: 4, freeSlots: 3, cpus: 8, memoryMb: 4096, labels: { zone: 'a' }, runtime: 'process' as const, version: '0.1.0' }
    await store.upsertNode({ peerId: NODE, capacity, now: T0 })
    const { body } = await call('/v1/nodes')
    expect(body.nodes).toEqual([expect.objectContaining({ peerId: NODE, freeSlots: 3, activeAwards: 0, session: false, version: '0.1.0' })])
  })

  it('GET /healthz is ok', async () => {
    const { status, body } = await call('/healthz')
    expect(status).toBe(200)
    expect(body.ok).toBe(true)
  })

  it('an unexpected failure is a 500 internal error that does not leak details', async () => {
    await store.close()
    const message = await expectError('/v1/jobs', undefined, 500, 'internal')
    expect(message).not.toMatch(/database|sqlite/i)
  })

  it('unknown routes are a 404 JSON error', async () => {
    await expectError('/v1/nope', undefined, 404, 'not-found')
    await expectError('/v1/jobs', { method: 'DELETE' }, 404, 'not-found')
  })
})

describe('POST /v1/jobs/batch', () => {
  it('creates every job of a batch in one go: 201 and a summary per job, in order', async () => {
    const specs = [{ command: ['echo', 'a'] }, { command: ['echo', 'b'], labels: { zone: 'x' } }, { command: ['echo', 'c'] }]
    const { status, body } = await call('/v1/jobs/batch', json({ jobs: specs }))
    expect(status).toBe(201)
    expect(body.jobs).toHaveLength(3)
    for (const [i, j] of (body.jobs as Array<{ id: string, state: string }>).entries()) {
      expect(j.state).toBe('announced')
      expect((await store.getJob(j.id))?.spec.command).toEqual(specs[i]!.command)
    }
    expect(new Set(body.jobs.map((j: { id: string }) => j.id)).size).toBe(3)
  })

  it('refuses the whole batch when one spec is bad, naming it, and stores nothing', async () => {
    const before = (await store.listJobs({})).length
    const message = await expectError('/v1/jobs/batch', json({ jobs: [{ command: ['echo', 'ok'] }, { command: [] }, { command: ['echo', 'ok'] }] }), 400, 'invalid-request')
    expect(message).toContain('jobs[1]')
    expect((await store.listJobs({})).length).toBe(before)
  })

  it('refuses what is not a batch, an empty one, one too many, and an oversized spec', async () => {
    await expectError('/v1/jobs/batch', json([{ command: ['true'] }]), 400, 'invalid-request')
    await expectError('/v1/jobs/batch', json({ jobs: [] }), 400, 'invalid-request')
    await expectError('/v1/jobs/batch', json({ jobs: [{ command: ['true'] }], extra: 1 }), 400, 'invalid-request')
    await expectError('/v1/jobs/batch', json({ jobs: Array.from({ length: 1001 }, () => ({ command: ['true'] })) }), 400, 'invalid-request')
    await expectError('/v1/jobs/batch', json({ jobs: [{ command: ['echo', 'x'.repeat(2 * LIMITS.jobSpecBytes)] }] }), 413, 'too-large')
    await expectError('/v1/jobs/batch', json('{"jobs": ['), 400, 'invalid-json')
    expect(await store.listJobs({})).toEqual([])
  })
})
