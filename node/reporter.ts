/**
 * Delivers `started` and `result` reports to the coordinator and retries
 * them until acknowledged, across session drops and coordinator restarts.
 * A `stale` reply is final too: the attempt was replaced or cancelled and
 * the report must not be applied.
 *
 * Per attempt, `result` is sent only after `started` has settled, so the
 * coordinator sees them in order even though it handles requests
 * concurrently.
 */
import type { ResultReport } from '../protocol/schemas.js'
import type { Logger } from '../common/log.js'
import { errorMessage } from '../common/errors.js'
import type { SessionClient, NodeRequest } from './session-client.js'

export type StartedReport = { type: 'started', jobId: string, attempt: number, token: string, startedAt: number }
export type ResultRequest = Omit<ResultReport, 'rid'>

interface Entry {
  started: StartedReport | null
  result: ResultRequest | null
  inFlight: boolean
  attempts: number
}

export interface ReporterOptions {
  log: Logger
  session: () => SessionClient | null
  /** Delay before retrying a failed delivery, in ms. @default 500 */
  retryMs?: number
}

export class Reporter {
  private readonly entries = new Map<string, Entry>()
  private retryTimer: NodeJS.Timeout | null = null
  private readonly idleWaiters: Array<() => void> = []
  readonly stats = { delivered: 0, stale: 0, retries: 0 }

  constructor (private readonly options: ReporterOptions) {}

  get pending (): number {
    return this.entries.size
  }

  started (report: StartedReport): void {
    this.entry(report.jobId, report.attempt).started = report
    this.kick()
  }

  result (report: ResultRequest): void {
    this.entry(report.jobId, report.attempt).result = report
    this.kick()
  }

  private entry (jobId: string, attempt: number): Entry {
    const key = `${jobId}/${attempt}`
    let e = this.entries.get(key)
    if (e == null) {
      e = { started: null, result: null, inFlight: false, attempts: 0 }
      this.entries.set(key, e)
    }
    return e
  }

  /** Tries to deliver everything pending now. */
  kick (): void {
    const session = this.options.session()
    if (session == null || !session.isOpen) { this.scheduleRetry(); return }
    for (const [key, e] of this.entries) {
      if (e.inFlight) continue
      const frame: NodeRequest | null = e.started ?? e.result
      if (frame == null) continue
      e.inFlight = true
      void this.deliver(session, key, e, frame)
    }
  }

  private async deliver (session: SessionClient, key: string, e: Entry, frame: NodeRequest): Promise<void> {
    let settled = false
    try {
      const reply = await session.request(frame)
      if (reply.type === 'ack' || reply.type === 'stale') {
        settled = true
        if (reply.type === 'stale') {
          this.stats.stale++
          this.options.log.warn('report refused as stale', { key, type: frame.type, reason: reply.reason })
        } else {
          this.stats.delivered++
        }
      } else {
        this.options.log.warn('unexpected reply to report', { key, type: frame.type, reply: reply.type })
      }
    } catch (err) {
      this.options.log.debug('report delivery failed; will retry', { key, type: frame.type, error: errorMessage(err) })
    }
    e.inFlight = false
    if (settled) {
      if (frame.type === 'started') e.started = null
      else { e.result = null }
      // A stale `started` means the attempt is over for us; its result would be stale too, but send
      // it anyway so the coordinator's event log records what the node saw.
    } else {
      e.attempts++
      this.stats.retries++
      this.scheduleRetry()
      return
    }
    if (e.started == null && e.result == null) {
      this.entries.delete(key)
      if (this.entries.size === 0) this.notifyIdle()
      return
    }
    this.kick()
  }

  private scheduleRetry (): void {
    if (this.retryTimer != null || this.entries.size === 0) return
    this.retryTimer = setTimeout(() => { this.retryTimer = null; this.kick() }, this.options.retryMs ?? 500)
    this.retryTimer.unref()
  }

  private notifyIdle (): void {
    for (const w of this.idleWaiters.splice(0)) w()
  }

  /** Waits until nothing is pending or the timeout passes; true when all was delivered. */
  async flush (timeoutMs: number): Promise<boolean> {
    if (this.entries.size === 0) return true
    return await new Promise<boolean>(resolve => {
      const timer = setTimeout(() => { resolve(this.entries.size === 0) }, timeoutMs)
      this.idleWaiters.push(() => { clearTimeout(timer); resolve(true) })
      this.kick()
    })
  }
}
