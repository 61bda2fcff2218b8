/**
 * Named error classes shared by the store, the services and the HTTP layer.
 * The HTTP layer maps them to status codes in one place (coordinator/http.ts).
 */

/** A request or spec failed validation. */
export class ValidationError extends Error {
  override readonly name = 'ValidationError'
  constructor (message: string, readonly field: string | null = null) { super(message) }
}

/** The named thing does not exist. */
export class NotFoundError extends Error {
  override readonly name = 'NotFoundError'
  constructor (readonly kind: string, readonly id: string) { super(`${kind} ${id} not found`) }
}

/**
 * A compare-and-set lost: the row was not in the state the caller expected.
 * Carries what was expected so callers and logs can say why.
 */
export class ConflictError extends Error {
  override readonly name = 'ConflictError'
  constructor (message: string, readonly jobId: string | null = null, readonly currentState: string | null = null) { super(message) }
}

/** A report carried a fencing token that is no longer the job's current one. */
export class StaleAttemptError extends Error {
  override readonly name = 'StaleAttemptError'
  constructor (readonly jobId: string, readonly attempt: number, readonly reason: string) {
    super(`attempt ${attempt} of job ${jobId} is stale: ${reason}`)
  }
}

/** An operation was aborted through its AbortSignal. */
export class AbortedError extends Error {
  override readonly name = 'AbortedError'
  constructor (message = 'operation aborted') { super(message) }
}

/** Renders any thrown value for a log line. */
export function errorMessage (err: unknown): string {
  if (err instanceof Error) return err.message
  return String(err)
}

/** A file or a job's files are larger than the coordinator accepts. */
export class TooLargeError extends Error {
  override readonly name = 'TooLargeError'
  constructor (readonly what: string, readonly size: number, readonly limit: number) {
    super(`${what} is ${size} bytes; the limit is ${limit} bytes`)
  }
}

/** A job names an input object that was never uploaded. */
export class InputMissingError extends Error {
  override readonly name = 'InputMissingError'
  constructor (readonly object: string, readonly path: string) {
    super(`input ${JSON.stringify(path)} names object ${object}, which is not stored: upload it first (POST /v1/uploads, then PUT to the URL)`)
  }
}
