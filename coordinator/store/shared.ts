/**
 * Pieces every Store backend shares, so that they answer in the same words:
 * listing limits, and the messages of the typed errors a lost
 * compare-and-set turns into.
 */
import { timingSafeEqual } from 'node:crypto'
import { ConflictError } from '../../common/errors.js'
import { MAX_LOG_BATCH, MAX_RENEW_BATCH, type ApiKeyRecord, type AppendLogsInput, type CreateJobInput, type RenewLeasesInput } from './types.js'

export const DEFAULT_LIST_LIMIT = 50
export const MAX_LIST_LIMIT = 1000

export function clampLimit (limit: number | undefined, fallback: number, max = MAX_LIST_LIMIT): number {
  if (limit === undefined || !Number.isFinite(limit)) return fallback
  return Math.min(max, Math.max(1, Math.trunc(limit)))
}

/**
 * Why a node's report (or a reschedule) lost the compare-and-set, in words
 * the node's log can show. A null token or node is not checked.
 */
export function staleReason (
  job: { state: string, attempt: number } | undefined,
  current: { token: string, node: string } | undefined,
  attempt: number, token: string | null, node: string | null
): string {
  if (job === undefined) return 'job not found'
  if (job.attempt !== attempt) return `current attempt is ${job.attempt}`
  if (current === undefined) return `attempt ${attempt} was never awarded`
  if (token !== null && current.token !== token) return 'fencing token does not match'
  if (node !== null && current.node !== node) return `attempt ${attempt} belongs to another node`
  return `job is ${job.state}`
}

/** `jobs.max_attempts` when the spec does not say (the column's default and the spec schema's). */
export const DEFAULT_MAX_ATTEMPTS = 3

/** The `max_attempts` a new job gets from its spec. */
export function maxAttemptsOf (spec: { maxAttempts?: number }): number {
  return spec.maxAttempts ?? DEFAULT_MAX_ATTEMPTS
}

/** `JobError.message` of the result of a job that ran out of attempts. */
export function exhaustedMessage (reason: string, maxAttempts: number): string {
  return `${reason}; no attempts left (${maxAttempts} of ${maxAttempts} used)`
}

/** An award lost: the job is not announced for this attempt any more. */
export function awardConflict (jobId: string, attempt: number, job: { state: string, attempt: number }): ConflictError {
  const at = job.attempt === attempt ? '' : ` (current attempt ${job.attempt})`
  return new ConflictError(`job ${jobId} is ${job.state}${at}, not announced for attempt ${attempt}`, jobId, job.state)
}

/** A cancel lost: the job already ended. */
export function cancelConflict (jobId: string, state: string): ConflictError {
  return new ConflictError(`job ${jobId} already ended ${state}`, jobId, state)
}

export function duplicateJob (jobId: string): ConflictError {
  return new ConflictError(`job ${jobId} already exists`, jobId, null)
}

/** Largest attempt number a renewal may name (the columns are 32-bit integers on PostgreSQL). */
const MAX_ATTEMPT_NUMBER = 2 ** 31 - 1

/**
 * Checks a renewal before it reaches the database, so both backends refuse
 * the same inputs with the same RangeError (rather than PostgreSQL failing
 * a cast where SQLite would simply match nothing).
 */
export function checkRenewal (input: RenewLeasesInput): void {
  if (input.attempts.length > MAX_RENEW_BATCH) {
    throw new RangeError(`at most ${MAX_RENEW_BATCH} attempts per renewal, got ${input.attempts.length}`)
  }
  if (!Number.isSafeInteger(input.leaseExpiresAt)) {
    throw new RangeError(`leaseExpiresAt must be a safe integer, got ${input.leaseExpiresAt}`)
  }
  for (const a of input.attempts) {
    if (!Number.isInteger(a.attempt) || a.attempt < 1 || a.attempt > MAX_ATTEMPT_NUMBER) {
      throw new RangeError(`attempt must be an integer from 1 to ${MAX_ATTEMPT_NUMBER}, got ${a.attempt}`)
    }
  }
}

/** Most lines one listLogs call returns. */
export const MAX_LOG_LIST_LIMIT = 5000

/**
 * Checks an appendLogs batch before it reaches the database, so both
 * backends refuse the same inputs with the same RangeError (rather than a
 * SqliteError from a STRICT column or CHECK on one and a PostgresError from a
 * cast on the other).
 */
