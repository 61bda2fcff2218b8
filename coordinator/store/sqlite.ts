/**
 * The embedded SQLite implementation of {@link Store}, the default backend.
 *
 * better-sqlite3 is synchronous; the methods are `async` only to honour the
 * backend-neutral contract. Each state change runs in an IMMEDIATE
 * transaction whose first write is one compare-and-set UPDATE on the jobs
 * row, so two coordinators (or worker threads) sharing the file serialise on
 * SQLite's write lock and exactly one of them sees `changes === 1`.
 * Rejections are decided inside the transaction (so the reason read matches
 * the state the UPDATE saw) but thrown after it, so that audit events such as
 * `stale-report` are committed rather than rolled back with the error.
 *
 * Writes are group-committed: each runs as a savepoint inside one IMMEDIATE
 * transaction per turn of the event loop, and its promise resolves once that
 * transaction committed (common/group-commit.ts). Reads on this connection see the
 * turn's writes before the commit, as they would a moment later.
 */
import Database from 'better-sqlite3'
import { systemClock } from '../../common/clock.js'
import { GroupCommit } from '../../common/group-commit.js'
import { NotFoundError, StaleAttemptError } from '../../common/errors.js'
import type { JobError, JobSpec, NodeCapacity, Artifact } from '../../protocol/schemas.js'
import { SQLITE_MIGRATIONS } from './migrations/sqlite.js'
import {
  activeJobCap, awardConflict, cancelConflict, checkApiKeyRevocation, checkJoinTokenQuery, checkJoinTokenRevocation, checkLogBatch, checkNewApiKey,
  checkNewJoinToken, checkPeerBinding, checkRenewal, checkSetting, clampLimit, DEFAULT_LIST_LIMIT, duplicateApiKey, duplicateJob, duplicateJoinToken,
  exhaustedMessage, joinTokenVerdict, logLinesKept, logQuery, maxAttemptsOf, staleReason, toApiKey, toJoinTokenInfo,
  type ApiKeyRow, type JoinTokenRow, type JoinTokenVerdict
} from './shared.js'
import {
  ATTEMPTS_EXHAUSTED, QuotaExceededError,
  type ApiKeyRecord, type AppendLogsInput, type AttemptRecord, type CreateJobInput, type RevokedPeer, type AttemptState, type AwardInput, type CancelOutcome, type CloudEvent, type ExpiredAttemptsQuery, type JobEvent,
  type JobEventType, type JobRecord, type JobState, type JobSummary, type LeaseInput, type ListJobsQuery, type LogLine,
  type NodeRecord, type OpenJob, type RenewLeasesInput, type RescheduleInput, type RescheduleOutcome, type ResultInput, type ResultRecord,
  type Store
} from './types.js'

export interface SqliteStoreOptions {
  /** Database file, or `':memory:'` for a private in-process database. */
  path: string
  /** How long a writer waits for another connection's lock before SQLITE_BUSY. @default 5000 */
  busyTimeoutMs?: number
}

interface JobRow {
  id: string, state: JobState, spec: string, attempt: number, created_at: number, updated_at: number
  max_attempts: number, not_before: number, owner: string | null
}
/** createJob's insert; `cap` null: no cap. */
interface NewJobParams {
  id: string, spec: string, maxAttempts: number, now: number, owner: string | null, secretEnv: string | null, cap: number | null
}
interface RescheduleParams { jobId: string, attempt: number, token: string | null, now: number, notBefore: number, released: 0 | 1 }
interface AttemptRow {
  job_id: string, number: number, node: string, token: string, state: AttemptState
  awarded_at: number, started_at: number | null, finished_at: number | null, lease_expires_at: number
}
interface ResultRow {
  attempt: number, outcome: ResultRecord['outcome'], exit_code: number | null, stdout: string, stderr: string
  stdout_truncated: number, stderr_truncated: number, started_at: number | null, finished_at: number, error: string | null, artifacts: string
}
interface CloudEventRow { seq: number, at: number, type: CloudEvent['type'], server_id: number | null, server_name: string, reason: string, detail: string }
interface NodeRow { peer_id: string, capacity: string, first_seen_at: number, last_seen_at: number }
interface EventRow { seq: number, job_id: string, at: number, type: JobEventType, actor: string, attempt: number | null, detail: string }
interface LogParams { jobId: string, line: number, attempt: number, stream: LogLine['stream'], at: number, text: string }
interface EventParams { jobId: string, at: number, type: JobEventType, actor: string, attempt: number | null, detail: string }

function toSummary (row: JobRow): JobSummary {
  const { id, state, attempt, owner } = row
  return { id, state, spec: JSON.parse(row.spec) as JobSpec, attempt, createdAt: row.created_at, updatedAt: row.updated_at, owner }
}

function toAttempt (row: AttemptRow): AttemptRecord {
  const { number, node, token, state } = row
  return {
    jobId: row.job_id, number, node, token, state, awardedAt: row.awarded_at,
    startedAt: row.started_at, finishedAt: row.finished_at, leaseExpiresAt: row.lease_expires_at
  }
}

function toResult (row: ResultRow): ResultRecord {
  const { attempt, outcome, stdout, stderr } = row
  return {
    attempt, outcome, exitCode: row.exit_code, stdout, stderr,
    stdoutTruncated: row.stdout_truncated === 1, stderrTruncated: row.stderr_truncated === 1,
    startedAt: row.started_at, finishedAt: row.finished_at, error: row.error === null ? null : JSON.parse(row.error) as JobError,
    artifacts: JSON.parse(row.artifacts) as Artifact[]
  }
}

/**
 * Every statement the store runs, prepared once per connection. Built lazily
 * because preparing needs the tables, which exist only after migrate().
 */
