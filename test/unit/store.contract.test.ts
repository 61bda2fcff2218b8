/**
 * One contract suite for every Store backend. A backend is one entry in
 * `backends`; PostgreSQL joins by adding its entry (and an `openShared` recipe
 * so the multi-connection race runs against it too).
 *
 * The multi-connection test runs the store in worker threads, which load the
 * compiled `dist/` output: run `npx tsc -p .` before this file.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import { ConflictError, NotFoundError, StaleAttemptError } from '../../common/errors.js'
import { newFencingToken, uuidv7 } from '../../common/ids.js'
import { jobSpecSchema, type NodeCapacity } from '../../protocol/schemas.js'
import { SQLITE_MIGRATIONS } from '../../coordinator/store/migrations/sqlite.js'
import { SqliteStore } from '../../coordinator/store/sqlite.js'
import type { AttemptRecord, ResultRecord, Store } from '../../coordinator/store/types.js'

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const tmp = mkdtempSync(join(tmpdir(), 'rgrid-store-test-'))
const opened: Store[] = []
let fileCounter = 0

/** How a worker thread opens its own connection to the same data. */
interface RemoteOpen { moduleUrl: string, exportName: string, options: Record<string, unknown> }

interface Backend {
  name: string
  open: () => Promise<Store>
  /** Absent when the data is private to one connection (an in-memory database). */
  openShared?: () => Promise<{ store: Store, remote: RemoteOpen }>
}

/** Workers load compiled code; a stale build would test yesterday's store. */
function compiledSqliteStoreUrl (): string {
  const compiled = join(repoRoot, 'dist/coordinator/store/sqlite.js')
  const sources = ['coordinator/store/sqlite.ts', 'coordinator/store/migrations/sqlite.ts'].map(p => join(repoRoot, p))
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

const backends: Backend[] = [
  {
    name: 'sqlite (file)',
    open: async () => await openSqlite(tempDbPath()),
    openShared: async () => {
      const path = tempDbPath()
      const remote = { moduleUrl: compiledSqliteStoreUrl(), exportName: 'SqliteStore', options: { path, busyTimeoutMs: 20_000 } }
      return { store: await openSqlite(path), remote }
    }
  },
  { name: 'sqlite (:memory:)', open: async () => await openSqlite(':memory:') }
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
  it('reports pending migrations until migrate() applies them', async () => {
    const path = tempDbPath()
    const fresh = SqliteStore.open({ path })
    opened.push(fresh)
    expect(fresh.pendingMigrations()).toEqual(SQLITE_MIGRATIONS.map(m => m.id))
    await fresh.migrate()
    expect(fresh.pendingMigrations()).toEqual([])

    const other = SqliteStore.open({ path, busyTimeoutMs: 100 })
    opened.push(other)
    expect(other.pendingMigrations()).toEqual([])
    await other.migrate()
    expect(other.pendingMigrations()).toEqual([])
  })

  it('rejects an invalid busy timeout', () => {
    expect(() => SqliteStore.open({ path: ':memory:', busyTimeoutMs: -1 })).toThrow(RangeError)
  })
})
