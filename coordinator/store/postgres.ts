/**
 * The PostgreSQL implementation of {@link Store}, for several coordinators
 * sharing one database.
 *
 * Every state change is ONE statement: a data-modifying CTE whose first part
 * is the compare-and-set UPDATE on the job's row and whose other parts insert
 * or update the attempt, result and event rows from that UPDATE's RETURNING,
 * so they happen only if it matched and commit or roll back together with
 * it. Under READ COMMITTED, an UPDATE that meets a row another transaction is
 * changing waits for it and re-checks its WHERE clause against the committed
 * row, so of two racing changes exactly one matches.
 *
 * When a change matches no row, one more read chooses the typed error
 * (NotFoundError, ConflictError, StaleAttemptError, with the same messages as
 * SqliteStore) and records the `stale-report` event of a rejected node
 * report. That read never decides a write: if it finds the job in a state
 * where the change would now match (possible only when the statement's
 * snapshot predates a commit it then waited for), the statement itself runs
 * again.
 *
 * Values are always bound parameters. int8 (BIGINT, COUNT, BIGSERIAL) is
 * parsed into JS numbers: epoch milliseconds and sequence numbers stay far
 * below 2^53. JSONB comes back parsed. Connection failures become
 * {@link StoreUnavailableError}.
 */
import postgres from 'postgres'
import { NotFoundError, StaleAttemptError, ValidationError } from '../../common/errors.js'
import type { JobSpec, NodeCapacity } from '../../protocol/schemas.js'
import { POSTGRES_MIGRATIONS } from './migrations/postgres.js'
import {
  activeJobCap, awardConflict, cancelConflict, checkApiKeyRevocation, checkJoinTokenQuery, checkJoinTokenRevocation, checkLogBatch, checkNewApiKey,
  checkNewJoinToken, checkPeerBinding, checkRenewal, checkSetting, clampLimit, DEFAULT_LIST_LIMIT, duplicateApiKey, duplicateJob, duplicateJoinToken,
  hasNul, joinTokenVerdict, logQuery, maxAttemptsOf, staleReason, toApiKey, toJoinTokenInfo,
  type ApiKeyRow, type JoinTokenRow, type JoinTokenVerdict
} from './shared.js'
import {
  ATTEMPTS_EXHAUSTED, QuotaExceededError, StoreUnavailableError,
  type ApiKeyRecord, type AppendLogsInput, type AttemptRecord, type CreateJobInput, type RevokedPeer, type AttemptState, type AwardInput, type CancelOutcome, type CloudEvent, type ExpiredAttemptsQuery, type JobEvent,
  type JobEventType, type JobRecord, type JobState, type JobSummary, type LeaseInput, type ListJobsQuery, type LogLine,
  type NodeRecord, type OpenJob, type RenewLeasesInput, type RescheduleInput, type RescheduleOutcome, type ResultInput, type ResultRecord,
  type Store
} from './types.js'

export interface PostgresNotice {
  severity: string
  /** SQLSTATE, e.g. `42P07`. */
  code: string
  message: string
}

export interface PostgresStoreOptions {
  /** `postgres://user:password@host:port/database` (or `postgresql://`); query parameters such as `sslmode` are honoured. */
  url: string
  /** Connections in the pool; also how many statements run at once. @default 10 */
  maxConnections?: number
  /** Server-side limit on each statement (`statement_timeout`), in ms; 0 disables it. @default 5000 */
  statementTimeoutMs?: number
  /** Give up opening a connection after this many seconds. @default 10 */
  connectTimeoutSeconds?: number
  /** Wait before reconnecting after a connection failed, in ms. @default 250 */
  reconnectBackoffMs?: number
  /** Receives the server's notices and warnings. @default dropped */
  onNotice?: (notice: PostgresNotice) => void
}

/** Key of the transaction-level advisory lock that serialises migrations ("rgrid" + "mig" in ASCII). */
const MIGRATION_LOCK_KEY = '125779913582823'
/**
 * First key of the transaction-level advisory locks that serialise an owner's
 * capped job submissions (the second is `hashtext(owner)`). Two-key locks live
 * in a key space apart from the one-bigint migration lock. "RGow" in ASCII.
 */
const OWNER_LOCK_CLASS = 0x52476f77
/** Migrations may build indexes on big tables: they get longer than ordinary statements. */
const MIGRATION_TIMEOUT_MS = 10 * 60_000
/** How often a change reruns when its snapshot predated a commit it then waited for. */
const MAX_RERUNS = 8

/** SQLSTATEs meaning the server or the connection to it is gone or refusing. */
const UNAVAILABLE_SQLSTATES = new Set([
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, shutting down, in recovery)
  '53300' // too_many_connections
])
/** Codes postgres.js and Node's sockets put on connection failures. */
const UNAVAILABLE_CODES = new Set([
  'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT',
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN',
  'ENOTFOUND', 'EAI_AGAIN'
])

function isUnavailable (err: unknown): boolean {
  if (err instanceof AggregateError && err.errors.some(isUnavailable)) return true
  if (typeof err !== 'object' || err === null) return false
  const code = (err as { code?: unknown }).code
  if (typeof code !== 'string') return false
  if (err instanceof postgres.PostgresError) return code.startsWith('08') || UNAVAILABLE_SQLSTATES.has(code)
  return UNAVAILABLE_CODES.has(code)
}

/** Wraps connection failures; everything else passes through unchanged. */
function mapError (err: unknown): unknown {
  if (err instanceof StoreUnavailableError || !isUnavailable(err)) return err
  const code = (err as { code?: string }).code ?? 'unknown'
  const message = err instanceof Error ? err.message : String(err)
  return new StoreUnavailableError(`PostgreSQL store unavailable (${code}): ${message}`, { cause: err })
}

// PostgreSQL's text and jsonb cannot hold U+0000. Job output may contain it
// (SQLite keeps it); here it becomes U+FFFD, the replacement character.
const NUL = /\u0000/g
const noNul = (text: string): string => text.includes('\u0000') ? text.replace(NUL, '\uFFFD') : text

function withoutNul (value: unknown): unknown {
  if (typeof value === 'string') return noNul(value)
  if (Array.isArray(value)) return value.map(withoutNul)
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [noNul(k), withoutNul(v)]))
  }
  return value
}

/** JSON text for a jsonb parameter, with any U+0000 replaced. */
function jsonText (value: unknown): string {
  const text = JSON.stringify(value)
  // JSON.stringify writes U+0000 as the escape \u0000 (a false alarm on a literal backslash-u0000 only costs a copy).
  return text.includes('\\u0000') ? JSON.stringify(withoutNul(value)) : text
}

interface JobRow { id: string, state: JobState, spec: JobSpec, attempt: number, created_at: number, updated_at: number, owner: string | null }
interface AttemptRow {
  job_id: string, number: number, node: string, token: string, state: AttemptState
  awarded_at: number, started_at: number | null, finished_at: number | null, lease_expires_at: number
}
/** The job as a failed change finds it, with its current attempt and, for results, the fenced one. */
interface DiagnosisRow {
  state: JobState, attempt: number
  current_token: string | null, current_node: string | null
  fenced_token: string | null, fenced_node: string | null
  result_attempt: number | null
}