function prepareStatements (db: Database.Database) {
  const statements = {
    // The conditional insert: with a cap, the job goes in only while its owner has fewer unfinished
    // jobs (counted through jobs_owner_state, migration 11). Run in an IMMEDIATE transaction, so
    // racing submissions serialise on the write lock and each counts the others' committed jobs.
    insertJob: db.prepare<[NewJobParams]>(
      `INSERT INTO jobs (id, state, spec, attempt, max_attempts, created_at, updated_at, owner, secret_env)
       SELECT @id, 'announced', @spec, 1, @maxAttempts, @now, @now, @owner, @secretEnv
       WHERE @cap IS NULL
          OR (SELECT count(*) FROM jobs WHERE owner = @owner AND state IN ('announced', 'claimed', 'running')) < @cap`),
    jobSecrets: db.prepare<[string], string | null>('SELECT secret_env FROM jobs WHERE id = ?').pluck(),
    countActiveJobs: db.prepare<[string], number>(
      `SELECT count(*) FROM jobs WHERE owner = ? AND state IN ('announced', 'claimed', 'running')`).pluck(),
    getJob: db.prepare<[string], JobRow>('SELECT * FROM jobs WHERE id = ?'),
    listJobs: db.prepare<[number], JobRow>('SELECT * FROM jobs ORDER BY created_at DESC, id DESC LIMIT ?'),
    // The expression matches the jobs_batch index (migration 8).
    listJobsByBatch: db.prepare<[string, number], JobRow>(
      `SELECT * FROM jobs WHERE json_extract(spec, '$.batch') = ? ORDER BY json_extract(spec, '$.batch'), created_at DESC, id DESC LIMIT ?`),
    listJobsByBatchState: db.prepare<[string, JobState, number], JobRow>(
      `SELECT * FROM jobs WHERE json_extract(spec, '$.batch') = ? AND state = ? ORDER BY json_extract(spec, '$.batch'), created_at DESC, id DESC LIMIT ?`),
    listJobsByState: db.prepare<[JobState, number], JobRow>(
      'SELECT * FROM jobs WHERE state = ? ORDER BY created_at DESC, id DESC LIMIT ?'),
    openJobs: db.prepare<[number], JobRow>(
      `SELECT * FROM jobs WHERE state = 'announced' ORDER BY created_at ASC, id ASC LIMIT ?`),
    openJobsDue: db.prepare<[number, number], JobRow>(
      `SELECT * FROM jobs WHERE state = 'announced' AND not_before <= ? ORDER BY created_at ASC, id ASC LIMIT ?`),
    award: db.prepare<[number, string, number]>(
      `UPDATE jobs SET state = 'claimed', updated_at = ? WHERE id = ? AND state = 'announced' AND attempt = ?`),
    insertAttempt: db.prepare<[string, number, string, string, number, number]>(
      `INSERT INTO attempts (job_id, number, node, token, state, awarded_at, started_at, finished_at, lease_expires_at)
       VALUES (?, ?, ?, ?, 'claimed', ?, NULL, NULL, ?)`),
    getAttempt: db.prepare<[string, number], AttemptRow>('SELECT * FROM attempts WHERE job_id = ? AND number = ?'),
    listAttempts: db.prepare<[string], AttemptRow>('SELECT * FROM attempts WHERE job_id = ? ORDER BY number'),
    markStarted: db.prepare<[number, string, number, string, string]>(
      `UPDATE jobs SET state = 'running', updated_at = ?
       WHERE id = ? AND attempt = ? AND state = 'claimed'
         AND EXISTS (SELECT 1 FROM attempts WHERE job_id = jobs.id AND number = jobs.attempt AND token = ? AND node = ?)`),
    attemptStarted: db.prepare<[number, string, number]>(
      `UPDATE attempts SET state = 'running', started_at = ? WHERE job_id = ? AND number = ?`),
    finishJob: db.prepare<[ResultRecord['outcome'], number, string, number, string, string]>(
      `UPDATE jobs SET state = ?, updated_at = ?
       WHERE id = ? AND attempt = ? AND state IN ('claimed', 'running')
         AND EXISTS (SELECT 1 FROM attempts WHERE job_id = jobs.id AND number = jobs.attempt AND token = ? AND node = ?)`),
    attemptFinished: db.prepare<[AttemptState, number | null, number, string, number]>(
      `UPDATE attempts SET state = ?, started_at = COALESCE(started_at, ?), finished_at = ? WHERE job_id = ? AND number = ?`),
    insertResult: db.prepare<[Record<string, string | number | null>]>(
      `INSERT INTO results (job_id, attempt, outcome, exit_code, stdout, stderr, stdout_truncated, stderr_truncated,
                            started_at, finished_at, error, artifacts)
       VALUES (@jobId, @attempt, @outcome, @exitCode, @stdout, @stderr, @stdoutTruncated, @stderrTruncated,
               @startedAt, @finishedAt, @error, @artifacts)`),
    getResult: db.prepare<[string], ResultRow>('SELECT * FROM results WHERE job_id = ?'),
    // Driven from jobs (few are claimed or running, found through jobs_state_created), then the attempt by its key.
    heldAttempts: db.prepare<[string], AttemptRow>(
      `SELECT a.* FROM jobs j JOIN attempts a ON a.job_id = j.id AND a.number = j.attempt
       WHERE j.state IN ('claimed', 'running') AND a.node = ?
       ORDER BY a.awarded_at ASC, a.job_id ASC`),
    // One attempt of a renewal. attempts.state is checked as well as the job's: the two move together.
    renewLease: db.prepare<[number, string, number, string, string]>(
      `UPDATE attempts SET lease_expires_at = MAX(lease_expires_at, ?)
       WHERE job_id = ? AND number = ? AND token = ? AND node = ? AND state IN ('claimed', 'running')
         AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = attempts.job_id AND j.attempt = attempts.number
                       AND j.state IN ('claimed', 'running'))`),
    // Walks attempts_live_lease (partial: claimed/running attempts) in expiry order, stopping at the limit,
    // and looks up each job row by its key. CROSS JOIN keeps attempts the outer loop: without ANALYZE
    // statistics the planner would rather scan all claimed/running jobs and sort.
    expiredAttempts: db.prepare<[number, number], AttemptRow>(
      `SELECT a.* FROM attempts a CROSS JOIN jobs j ON j.id = a.job_id AND j.attempt = a.number
       WHERE a.state IN ('claimed', 'running') AND a.lease_expires_at <= ? AND j.state IN ('claimed', 'running')
       ORDER BY a.lease_expires_at ASC, a.job_id ASC, a.number ASC
       LIMIT ?`),
    // SET expressions see the row as it was; RETURNING shows it as it is now. A released attempt
    // (@released = 1) does not count: max_attempts grows by 1 and the job is always re-announced.
    reschedule: db.prepare<[RescheduleParams], JobRow>(
      `UPDATE jobs SET
         state        = CASE WHEN @released = 1 OR attempt < max_attempts THEN 'announced' ELSE 'failed' END,
         not_before   = CASE WHEN @released = 1 OR attempt < max_attempts THEN @notBefore ELSE not_before END,
         attempt      = CASE WHEN @released = 1 OR attempt < max_attempts THEN attempt + 1 ELSE attempt END,
         max_attempts = CASE WHEN @released = 1 THEN max_attempts + 1 ELSE max_attempts END,
         updated_at   = @now
       WHERE id = @jobId AND attempt = @attempt AND state IN ('claimed', 'running')
         AND (@token IS NULL OR EXISTS (SELECT 1 FROM attempts WHERE job_id = jobs.id AND number = jobs.attempt AND token = @token))
       RETURNING *`),
    attemptGivenUp: db.prepare<[AttemptState, number, string, number], { started_at: number | null }>(
      `UPDATE attempts SET state = ?, finished_at = ? WHERE job_id = ? AND number = ? RETURNING started_at`),
    cancelJob: db.prepare<[number, string]>(
      `UPDATE jobs SET state = 'cancelled', updated_at = ? WHERE id = ? AND state IN ('announced', 'claimed', 'running')`),
    cancelAttempt: db.prepare<[number, string, number]>(
      `UPDATE attempts SET state = 'cancelled', finished_at = ?
       WHERE job_id = ? AND number = ? AND state IN ('claimed', 'running')`),
    upsertNode: db.prepare<[string, string, number, number]>(
      `INSERT INTO nodes (peer_id, capacity, first_seen_at, last_seen_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (peer_id) DO UPDATE SET capacity = excluded.capacity, last_seen_at = excluded.last_seen_at`),
    listNodes: db.prepare<[], NodeRow>('SELECT * FROM nodes ORDER BY peer_id'),
    insertCloudEvent: db.prepare<[number, CloudEvent['type'], number | null, string, string, string]>(
      'INSERT INTO cloud_events (at, type, server_id, server_name, reason, detail) VALUES (?, ?, ?, ?, ?, ?)'),
    listCloudEvents: db.prepare<[number], CloudEventRow>('SELECT * FROM cloud_events ORDER BY seq DESC LIMIT ?'),
    listCloudEventsOf: db.prepare<[number, number], CloudEventRow>('SELECT * FROM cloud_events WHERE server_id = ? ORDER BY seq DESC LIMIT ?'),
    insertEvent: db.prepare<[EventParams]>(
      `INSERT INTO job_events (job_id, at, type, actor, attempt, detail) VALUES (@jobId, @at, @type, @actor, @attempt, @detail)`),
    listEvents: db.prepare<[string], EventRow>('SELECT * FROM job_events WHERE job_id = ? ORDER BY seq'),
    // appendLogs' compare-and-set, read inside its IMMEDIATE transaction (the write lock is already held,
    // so nothing can change the row before the writes that follow): the job's line count if, and only if,
    // the job is claimed or running with this attempt current and held by this token and node.
    logHolder: db.prepare<[string, number, string, string], { log_lines: number }>(
      `SELECT log_lines FROM jobs
       WHERE id = ? AND attempt = ? AND state IN ('claimed', 'running')
         AND EXISTS (SELECT 1 FROM attempts WHERE job_id = jobs.id AND number = jobs.attempt AND token = ? AND node = ?)`),
    addLogLines: db.prepare<[number, string]>('UPDATE jobs SET log_lines = log_lines + ? WHERE id = ?'),
    insertLog: db.prepare<[LogParams]>(
      `INSERT INTO job_logs (job_id, line, attempt, stream, at, text) VALUES (@jobId, @line, @attempt, @stream, @at, @text)`),
    // Walks the primary key (job_id, line) from `after`, stopping at the limit.
    listLogs: db.prepare<[string, number, number], LogLine>(
      'SELECT line, attempt, stream, at, text FROM job_logs WHERE job_id = ? AND line > ? ORDER BY line LIMIT ?'),
    // One conditional upsert: a row comes back only when this holder now holds the lease.
    acquireLease: db.prepare<[string, string, number, number], { holder: string }>(
      `INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
       WHERE leases.holder = excluded.holder OR leases.expires_at <= ?
       RETURNING holder`),
    releaseLease: db.prepare<[string, string]>('DELETE FROM leases WHERE name = ? AND holder = ?'),
    insertJoinToken: db.prepare<[string, string, number, number | null, string]>(
      'INSERT INTO join_tokens (id, secret_sha256, created_at, expires_at, revoked_at, note) VALUES (?, ?, ?, ?, NULL, ?)'),
    getJoinToken: db.prepare<[string], JoinTokenRow>('SELECT * FROM join_tokens WHERE id = ?'),
    // Only a token not yet revoked: a second revocation keeps the first revoked_at.
    revokeJoinToken: db.prepare<[number, string]>('UPDATE join_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL'),
    joinTokenExists: db.prepare<[string], { found: number }>('SELECT 1 AS found FROM join_tokens WHERE id = ?'),
    listJoinTokens: db.prepare<[], Omit<JoinTokenRow, 'secret_sha256'>>(
      'SELECT id, created_at, expires_at, revoked_at, note FROM join_tokens ORDER BY created_at DESC, id DESC'),
    insertApiKey: db.prepare<[string, string, string, number, number]>(
      'INSERT INTO api_keys (id, name, secret_sha256, admin, created_at, revoked_at) VALUES (?, ?, ?, ?, ?, NULL)'),
    getApiKey: db.prepare<[string], ApiKeyRow>('SELECT * FROM api_keys WHERE id = ?'),
    listApiKeys: db.prepare<[], ApiKeyRow>('SELECT * FROM api_keys ORDER BY created_at ASC, id ASC'),
    // Only a key not yet revoked: a second revocation keeps the first revoked_at.
    revokeApiKey: db.prepare<[number, string]>('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL'),
    apiKeyExists: db.prepare<[string], { found: number }>('SELECT 1 AS found FROM api_keys WHERE id = ?'),
    insertSetting: db.prepare<[string, string]>('INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING'),
    getSetting: db.prepare<[string], string>('SELECT value FROM settings WHERE name = ?').pluck(),
    insertPeerBinding: db.prepare<[string, string, number]>(
      'INSERT INTO peer_bindings (peer_id, token_id, bound_at) VALUES (?, ?, ?) ON CONFLICT (peer_id) DO NOTHING'),
    getPeerBinding: db.prepare<[string], string>('SELECT token_id FROM peer_bindings WHERE peer_id = ?').pluck(),
    revokedPeers: db.prepare<[], RevokedPeer>(
      `SELECT b.peer_id AS peerId, b.token_id AS tokenId, t.revoked_at AS revokedAt
       FROM peer_bindings b JOIN join_tokens t ON t.id = b.token_id
       WHERE t.revoked_at IS NOT NULL
       ORDER BY t.revoked_at ASC, b.peer_id ASC`),
    listPeerBindings: db.prepare<[string], { peerId: string, boundAt: number }>(
      'SELECT peer_id AS peerId, bound_at AS boundAt FROM peer_bindings WHERE token_id = ? ORDER BY bound_at ASC, peer_id ASC')
  }
  return statements
}
type Statements = ReturnType<typeof prepareStatements>

