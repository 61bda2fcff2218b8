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
import type { NextAward, ResultReport } from '../protocol/schemas.js'
import type { Logger } from '../common/log.js'
import { errorMessage } from '../common/errors.js'
import type { SessionClient, NodeRequest } from './session-client.js'
import type { Outbox } from './outbox.js'

export type StartedReport = { type: 'started', jobId: string, attempt: number, token: string, startedAt: number }
export type ResultRequest = Omit<ResultReport, 'rid' | 'wantNext'>

interface Entry {
  started: StartedReport | null
  result: ResultRequest | null
  inFlight: boolean
  /** The coordinator that awarded the attempt: reports go there while it answers. */
  coordinator: string | undefined
  startedDueAt: number
  attempts: number
  /** Resolved once the result has been acknowledged (or refused as stale). */
  settled: Array<() => void>
}

export interface ReporterOptions {
  log: Logger
  /** An open session, preferably to the given coordinator (the one that awarded the attempt). */
  session: (prefer?: string) => SessionClient | null
  /** Where results are kept until settled; without one they live in memory only. */
  outbox?: Outbox
  /** Delay before retrying a failed delivery, in ms. @default 500 */
  retryMs?: number
  /**
   * Hold a `started` report this long; a job that finishes sooner is
   * reported by its result alone (which carries startedAt), saving a frame
   * each way and a store write for every short job. Under load a job waits
   * for a core well past 20 ms, so at 20 ms half of all trivial `process`
   * jobs still sent one; at 200 ms, throughput rose 13% (docs/performance.md,
   * change 18). A job shows as running at most this much later.
   * @default 200
   */
  startedDelayMs?: number
  /**
   * Asking for the next attempt with a result (session 1.1): `want` says
   * whether to ask now (the node still takes work), `take` runs what the
   * coordinator awarded with its ack. It is called before the result's
   * waiters resolve, so the freed slot is never also bid for.
   * @default none (never asks)
   */
  next?: {
    want: () => boolean
    take: (award: NextAward, coordinator: string) => void
  }
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

  started (report: StartedReport, coordinator?: string): void {
    const e = this.entry(report.jobId, report.attempt)
    e.coordinator ??= coordinator
    e.started = report
    const delayMs = this.options.startedDelayMs ?? 200
    if (delayMs <= 0) { this.kick(); return }
    e.startedDueAt = Date.now() + delayMs
    // When this timer fires the report is due, whatever Date.now() says: timers run on the
    // event loop's cached clock and can fire a millisecond "early", and kick() would then skip
    // the report with nothing left to send it before the result.
    setTimeout(() => { e.startedDueAt = 0; this.kick() }, delayMs).unref()
  }

  /**
   * Queues a result; the promise resolves once the coordinator has settled
   * it. The runner holds the attempt's slot until then, so the node and the
   * coordinator always agree on how many attempts the node holds.
   */
  async result (report: ResultRequest, coordinator?: string): Promise<void> {
    // On disk before anyone hears of it: a crash from here on cannot lose the result.
    await this.options.outbox?.put(report, coordinator)
    const e = this.entry(report.jobId, report.attempt)
    e.coordinator ??= coordinator
    e.result = report
    // Not sent yet: the result says everything `started` would have.
    if (!e.inFlight) e.started = null
    const settled = new Promise<void>(resolve => { e.settled.push(resolve) })
    this.kick()
    await settled
  }

  private entry (jobId: string, attempt: number): Entry {
    const key = `${jobId}/${attempt}`
    let e = this.entries.get(key)
    if (e == null) {
      e = { started: null, result: null, inFlight: false, coordinator: undefined, startedDueAt: 0, attempts: 0, settled: [] }
      this.entries.set(key, e)
    }
    return e
  }

  /** Tries to deliver everything pending now. */
  kick (): void {
    const now = Date.now()
    let undeliverable = false
    for (const [key, e] of this.entries) {
      if (e.inFlight) continue
      if (e.started != null && e.result == null && now < e.startedDueAt) continue
      const frame: NodeRequest | null = e.started ?? e.result
      if (frame == null) continue
      const session = this.options.session(e.coordinator)
      if (session == null || !session.isOpen) { undeliverable = true; continue }
      e.inFlight = true
      void this.deliver(session, key, e, frame)
    }
    if (undeliverable) this.scheduleRetry()
  }

  private async deliver (session: SessionClient, key: string, e: Entry, frame: NodeRequest): Promise<void> {
    let settled = false
    try {
      const askNext = frame.type === 'result' && session.offersNext && this.options.next?.want() === true
      const reply = await session.request(askNext ? { ...frame, wantNext: true } : frame)
      if (reply.type === 'ack' && reply.next != null) {
        // Awarded to us by the store already: it must run (or be reported) whatever happens to this report.
        if (this.options.next != null) this.options.next.take(reply.next, session.coordinatorId)
        else this.options.log.error('the coordinator sent a next attempt nobody asked for; its lease will run out', { jobId: reply.next.jobId, attempt: reply.next.attempt })
      }
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
      else {
        const done = e.result
        e.result = null
        if (done != null) this.options.outbox?.delete(done.jobId, done.attempt)
        for (const resolve of e.settled.splice(0)) resolve()
      }
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

  /**
   * Takes up the results a previous run of this node left in its outbox;
   * they are delivered like fresh ones. Returns how many.
   */
  restore (): number {
    const entries = this.options.outbox?.all() ?? []
    for (const { report, coordinator } of entries) {
      const e = this.entry(report.jobId, report.attempt)
      e.result = report
      e.coordinator ??= coordinator
    }
    if (entries.length > 0) this.kick()
    return entries.length
  }

  /** Attempts whose result is not settled yet: the node still holds them. */
  pendingResults (): Array<{ jobId: string, attempt: number, token: string }> {
    const out: Array<{ jobId: string, attempt: number, token: string }> = []
    for (const e of this.entries.values()) if (e.result != null) out.push({ jobId: e.result.jobId, attempt: e.result.attempt, token: e.result.token })
    return out
  }

  /** Gives up on undelivered reports (node stopping); their waiters resolve. */
  abandon (): number {
    let n = 0
    for (const e of this.entries.values()) {
      if (e.result != null) n++
      for (const resolve of e.settled.splice(0)) resolve()
    }
    this.entries.clear()
    // What is in the outbox stays there: the next start delivers it.
    return n
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