export function checkLogBatch (input: AppendLogsInput): void {
  if (input.lines.length > MAX_LOG_BATCH) {
    throw new RangeError(`at most ${MAX_LOG_BATCH} log lines per call, got ${input.lines.length}`)
  }
  if (!Number.isSafeInteger(input.maxLines) || input.maxLines < 0) {
    throw new RangeError(`maxLines must be a non-negative safe integer, got ${input.maxLines}`)
  }
  for (const l of input.lines) {
    if (l.stream !== 'stdout' && l.stream !== 'stderr') throw new RangeError(`a log line's stream must be stdout or stderr, got ${String(l.stream)}`)
    if (!Number.isSafeInteger(l.at)) throw new RangeError(`a log line's at must be a safe integer, got ${l.at}`)
  }
}

/** How many of `count` new lines a job that already has `stored` lines keeps under the cap `maxLines` (never negative). */
export function logLinesKept (stored: number, count: number, maxLines: number): number {
  return Math.max(0, Math.min(count, maxLines - stored))
}

/**
 * A listLogs query made safe for both backends: `after` a whole number in
 * 0..2^53-1 (anything below 1 lists from the first line; a fraction rounds
 * down, which selects the same lines; NaN counts as 0), `limit` clamped to
 * 1..{@link MAX_LOG_LIST_LIMIT}.
 */
export function logQuery (query: { after: number, limit: number }): { after: number, limit: number } {
  const after = Number.isNaN(query.after) ? 0 : Math.min(Number.MAX_SAFE_INTEGER, Math.max(0, Math.floor(query.after)))
  return { after, limit: clampLimit(query.limit, MAX_LOG_LIST_LIMIT, MAX_LOG_LIST_LIMIT) }
}

/** Most characters (code points) a join token's note may have. */
export const MAX_JOIN_TOKEN_NOTE = 256

const JOIN_TOKEN_ID = /^[A-Za-z0-9_-]{8,64}$/
const SHA256_HEX = /^[0-9a-f]{64}$/

/** What {@link joinTokenVerdict} answers, as Store.checkJoinToken does. */
export type JoinTokenVerdict = 'ok' | 'unknown' | 'wrong-secret' | 'expired' | 'revoked'

/** A join_tokens row as both backends read it (BIGINT already a JS number on PostgreSQL). */
export interface JoinTokenRow {
  id: string, secret_sha256: string, created_at: number, expires_at: number | null, revoked_at: number | null, note: string
}

function checkJoinTokenId (id: unknown): void {
  if (typeof id !== 'string' || !JOIN_TOKEN_ID.test(id)) {
    throw new RangeError('a join token id must be 8 to 64 characters of A-Z, a-z, 0-9, _ and -')
  }
}

function checkSha256 (secretSha256: unknown): void {
  if (typeof secretSha256 !== 'string' || !SHA256_HEX.test(secretSha256)) {
    throw new RangeError('secretSha256 must be 64 lower-case hex digits')
  }
}

function checkTime (name: string, value: unknown): void {
  if (!Number.isSafeInteger(value)) throw new RangeError(`${name} must be a safe integer, got ${String(value)}`)
}

function checkNote (note: unknown): void {
  if (typeof note !== 'string') throw new RangeError('note must be a string')
  if (note.includes('\u0000')) throw new RangeError('note must not contain U+0000')
  // Counted in code points, so characters outside the BMP count once.
  let length = 0
  for (const _ of note) {
    if (++length > MAX_JOIN_TOKEN_NOTE) throw new RangeError(`note must be at most ${MAX_JOIN_TOKEN_NOTE} characters`)
  }
}

/*
 * The join-token methods check their arguments before they reach the
 * database, so both backends refuse the same inputs with the same RangeError
 * (and no id or note holding U+0000 ever reaches PostgreSQL's text).
 */

export function checkNewJoinToken (input: { id: string, secretSha256: string, createdAt: number, expiresAt: number | null, note: string }): void {
  checkJoinTokenId(input.id)
  checkSha256(input.secretSha256)
  checkTime('createdAt', input.createdAt)
  if (input.expiresAt !== null) checkTime('expiresAt', input.expiresAt)
  checkNote(input.note)
}

export function checkJoinTokenQuery (input: { id: string, secretSha256: string, now: number }): void {
  checkJoinTokenId(input.id)
  checkSha256(input.secretSha256)
  checkTime('now', input.now)
}

