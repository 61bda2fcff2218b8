/**
 * The store contract. The coordinator talks to its database only through
 * this interface, so SQLite (embedded default) and PostgreSQL (issue 3) are
 * interchangeable and one contract test suite covers both.
 *
 * Every state change is a single conditional write (compare-and-set on the
 * job's state, attempt number and fencing token). When it matches zero rows
 * the caller lost a race and gets a typed error:
 * - {@link ConflictError} when the job is not in the state the change needs,
 * - {@link StaleAttemptError} when a report names an attempt or token that is
 *   no longer the job's current one (fencing).
 */
import type { JobSpec, NodeCapacity, JobError, Artifact } from '../../protocol/schemas.js'

export type JobState = 'announced' | 'claimed' | 'running' | 'succeeded' | 'failed' | 'cancelled'
export const TERMINAL_JOB_STATES: ReadonlySet<JobState> = new Set(['succeeded', 'failed', 'cancelled'])
/** `released`: handed back by its node (a drain on shutdown) without using up an attempt (migration 5). */
export type AttemptState = 'claimed' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'lost' | 'released'

export interface AttemptRecord {
  jobId: string
  number: number
  /** Peer id of the claimant. */
  node: string
  token: string
  state: AttemptState
  awardedAt: number
  startedAt: number | null
  finishedAt: number | null
  leaseExpiresAt: number
}

export interface ResultRecord {
  attempt: number
  outcome: 'succeeded' | 'failed' | 'cancelled'
  exitCode: number | null
  stdout: string
  stderr: string
  stdoutTruncated: boolean
  stderrTruncated: boolean
  startedAt: number | null
  finishedAt: number
  error: JobError | null
  /** Output files the attempt uploaded. */
  artifacts: Artifact[]
}

export interface JobRecord {
  id: string
  state: JobState
  spec: JobSpec
  /** Number of the current (latest) attempt; attempt 1 exists from submission. */
  attempt: number
  createdAt: number
  updatedAt: number
  /** Id of the API key that submitted the job; null for a job submitted to an open coordinator. */
  owner: string | null
  attempts: AttemptRecord[]
  result: ResultRecord | null
}

/** A job row without its attempts and result, for listings. */
export type JobSummary = Omit<JobRecord, 'attempts' | 'result'>

export interface NodeRecord {
  peerId: string
  capacity: NodeCapacity
  firstSeenAt: number
  lastSeenAt: number
}

export type JobEventType =
  | 'submitted' | 'announced' | 'awarded' | 'started' | 'finished' | 'cancelled' | 'stale-report' | 'cancel-requested'
  | 'rescheduled'
  /** Reserved for the coordinator's lease-expiry handling (written through appendEvent). */
  | 'lease-expired' | 'lost'

/** Something the provisioner did to a managed server. */
export interface CloudEvent {
  seq: number
  at: number
  type: 'created' | 'create-failed' | 'draining' | 'deleted' | 'adopted'
  serverId: number | null
  serverName: string
  reason: string
  detail: Record<string, unknown>
}

/** Most lines one appendLogs call takes. */
export const MAX_LOG_BATCH = 1000

/** One line of a job's live output. */
export interface LogLine {
  /** 1, 2, … per job, in arrival order, across attempts. */
  line: number
  attempt: number
  stream: 'stdout' | 'stderr'
  /** When the node read it (the node's clock). */
  at: number
  /** Without its newline; at most 8 KiB (longer lines arrive cut into pieces). */
  text: string
}

export interface AppendLogsInput {
  jobId: string
  attempt: number
  token: string
  node: string
  now: number
  lines: Array<Pick<LogLine, 'stream' | 'at' | 'text'>>
  /** Lines kept per job; the rest are dropped. */
  maxLines: number
}

export interface JobEvent {
  seq: number
  jobId: string
  at: number
  type: JobEventType
  /** Who caused it: `http`, `coordinator`, or a node's peer id. */
  actor: string
  attempt: number | null
  detail: Record<string, unknown>
}

export interface AwardInput {
  jobId: string
  attempt: number
  node: string
  token: string
  now: number
  leaseMs: number
  /** Recorded in the event log: how many bids were considered, why this one won. */
  detail: Record<string, unknown>
}

