/**
 * The lease reaper (leader only): finds attempts whose lease ran out and
 * decides whether their node is gone.
 *
 * An expired lease alone is not proof: a busy node or a slow network can
 * delay renewals. So, Lifeguard-style, the reaper first asks the node
 * directly (a `probe` on its session makes it renew at once) and accuses it
 * only if the lease is still expired after `suspectMs`. It also holds back
 * while its own event loop is lagging, since then it is more likely the one
 * that is late. Attempts of a node declared gone end `lost` and their jobs
 * get the next attempt (Recovery), recorded in the event log.
 */
import { monitorEventLoopDelay, type ELDHistogram } from 'node:perf_hooks'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/log.js'
import { StaleAttemptError, errorMessage } from '../common/errors.js'
import type { Store, JobSummary } from './store/types.js'

export interface ReaperOptions {
  store: Store
  clock: Clock
  log: Logger
  /** Whether this coordinator runs background loops now. */
  isLeader: () => boolean
  /** Asks a node to renew at once; false when we have no session to it. */
  probe: (node: string) => Promise<boolean>
  /** A job went back to `announced`. */
  requeue: (job: JobSummary, notBefore: number) => void
  /** How often to look for expired leases, in ms. @default 1000 */
  scanMs?: number
  /** How long a probed node has to renew before it is declared lost, in ms. @default 3000 */
  suspectMs?: number
  /** Hold back accusations while our own event loop p99 delay exceeds this, in ms. @default 1000 */
  maxOwnLagMs?: number
  /** Backoff before the next attempt of a job whose node was lost, in ms. @default 0 */
  lostBackoffMs?: number
  /**
   * Nodes holding attempts that have gone silent (no heartbeat or session
   * frame for a while): their attempts are checked like expired leases,
   * without waiting for the lease. @default () => []
   */
  silentNodes?: () => Array<{ peerId: string, silentForMs: number }>
}

export class Reaper {
  private timer: NodeJS.Timeout | null = null
  private scanning = false
  private readonly suspects = new Map<string, number>()
  private lag: ELDHistogram | null = null
  readonly stats = { probes: 0, lost: 0, cleared: 0, heldBackForLag: 0, failures: 0 }

  constructor (private readonly options: ReaperOptions) {}

  start (): void {
    if (this.timer != null) return
    this.lag = monitorEventLoopDelay({ resolution: 20 })
    this.lag.enable()
    this.timer = setInterval(() => { void this.scan() }, this.options.scanMs ?? 1_000)
    this.timer.unref()
  }

  stop (): void {
    if (this.timer != null) clearInterval(this.timer)
    this.timer = null
    this.lag?.disable()
    this.lag = null
  }

  private async scan (): Promise<void> {
    if (this.scanning || !this.options.isLeader()) return
    this.scanning = true
    const ownLagMs = (this.lag?.percentile(99) ?? 0) / 1e6
    this.lag?.reset()
    try {
      const now = this.options.clock.now()
      const expired = (await this.options.store.expiredAttempts({ now, limit: 256 }))
        .map(a => ({ a, why: `lease of attempt ${a.number} expired` }))
      // A node that fell silent need not wait out its leases: check it now.
      for (const { peerId, silentForMs } of this.options.silentNodes?.() ?? []) {
        for (const a of await this.options.store.heldAttempts(peerId)) {
          expired.push({ a, why: `node silent for ${Math.round(silentForMs / 1000)} s (no heartbeat or renewal)` })
        }
      }
      const seen = new Set<string>()
      for (const { a, why } of expired) {
        const key = `${a.jobId}/${a.number}/${a.token}`
        if (seen.has(key)) continue
        seen.add(key)
        const since = this.suspects.get(key)
        if (since == null) {
          this.suspects.set(key, now)
          this.stats.probes++
          await this.options.probe(a.node).catch((err: unknown) => { this.options.log.debug('probe failed', { node: a.node, error: errorMessage(err) }) })
          continue
        }
        if (now - since < (this.options.suspectMs ?? 3_000)) continue
        if (ownLagMs > (this.options.maxOwnLagMs ?? 1_000)) {
          this.stats.heldBackForLag++
          continue
        }
        this.suspects.delete(key)
        await this.declareLost(a.jobId, a.number, a.token, a.node, now, why)
      }
      // Suspects whose lease was renewed meanwhile are cleared.
      for (const key of this.suspects.keys()) {
        if (!seen.has(key)) { this.suspects.delete(key); this.stats.cleared++ }
      }
    } catch (err) {
      this.stats.failures++
      this.options.log.warn('lease scan failed', { error: errorMessage(err) })
    } finally {
      this.scanning = false
    }
  }

  private async declareLost (jobId: string, attempt: number, token: string, node: string, now: number, why: string): Promise<void> {
    const backoffMs = this.options.lostBackoffMs ?? 0
    try {
      const outcome = await this.options.store.rescheduleAttempt({
        jobId, attempt, token, now, actor: 'coordinator', attemptState: 'lost', backoffMs,
        reason: `${why} and node ${node} did not answer a direct check`
      })
      this.stats.lost++
      this.options.log.warn('attempt lost', { jobId, attempt, node, rescheduled: outcome.rescheduled })
      if (outcome.rescheduled) this.options.requeue(outcome.job, now + backoffMs)
    } catch (err) {
      // The node's result or another coordinator got there first.
      if (!(err instanceof StaleAttemptError)) throw err
    }
  }
}