export function checkJoinTokenRevocation (input: { id: string, now: number }): void {
  checkJoinTokenId(input.id)
  checkTime('now', input.now)
}

export function duplicateJoinToken (id: string): ConflictError {
  return new ConflictError(`join token ${id} already exists`)
}

/**
 * Store.checkJoinToken's answer for the row read by id (undefined: none).
 * The secret is checked first, in constant time, so whoever knows only an id
 * learns nothing about the token's expiry or revocation.
 */
export function joinTokenVerdict (row: JoinTokenRow | undefined, secretSha256: string, now: number): JoinTokenVerdict {
  if (row === undefined) return 'unknown'
  const stored = Buffer.from(row.secret_sha256, 'hex')
  const given = Buffer.from(secretSha256, 'hex')
  // Both are 32 bytes (the input is checked, the column has a CHECK); timingSafeEqual throws on a length mismatch.
  if (stored.length !== given.length || !timingSafeEqual(stored, given)) return 'wrong-secret'
  if (row.revoked_at !== null) return 'revoked'
  if (row.expires_at !== null && now >= row.expires_at) return 'expired'
  return 'ok'
}

/** A join_tokens row as listJoinTokens returns it: without the secret's hash. */
export function toJoinTokenInfo (row: Omit<JoinTokenRow, 'secret_sha256'>): {
  id: string, createdAt: number, expiresAt: number | null, revokedAt: number | null, note: string
} {
  return { id: row.id, createdAt: row.created_at, expiresAt: row.expires_at, revokedAt: row.revoked_at, note: row.note }
}

/*
 * The methods of API keys, job owners and secrets, settings and peer bindings
 * check their text arguments before they reach the database, so both backends
 * refuse the same inputs with the same RangeError (PostgreSQL's text cannot
 * hold U+0000, which SQLite would keep).
 */

/** Whether a lookup key holds U+0000, which no stored key does (PostgreSQL's text cannot hold it). */
export function hasNul (value: string): boolean {
  return value.includes('\u0000')
}

function checkText (name: string, value: unknown): void {
  if (typeof value !== 'string') throw new RangeError(`${name} must be a string`)
  if (hasNul(value)) throw new RangeError(`${name} must not contain U+0000`)
}

/**
 * Checks createJob's owner, sealed secret and cap, and resolves the cap the
 * insert applies: `maxActiveForOwner` when there is an owner, else null (no cap).
 */
export function activeJobCap (input: CreateJobInput): number | null {
  const owner = input.owner ?? null
  if (owner !== null) checkText('owner', owner)
  if (input.secretEnvSealed != null) checkText('secretEnvSealed', input.secretEnvSealed)
  const limit = input.maxActiveForOwner
  if (limit === undefined) return null
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new RangeError(`maxActiveForOwner must be a non-negative safe integer, got ${String(limit)}`)
  }
  return owner === null ? null : limit
}

export function checkNewApiKey (input: { id: string, name: string, secretSha256: string, admin: boolean, createdAt: number }): void {
  checkText('id', input.id)
  checkText('name', input.name)
  checkText('secretSha256', input.secretSha256)
  if (typeof input.admin !== 'boolean') throw new RangeError('admin must be a boolean')
  checkTime('createdAt', input.createdAt)
}

export function checkApiKeyRevocation (input: { id: string, now: number }): void {
  checkText('id', input.id)
  checkTime('now', input.now)
}

export function duplicateApiKey (id: string): ConflictError {
  return new ConflictError(`api key ${id} already exists`)
}

/** An api_keys row as both backends read it: admin is 0/1 on SQLite, a boolean on PostgreSQL. */
export interface ApiKeyRow {
  id: string, name: string, secret_sha256: string, admin: number | boolean, created_at: number, revoked_at: number | null
}

export function toApiKey (row: ApiKeyRow): ApiKeyRecord {
  return {
    id: row.id, name: row.name, secretSha256: row.secret_sha256, admin: row.admin === true || row.admin === 1,
    createdAt: row.created_at, revokedAt: row.revoked_at
  }
}

export function checkSetting (input: { name: string, value: string }): void {
  checkText('name', input.name)
  checkText('value', input.value)
}

export function checkPeerBinding (input: { peerId: string, tokenId: string, now: number }): void {
  checkText('peerId', input.peerId)
  checkText('tokenId', input.tokenId)
  checkTime('now', input.now)
}