function toSummary (row: JobRow): JobSummary {
  return {
    id: row.id, state: row.state, spec: row.spec, attempt: row.attempt, createdAt: row.created_at, updatedAt: row.updated_at, owner: row.owner
  }
}

function toAttempt (row: AttemptRow): AttemptRecord {
  return {
    jobId: row.job_id, number: row.number, node: row.node, token: row.token, state: row.state, awardedAt: row.awarded_at,
    startedAt: row.started_at, finishedAt: row.finished_at, leaseExpiresAt: row.lease_expires_at
  }
}

function currentOf (d: DiagnosisRow | undefined): { token: string, node: string } | undefined {
  return d === undefined || d.current_token === null || d.current_node === null ? undefined : { token: d.current_token, node: d.current_node }
}

/** int8 as a JS number; postgres.js would otherwise return a string. */
const int8AsNumber = {
  to: 20,
  from: [20],
  serialize: (value: number) => String(value),
  parse: (raw: string) => Number(raw)
}

function createSql (options: PostgresStoreOptions) {
  return postgres(options.url, {
    max: options.maxConnections ?? 10,
    connect_timeout: options.connectTimeoutSeconds ?? 10,
    // postgres.js waits up to 20 s (growing) before reconnecting, and queues
    // queries meanwhile: during an outage requests would hang instead of
    // failing with 503, and recovery would lag. Retry a connection quickly.
    backoff: () => (options.reconnectBackoffMs ?? 250) / 1000,
    connection: {
      application_name: 'rgrid-coordinator',
      statement_timeout: options.statementTimeoutMs ?? 5000
    },
    types: { int8: int8AsNumber },
    onnotice: (notice) => {
      options.onNotice?.({ severity: notice.severity ?? '', code: notice.code ?? '', message: notice.message ?? '' })
    }
  })
}
type Sql = ReturnType<typeof createSql>
/** A connection inside `sql.begin`. */
type Tx = postgres.TransactionSql<Sql extends postgres.Sql<infer T> ? T : never>

export class PostgresStore implements Store {
  private readonly sql: Sql
  /** Calls between sending their statements and getting the answer. */
  private inFlight = 0

  /** Creates the connection pool; connections open on first use. Call {@link migrate} before use. */
  static open (options: PostgresStoreOptions): PostgresStore {
    return new PostgresStore(options)
  }