export class SqliteStore implements Store {
  private readonly db: Database.Database
  /** Every write goes through here: group commit, one transaction per turn (common/group-commit.ts). */
  private readonly writes: GroupCommit
  private statements: Statements | null = null
  private readonly adHoc = new Map<string, Database.Statement>()

  /** Opens (creating if needed) the database; call {@link migrate} before use. */
  static open (options: SqliteStoreOptions): SqliteStore {
    return new SqliteStore(options)
  }

  constructor (options: SqliteStoreOptions) {
    const busyTimeoutMs = options.busyTimeoutMs ?? 5000
    // Checked because it is interpolated into a PRAGMA, which cannot take bound parameters.
    if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
      throw new RangeError(`busyTimeoutMs must be a non-negative integer, got ${busyTimeoutMs}`)
    }
    this.db = new Database(options.path, { timeout: busyTimeoutMs })
    this.writes = new GroupCommit(this.db)
    try {
      // busy_timeout first: switching to WAL takes a lock that another opener may hold.
      this.db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`)
      // WAL lets readers proceed while one writer commits; meaningless for an in-memory database.
      if (!this.db.memory) this.db.exec('PRAGMA journal_mode = WAL')
      // NORMAL in WAL mode can lose the last commits on power loss, never corrupt; worth the fsyncs saved.
      this.db.exec('PRAGMA synchronous = NORMAL')
      this.db.exec('PRAGMA foreign_keys = ON')
      // Statement journals, sorters and transient indexes in memory: on a temp
      // file they cost about 8 write syscalls per job under load (strace; docs/performance.md).
      this.db.exec('PRAGMA temp_store = MEMORY')
    } catch (err) {
      this.db.close()
      throw err
    }
  }

  private get q (): Statements {
    this.statements ??= prepareStatements(this.db)
    return this.statements
  }

  /** Prepares a statement outside the fixed set once per connection. */
  private cached<P extends unknown[], R = unknown> (sql: string): Database.Statement<P, R> {
    let statement = this.adHoc.get(sql)
    if (statement === undefined) {
      statement = this.db.prepare(sql)
      this.adHoc.set(sql, statement)
    }
    return statement as unknown as Database.Statement<P, R>
  }

  /** Ids of migrations not yet applied, for refusing to start with `--no-migrate` on an old schema. */
  async pendingMigrations (): Promise<number[]> {
    const hasTable = this.cached(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).get()
    const applied = hasTable === undefined ? [] : this.cached<[], number>('SELECT id FROM schema_migrations').pluck().all()
    return SQLITE_MIGRATIONS.filter(m => !applied.includes(m.id)).map(m => m.id)
  }

  async migrate (): Promise<void> {
    this.db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
      id INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`)
    const isApplied = this.cached<[number]>('SELECT 1 FROM schema_migrations WHERE id = ?')
    const record = this.cached<[number, string, number]>('INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)')
    let previous = 0
    for (const migration of SQLITE_MIGRATIONS) {
      if (migration.id <= previous) throw new Error(`SQLite migrations out of order at id ${migration.id}`)
      previous = migration.id
      // The check sits inside the IMMEDIATE transaction so a second process waits, then sees it applied.
      this.db.transaction(() => {
        if (isApplied.get(migration.id) !== undefined) return
        this.db.exec(migration.sql)
        record.run(migration.id, migration.name, systemClock.now())
      }).immediate()
    }
  }

  async createJob (input: CreateJobInput): Promise<JobSummary> {
    const [job] = await this.createJobs([input])
    return job!
  }

  async createJobs (inputs: CreateJobInput[]): Promise<JobSummary[]> {
    const rows = inputs.map(input => ({ input, cap: activeJobCap(input), owner: input.owner ?? null }))
    if (rows.length === 0) return []
    const q = this.q
    let current = rows[0]!
    try {
      // One transaction: all the jobs or none; each capped insert counts the ones before it.
      await this.writes.run((): void => {
        for (const r of rows) {
          current = r
          const { input, cap, owner } = r
          const changes = q.insertJob.run({
            id: input.id, spec: JSON.stringify(input.spec), maxAttempts: maxAttemptsOf(input.spec), now: input.now,
            owner, secretEnv: input.secretEnvSealed ?? null, cap
          }).changes
          if (changes === 0) {
            if (owner === null || cap === null) throw new Error(`job ${input.id}: an uncapped insert matched no row`)
            throw new QuotaExceededError(owner, cap)
          }
          q.insertEvent.run({ jobId: input.id, at: input.now, type: 'submitted', actor: 'http', attempt: 1, detail: '{}' })
        }
      })
    } catch (err) {
      if (err instanceof Database.SqliteError && err.code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
        throw duplicateJob(current.input.id)
      }
      throw err
    }
    return rows.map(({ input, owner }) => ({ id: input.id, state: 'announced' as const, spec: input.spec, attempt: 1, createdAt: input.now, updatedAt: input.now, owner }))
  }

  async jobSecrets (jobId: string): Promise<string | null> {
    return this.q.jobSecrets.get(jobId) ?? null
  }

  async countActiveJobs (owner: string): Promise<number> {
    return this.q.countActiveJobs.get(owner) ?? 0
  }

  async getJob (id: string): Promise<JobRecord | null> {
    const q = this.q
    return this.db.transaction(() => {
      const row = q.getJob.get(id)
      if (row === undefined) return null
      const result = q.getResult.get(id)
      return {
        ...toSummary(row),
        attempts: q.listAttempts.all(id).map(toAttempt),
        result: result === undefined ? null : toResult(result)
      }
    }).deferred()
  }

  async listJobs (query: ListJobsQuery): Promise<JobSummary[]> {
    const limit = clampLimit(query.limit, DEFAULT_LIST_LIMIT)
    if (query.owner !== undefined) {
      // An owner's jobs, through jobs_owner_state (migration 11); the SQL is made of fixed pieces only.
      const where = ['owner = ?']
      const params: Array<string | number> = [query.owner]
      if (query.state !== undefined) { where.push('state = ?'); params.push(query.state) }
      if (query.batch !== undefined) { where.push(`json_extract(spec, '$.batch') = ?`); params.push(query.batch) }
      params.push(limit)
      return this.cached<Array<string | number>, JobRow>(
        `SELECT * FROM jobs WHERE ${where.join(' AND ')} ORDER BY created_at DESC, id DESC LIMIT ?`).all(...params).map(toSummary)
    }
    const rows = query.batch !== undefined
      ? (query.state === undefined ? this.q.listJobsByBatch.all(query.batch, limit) : this.q.listJobsByBatchState.all(query.batch, query.state, limit))
      : query.state === undefined ? this.q.listJobs.all(limit) : this.q.listJobsByState.all(query.state, limit)
    return rows.map(toSummary)
  }

  async openJobs (limit: number, now?: number): Promise<OpenJob[]> {
    const n = clampLimit(limit, DEFAULT_LIST_LIMIT)
    const rows = now === undefined ? this.q.openJobs.all(n) : this.q.openJobsDue.all(now, n)
    return rows.map(row => ({ jobId: row.id, attempt: row.attempt, spec: JSON.parse(row.spec) as JobSpec, createdAt: row.created_at }))
  }

  async award (input: AwardInput): Promise<AttemptRecord> {
    const q = this.q
    const outcome = await this.writes.run((): AttemptRecord | Error => {
      if (q.award.run(input.now, input.jobId, input.attempt).changes === 0) {
        const job = q.getJob.get(input.jobId)
        if (job === undefined) return new NotFoundError('job', input.jobId)
        return awardConflict(input.jobId, input.attempt, job)
      }
      const leaseExpiresAt = input.now + input.leaseMs
      q.insertAttempt.run(input.jobId, input.attempt, input.node, input.token, input.now, leaseExpiresAt)
      // The token stays out of the event log: it is the node's proof of ownership, and events are readable over HTTP.
      q.insertEvent.run({
        jobId: input.jobId, at: input.now, type: 'awarded', actor: 'coordinator', attempt: input.attempt,
        detail: JSON.stringify({ ...input.detail, node: input.node, leaseExpiresAt })
      })
      return {
        jobId: input.jobId, number: input.attempt, node: input.node, token: input.token, state: 'claimed',
        awardedAt: input.now, startedAt: null, finishedAt: null, leaseExpiresAt
      }
    })
    if (outcome instanceof Error) throw outcome
    return outcome
  }

  async markStarted (input: { jobId: string, attempt: number, token: string, node: string, startedAt: number, now: number }): Promise<void> {
    const q = this.q
    const stale = await this.writes.run((): string | null => {
      if (q.markStarted.run(input.now, input.jobId, input.attempt, input.token, input.node).changes === 1) {
        q.attemptStarted.run(input.startedAt, input.jobId, input.attempt)
        q.insertEvent.run({
          jobId: input.jobId, at: input.now, type: 'started', actor: input.node, attempt: input.attempt,
          detail: JSON.stringify({ startedAt: input.startedAt })
        })
        return null
      }
      const job = q.getJob.get(input.jobId)
      const current = job === undefined ? undefined : q.getAttempt.get(input.jobId, job.attempt)
      // A repeated `started` (the node retried after a lost ack) must not fail the node; nor one that
      // arrives after the attempt's own result ended the job (a report delayed by an outage): late, not stale.
      if ((job?.state === 'running' || job?.state === 'succeeded' || job?.state === 'failed') && job.attempt === input.attempt &&
          current?.token === input.token && current.node === input.node) return null
      const reason = staleReason(job, current, input.attempt, input.token, input.node)
      if (job !== undefined) this.recordStale(input.jobId, input.now, input.node, input.attempt, 'started', reason)
      return reason
    })
    if (stale !== null) throw new StaleAttemptError(input.jobId, input.attempt, stale)
  }

  async recordResult (input: ResultInput): Promise<'recorded' | 'duplicate'> {
    const q = this.q
    const { result } = input
    const outcome = await this.writes.run((): 'recorded' | 'duplicate' | { stale: string } => {
      const changes = q.finishJob.run(result.outcome, input.now, input.jobId, input.attempt, input.token, input.node).changes
      if (changes === 1) {
        // input.attempt, not result.attempt: the row is keyed by the attempt the token fenced.
        q.insertResult.run({
          jobId: input.jobId, attempt: input.attempt, outcome: result.outcome, exitCode: result.exitCode,
          stdout: result.stdout, stderr: result.stderr,
          stdoutTruncated: result.stdoutTruncated ? 1 : 0, stderrTruncated: result.stderrTruncated ? 1 : 0,
          startedAt: result.startedAt, finishedAt: result.finishedAt,
          error: result.error === null ? null : JSON.stringify(result.error),
          artifacts: JSON.stringify(result.artifacts)
        })
        // A job that ended within the node's hold on `started` is reported by its result alone;
        // its log still says when it started, as for every other job.
        if (result.startedAt !== null && q.getAttempt.get(input.jobId, input.attempt)?.started_at == null) {
          q.insertEvent.run({
            jobId: input.jobId, at: input.now, type: 'started', actor: input.node, attempt: input.attempt,
            detail: JSON.stringify({ startedAt: result.startedAt })
          })
        }
        q.attemptFinished.run(result.outcome, result.startedAt, result.finishedAt, input.jobId, input.attempt)
        q.insertEvent.run({
          jobId: input.jobId, at: input.now, type: 'finished', actor: input.node, attempt: input.attempt,
          detail: JSON.stringify({ outcome: result.outcome, exitCode: result.exitCode, errorCode: result.error?.code ?? null })
        })
        return 'recorded'
      }
      const job = q.getJob.get(input.jobId)
      const stored = q.getResult.get(input.jobId)
      const fenced = q.getAttempt.get(input.jobId, input.attempt)
      if (stored?.attempt === input.attempt && fenced?.token === input.token && fenced.node === input.node) return 'duplicate'
      const current = job === undefined ? undefined : q.getAttempt.get(input.jobId, job.attempt)
      const reason = staleReason(job, current, input.attempt, input.token, input.node)
      if (job !== undefined) this.recordStale(input.jobId, input.now, input.node, input.attempt, 'result', reason)
      return { stale: reason }
    })
    if (typeof outcome === 'object') throw new StaleAttemptError(input.jobId, input.attempt, outcome.stale)
    return outcome
  }

  /**
   * Logs a rejected node report. Skipped by callers for unknown jobs, since
   * events hang off an existing job row.
   */
  private recordStale (jobId: string, now: number, node: string, attempt: number, report: string, reason: string): void {
    this.q.insertEvent.run({ jobId, at: now, type: 'stale-report', actor: node, attempt, detail: JSON.stringify({ report, reason }) })
  }

  async heldAttempts (node: string): Promise<AttemptRecord[]> {
    return this.q.heldAttempts.all(node).map(toAttempt)
  }

  async renewLeases (input: RenewLeasesInput): Promise<number> {
    checkRenewal(input)
    if (input.attempts.length === 0) return 0
    const q = this.q
    return await this.writes.run((): number => {
      // A repeated entry counts once, as in PostgreSQL's UPDATE … FROM.
      const seen = new Set<string>()
      let renewed = 0
      for (const a of input.attempts) {
        const key = JSON.stringify([a.jobId, a.attempt, a.token])
        if (seen.has(key)) continue
        seen.add(key)
        renewed += q.renewLease.run(input.leaseExpiresAt, a.jobId, a.attempt, a.token, input.node).changes
      }
      return renewed
    })
  }

  async expiredAttempts (query: ExpiredAttemptsQuery): Promise<AttemptRecord[]> {
    return this.q.expiredAttempts.all(query.now, clampLimit(query.limit, DEFAULT_LIST_LIMIT)).map(toAttempt)
  }

  async rescheduleAttempt (input: RescheduleInput): Promise<RescheduleOutcome> {
    const q = this.q
    const outcome = await this.writes.run((): RescheduleOutcome | Error => {
      const row = q.reschedule.get({
        jobId: input.jobId, attempt: input.attempt, token: input.token, now: input.now, notBefore: input.now + input.backoffMs,
        released: input.attemptState === 'released' ? 1 : 0
      })
      if (row === undefined) {
        const job = q.getJob.get(input.jobId)
        if (job === undefined) return new NotFoundError('job', input.jobId)
        const current = q.getAttempt.get(input.jobId, job.attempt)
        return new StaleAttemptError(input.jobId, input.attempt, staleReason(job, current, input.attempt, input.token, null))
      }
      const given = q.attemptGivenUp.get(input.attemptState, input.now, input.jobId, input.attempt)
      const rescheduled = row.state === 'announced'
      if (rescheduled) {
        q.insertEvent.run({
          jobId: input.jobId, at: input.now, type: 'rescheduled', actor: input.actor, attempt: input.attempt,
          detail: JSON.stringify({
            reason: input.reason, nextAttempt: row.attempt, notBefore: row.not_before, attemptState: input.attemptState,
            ...(input.attemptState === 'released' ? { released: true } : {})
          })
        })
      } else {
        const error: JobError = { code: ATTEMPTS_EXHAUSTED, message: exhaustedMessage(input.reason, row.max_attempts), retryable: false }
        q.insertResult.run({
          jobId: input.jobId, attempt: input.attempt, outcome: 'failed', exitCode: null, stdout: '', stderr: '',
          stdoutTruncated: 0, stderrTruncated: 0, startedAt: given?.started_at ?? null, finishedAt: input.now,
          error: JSON.stringify(error),
          artifacts: '[]'
        })
        q.insertEvent.run({
          jobId: input.jobId, at: input.now, type: 'finished', actor: input.actor, attempt: input.attempt,
          detail: JSON.stringify({ outcome: 'failed', exitCode: null, errorCode: ATTEMPTS_EXHAUSTED, reason: input.reason })
        })
      }
      return { job: toSummary(row), rescheduled }
    })
    if (outcome instanceof Error) throw outcome
    return outcome
  }

  async cancel (input: { jobId: string, now: number, actor: string, reason: string }): Promise<CancelOutcome> {
    const q = this.q
    const outcome = await this.writes.run((): CancelOutcome | Error => {
      if (q.cancelJob.run(input.now, input.jobId).changes === 0) {
        const job = q.getJob.get(input.jobId)
        if (job === undefined) return new NotFoundError('job', input.jobId)
        return cancelConflict(input.jobId, job.state)
      }
      const job = q.getJob.get(input.jobId)
      if (job === undefined) throw new Error(`job ${input.jobId} vanished inside its cancel transaction`)
      const before = q.getAttempt.get(input.jobId, job.attempt)
      const stopped = before !== undefined && (before.state === 'claimed' || before.state === 'running') ? toAttempt(before) : null
      if (stopped !== null) q.cancelAttempt.run(input.now, input.jobId, job.attempt)
      q.insertEvent.run({
        jobId: input.jobId, at: input.now, type: 'cancelled', actor: input.actor, attempt: job.attempt,
        detail: JSON.stringify({ reason: input.reason, stoppedNode: stopped?.node ?? null })
      })
      return { job: toSummary(job), stopped }
    })
    if (outcome instanceof Error) throw outcome
    return outcome
  }

  async upsertNode (input: { peerId: string, capacity: NodeCapacity, now: number }): Promise<void> {
    await this.writes.run(() => this.q.upsertNode.run(input.peerId, JSON.stringify(input.capacity), input.now, input.now))
  }

  async countJobs (): Promise<Record<JobState, number>> {
    const counts: Record<JobState, number> = { announced: 0, claimed: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 }
    const rows = this.cached<[], { state: JobState, n: number }>('SELECT state, COUNT(*) AS n FROM jobs GROUP BY state').all()
    for (const row of rows) counts[row.state] = row.n
    return counts
  }

  async listNodes (): Promise<NodeRecord[]> {
    return this.q.listNodes.all().map(row => ({
      peerId: row.peer_id, capacity: JSON.parse(row.capacity) as NodeCapacity, firstSeenAt: row.first_seen_at, lastSeenAt: row.last_seen_at
    }))
  }

  async appendEvent (event: Omit<JobEvent, 'seq'>): Promise<void> {
    await this.writes.run(() => this.q.insertEvent.run({
      jobId: event.jobId, at: event.at, type: event.type, actor: event.actor, attempt: event.attempt,
      detail: JSON.stringify(event.detail)
    }))
  }

  async listEvents (jobId: string): Promise<JobEvent[]> {
    return this.q.listEvents.all(jobId).map(({ seq, at, type, actor, attempt, ...row }) => ({
      seq, jobId: row.job_id, at, type, actor, attempt, detail: JSON.parse(row.detail) as Record<string, unknown>
    }))
  }

  async appendLogs (input: AppendLogsInput): Promise<{ stored: number, dropped: number }> {
    checkLogBatch(input)
    // An empty batch stores nothing whoever sends it, so it is answered without a transaction and
    // without checking the attempt: a stale holder learns it with its next non-empty batch.
    if (input.lines.length === 0) return { stored: 0, dropped: 0 }
    const q = this.q
    const outcome = await this.writes.run((): number | { stale: string } => {
      const holder = q.logHolder.get(input.jobId, input.attempt, input.token, input.node)
      if (holder !== undefined) {
        const stored = logLinesKept(holder.log_lines, input.lines.length, input.maxLines)
        // At the cap nothing is written at all: the job row keeps its count.
        if (stored === 0) return 0
        q.addLogLines.run(stored, input.jobId)
        for (let i = 0; i < stored; i++) {
          const l = input.lines[i]
          if (l === undefined) break
          q.insertLog.run({ jobId: input.jobId, line: holder.log_lines + 1 + i, attempt: input.attempt, stream: l.stream, at: l.at, text: l.text })
        }
        return stored
      }
      const job = q.getJob.get(input.jobId)
      const current = job === undefined ? undefined : q.getAttempt.get(input.jobId, job.attempt)
      // Lines of the attempt whose own result ended the job, delayed past it: late, not stale; not kept.
      if ((job?.state === 'succeeded' || job?.state === 'failed') && job.attempt === input.attempt &&
          current?.token === input.token && current.node === input.node) return 0
      const reason = staleReason(job, current, input.attempt, input.token, input.node)
      if (job !== undefined) this.recordStale(input.jobId, input.now, input.node, input.attempt, 'log', reason)
      return { stale: reason }
    })
    if (typeof outcome === 'object') throw new StaleAttemptError(input.jobId, input.attempt, outcome.stale)
    return { stored: outcome, dropped: input.lines.length - outcome }
  }

  async listLogs (query: { jobId: string, after: number, limit: number }): Promise<LogLine[]> {
    const { after, limit } = logQuery(query)
    return this.q.listLogs.all(query.jobId, after, limit)
  }

  async createJoinToken (input: { id: string, secretSha256: string, createdAt: number, expiresAt: number | null, note: string }): Promise<void> {
    checkNewJoinToken(input)
    try {
      await this.writes.run(() => this.q.insertJoinToken.run(input.id, input.secretSha256, input.createdAt, input.expiresAt, input.note))
    } catch (err) {
      if (err instanceof Database.SqliteError && err.code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw duplicateJoinToken(input.id)
      throw err
    }
  }

  async checkJoinToken (input: { id: string, secretSha256: string, now: number }): Promise<JoinTokenVerdict> {
    checkJoinTokenQuery(input)
    return joinTokenVerdict(this.q.getJoinToken.get(input.id), input.secretSha256, input.now)
  }

  async revokeJoinToken (input: { id: string, now: number }): Promise<boolean> {
    checkJoinTokenRevocation(input)
    const q = this.q
    // No update: already revoked (true, its first revoked_at kept) or no such token (false).
    return await this.writes.run((): boolean =>
      q.revokeJoinToken.run(input.now, input.id).changes === 1 || q.joinTokenExists.get(input.id) !== undefined
    )
  }

  async createApiKey (input: { id: string, name: string, secretSha256: string, admin: boolean, createdAt: number }): Promise<void> {
    checkNewApiKey(input)
    try {
      await this.writes.run(() => this.q.insertApiKey.run(input.id, input.name, input.secretSha256, input.admin ? 1 : 0, input.createdAt))
    } catch (err) {
      if (err instanceof Database.SqliteError && err.code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw duplicateApiKey(input.id)
      throw err
    }
  }

  async findApiKey (id: string): Promise<ApiKeyRecord | null> {
    const row = this.q.getApiKey.get(id)
    return row === undefined ? null : toApiKey(row)
  }

  async listApiKeys (): Promise<ApiKeyRecord[]> {
    return this.q.listApiKeys.all().map(toApiKey)
  }

  async revokeApiKey (input: { id: string, now: number }): Promise<boolean> {
    checkApiKeyRevocation(input)
    const q = this.q
    // No update: already revoked (true, its first revoked_at kept) or no such key (false).
    return await this.writes.run((): boolean =>
      q.revokeApiKey.run(input.now, input.id).changes === 1 || q.apiKeyExists.get(input.id) !== undefined
    )
  }

  async ensureSetting (input: { name: string, value: string }): Promise<string> {
    checkSetting(input)
    const q = this.q
    return await this.writes.run((): string => {
      q.insertSetting.run(input.name, input.value)
      const stored = q.getSetting.get(input.name)
      if (stored === undefined) throw new Error(`setting ${input.name} vanished inside its transaction`)
      return stored
    })
  }

  async bindPeer (input: { peerId: string, tokenId: string, now: number }): Promise<string> {
    checkPeerBinding(input)
    const q = this.q
    return await this.writes.run((): string => {
      q.insertPeerBinding.run(input.peerId, input.tokenId, input.now)
      const bound = q.getPeerBinding.get(input.peerId)
      if (bound === undefined) throw new Error(`binding of peer ${input.peerId} vanished inside its transaction`)
      return bound
    })
  }

  async revokedPeers (): Promise<RevokedPeer[]> {
    return this.q.revokedPeers.all()
  }

  async listPeerBindings (tokenId: string): Promise<Array<{ peerId: string, boundAt: number }>> {
    return this.q.listPeerBindings.all(tokenId)
  }

  async appendCloudEvent (e: Omit<CloudEvent, 'seq'>): Promise<void> {
    await this.writes.run(() => this.q.insertCloudEvent.run(e.at, e.type, e.serverId, e.serverName, e.reason, JSON.stringify(e.detail)))
  }

  async listCloudEvents (query: { limit: number, serverId?: number }): Promise<CloudEvent[]> {
    const limit = clampLimit(query.limit, 100)
    const rows = query.serverId == null ? this.q.listCloudEvents.all(limit) : this.q.listCloudEventsOf.all(query.serverId, limit)
    return rows.map(r => ({ seq: r.seq, at: r.at, type: r.type, serverId: r.server_id, serverName: r.server_name, reason: r.reason, detail: JSON.parse(r.detail) as Record<string, unknown> }))
  }

  async listJoinTokens (): Promise<Array<{ id: string, createdAt: number, expiresAt: number | null, revokedAt: number | null, note: string }>> {
    return this.q.listJoinTokens.all().map(toJoinTokenInfo)
  }

  async tryAcquireLease (input: LeaseInput): Promise<boolean> {
    return await this.writes.run(() => this.q.acquireLease.get(input.name, input.holder, input.now + input.ttlMs, input.now) !== undefined)
  }

  async releaseLease (input: { name: string, holder: string }): Promise<void> {
    await this.writes.run(() => this.q.releaseLease.run(input.name, input.holder))
  }

  async close (): Promise<void> {
    if (this.db.open) {
      this.writes.flush()
      this.db.close()
    }
  }
}