export interface ResultInput {
  jobId: string
  attempt: number
  token: string
  node: string
  now: number
  result: ResultRecord
}

export interface ListJobsQuery {
  state?: JobState
  /** Only the jobs of this batch (`spec.batch`). */
  batch?: string
  /** Only the jobs of this owner (API key id). */
  owner?: string
  /** @default 50 */
  limit?: number
}

export interface OpenJob {
  jobId: string
  attempt: number
  spec: JobSpec
  createdAt: number
}

export interface RescheduleInput {
  jobId: string
  /** The attempt being given up; must be the job's current one. */
  attempt: number
  /** When non-null, the current attempt's fencing token must equal it. Null: any holder of `attempt`. */
  token: string | null
  now: number
  /** Who decides it, for the event log: usually `coordinator`. */
  actor: string
  /** Why, e.g. `lease expired` or the node's retryable error; kept in the event and, when exhausted, in the result. */
  reason: string
  /**
   * What the given-up attempt becomes. `released`: the node handed it back (a drain on shutdown); it does not
   * count against the job's limit: the same write raises `max_attempts` by 1, so the job always goes back to
   * `announced` with the next attempt, never to `failed`.
   */
  attemptState: 'lost' | 'failed' | 'released'
  /** The re-announced job is not offered before `now + backoffMs`. */
  backoffMs: number
}

export interface RescheduleOutcome {
  /** The job after the change: `announced` with the next attempt, or `failed`. */
  job: JobSummary
  /** True when the job was re-announced; false when it ran out of attempts and ended `failed`. */
  rescheduled: boolean
}

/** `JobError.code` of the result written when a job runs out of attempts. */
export const ATTEMPTS_EXHAUSTED = 'attempts-exhausted'

export interface CancelOutcome {
  job: JobSummary
  /** The attempt that was running or claimed, which its node must stop. */
  stopped: AttemptRecord | null
}

/**
 * The store's database cannot be reached (connection refused, reset or
 * closed, server shutting down, connect timeout). Nothing is known about
 * whether the operation took effect if the connection broke after the
 * statement was sent; the HTTP layer answers 503 so the caller can retry.
 * Thrown by network-backed stores (PostgreSQL) only; SqliteStore never throws it.
 */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError'
  constructor (message: string, options?: { cause?: unknown }) { super(message, options) }
}

/**
 * A job was refused because its owner already has `limit` unfinished jobs
 * (announced, claimed or running): {@link CreateJobInput.maxActiveForOwner}.
 */
export class QuotaExceededError extends Error {
  override readonly name = 'QuotaExceededError'
  constructor (readonly owner: string, readonly limit: number) {
    super(`key ${owner} already has ${limit} unfinished jobs; wait for some to finish or cancel them`)
  }
}

/** What {@link Store.createJob} takes. */
export interface CreateJobInput {
  id: string
  spec: JobSpec
  now: number
  /** Id of the API key submitting the job; null (the default) on an open coordinator. */
  owner?: string | null
  /**
   * With a non-null `owner`: the job is inserted only while the owner has fewer
   * than this many unfinished jobs (announced, claimed or running), decided by
   * the insert itself; otherwise {@link QuotaExceededError}. Absent: no cap.
   */
  maxActiveForOwner?: number
  /**
   * The job's secret environment, sealed by the coordinator: an opaque string
   * the store keeps as it is and returns only through {@link Store.jobSecrets}.
   */
  secretEnvSealed?: string | null
}

/** A submitter API key. Listings carry the secret's hash too: callers decide what to show. */
export interface ApiKeyRecord {
  /** Public id; the owner of the jobs submitted with the key. */
  id: string
  /** Free text; names may repeat. */
  name: string
  /** sha256 of the key's secret, as the coordinator computed it (the secret itself is never stored). */
  secretSha256: string
  /** Whether the key may administer the coordinator, beyond submitting jobs. */
  admin: boolean
  createdAt: number
  /** When the key was first revoked; null while it is valid. */
  revokedAt: number | null
}

/** A peer bound to a join token that has since been revoked. */
export interface RevokedPeer {
  peerId: string
  tokenId: string
  /** When the token was revoked. */
  revokedAt: number
}

