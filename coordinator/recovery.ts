/**
 * Puts attempts that cannot finish back on the market:
 * - an award the node never received (the coordinator died, or the reply
 *   was lost): the node's own list of held attempts, sent with every hello
 *   and renewal, lacks it, so after a grace period it is declared lost;
 * - an attempt that failed for a reason another node may not share
 *   (`retryable` errors such as node shutdown or a Docker daemon fault).
 * Each becomes one conditional write that re-announces the job with the
 * next attempt number and a fresh fencing token (or fails it when its
 * attempts are used up), recorded in the job's event log with the reason.
 */
import type { JobError } from '../protocol/schemas.js'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/log.js'
import { StaleAttemptError, errorMessage } from '../common/errors.js'
import type { Store, JobSummary, AttemptRecord } from './store/types.js'

export interface RecoveryOptions {
  store: Store
  clock: Clock
  log: Logger
  /** A job went back to `announced`: announce it (now or when its backoff ends). */
  requeue: (job: JobSummary, notBefore: number) => void
  /** An award younger than this may still be on its way to the node, in ms. @default 5000 */
  orphanGraceMs?: number
  /** Backoff before the second attempt, doubling per attempt, in ms. @default 1000 */
  retryBackoffMs?: number
  /** Longest backoff, in ms. @default 30000 */
  maxRetryBackoffMs?: number
}

export class Recovery {
  readonly stats = { orphansRescheduled: 0, retriesRescheduled: 0, released: 0, exhausted: 0, failures: 0 }
  private readonly reconciling = new Set<string>()

  constructor (private readonly options: RecoveryOptions) {}

  private backoff (attempt: number): number {
    const base = this.options.retryBackoffMs ?? 1_000
    return Math.min(base * 2 ** Math.max(0, attempt - 1), this.options.maxRetryBackoffMs ?? 30_000)
  }

  /**
   * Compares what the store says a node holds with what the node says it
   * holds; attempts the node does not know about are rescheduled. `stored`
   * is the store's answer when the caller has just read it.
   */
  async reconcile (node: string, held: Array<{ jobId: string, attempt: number, token: string }>, stored?: AttemptRecord[]): Promise<void> {
    if (this.reconciling.has(node)) return
    this.reconciling.add(node)
    try {
      const now = this.options.clock.now()
      const known = new Set(held.map(h => `${h.jobId}/${h.attempt}/${h.token}`))
      const attempts = stored ?? await this.options.store.heldAttempts(node)
      for (const a of attempts) {
        if (known.has(`${a.jobId}/${a.number}/${a.token}`)) continue
        if (now - a.awardedAt < (this.options.orphanGraceMs ?? 5_000)) continue
        await this.reschedule(a.jobId, a.number, a.token, 'lost', `node ${node} does not hold attempt ${a.number}: its award never reached the node`, 0, 'orphan')
      }
    } catch (err) {
      this.stats.failures++
      this.options.log.warn('reconciling a node failed', { node, error: errorMessage(err) })
    } finally {
      this.reconciling.delete(node)
    }
  }

  /**
   * A draining node handed the attempt back: announce the job again at once
   * without using up one of its attempts. Returns false when the report was stale.
   */
  async release (node: string, jobId: string, attempt: number, token: string): Promise<boolean> {
    return await this.reschedule(jobId, attempt, token, 'released', `node ${node} shut down before attempt ${attempt} finished and handed it back`, 0, 'release')
  }

  /** A retryable failure: try again elsewhere after a backoff. Returns false when the report was stale. */
  async retry (node: string, jobId: string, attempt: number, token: string, error: JobError): Promise<boolean> {
    return await this.reschedule(jobId, attempt, token, 'failed', `attempt ${attempt} on ${node} failed: ${error.message} (${error.code}, retryable)`, this.backoff(attempt), 'retry')
  }

  /**
   * A node was cut off (its join token revoked): every attempt it holds is
   * given up and announced again at once. Returns how many were rescheduled.
   */
  async abandonNode (node: string, reason: string): Promise<number> {
    let n = 0
    for (const a of await this.options.store.heldAttempts(node)) {
      if (await this.reschedule(a.jobId, a.number, a.token, 'lost', `node ${node} was cut off: ${reason}`, 0, 'orphan')) n++
    }
    return n
  }

  private async reschedule (jobId: string, attempt: number, token: string, attemptState: 'lost' | 'failed' | 'released', reason: string, backoffMs: number, kind: 'orphan' | 'retry' | 'release'): Promise<boolean> {
    const now = this.options.clock.now()
    try {
      const outcome = await this.options.store.rescheduleAttempt({ jobId, attempt, token, now, actor: 'coordinator', reason, attemptState, backoffMs })
      if (outcome.rescheduled) {
        if (kind === 'orphan') this.stats.orphansRescheduled++
        else if (kind === 'release') this.stats.released++
        else this.stats.retriesRescheduled++
        this.options.log.info('rescheduled', { jobId, attempt, nextAttempt: outcome.job.attempt, reason })
        this.options.requeue(outcome.job, now + backoffMs)
      } else {
        this.stats.exhausted++
        this.options.log.info('no attempts left; job failed', { jobId, attempt, reason })
      }
      return true
    } catch (err) {
      // Someone else (another coordinator, the node's result) settled it first.
      if (err instanceof StaleAttemptError) return false
      throw err
    }
  }
}
