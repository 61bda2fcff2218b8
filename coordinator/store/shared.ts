/**
 * Pieces every Store backend shares, so that they answer in the same words:
 * listing limits, and the messages of the typed errors a lost
 * compare-and-set turns into.
 */
import { ConflictError } from '../../common/errors.js'
import { MAX_LOG_BATCH, MAX_RENEW_BATCH, type AppendLogsInput, type RenewLeasesInput } from './types.js'

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
