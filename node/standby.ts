/**
 * The node's standing bids (session 1.2): while it has free slots and
 * nothing to bid on, the node keeps one `standby` request per free slot at
 * a coordinator, which answers it with an award of a new job instead of
 * announcing that job. A slot with a standby out counts as taken here, so
 * the node never holds more work than slots; it withdraws its standbys as
 * soon as there are announced jobs to bid on instead.
 */
import type { Award } from '../protocol/schemas.js'
import type { Logger } from '../common/log.js'
import { errorMessage } from '../common/errors.js'
import type { SessionClient } from './session-client.js'

export interface NodeStandbyOptions {
  log: Logger
  /** An open session whose coordinator keeps standing bids, or null. */
  session: () => { coordinator: string, session: SessionClient } | null
  /** How many more standbys the node wants out now (free slots not taken otherwise; 0 while it has jobs to bid on). */
  wanted: () => number
  /** Runs an award won on standby; called in the same turn the standby's slot is given back, so the slot passes straight to the job. */
  take: (award: Award, coordinator: string) => void
  /** A standby ended without an award: its slot is free again. */
  onFreed: () => void
  /** How long each standby may wait, in ms (the coordinator may cap it). @default 25000 */
  waitMs?: number
  /** Pause after a standby failed or came back empty at once, in ms. @default 1000 */
  retryMs?: number
  /**
   * How long a withdrawal waits for its ack, in ms. Shorter than an ordinary
   * request's: a node stopping behind a coordinator that hangs without closing
   * the session should not spend the full request timeout here as well.
   * @default 2000
   */
  withdrawTimeoutMs?: number
}

export class NodeStandby {
  /** Standbys out per session, with whose session it is. */
  private readonly out = new Map<SessionClient, { coordinator: string, n: number }>()
  private readonly pending = new Set<Promise<void>>()
  private count = 0
  private pausedUntil = 0
  private withdrawing: Promise<void> | null = null
  readonly stats = { sent: 0, awards: 0, empty: 0, failures: 0, withdrawals: 0 }

  constructor (private readonly options: NodeStandbyOptions) {}

  /** Standbys out now (each holds one of the node's slots). */
  get size (): number {
    return this.count
  }

  /** Standbys out at one coordinator. */
  outAt (coordinator: string): number {
    let n = 0
    for (const o of this.out.values()) if (o.coordinator === coordinator) n += o.n
    return n
  }

  /** Sends standbys until the node has as many out as it wants. */
  fill (): void {
    if (this.withdrawing != null || performance.now() < this.pausedUntil) return
    let guard = 1024
    while (guard-- > 0 && this.options.wanted() > 0) {
      const picked = this.options.session()
      if (picked == null || !picked.session.offersStandby) return
      this.send(picked.session, picked.coordinator)
    }
  }

  private send (session: SessionClient, coordinator: string): void {
    const waitMs = this.options.waitMs ?? 25_000
    this.count++
    const o = this.out.get(session)
    if (o != null) o.n++
    else this.out.set(session, { coordinator, n: 1 })
    this.stats.sent++
    const sentAt = performance.now()
    // The coordinator answers at the latest when the wait ends; allow for a slow link on top.
    const done = session.request({ type: 'standby', waitMs }, undefined, waitMs + 10_000).then((reply) => {
      this.settle(session)
      if (reply.type === 'award') {
        this.stats.awards++
        this.options.take(reply, coordinator)
        return
      }
      if (reply.type === 'open') {
        this.stats.empty++
        // Answered empty long before its wait: the coordinator is not keeping standbys (stopping, or replaced it).
        if (this.withdrawing == null && performance.now() - sentAt < 100) this.pause()
      } else {
        this.stats.failures++
        this.options.log.debug('standby refused', { type: reply.type, ...(reply.type === 'error' ? { code: reply.code, message: reply.message } : {}) })
        this.pause()
      }
      this.options.onFreed()
    }, (err: unknown) => {
      this.settle(session)
      this.stats.failures++
      this.options.log.debug('standby failed', { error: errorMessage(err) })
      this.pause()
      this.options.onFreed()
    })
    this.pending.add(done)
    void done.finally(() => { this.pending.delete(done) })
  }

  private settle (session: SessionClient): void {
    this.count--
    const o = this.out.get(session)
    if (o != null && --o.n <= 0) this.out.delete(session)
  }

  private pause (): void {
    this.pausedUntil = performance.now() + (this.options.retryMs ?? 1_000)
    setTimeout(() => { this.options.onFreed() }, this.options.retryMs ?? 1_000).unref()
  }

  /**
   * Ends every standby out: each coordinator answers them (an award if one
   * was already won, which then runs). Resolves when the withdrawals are
   * acknowledged; {@link settled} waits for the answers themselves.
   */
  async withdraw (): Promise<void> {
    if (this.count === 0) return
    this.withdrawing ??= (async () => {
      this.stats.withdrawals++
      await Promise.all([...this.out.keys()].map(async (session) => {
        try {
          await session.request({ type: 'withdraw' }, undefined, this.options.withdrawTimeoutMs ?? 2_000)
        } catch (err) {
          // The session is gone, and its standbys with it (they fail and free their slots).
          this.options.log.debug('withdraw failed', { error: errorMessage(err) })
        }
      }))
    })().finally(() => { this.withdrawing = null })
    await this.withdrawing
  }

  /** Resolves once every standby out has been answered, or after `timeoutMs`. True when none is left. */
  async settled (timeoutMs: number): Promise<boolean> {
    if (this.pending.size === 0) return true
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.allSettled([...this.pending]),
      new Promise(resolve => { timer = setTimeout(resolve, timeoutMs) })
    ])
    clearTimeout(timer)
    return this.pending.size === 0
  }
}