/** At most this many attempts per {@link Store.renewLeases} call. */
export const MAX_RENEW_BATCH = 256

/** One attempt a node asks to keep, as it names it in a renewal. */
export interface RenewedAttempt {
  jobId: string
  attempt: number
  token: string
}

export interface RenewLeasesInput {
  /** Peer id of the node renewing; only attempts awarded to it are renewed. */
  node: string
  /** At most {@link MAX_RENEW_BATCH}. */
  attempts: RenewedAttempt[]
  /** The new expiry, epoch ms; a later expiry already stored is kept (never shortened). */
  leaseExpiresAt: number
}

export interface ExpiredAttemptsQuery {
  now: number
  limit: number
}

export interface LeaseInput {
  /** The lease's name, e.g. `background-loops`. */
  name: string
  /** Who asks: a stable id of one coordinator process. */
  holder: string
  /** How long the lease lasts from `now` unless renewed, in ms. */
  ttlMs: number
  now: number
}

export interface Store {
  /**
   * Applies pending migrations. Idempotent, and safe when several
   * coordinators migrate the same database at once (they serialise and
   * exactly one applies each migration).
   */
  migrate: () => Promise<void>
  /** Ids of migrations not yet applied, for refusing to start with `--no-migrate` on an old schema. */
  pendingMigrations: () => Promise<number[]>
  /**
   * Inserts a job in state `announced` with attempt 1 and a `submitted` event;
   * its `max_attempts` comes from `spec.maxAttempts` (3 when absent). The job
   * gets `owner` (null when absent) and keeps `secretEnvSealed` for
   * {@link jobSecrets}. With `maxActiveForOwner` and a non-null owner, one
   * conditional insert admits the job only while the owner has fewer than that
   * many unfinished jobs, exactly even when submissions race (PostgreSQL
   * serialises an owner's capped inserts on a transaction-scoped advisory lock);
   * throws {@link QuotaExceededError} otherwise. Throws ConflictError when the
   * id exists; RangeError for an owner or sealed secret that is not a string
   * without U+0000, or a `maxActiveForOwner` that is not a non-negative safe integer.
   */
  createJob: (input: CreateJobInput) => Promise<JobSummary>
  /**
   * Inserts several jobs in one transaction: all of them, or (on any error,
   * a duplicate id or an owner over its cap included) none. Each capped
   * insert counts the jobs inserted before it in the same call. Errors as
   * {@link Store.createJob}, naming the job that failed.
   */
  createJobs: (inputs: CreateJobInput[]) => Promise<JobSummary[]>
  /**
   * The sealed secret environment the job was created with, exactly as given;
   * null when it has none or there is no such job. Never part of JobRecord or JobSummary.
   */
  jobSecrets: (jobId: string) => Promise<string | null>
  /** How many jobs of `owner` are unfinished (announced, claimed or running). */
  countActiveJobs: (owner: string) => Promise<number>
  getJob: (id: string) => Promise<JobRecord | null>
  /** Newest first. */
  listJobs: (query: ListJobsQuery) => Promise<JobSummary[]>
  /**
   * Jobs in state `announced`, oldest first. With `now`, only those whose
   * backoff has passed (`not_before <= now`); without it, all of them.
   */
  openJobs: (limit: number, now?: number) => Promise<OpenJob[]>
  /**
   * Awards the job's current attempt to a node: `announced` -> `claimed`, one
   * conditional write. Throws ConflictError when the job is no longer
   * announced with this attempt number (someone else won, or it was cancelled).
   */
  award: (input: AwardInput) => Promise<AttemptRecord>
  /**
   * `claimed` -> `running` for the holder of the current token. A repeat, or
   * one arriving after the holder's own result ended the job, changes
   * nothing. Throws StaleAttemptError otherwise.
   */
  markStarted: (input: { jobId: string, attempt: number, token: string, node: string, startedAt: number, now: number }) => Promise<void>
  /**
   * Records the attempt's result and ends the job, for the holder of the
   * current token only. Reporting the same result again (a retry after a lost
   * ack) returns `duplicate` and changes nothing. Throws StaleAttemptError.
   */
  recordResult: (input: ResultInput) => Promise<'recorded' | 'duplicate'>
  /**
   * The attempts `node` holds now: each is its job's current attempt and the
   * job is `claimed` or `running`. Oldest award first.
   */
  heldAttempts: (node: string) => Promise<AttemptRecord[]>
  /**
   * Extends the leases of attempts `node` still holds: for each listed
   * attempt that is its job's current attempt (`jobs.attempt = attempt`), the
   * job `claimed` or `running`, the attempt awarded to `node` with fencing
   * token `token` (and itself `claimed` or `running`), `lease_expires_at`
   * becomes the greater of its stored value and `leaseExpiresAt`: a renewal
   * never shortens a lease. Resolves how many attempts matched (each counted
   * once, however often it is listed); the others are silently skipped. One
   * write for the whole list; writes no events (renewals are frequent).
   * Throws RangeError for more than {@link MAX_RENEW_BATCH} attempts, an
   * attempt number that is not an integer in 1..2^31-1, or a
   * `leaseExpiresAt` that is not a safe integer.
   */
  renewLeases: (input: RenewLeasesInput) => Promise<number>
  /**
   * Current attempts whose lease has run out: the job's current attempt, job
   * and attempt `claimed` or `running`, `lease_expires_at <= now`. Earliest
   * expiry first (ties by job id, then attempt number), at most `limit`
   * (clamped to 1..1000). Read only: the caller gives each one up with
   * {@link rescheduleAttempt}.
   */
  expiredAttempts: (query: ExpiredAttemptsQuery) => Promise<AttemptRecord[]>
  /**
   * Gives up the job's current attempt (lease expired, node lost, retryable
   * failure) in one conditional write on a job that is `claimed` or `running`
   * with `attempt` current (and, when `token` is non-null, that token). The
   * attempt becomes `attemptState` (finished at `now`). With attempts left
   * (`attempt < max_attempts`) the job goes back to `announced` with the next
   * attempt, not offered before `now + backoffMs`, and a `rescheduled` event;
   * otherwise it ends `failed` with an `attempts-exhausted` result and a
   * `finished` event. With `attemptState: 'released'` the same write also
   * raises `max_attempts` by 1, so the job is always re-announced (the event's
   * detail then carries `released: true`). Throws NotFoundError, or StaleAttemptError when the
   * attempt or token is not current or the job is not claimed/running.
   */
  rescheduleAttempt: (input: RescheduleInput) => Promise<RescheduleOutcome>
  /**
   * Cancels a job that is not yet finished. Throws NotFoundError, or
   * ConflictError when it already ended.
   */
  cancel: (input: { jobId: string, now: number, actor: string, reason: string }) => Promise<CancelOutcome>
  /** Inserts or refreshes a node's capacity and last-seen time. */
  upsertNode: (input: { peerId: string, capacity: NodeCapacity, now: number }) => Promise<void>
  listNodes: () => Promise<NodeRecord[]>
  /** Number of jobs in each state (states with none are 0). */
  countJobs: () => Promise<Record<JobState, number>>
  appendEvent: (event: Omit<JobEvent, 'seq'>) => Promise<void>
  /** Oldest first. */
  listEvents: (jobId: string) => Promise<JobEvent[]>
  /**
   * Appends live output lines for the holder of the job's current attempt
   * (job `claimed` or `running`, `attempt` current, `token` and `node`
   * matching), numbering them after the job's last line (`line` 1, 2, …,
   * per job, across attempts), in one conditional write. Lines beyond
   * `maxLines` for the job are not stored: resolves how many were stored
   * and how many dropped for the cap. Lines from the holder whose own result
   * already ended the job (`succeeded`/`failed`, same attempt, token and
   * node) are late, not stale: none stored, all counted dropped. Otherwise
   * throws StaleAttemptError (and records a `stale-report` event with
   * `report: 'log'`) when the attempt is not current; RangeError for more
   * than {@link MAX_LOG_BATCH} lines.
   */
  appendLogs: (input: AppendLogsInput) => Promise<{ stored: number, dropped: number }>
  /**
   * Records a join token: `id` (public, in the token), the sha256 of its
   * secret (hex; the secret itself is never stored), and its expiry (null:
   * never). Throws ConflictError if the id exists.
   */
  createJoinToken: (input: { id: string, secretSha256: string, createdAt: number, expiresAt: number | null, note: string }) => Promise<void>
  /**
   * Whether a node presenting token `id` with a secret hashing to
   * `secretSha256` may join at `now`: `ok`, or why not (`unknown`, `wrong-secret`,
   * `expired`, `revoked`). The hash is compared in constant time. Read only.
   */
  checkJoinToken: (input: { id: string, secretSha256: string, now: number }) => Promise<'ok' | 'unknown' | 'wrong-secret' | 'expired' | 'revoked'>
  /** Revokes a token (idempotent); false if there is no such token. */
  revokeJoinToken: (input: { id: string, now: number }) => Promise<boolean>
  /**
   * Records a submitter API key: `id` (public), a display name (names may
   * repeat), the sha256 of its secret (the secret itself is never stored),
   * whether it is an admin key, and its creation time. Throws ConflictError if
   * the id exists; RangeError for a field holding U+0000 or a time that is not a safe integer.
   */
  createApiKey: (input: { id: string, name: string, secretSha256: string, admin: boolean, createdAt: number }) => Promise<void>
  /** The key with this id, revoked or not (check `revokedAt`); null if there is none. */
  findApiKey: (id: string) => Promise<ApiKeyRecord | null>
  /** Every key, revoked ones included, oldest first (ties by id, byte by byte), with their secret hashes. */
  listApiKeys: () => Promise<ApiKeyRecord[]>
  /** Revokes a key (idempotent: a repeat keeps the first `revokedAt` and answers true); false if there is no such key. */
  revokeApiKey: (input: { id: string, now: number }) => Promise<boolean>
  /**
   * Stores `value` under `name` unless a value is stored there already, and
   * resolves the stored value either way: the first value ever written wins, so
   * coordinators racing to initialise a mesh-wide setting all end up with the
   * same one. Settings are never changed or deleted.
   */
  ensureSetting: (input: { name: string, value: string }) => Promise<string>
  /**
   * Binds `peerId` to the join token `tokenId` at its first contact (`now`)
   * and resolves the token the peer is bound to afterwards: `tokenId`, or the
   * token of an earlier binding, which is never replaced.
   */
  bindPeer: (input: { peerId: string, tokenId: string, now: number }) => Promise<string>
  /**
   * Peers bound to a join token that has been revoked, with that token's
   * revocation time; earliest revocation first, ties by peer id.
   */
  revokedPeers: () => Promise<RevokedPeer[]>
  /** The peers bound to join token `tokenId`, earliest binding first (ties by peer id). */
  listPeerBindings: (tokenId: string) => Promise<Array<{ peerId: string, boundAt: number }>>
  /** Records what the provisioner did to a cloud server, and why. */
  appendCloudEvent: (event: Omit<CloudEvent, 'seq'>) => Promise<void>
  /** Cloud events, newest first, at most `limit` (clamped to 1..1000); only those of `serverId` when given. */
  listCloudEvents: (query: { limit: number, serverId?: number }) => Promise<CloudEvent[]>
  /** Tokens newest first, without secrets. */
  listJoinTokens: () => Promise<Array<{ id: string, createdAt: number, expiresAt: number | null, revokedAt: number | null, note: string }>>
  /** Lines with `line > after`, oldest first, at most `limit` (clamped to 1..5000). */
  listLogs: (query: { jobId: string, after: number, limit: number }) => Promise<LogLine[]>
  /**
   * Acquires or renews the named lease in one conditional write: taken when
   * nobody holds it, when `holder` already holds it (renewal, the expiry moves
   * to `now + ttlMs`), or when the current holder's lease expired
   * (`expires_at <= now`). Resolves true when `holder` holds it afterwards.
   * Used so exactly one coordinator runs the background loops.
   */
  tryAcquireLease: (input: LeaseInput) => Promise<boolean>
  /** Gives the lease up, only if `holder` holds it (a no-op otherwise). */
  releaseLease: (input: { name: string, holder: string }) => Promise<void>
  close: () => Promise<void>
}