  constructor (options: PostgresStoreOptions) {
    if (!/^postgres(ql)?:\/\//.test(options.url)) {
      throw new RangeError('url must start with postgres:// or postgresql://')
    }
    const max = options.maxConnections ?? 10
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`maxConnections must be a positive integer, got ${max}`)
    const timeout = options.statementTimeoutMs ?? 5000
    if (!Number.isSafeInteger(timeout) || timeout < 0) {
      throw new RangeError(`statementTimeoutMs must be a non-negative integer, got ${timeout}`)
    }
    const connect = options.connectTimeoutSeconds ?? 10
    if (!Number.isFinite(connect) || connect <= 0) throw new RangeError(`connectTimeoutSeconds must be positive, got ${connect}`)
    this.sql = createSql(options)
  }

  /** Runs database work, turning connection failures into StoreUnavailableError. */
  private async db<T> (work: (sql: Sql) => Promise<T>): Promise<T> {
    this.inFlight++
    try {
      return await work(this.sql)
    } catch (err) {
      throw mapError(err)
    } finally {
      this.inFlight--
    }
  }

  async pendingMigrations (): Promise<number[]> {
    return await this.db(async (sql) => {
      const [table] = await sql<Array<{ present: boolean }>>`SELECT to_regclass('schema_migrations') IS NOT NULL AS present`
      const applied = table?.present === true ? (await sql<Array<{ id: number }>>`SELECT id FROM schema_migrations`).map(r => r.id) : []
      return POSTGRES_MIGRATIONS.filter(m => !applied.includes(m.id)).map(m => m.id)
    })
  }

  /**
   * Applies pending migrations in one transaction that first takes an
   * advisory lock: a second coordinator migrating at the same moment waits,
   * then finds them recorded and applies nothing.
   */
  async migrate (): Promise<void> {
    let previous = 0
    for (const migration of POSTGRES_MIGRATIONS) {
      if (migration.id <= previous) throw new Error(`PostgreSQL migrations out of order at id ${migration.id}`)
      previous = migration.id
    }
    await this.db(async (sql) => {
      await sql.begin(async (tx) => {
        await tx`SELECT set_config('statement_timeout', ${String(MIGRATION_TIMEOUT_MS)}, true)`
        await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY}::bigint)`
        await tx`CREATE TABLE IF NOT EXISTS schema_migrations (
          id INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`
        const applied = new Set((await tx<Array<{ id: number }>>`SELECT id FROM schema_migrations`).map(r => r.id))
        for (const migration of POSTGRES_MIGRATIONS) {
          if (applied.has(migration.id)) continue
          await tx.unsafe(migration.sql)
          await tx`INSERT INTO schema_migrations (id, name, applied_at)
                   VALUES (${migration.id}, ${migration.name}, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)`
        }
      })
    })
  }

  async createJob (input: CreateJobInput): Promise<JobSummary> {
    const [job] = await this.createJobs([input])
    return job!
  }

  async createJobs (inputs: CreateJobInput[]): Promise<JobSummary[]> {
    const rows = inputs.map(input => {
      const spec = JSON.stringify(input.spec)
      if (spec.includes('\\u0000') && JSON.stringify(withoutNul(input.spec)) !== spec) {
        throw new ValidationError('the job spec contains a NUL character (U+0000), which PostgreSQL cannot store', 'spec')
      }
      return { input, spec, cap: activeJobCap(input), owner: input.owner ?? null }
    })
    if (rows.length === 0) return []
    /** The row being inserted, so a duplicate id names its job. */
    let current = rows[0]!
    // The conditional insert: with a cap, the job goes in only while its owner has fewer unfinished
    // jobs (counted through jobs_owner_state, migration 11); the event only if the job went in.
    // Earlier inserts of the same transaction are counted too.
    const insert = async (q: Sql | Tx, r: typeof rows[number]): Promise<boolean> => {
      const [row] = await q<Array<{ inserted: boolean }>>`
        WITH j AS (
          INSERT INTO jobs (id, state, spec, attempt, max_attempts, created_at, updated_at, owner, secret_env)
          SELECT ${r.input.id}::text, 'announced', ${r.spec}::text::jsonb, 1, ${maxAttemptsOf(r.input.spec)}::integer,
                 ${r.input.now}::bigint, ${r.input.now}::bigint, ${r.owner}::text, ${r.input.secretEnvSealed ?? null}::text
          WHERE ${r.cap}::bigint IS NULL
             OR (SELECT count(*) FROM jobs WHERE owner = ${r.owner}::text AND state IN ('announced', 'claimed', 'running')) < ${r.cap}::bigint
          RETURNING id
        ), e AS (
          INSERT INTO job_events (job_id, at, type, actor, attempt, detail)
          SELECT id, ${r.input.now}::bigint, 'submitted', 'http', 1, '{}'::jsonb FROM j
        )
        SELECT EXISTS (SELECT 1 FROM j) AS inserted`
      return row?.inserted === true
    }
    const insertAll = async (q: Sql | Tx): Promise<void> => {
      for (const r of rows) {
        current = r
        if (await insert(q, r)) continue
        if (r.owner === null || r.cap === null) throw new Error(`job ${r.input.id}: an uncapped insert matched no row`)
        throw new QuotaExceededError(r.owner, r.cap)
      }
    }
    await this.db(async (sql) => {
      try {
        const owners = [...new Set(rows.filter(r => r.cap !== null && r.owner !== null).map(r => r.owner!))].sort()
        if (rows.length === 1 && owners.length === 0) { await insertAll(sql); return }
        // One transaction: all the jobs or none. Under READ COMMITTED two racing capped inserts would
        // each count the jobs committed before they began and both get in; each owner's advisory lock,
        // held to commit, makes them take turns (taken in one order, so two batches never deadlock).
        await sql.begin(async (tx) => {
          for (const owner of owners) await tx`SELECT pg_advisory_xact_lock(${OWNER_LOCK_CLASS}::integer, hashtext(${owner}::text))`
          await insertAll(tx)
        })
      } catch (err) {
        if (err instanceof postgres.PostgresError && err.code === '23505' && err.constraint_name === 'jobs_pkey') {
          throw duplicateJob(current.input.id)
        }
        throw err
      }
    })
    return rows.map(({ input }) => ({ id: input.id, state: 'announced' as const, spec: input.spec, attempt: 1, createdAt: input.now, updatedAt: input.now, owner: input.owner ?? null }))
  }

  async jobSecrets (jobId: string): Promise<string | null> {
    // No job id holds U+0000 (text cannot): no such job, as in SQLite, instead of failing the statement.
    if (hasNul(jobId)) return null
    const [row] = await this.db(async (sql) =>
      await sql<Array<{ secret_env: string | null }>>`SELECT secret_env FROM jobs WHERE id = ${jobId}`)
    return row?.secret_env ?? null
  }

  async countActiveJobs (owner: string): Promise<number> {
    if (hasNul(owner)) return 0
    const [row] = await this.db(async (sql) => await sql<Array<{ n: number }>>`
      SELECT count(*) AS n FROM jobs WHERE owner = ${owner} AND state IN ('announced', 'claimed', 'running')`)
    return row?.n ?? 0
  }

  async getJob (id: string): Promise<JobRecord | null> {
    // One statement, so the job, its attempts and its result come from one snapshot.
    const [row] = await this.db(async (sql) => await sql<Array<JobRow & { attempts: AttemptRecord[], result: ResultRecord | null }>>`
      SELECT j.id, j.state, j.spec, j.attempt, j.created_at, j.updated_at, j.owner,
        COALESCE((
          SELECT jsonb_agg(jsonb_build_object(
            'jobId', a.job_id, 'number', a.number, 'node', a.node, 'token', a.token, 'state', a.state,
            'awardedAt', a.awarded_at, 'startedAt', a.started_at, 'finishedAt', a.finished_at,
            'leaseExpiresAt', a.lease_expires_at) ORDER BY a.number)
          FROM attempts a WHERE a.job_id = j.id), '[]'::jsonb) AS attempts,
        (SELECT jsonb_build_object(
            'attempt', r.attempt, 'outcome', r.outcome, 'exitCode', r.exit_code, 'stdout', r.stdout, 'stderr', r.stderr,
            'stdoutTruncated', r.stdout_truncated, 'stderrTruncated', r.stderr_truncated,
            'startedAt', r.started_at, 'finishedAt', r.finished_at, 'error', r.error, 'artifacts', r.artifacts)
          FROM results r WHERE r.job_id = j.id) AS result
      FROM jobs j WHERE j.id = ${id}`)
    if (row === undefined) return null
    return { ...toSummary(row), attempts: row.attempts, result: row.result }
  }

  async listJobs (query: ListJobsQuery): Promise<JobSummary[]> {
    const limit = clampLimit(query.limit, DEFAULT_LIST_LIMIT)
    const batch = query.batch
    const owner = query.owner
    if (owner !== undefined) {
      // No owner holds U+0000 (createJob refuses it): none has jobs.
      if (hasNul(owner)) return []
      const state = query.state
      // An owner's jobs, through jobs_owner_state (migration 11).
      const owned = await this.db(async (sql) => await sql<JobRow[]>`
        SELECT * FROM jobs WHERE owner = ${owner}
          ${state === undefined ? sql`` : sql`AND state = ${state}`}
          ${batch === undefined ? sql`` : sql`AND spec ? 'batch' AND spec->>'batch' = ${noNul(batch)}`}
        ORDER BY created_at DESC, id DESC LIMIT ${limit}`)
      return owned.map(toSummary)
    }
    const rows = await this.db(async (sql) => batch !== undefined
      // `spec ? 'batch'` lets the planner use the partial jobs_batch index (migration 8).
      ? (query.state === undefined
          ? await sql<JobRow[]>`SELECT * FROM jobs WHERE spec ? 'batch' AND spec->>'batch' = ${noNul(batch)} ORDER BY created_at DESC, id DESC LIMIT ${limit}`
          : await sql<JobRow[]>`SELECT * FROM jobs WHERE spec ? 'batch' AND spec->>'batch' = ${noNul(batch)} AND state = ${query.state} ORDER BY created_at DESC, id DESC LIMIT ${limit}`)
      : query.state === undefined
        ? await sql<JobRow[]>`SELECT * FROM jobs ORDER BY created_at DESC, id DESC LIMIT ${limit}`
        : await sql<JobRow[]>`SELECT * FROM jobs WHERE state = ${query.state} ORDER BY created_at DESC, id DESC LIMIT ${limit}`)
    return rows.map(toSummary)
  }

  async openJobs (limit: number, now?: number): Promise<OpenJob[]> {
    const n = clampLimit(limit, DEFAULT_LIST_LIMIT)
    const rows = await this.db(async (sql) => now === undefined
      ? await sql<JobRow[]>`SELECT * FROM jobs WHERE state = 'announced' ORDER BY created_at ASC, id ASC LIMIT ${n}`
      : await sql<JobRow[]>`
          SELECT * FROM jobs WHERE state = 'announced' AND not_before <= ${now}
          ORDER BY created_at ASC, id ASC LIMIT ${n}`)
    return rows.map(row => ({ jobId: row.id, attempt: row.attempt, spec: row.spec, createdAt: row.created_at }))
  }

  /** The job as a failed change finds it (fresh snapshot), or undefined if it does not exist. */
  private async diagnose (jobId: string, attempt: number): Promise<DiagnosisRow | undefined> {
    const [row] = await this.db(async (sql) => await sql<DiagnosisRow[]>`
      SELECT j.state, j.attempt,
             c.token AS current_token, c.node AS current_node,
             f.token AS fenced_token, f.node AS fenced_node,
             r.attempt AS result_attempt
      FROM jobs j
      LEFT JOIN attempts c ON c.job_id = j.id AND c.number = j.attempt
      LEFT JOIN attempts f ON f.job_id = j.id AND f.number = ${attempt}
      LEFT JOIN results r ON r.job_id = j.id
      WHERE j.id = ${jobId}`)
    return row
  }

  async award (input: AwardInput): Promise<AttemptRecord> {
    const leaseExpiresAt = input.now + input.leaseMs
    // The token stays out of the event log: it is the node's proof of ownership, and events are readable over HTTP.
    const detail = jsonText({ ...input.detail, node: input.node, leaseExpiresAt })
    for (let run = 1; ; run++) {
      // Besides the write, the statement reports the job as its snapshot saw it: when the
      // snapshot already shows the job taken, that is the loser's answer without a second query.
      const [row] = await this.db(async (sql) => await sql<Array<{ won: boolean, state: JobState | null, attempt: number | null }>>`
        WITH j AS (
          UPDATE jobs SET state = 'claimed', updated_at = ${input.now}
          WHERE id = ${input.jobId} AND state = 'announced' AND attempt = ${input.attempt}
          RETURNING id, attempt
        ), a AS (
          INSERT INTO attempts (job_id, number, node, token, state, awarded_at, started_at, finished_at, lease_expires_at)
          SELECT id, attempt, ${input.node}::text, ${input.token}::text, 'claimed', ${input.now}::bigint,
                 NULL::bigint, NULL::bigint, ${leaseExpiresAt}::bigint
          FROM j
        ), e AS (
          INSERT INTO job_events (job_id, at, type, actor, attempt, detail)
          SELECT id, ${input.now}::bigint, 'awarded', 'coordinator', attempt, ${detail}::text::jsonb FROM j
        )
        SELECT EXISTS (SELECT 1 FROM j) AS won, s.state, s.attempt
        FROM (SELECT 1) AS one LEFT JOIN jobs s ON s.id = ${input.jobId}`)
      if (row?.won === true) {
        return {
          jobId: input.jobId, number: input.attempt, node: input.node, token: input.token, state: 'claimed',
          awardedAt: input.now, startedAt: null, finishedAt: null, leaseExpiresAt
        }
      }
      // Jobs are never deleted: absent from the snapshot means absent.
      if (row === undefined || row.state === null || row.attempt === null) throw new NotFoundError('job', input.jobId)
      // The snapshot saw a committed state in which this award cannot happen (states never return to
      // `announced` for the same attempt): that settles it.
      if (row.state !== 'announced' || row.attempt !== input.attempt) throw awardConflict(input.jobId, input.attempt, { state: row.state, attempt: row.attempt })
      // The snapshot still saw it open, so the UPDATE waited for a change that committed meanwhile: look again.
      const job = await this.diagnose(input.jobId, input.attempt)
      if (job === undefined) throw new NotFoundError('job', input.jobId)
      const wouldMatch = job.state === 'announced' && job.attempt === input.attempt
      if (!wouldMatch || run >= MAX_RERUNS) throw awardConflict(input.jobId, input.attempt, job)
    }
  }

  async markStarted (input: { jobId: string, attempt: number, token: string, node: string, startedAt: number, now: number }): Promise<void> {
    const detail = jsonText({ startedAt: input.startedAt })
    for (let run = 1; ; run++) {
      const rows = await this.db(async (sql) => await sql`
        WITH j AS (
          UPDATE jobs SET state = 'running', updated_at = ${input.now}
          WHERE id = ${input.jobId} AND attempt = ${input.attempt} AND state = 'claimed'
            AND EXISTS (SELECT 1 FROM attempts t WHERE t.job_id = jobs.id AND t.number = jobs.attempt
                          AND t.token = ${input.token} AND t.node = ${input.node})
          RETURNING id, attempt
        ), a AS (
          UPDATE attempts SET state = 'running', started_at = ${input.startedAt}::bigint
          FROM j WHERE attempts.job_id = j.id AND attempts.number = j.attempt
        ), e AS (
          INSERT INTO job_events (job_id, at, type, actor, attempt, detail)
          SELECT id, ${input.now}::bigint, 'started', ${input.node}::text, attempt, ${detail}::text::jsonb FROM j
        )
        SELECT 1 AS ok FROM j`)
      if (rows.length === 1) return
      const job = await this.diagnose(input.jobId, input.attempt)
      const current = currentOf(job)
      const holds = job !== undefined && job.attempt === input.attempt && current?.token === input.token && current.node === input.node
      // A repeated `started` (the node retried after a lost ack) must not fail the node; nor one that
      // arrives after the attempt's own result ended the job (a report delayed by an outage): late, not stale.
      if (holds && (job.state === 'running' || job.state === 'succeeded' || job.state === 'failed')) return
      if (holds && job.state === 'claimed' && run < MAX_RERUNS) continue
      const reason = staleReason(job, current, input.attempt, input.token, input.node)
      if (job !== undefined) await this.recordStale(input.jobId, input.now, input.node, input.attempt, 'started', reason)
      throw new StaleAttemptError(input.jobId, input.attempt, reason)
    }
  }

  async recordResult (input: ResultInput): Promise<'recorded' | 'duplicate'> {
    const { result } = input
    const detail = jsonText({ outcome: result.outcome, exitCode: result.exitCode, errorCode: result.error?.code ?? null })
    const error = result.error === null ? null : jsonText(result.error)
    const startedDetail = jsonText({ startedAt: result.startedAt })
    for (let run = 1; ; run++) {
      const rows = await this.db(async (sql) => await sql`
        WITH j AS (
          UPDATE jobs SET state = ${result.outcome}, updated_at = ${input.now}
          WHERE id = ${input.jobId} AND attempt = ${input.attempt} AND state IN ('claimed', 'running')
            AND EXISTS (SELECT 1 FROM attempts t WHERE t.job_id = jobs.id AND t.number = jobs.attempt
                          AND t.token = ${input.token} AND t.node = ${input.node})
          RETURNING id, attempt
        ), r AS (
          -- The row is keyed by the attempt the token fenced, not by result.attempt.
          INSERT INTO results (job_id, attempt, outcome, exit_code, stdout, stderr, stdout_truncated, stderr_truncated,
                               started_at, finished_at, error, artifacts)
          SELECT id, attempt, ${result.outcome}::text, ${result.exitCode}::integer, ${noNul(result.stdout)}::text,
                 ${noNul(result.stderr)}::text, ${result.stdoutTruncated}::boolean, ${result.stderrTruncated}::boolean,
                 ${result.startedAt}::bigint, ${result.finishedAt}::bigint, ${error}::text::jsonb, ${jsonText(result.artifacts)}::text::jsonb
          FROM j
        ), pre AS (
          -- Every CTE sees the rows as they were before this statement: was a start reported?
          SELECT started_at FROM attempts WHERE job_id = ${input.jobId} AND number = ${input.attempt}
        ), a AS (
          UPDATE attempts SET state = ${result.outcome}::text,
                              started_at = COALESCE(attempts.started_at, ${result.startedAt}::bigint),
                              finished_at = ${result.finishedAt}::bigint
          FROM j WHERE attempts.job_id = j.id AND attempts.number = j.attempt
        ), e AS (
          -- A job that ended within the node's hold on started is reported by its result alone; its
          -- log still gets a started event, before finished (rows are numbered in this order).
          INSERT INTO job_events (job_id, at, type, actor, attempt, detail)
          SELECT id, at, type, actor, attempt, detail FROM (
            SELECT 1 AS k, j.id, ${input.now}::bigint AS at, 'started' AS type, ${input.node}::text AS actor, j.attempt,
                   ${startedDetail}::text::jsonb AS detail
            FROM j, pre WHERE pre.started_at IS NULL AND ${result.startedAt}::bigint IS NOT NULL
            UNION ALL
            SELECT 2, j.id, ${input.now}::bigint, 'finished', ${input.node}::text, j.attempt, ${detail}::text::jsonb FROM j
          ) ev ORDER BY k
        )
        SELECT 1 AS ok FROM j`)
      if (rows.length === 1) return 'recorded'
      const job = await this.diagnose(input.jobId, input.attempt)
      if (job !== undefined && job.result_attempt === input.attempt &&
          job.fenced_token === input.token && job.fenced_node === input.node) return 'duplicate'
      const current = currentOf(job)
      const holds = job !== undefined && job.attempt === input.attempt && current?.token === input.token && current.node === input.node
      if (holds && (job.state === 'claimed' || job.state === 'running') && run < MAX_RERUNS) continue
      const reason = staleReason(job, current, input.attempt, input.token, input.node)
      if (job !== undefined) await this.recordStale(input.jobId, input.now, input.node, input.attempt, 'result', reason)
      throw new StaleAttemptError(input.jobId, input.attempt, reason)
    }
  }

  /** Logs a rejected node report (only for jobs that exist: events hang off a job row). */
  private async recordStale (jobId: string, now: number, node: string, attempt: number, report: string, reason: string): Promise<void> {
    await this.insertEvent({ jobId, at: now, type: 'stale-report', actor: node, attempt, detail: { report, reason } })
  }

  async heldAttempts (node: string): Promise<AttemptRecord[]> {
    // One statement: the jobs and their attempts come from one snapshot.
    const rows = await this.db(async (sql) => await sql<AttemptRow[]>`
      SELECT a.* FROM jobs j JOIN attempts a ON a.job_id = j.id AND a.number = j.attempt
      WHERE j.state IN ('claimed', 'running') AND a.node = ${node}
      ORDER BY a.awarded_at ASC, a.job_id ASC`)
    return rows.map(toAttempt)
  }

  async renewLeases (input: RenewLeasesInput): Promise<number> {
    checkRenewal(input)
    // Nothing stored holds U+0000 (text cannot): such an entry matches nothing, as in SQLite, instead of failing the statement.
    const attempts = input.attempts.filter(a => !a.jobId.includes('\u0000') && !a.token.includes('\u0000'))
    if (attempts.length === 0 || input.node.includes('\u0000')) return 0
    // One statement for the whole list. UPDATE … FROM updates each attempt row once however many list
    // entries join it. Checking attempts.state matters under concurrency: when this UPDATE waits for an
    // attempt row that a reschedule, result or cancel is changing, it re-checks the committed attempt row
    // (whose state then left claimed/running) but not the job row its snapshot joined.
    const result = await this.db(async (sql) => await sql`
      UPDATE attempts SET lease_expires_at = GREATEST(attempts.lease_expires_at, ${input.leaseExpiresAt}::bigint)
      FROM unnest(${attempts.map(a => a.jobId)}::text[], ${attempts.map(a => a.attempt)}::int[],
                  ${attempts.map(a => a.token)}::text[]) AS r(job_id, number, token),
           jobs j
      WHERE attempts.job_id = r.job_id AND attempts.number = r.number AND attempts.token = r.token
        AND attempts.node = ${input.node}::text AND attempts.state IN ('claimed', 'running')
        AND j.id = attempts.job_id AND j.attempt = attempts.number AND j.state IN ('claimed', 'running')`)
    return result.count
  }

  async expiredAttempts (query: ExpiredAttemptsQuery): Promise<AttemptRecord[]> {
    const limit = clampLimit(query.limit, DEFAULT_LIST_LIMIT)
    // Walks attempts_live_lease (partial: claimed/running attempts) in expiry order; the job row by its key.
    const rows = await this.db(async (sql) => await sql<AttemptRow[]>`
      SELECT a.* FROM attempts a JOIN jobs j ON j.id = a.job_id AND j.attempt = a.number
      WHERE a.state IN ('claimed', 'running') AND a.lease_expires_at <= ${query.now}::bigint AND j.state IN ('claimed', 'running')
      ORDER BY a.lease_expires_at ASC, a.job_id ASC, a.number ASC
      LIMIT ${limit}`)
    return rows.map(toAttempt)
  }

  async rescheduleAttempt (input: RescheduleInput): Promise<RescheduleOutcome> {
    const notBefore = input.now + input.backoffMs
    const reason = noNul(input.reason)
    // A released attempt (the node handed it back) does not count: max_attempts grows by 1 and the job is always re-announced.
    const released = input.attemptState === 'released'
    for (let run = 1; ; run++) {
      // SET expressions see the row as it was; RETURNING shows it as it is now. The attempt row is
      // updated by key, so a concurrent markStarted that committed first is updated, not overwritten,
      // and its RETURNING carries that started_at into the result row.
      const [row] = await this.db(async (sql) => await sql<Array<JobRow & { max_attempts: number, not_before: number }>>`
        WITH j AS (
          UPDATE jobs SET
            state        = CASE WHEN ${released}::boolean OR attempt < max_attempts THEN 'announced' ELSE 'failed' END,
            not_before   = CASE WHEN ${released}::boolean OR attempt < max_attempts THEN ${notBefore}::bigint ELSE not_before END,
            attempt      = CASE WHEN ${released}::boolean OR attempt < max_attempts THEN attempt + 1 ELSE attempt END,
            max_attempts = CASE WHEN ${released}::boolean THEN max_attempts + 1 ELSE max_attempts END,
            updated_at   = ${input.now}
          WHERE id = ${input.jobId} AND attempt = ${input.attempt} AND state IN ('claimed', 'running')
            AND (${input.token}::text IS NULL OR EXISTS (
              SELECT 1 FROM attempts t WHERE t.job_id = jobs.id AND t.number = jobs.attempt AND t.token = ${input.token}::text))
          RETURNING id, state, spec, attempt, created_at, updated_at, owner, max_attempts, not_before
        ), a AS (
          UPDATE attempts SET state = ${input.attemptState}::text, finished_at = ${input.now}::bigint
          FROM j WHERE attempts.job_id = j.id AND attempts.number = ${input.attempt}::integer
          RETURNING attempts.started_at
        ), r AS (
          -- The message is shared.ts' exhaustedMessage().
          INSERT INTO results (job_id, attempt, outcome, exit_code, stdout, stderr, stdout_truncated, stderr_truncated,
                               started_at, finished_at, error)
          SELECT j.id, ${input.attempt}::integer, 'failed', NULL::integer, '', '', false, false,
                 (SELECT a.started_at FROM a), ${input.now}::bigint,
                 jsonb_build_object(
                   'code', ${ATTEMPTS_EXHAUSTED}::text,
                   'message', format('%s; no attempts left (%s of %s used)', ${reason}::text, j.max_attempts, j.max_attempts),
                   'retryable', false)
          FROM j WHERE j.state = 'failed'
        ), e AS (
          INSERT INTO job_events (job_id, at, type, actor, attempt, detail)
          SELECT j.id, ${input.now}::bigint, CASE WHEN j.state = 'announced' THEN 'rescheduled' ELSE 'finished' END,
                 ${input.actor}::text, ${input.attempt}::integer,
                 CASE WHEN j.state = 'announced'
                   THEN jsonb_build_object('reason', ${reason}::text, 'nextAttempt', j.attempt, 'notBefore', j.not_before,
                                           'attemptState', ${input.attemptState}::text)
                        || CASE WHEN ${released}::boolean THEN '{"released": true}'::jsonb ELSE '{}'::jsonb END
                   ELSE jsonb_build_object('outcome', 'failed', 'exitCode', NULL::integer, 'errorCode', ${ATTEMPTS_EXHAUSTED}::text,
                                           'reason', ${reason}::text)
                 END
          FROM j
        )
        SELECT * FROM j`)
      if (row !== undefined) return { job: toSummary(row), rescheduled: row.state === 'announced' }
      const job = await this.diagnose(input.jobId, input.attempt)
      if (job === undefined) throw new NotFoundError('job', input.jobId)
      const current = currentOf(job)
      const wouldMatch = job.attempt === input.attempt && (job.state === 'claimed' || job.state === 'running') &&
        current !== undefined && (input.token === null || current.token === input.token)
      if (wouldMatch && run < MAX_RERUNS) continue
      throw new StaleAttemptError(input.jobId, input.attempt, staleReason(job, current, input.attempt, input.token, null))
    }
  }

  async cancel (input: { jobId: string, now: number, actor: string, reason: string }): Promise<CancelOutcome> {
    for (let run = 1; ; run++) {
      // The xmin guard makes the UPDATE match only the row version this statement's snapshot
      // holds: every write to a job's attempts also rewrites the job's row, so the snapshot then
      // shows the attempt to stop exactly as it is. When another change committed in between
      // (say an award whose attempt row the snapshot cannot see), nothing is written and the
      // statement runs again on a fresh snapshot.
      const rows = await this.db(async (sql) => await sql<Array<JobRow & { [K in keyof AttemptRow as `a_${K}`]: AttemptRow[K] | null }>>`
        WITH j AS (
          UPDATE jobs SET state = 'cancelled', updated_at = ${input.now}
          WHERE id = ${input.jobId} AND state IN ('announced', 'claimed', 'running')
            AND xmin = (SELECT s.xmin FROM jobs s WHERE s.id = ${input.jobId})
          RETURNING id, state, spec, attempt, created_at, updated_at, owner
        ), b AS (
          SELECT t.* FROM attempts t JOIN j ON t.job_id = j.id AND t.number = j.attempt
          WHERE t.state IN ('claimed', 'running')
        ), c AS (
          UPDATE attempts SET state = 'cancelled', finished_at = ${input.now}::bigint
          FROM b WHERE attempts.job_id = b.job_id AND attempts.number = b.number
        ), e AS (
          INSERT INTO job_events (job_id, at, type, actor, attempt, detail)
          SELECT j.id, ${input.now}::bigint, 'cancelled', ${input.actor}::text, j.attempt,
                 jsonb_build_object('reason', ${noNul(input.reason)}::text, 'stoppedNode', (SELECT b.node FROM b))
          FROM j
        )
        SELECT j.id, j.state, j.spec, j.attempt, j.created_at, j.updated_at, j.owner,
               b.job_id AS a_job_id, b.number AS a_number, b.node AS a_node, b.token AS a_token, b.state AS a_state,
               b.awarded_at AS a_awarded_at, b.started_at AS a_started_at, b.finished_at AS a_finished_at,
               b.lease_expires_at AS a_lease_expires_at
        FROM j LEFT JOIN b ON true`)
      const row = rows[0]
      if (row !== undefined) {
        const stopped = row.a_job_id === null
          ? null
          : toAttempt({
            job_id: row.a_job_id, number: row.a_number ?? 0, node: row.a_node ?? '', token: row.a_token ?? '',
            state: row.a_state ?? 'claimed', awarded_at: row.a_awarded_at ?? 0, started_at: row.a_started_at,
            finished_at: row.a_finished_at, lease_expires_at: row.a_lease_expires_at ?? 0
          })
        return { job: toSummary(row), stopped }
      }
      const job = await this.diagnose(input.jobId, 0)
      if (job === undefined) throw new NotFoundError('job', input.jobId)
      const cancellable = job.state === 'announced' || job.state === 'claimed' || job.state === 'running'
      if (!cancellable || run >= MAX_RERUNS) throw cancelConflict(input.jobId, job.state)
    }
  }

  async upsertNode (input: { peerId: string, capacity: NodeCapacity, now: number }): Promise<void> {
    await this.db(async (sql) => await sql`
      INSERT INTO nodes (peer_id, capacity, first_seen_at, last_seen_at)
      VALUES (${input.peerId}, ${jsonText(input.capacity)}::text::jsonb, ${input.now}, ${input.now})
      ON CONFLICT (peer_id) DO UPDATE SET capacity = excluded.capacity, last_seen_at = excluded.last_seen_at`)
  }

  async listNodes (): Promise<NodeRecord[]> {
    const rows = await this.db(async (sql) =>
      await sql<Array<{ peer_id: string, capacity: NodeCapacity, first_seen_at: number, last_seen_at: number }>>`
        SELECT * FROM nodes ORDER BY peer_id`)
    return rows.map(row => ({ peerId: row.peer_id, capacity: row.capacity, firstSeenAt: row.first_seen_at, lastSeenAt: row.last_seen_at }))
  }

  async countJobs (): Promise<Record<JobState, number>> {
    const counts: Record<JobState, number> = { announced: 0, claimed: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 }
    const rows = await this.db(async (sql) =>
      await sql<Array<{ state: JobState, n: number }>>`SELECT state, COUNT(*) AS n FROM jobs GROUP BY state`)
    for (const row of rows) counts[row.state] = row.n
    return counts
  }

  async appendCloudEvent (e: Omit<CloudEvent, 'seq'>): Promise<void> {
    await this.db(async (sql) => await sql`
      INSERT INTO cloud_events (at, type, server_id, server_name, reason, detail)
      VALUES (${e.at}, ${e.type}, ${e.serverId}, ${noNul(e.serverName)}, ${noNul(e.reason)}, ${jsonText(e.detail)}::text::jsonb)`)
  }

  async listCloudEvents (query: { limit: number, serverId?: number }): Promise<CloudEvent[]> {
    const limit = clampLimit(query.limit, 100)
    const serverId = query.serverId
    const rows = await this.db(async (sql) => serverId == null
      ? await sql<Array<{ seq: number, at: number, type: CloudEvent['type'], server_id: number | null, server_name: string, reason: string, detail: Record<string, unknown> }>>`SELECT * FROM cloud_events ORDER BY seq DESC LIMIT ${limit}`
      : await sql<Array<{ seq: number, at: number, type: CloudEvent['type'], server_id: number | null, server_name: string, reason: string, detail: Record<string, unknown> }>>`SELECT * FROM cloud_events WHERE server_id = ${serverId} ORDER BY seq DESC LIMIT ${limit}`)
    return rows.map(r => ({ seq: Number(r.seq), at: Number(r.at), type: r.type, serverId: r.server_id == null ? null : Number(r.server_id), serverName: r.server_name, reason: r.reason, detail: r.detail }))
  }

  async appendEvent (event: Omit<JobEvent, 'seq'>): Promise<void> {
    await this.insertEvent(event)
  }

  private async insertEvent (event: Omit<JobEvent, 'seq'>): Promise<void> {
    await this.db(async (sql) => await sql`
      INSERT INTO job_events (job_id, at, type, actor, attempt, detail)
      VALUES (${event.jobId}, ${event.at}, ${event.type}, ${event.actor}, ${event.attempt}, ${jsonText(event.detail)}::text::jsonb)`)
  }

  async listEvents (jobId: string): Promise<JobEvent[]> {
    const rows = await this.db(async (sql) => await sql<Array<{
      seq: number, job_id: string, at: number, type: JobEventType, actor: string, attempt: number | null, detail: Record<string, unknown>
    }>>`SELECT * FROM job_events WHERE job_id = ${jobId} ORDER BY seq`)
    return rows.map(({ seq, at, type, actor, attempt, detail, ...row }) => ({ seq, jobId: row.job_id, at, type, actor, attempt, detail }))
  }

  async appendLogs (input: AppendLogsInput): Promise<{ stored: number, dropped: number }> {
    checkLogBatch(input)
    const count = input.lines.length
    // An empty batch stores nothing whoever sends it, so it is answered without a round trip and
    // without checking the attempt: a stale holder learns it with its next non-empty batch.
    if (count === 0) return { stored: 0, dropped: 0 }
    const streams = input.lines.map(l => l.stream)
    const ats = input.lines.map(l => l.at)
    const texts = input.lines.map(l => noNul(l.text))
    for (let run = 1; ; run++) {
      // One statement. `h` is the compare-and-set: it locks the job row (FOR UPDATE) only if this
      // node's token holds the current attempt, and reads the line count. Under READ COMMITTED a
      // concurrent append makes it wait for that lock, then re-check its condition against the
      // committed row and read the count that append left, so racing batches get disjoint line
      // numbers. (An UPDATE's RETURNING shows only the new count, from which the old one cannot be
      // told once the cap is reached; the lock is what makes the count read here the one `j` bumps.)
      // Lines are numbered in input order from unnest's ordinality; those past the cap are not
      // inserted, and at the cap the job row is not rewritten at all.
      const [row] = await this.db(async (sql) => await sql<Array<{ stored: number }>>`
        WITH h AS (
          SELECT id, attempt, log_lines AS before,
                 LEAST(${count}::bigint, GREATEST(0, ${input.maxLines}::bigint - log_lines)) AS stored
          FROM jobs
          WHERE id = ${input.jobId} AND attempt = ${input.attempt} AND state IN ('claimed', 'running')
            AND EXISTS (SELECT 1 FROM attempts t WHERE t.job_id = jobs.id AND t.number = jobs.attempt
                          AND t.token = ${input.token} AND t.node = ${input.node})
          FOR UPDATE
        ), j AS (
          UPDATE jobs SET log_lines = jobs.log_lines + h.stored
          FROM h WHERE jobs.id = h.id AND h.stored > 0
          RETURNING h.id, h.attempt, h.before, h.stored
        ), l AS (
          INSERT INTO job_logs (job_id, line, attempt, stream, at, text)
          SELECT j.id, (j.before + r.ord)::integer, j.attempt, r.stream, r.at, r.text
          FROM j CROSS JOIN unnest(${streams}::text[], ${ats}::bigint[], ${texts}::text[]) WITH ORDINALITY AS r(stream, at, text, ord)
          WHERE r.ord <= j.stored
        )
        SELECT stored FROM h`)
      if (row !== undefined) return { stored: row.stored, dropped: count - row.stored }
      const job = await this.diagnose(input.jobId, input.attempt)
      const current = currentOf(job)
      const holds = job !== undefined && job.attempt === input.attempt && current?.token === input.token && current.node === input.node
      // The statement's snapshot predated a commit it then waited for (say the award of this attempt): look again.
      if (holds && (job.state === 'claimed' || job.state === 'running') && run < MAX_RERUNS) continue
      // Lines of the attempt whose own result ended the job, delayed past it: late, not stale; not kept.
      if (holds && (job.state === 'succeeded' || job.state === 'failed')) return { stored: 0, dropped: count }
      const reason = staleReason(job, current, input.attempt, input.token, input.node)
      if (job !== undefined) await this.recordStale(input.jobId, input.now, input.node, input.attempt, 'log', reason)
      throw new StaleAttemptError(input.jobId, input.attempt, reason)
    }
  }

  async listLogs (query: { jobId: string, after: number, limit: number }): Promise<LogLine[]> {
    const { after, limit } = logQuery(query)
    // No job id holds U+0000 (text cannot): none has lines, as in SQLite, instead of failing the statement.
    if (query.jobId.includes('\u0000')) return []
    // Walks the primary key (job_id, line) from `after`. int4 and int8 (at) both come back as JS numbers.
    const rows = await this.db(async (sql) => await sql<LogLine[]>`
      SELECT line, attempt, stream, at, text FROM job_logs
      WHERE job_id = ${query.jobId} AND line > ${after}::bigint
      ORDER BY line LIMIT ${limit}`)
    return rows.map(({ line, attempt, stream, at, text }) => ({ line, attempt, stream, at, text }))
  }

  async createJoinToken (input: { id: string, secretSha256: string, createdAt: number, expiresAt: number | null, note: string }): Promise<void> {
    checkNewJoinToken(input)
    await this.db(async (sql) => {
      try {
        await sql`
          INSERT INTO join_tokens (id, secret_sha256, created_at, expires_at, revoked_at, note)
          VALUES (${input.id}, ${input.secretSha256}, ${input.createdAt}::bigint, ${input.expiresAt}::bigint, NULL, ${input.note})`
      } catch (err) {
        if (err instanceof postgres.PostgresError && err.code === '23505' && err.constraint_name === 'join_tokens_pkey') {
          throw duplicateJoinToken(input.id)
        }
        throw err
      }
    })
  }

  async checkJoinToken (input: { id: string, secretSha256: string, now: number }): Promise<JoinTokenVerdict> {
    checkJoinTokenQuery(input)
    // int8 columns come back as JS numbers (null stays null).
    const [row] = await this.db(async (sql) => await sql<JoinTokenRow[]>`
      SELECT id, secret_sha256, created_at, expires_at, revoked_at, note FROM join_tokens WHERE id = ${input.id}`)
    return joinTokenVerdict(row, input.secretSha256, input.now)
  }

  async revokeJoinToken (input: { id: string, now: number }): Promise<boolean> {
    checkJoinTokenRevocation(input)
    // One statement. The UPDATE matches only a token not yet revoked, so a second revocation keeps
    // the first revoked_at; a racing one waits for the row lock, re-checks and matches nothing.
    // Either way the token exists (rows are never deleted) and the answer is true; false only when
    // the statement's snapshot has no such row.
    const [row] = await this.db(async (sql) => await sql<Array<{ found: boolean }>>`
      WITH u AS (
        UPDATE join_tokens SET revoked_at = ${input.now}::bigint
        WHERE id = ${input.id} AND revoked_at IS NULL
        RETURNING id
      )
      SELECT EXISTS (SELECT 1 FROM u) OR EXISTS (SELECT 1 FROM join_tokens WHERE id = ${input.id}) AS found`)
    return row?.found === true
  }

  async listJoinTokens (): Promise<Array<{ id: string, createdAt: number, expiresAt: number | null, revokedAt: number | null, note: string }>> {
    const rows = await this.db(async (sql) => await sql<Array<Omit<JoinTokenRow, 'secret_sha256'>>>`
      SELECT id, created_at, expires_at, revoked_at, note FROM join_tokens ORDER BY created_at DESC, id DESC`)
    return rows.map(toJoinTokenInfo)
  }

  async createApiKey (input: { id: string, name: string, secretSha256: string, admin: boolean, createdAt: number }): Promise<void> {
    checkNewApiKey(input)
    await this.db(async (sql) => {
      try {
        await sql`
          INSERT INTO api_keys (id, name, secret_sha256, admin, created_at, revoked_at)
          VALUES (${input.id}, ${input.name}, ${input.secretSha256}, ${input.admin}, ${input.createdAt}::bigint, NULL)`
      } catch (err) {
        if (err instanceof postgres.PostgresError && err.code === '23505' && err.constraint_name === 'api_keys_pkey') {
          throw duplicateApiKey(input.id)
        }
        throw err
      }
    })
  }

  async findApiKey (id: string): Promise<ApiKeyRecord | null> {
    if (hasNul(id)) return null
    const [row] = await this.db(async (sql) => await sql<ApiKeyRow[]>`
      SELECT id, name, secret_sha256, admin, created_at, revoked_at FROM api_keys WHERE id = ${id}`)
    return row === undefined ? null : toApiKey(row)
  }

  async listApiKeys (): Promise<ApiKeyRecord[]> {
    const rows = await this.db(async (sql) => await sql<ApiKeyRow[]>`
      SELECT id, name, secret_sha256, admin, created_at, revoked_at FROM api_keys ORDER BY created_at ASC, id ASC`)
    return rows.map(toApiKey)
  }

  async revokeApiKey (input: { id: string, now: number }): Promise<boolean> {
    checkApiKeyRevocation(input)
    // One statement, as revokeJoinToken: only a key not yet revoked is updated, so the first
    // revoked_at stays; keys are never deleted, so false means the snapshot has no such key.
    const [row] = await this.db(async (sql) => await sql<Array<{ found: boolean }>>`
      WITH u AS (
        UPDATE api_keys SET revoked_at = ${input.now}::bigint
        WHERE id = ${input.id} AND revoked_at IS NULL
        RETURNING id
      )
      SELECT EXISTS (SELECT 1 FROM u) OR EXISTS (SELECT 1 FROM api_keys WHERE id = ${input.id}) AS found`)
    return row?.found === true
  }

  async ensureSetting (input: { name: string, value: string }): Promise<string> {
    checkSetting(input)
    return await this.db(async (sql) => {
      // The insert's value, or the one its snapshot already holds. When the insert met a row
      // another transaction was inserting, it waited for that commit and did nothing, but this
      // statement's snapshot predates the row: the read that follows (a fresh snapshot) sees it.
      const [row] = await sql<Array<{ value: string }>>`
        WITH i AS (
          INSERT INTO settings (name, value) VALUES (${input.name}, ${input.value})
          ON CONFLICT (name) DO NOTHING
          RETURNING value
        )
        SELECT value FROM i UNION ALL SELECT value FROM settings WHERE name = ${input.name} LIMIT 1`
      if (row !== undefined) return row.value
      const [stored] = await sql<Array<{ value: string }>>`SELECT value FROM settings WHERE name = ${input.name}`
      if (stored === undefined) throw new Error(`setting ${input.name} is neither inserted nor stored`)
      return stored.value
    })
  }

  async bindPeer (input: { peerId: string, tokenId: string, now: number }): Promise<string> {
    checkPeerBinding(input)
    return await this.db(async (sql) => {
      // As ensureSetting: the first binding stays; a binding committed while this one waited is read afresh.
      const [row] = await sql<Array<{ token_id: string }>>`
        WITH i AS (
          INSERT INTO peer_bindings (peer_id, token_id, bound_at) VALUES (${input.peerId}, ${input.tokenId}, ${input.now}::bigint)
          ON CONFLICT (peer_id) DO NOTHING
          RETURNING token_id
        )
        SELECT token_id FROM i UNION ALL SELECT token_id FROM peer_bindings WHERE peer_id = ${input.peerId} LIMIT 1`
      if (row !== undefined) return row.token_id
      const [bound] = await sql<Array<{ token_id: string }>>`SELECT token_id FROM peer_bindings WHERE peer_id = ${input.peerId}`
      if (bound === undefined) throw new Error(`peer ${input.peerId} is neither bound nor was bound`)
      return bound.token_id
    })
  }

  async revokedPeers (): Promise<RevokedPeer[]> {
    const rows = await this.db(async (sql) => await sql<Array<{ peer_id: string, token_id: string, revoked_at: number }>>`
      SELECT b.peer_id, b.token_id, t.revoked_at
      FROM peer_bindings b JOIN join_tokens t ON t.id = b.token_id
      WHERE t.revoked_at IS NOT NULL
      ORDER BY t.revoked_at ASC, b.peer_id ASC`)
    return rows.map(r => ({ peerId: r.peer_id, tokenId: r.token_id, revokedAt: r.revoked_at }))
  }

  async listPeerBindings (tokenId: string): Promise<Array<{ peerId: string, boundAt: number }>> {
    if (hasNul(tokenId)) return []
    const rows = await this.db(async (sql) => await sql<Array<{ peer_id: string, bound_at: number }>>`
      SELECT peer_id, bound_at FROM peer_bindings WHERE token_id = ${tokenId} ORDER BY bound_at ASC, peer_id ASC`)
    return rows.map(r => ({ peerId: r.peer_id, boundAt: r.bound_at }))
  }

  async tryAcquireLease (input: LeaseInput): Promise<boolean> {
    const rows = await this.db(async (sql) => await sql`
      INSERT INTO leases (name, holder, expires_at) VALUES (${input.name}, ${input.holder}, ${input.now + input.ttlMs})
      ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
      WHERE leases.holder = excluded.holder OR leases.expires_at <= ${input.now}
      RETURNING holder`)
    return rows.length === 1
  }

  async releaseLease (input: { name: string, holder: string }): Promise<void> {
    await this.db(async (sql) => await sql`DELETE FROM leases WHERE name = ${input.name} AND holder = ${input.holder}`)
  }

  /**
   * Ends the pool gracefully: statements still running get up to 5 s to
   * finish, then their connections are closed. With none running the
   * connections close at once (postgres.js 3.4 would otherwise wait out the
   * whole timeout for a connection the server had terminated mid-statement).
   */
  async close (): Promise<void> {
    await this.sql.end({ timeout: this.inFlight === 0 ? 0 : 5 })
  }
}
