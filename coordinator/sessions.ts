/**
 * The coordinator's end of the session protocol: one long-lived stream per
 * node, opened by the node (so it works when the node cannot be dialled).
 * Requests are answered on the same stream; cancellations are pushed on it.
 */
import { DialBack } from './dial-back.js'
import type { Connection, Stream } from '@libp2p/interface'
import type { AnnouncedJob, CoordinatorFrame, InputSource, JobSpec, NextAward, NodeCapacity, NodeFrame } from '../protocol/schemas.js'
import { decodeNodeFrame } from '../protocol/codec.js'
import { LIMITS } from '../protocol/limits.js'
import { mismatch } from '../protocol/matching.js'
import { FrameChannel } from '../common/session.js'
import { StaleAttemptError, TooLargeError, errorMessage } from '../common/errors.js'
import { RateLimiter } from '../common/rate-limit.js'
import type { Admission } from './admission.js'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/log.js'
import type { Store, AttemptRecord } from './store/types.js'
import type { Auction, BidOutcome } from './auction.js'
import type { Announcer } from './announcer.js'
import { toAnnounced } from './announcer.js'
import type { Membership } from './membership.js'
import type { Recovery } from './recovery.js'
import type { Transfers } from './transfers.js'
import { StandbyPool } from './standby.js'

export interface SessionServerOptions {
  store: Store
  auction: Auction
  announcer: Announcer
  membership: Membership
  recovery: Recovery
  clock: Clock
  log: Logger
  /** Bad frames tolerated on one session before it is cut. @default 20 */
  maxBadFrames?: number
  /** Lease length given on renewal, in ms. */
  leaseMs: number
  /** Called after every award. */
  onAwarded?: (jobId: string) => void
  /** A job's requirements, when known without a store query (open jobs). */
  requirementsOf?: (jobId: string) => AnnouncedJob | undefined
  /** Inputs and outputs; without it jobs cannot have stored inputs or outputs. */
  transfers?: Transfers
  /** Live log lines kept per job; the rest are dropped. @default 50000 */
  maxLogLinesPerJob?: number
  /** Called after live log lines of a job were stored (wakes followers). */
  onLogs?: (jobId: string) => void
  /**
   * What goes into an award beyond the stored spec: the job's secrets
   * (unsealed) and where to fetch its inputs (signed for the job's owner).
   * @default the stored spec, inputs signed in the open namespace
   */
  prepareAward?: (jobId: string, spec: JobSpec) => Promise<{ spec: JobSpec, owner: string | null }>
  /** Who may open sessions (join tokens, revocations). */
  admission: Admission
  /**
   * Frames one peer may send per second, sustained; a burst of twice as
   * many passes. Frames beyond it are answered `rate-limited` and dropped;
   * a peer that keeps on is cut off like one sending bad frames. A node
   * sends a renewal every few seconds, one bid per announced job it wants
   * and batched logs, so honest nodes stay far below it.
   * @default 500
   */
  maxFramesPerSecond?: number
  /** Least time between two reachability checks of one node (its `addrs` frames wait), in ms. @default 5000 */
  recheckGapMs?: number
  /** How long an `offer` push to a relayed node may take before its session is closed, in ms. @default 10000 */
  offerTimeoutMs?: number
  /** Checks whether a node can be dialled at its listen addresses. @default a DialBack with its defaults */
  dialBack?: DialBack
  /** Longest a node's `standby` is kept before it is answered empty, in ms. @default 30000 */
  standbyMaxWaitMs?: number
}

type Channel = FrameChannel<NodeFrame, CoordinatorFrame>
/** What a reachability check of one node needs: its listen addresses and where its session came from. */
type CheckRequest = { listenAddrs: string[], remoteAddr: string }
type RunningRef = { jobId: string, attempt: number, token: string }

export class SessionServer {
  private readonly sessions = new Map<string, Channel>()
  /** Sessions on a relayed (limited) connection: gossip cannot reach their nodes, so offers are pushed. */
  private readonly relayed = new WeakSet<Channel>()
  /** Reachability checks running, per node, with the request that came in meanwhile. */
  private readonly checks = new Map<string, { next: CheckRequest | null }>()
  readonly stats = { sessions: 0, frames: 0, badFrames: 0, staleReports: 0, handlerFailures: 0, logLines: 0, logLinesDropped: 0, joinRefused: 0, rateLimited: 0, cutOff: 0, relayedOffers: 0 }
  private readonly limiter: RateLimiter
  private readonly dialBack: DialBack
  /** Ends dial-backs still running when the server closes. */
  private readonly closing = new AbortController()
  /** Nodes waiting on `standby` (session 1.2): new jobs that fit them are awarded before any announcement. */
  readonly standby: StandbyPool

  constructor (private readonly options: SessionServerOptions) {
    const rate = options.maxFramesPerSecond ?? 500
    this.limiter = new RateLimiter({ ratePerSecond: rate, burst: rate * 2, clock: options.clock })
    this.dialBack = options.dialBack ?? new DialBack()
    this.standby = new StandbyPool({
      auction: options.auction, log: options.log.child('standby'),
      capacityOf: peerId => options.membership.get(peerId)?.capacity,
      grant: async (peerId, outcome) => await this.grant(peerId, outcome),
      ...(options.standbyMaxWaitMs != null ? { maxWaitMs: options.standbyMaxWaitMs } : {})
    })
  }

  /**
   * Dials the node back at its listen addresses and tells the node and the
   * membership view what it found. Runs after the welcome: it takes up to
   * the connect timeout and nothing waits for it.
   */
  private async checkReachability (peerId: string, listenAddrs: string[] | undefined, remoteAddr: string): Promise<void> {
    if (listenAddrs == null) return
    // One check per node at a time, the latest request wins, and a pause between two: a node
    // cannot make this coordinator dial out faster than that, however many `addrs` it sends.
    const state = this.checks.get(peerId)
    if (state != null) { state.next = { listenAddrs, remoteAddr }; return }
    const me: { next: CheckRequest | null } = { next: null }
    this.checks.set(peerId, me)
    try {
      let job: CheckRequest | null = { listenAddrs, remoteAddr }
      while (job != null && !this.closing.signal.aborted) {
        try {
          const { reachability, dialable, relayed } = await this.dialBack.check(job.listenAddrs, job.remoteAddr, this.closing.signal, peerId)
          this.options.membership.setReachability(peerId, reachability, dialable, relayed)
          await this.push(peerId, { type: 'reachability', reachability, dialable, relayed })
        } catch (err) {
          this.options.log.warn('dial-back failed', { peerId, error: errorMessage(err) })
        }
        if (me.next == null) break
        await new Promise(resolve => setTimeout(resolve, this.options.recheckGapMs ?? 5_000).unref())
        job = me.next
        me.next = null
      }
    } finally {
      this.checks.delete(peerId)
    }
  }

  /**
   * Ends a peer's session with an error frame saying why (the node exits
   * with it), e.g. when its join token was revoked.
   */
  async cut (peerId: string, code: string, message: string): Promise<void> {
    const channel = this.sessions.get(peerId)
    if (channel == null) return
    this.stats.cutOff++
    this.sessions.delete(peerId)
    this.options.membership.setSession(peerId, false)
    this.standby.drop(peerId)
    await this.reply(channel, { type: 'error', rid: null, code, message })
    await channel.close()
  }

  /** libp2p stream handler for SESSION_PROTOCOL. */
  handle (stream: Stream, connection: Connection): void {
    const peerId = connection.remotePeer.toString()
    const channel: Channel = new FrameChannel(stream, { decode: decodeNodeFrame })
    const previous = this.sessions.get(peerId)
    this.sessions.set(peerId, channel)
    if (connection.limits != null) this.relayed.add(channel)
    if (previous != null) void previous.close()
    this.stats.sessions++
    this.options.log.debug('session opened', { peerId })
    void this.serve(peerId, channel, connection).finally(() => {
      if (this.sessions.get(peerId) === channel) {
        this.sessions.delete(peerId)
        this.options.membership.setSession(peerId, false)
        this.standby.drop(peerId)
      }
      this.options.log.debug('session closed', { peerId })
    })
  }

  /** Pushes a frame to a node's open session; false when it has none. */
  async push (peerId: string, frame: CoordinatorFrame): Promise<boolean> {
    const channel = this.sessions.get(peerId)
    return channel != null && await this.sendOn(peerId, channel, frame)
  }

  /** Sends a frame on one session (a push, or a late answer); false when it is closed or the write fails. */
  private async sendOn (peerId: string, channel: Channel, frame: CoordinatorFrame): Promise<boolean> {
    if (!channel.isOpen) return false
    try {
      await channel.send(frame)
      return true
    } catch (err) {
      this.options.log.warn('push failed', { peerId, type: frame.type, error: errorMessage(err) })
      return false
    }
  }

  /**
   * Pushes just-announced jobs to the nodes whose session runs through a
   * relay (gossip does not run on relayed connections). Returns how many
   * sessions were offered them.
   */
  async offerToRelayed (jobs: AnnouncedJob[]): Promise<number> {
    const relayed = [...this.sessions].filter(([, channel]) => this.relayed.has(channel))
    if (relayed.length === 0 || jobs.length === 0) return 0
    const timeoutMs = this.options.offerTimeoutMs ?? 10_000
    const sent = await Promise.all(relayed.map(async ([peerId, channel]) => {
      let timer: NodeJS.Timeout | undefined
      // A node that stops reading would hold the frame (and every later one) forever: give up on its session.
      const timedOut = new Promise<false>(resolve => {
        timer = setTimeout(() => {
          this.options.log.warn('a relayed node does not take its offers; closing its session', { peerId })
          channel.abort(new Error('offer not taken in time'))
          resolve(false)
        }, timeoutMs)
      })
      try {
        return await Promise.race([this.push(peerId, { type: 'offer', jobs }), timedOut])
      } finally {
        clearTimeout(timer)
      }
    }))
    const n = sent.filter(Boolean).length
    this.stats.relayedOffers += n
    return n
  }

  hasSession (peerId: string): boolean {
    return this.sessions.get(peerId)?.isOpen === true
  }

  async closeAll (): Promise<void> {
    this.closing.abort(new Error('coordinator stopping'))
    this.standby.close()
    const all = [...this.sessions.values()]
    this.sessions.clear()
    await Promise.all(all.map(async c => { await c.close() }))
  }

  /** Whether the peer was admitted (its gossip counts for membership). */
  isAdmitted (peerId: string): boolean {
    return this.options.admission.isAdmitted(peerId)
  }

  private async serve (peerId: string, channel: Channel, connection?: Connection): Promise<void> {
    let bad = 0
    let limited = 0
    let greeted = false
    const maxBad = this.options.maxBadFrames ?? 20
    while (true) {
      let next
      try {
        next = await channel.next()
      } catch (err) {
        this.options.log.warn('session read failed', { peerId, error: errorMessage(err) })
        channel.abort(err instanceof Error ? err : new Error(String(err)))
        return
      }
      if (next == null) { await channel.close(); return }
      if ('error' in next) {
        this.stats.badFrames++
        this.options.log.warn('bad frame', { peerId, error: next.error.message })
        await this.reply(channel, { type: 'error', rid: null, code: 'bad-frame', message: next.error.message })
        if (++bad >= maxBad) { channel.abort(new Error(`too many bad frames from ${peerId}`)); return }
        continue
      }
      this.stats.frames++
      // Before anything else, hellos included: each hello costs a store read and write.
      if (!this.limiter.take(peerId)) {
        this.stats.rateLimited++
        await this.reply(channel, { type: 'error', rid: next.frame.rid, code: 'rate-limited', message: `more than ${this.options.maxFramesPerSecond ?? 500} frames per second; slow down` })
        if (++limited >= maxBad * 10) {
          // Closed, not aborted: the rate-limited answers already written still reach the peer.
          this.options.log.warn('cutting off a session that kept sending over its rate', { peerId })
          await channel.close(500)
          // The whole connection goes, not just this stream: a flooder would otherwise reopen streams.
          await connection?.close().catch((err: unknown) => { this.options.log.debug('closing a flooding connection failed', { peerId, error: errorMessage(err) }) })
          return
        }
        continue
      }
      if (!greeted) {
        if (next.frame.type !== 'hello') {
          this.stats.badFrames++
          await this.reply(channel, { type: 'error', rid: next.frame.rid, code: 'hello-required', message: 'send hello with your capacity before any other request' })
          if (++bad >= maxBad) { channel.abort(new Error(`too many bad frames from ${peerId}`)); return }
          continue
        }
        const refused = await this.options.admission.admit(peerId, next.frame.join)
        if (refused != null) {
          if (refused.code === 'join-refused') this.stats.joinRefused++
          this.options.log.warn('node refused', { peerId, reason: refused.message })
          await this.reply(channel, { type: 'error', rid: next.frame.rid, code: refused.code, message: refused.message })
          // Let the refusal reach the node before the connection goes: closing at once could discard
          // it in flight. The node hangs up when it has read it; 2 s at most.
          const hungUp = new AbortController()
          const wait = setTimeout(() => { hungUp.abort() }, 2_000)
          await channel.next(hungUp.signal).catch(() => null)
          clearTimeout(wait)
          await channel.close()
          // Not a member: no gossip, no sessions. The node may come back with a valid token.
          if (refused.code === 'join-refused') await connection?.close().catch((err: unknown) => { this.options.log.debug('closing a refused connection failed', { peerId, error: errorMessage(err) }) })
          return
        }
        greeted = true
      }

      // Requests are independent: handle them concurrently so one slow store
      // write does not hold up bids queued behind it.
      void this.dispatch(peerId, channel, next.frame, connection?.remoteAddr.toString() ?? '')
    }
  }

  private async reply (channel: Channel, frame: CoordinatorFrame): Promise<void> {
    try {
      await channel.send(frame)
    } catch (err) {
      this.options.log.debug('reply failed', { type: frame.type, error: errorMessage(err) })
    }
  }

  /** `remoteAddr`: where the session's connection came from, for the dial-back after `hello`. */
  private async dispatch (peerId: string, channel: Channel, frame: NodeFrame, remoteAddr: string): Promise<void> {
    const { store, clock, auction, announcer, membership } = this.options
    try {
      switch (frame.type) {
        case 'hello': {
          membership.seen(peerId, frame.capacity, 'session', frame.running.length)
          membership.setSession(peerId, true)
          auction.syncHeld(peerId, frame.running)
          const stored = await store.heldAttempts(peerId)
          const revoked = await this.revoked(peerId, frame.running, stored, 'hello')
          const open = await this.openFor(frame.capacity, LIMITS.pullJobs)
          await this.reply(channel, { type: 'welcome', rid: frame.rid, open, revoked })
          void this.options.recovery.reconcile(peerId, frame.running, stored)
          void this.checkReachability(peerId, frame.listenAddrs, remoteAddr)
          return
        }
        case 'renew': {
          membership.seen(peerId, frame.capacity, 'session', frame.running.length)
          auction.syncHeld(peerId, frame.running)
          if (frame.running.length > 0) {
            await store.renewLeases({ node: peerId, attempts: frame.running, leaseExpiresAt: clock.now() + this.options.leaseMs })
          }
          const stored = await store.heldAttempts(peerId)
          const revoked = await this.revoked(peerId, frame.running, stored, 'renew')
          await this.reply(channel, { type: 'renewed', rid: frame.rid, revoked })
          void this.options.recovery.reconcile(peerId, frame.running, stored)
          return
        }
        case 'pull': {
          const m = membership.get(peerId)
          const open = m != null ? await this.openFor(m.capacity, frame.max) : []
          await this.reply(channel, { type: 'open', rid: frame.rid, jobs: open })
          return
        }
        case 'bid': {
          // Nodes declare their own capacity; still, never award a job to a node that said it cannot run it.
          const wanted = this.options.requirementsOf?.(frame.jobId)
          const capacity = membership.get(peerId)?.capacity
          if (wanted != null && capacity != null && mismatch(capacity, wanted) != null) {
            await this.reply(channel, { type: 'refuse', rid: frame.rid, jobId: frame.jobId, attempt: frame.attempt, reason: 'requirements' })
            return
          }
          const outcome = await auction.bid(peerId, frame)
          if (outcome.type === 'award') {
            // A counter-offer awards a different job than the one bid on.
            const award = await this.grant(peerId, outcome)
            if (award == null) {
              await this.reply(channel, { type: 'error', rid: frame.rid, code: 'award-unavailable', message: 'the coordinator could not sign input URLs or open the job\'s secrets; the job will be announced again' })
              return
            }
            await this.reply(channel, { type: 'award', rid: frame.rid, ...award })
          } else {
            await this.reply(channel, { type: 'refuse', rid: frame.rid, jobId: frame.jobId, attempt: frame.attempt, reason: outcome.reason })
          }
          return
        }
        case 'standby': {
          // Work may wait already (held back while the mesh was full, or announced before this node was free).
          const waiting = await this.nextFor(peerId, true, 'standby')
          if (waiting.next != null) {
            await this.reply(channel, { type: 'award', rid: frame.rid, ...waiting.next })
            return
          }
          this.standby.add(peerId, frame.rid, frame.waitMs, async (answer) => await this.sendOn(peerId, channel, answer),
            () => this.sessions.get(peerId) === channel && channel.isOpen)
          return
        }
        case 'withdraw': {
          // Each waiting standby is answered (empty) before this ack: the node frees those slots when it reads them.
          this.standby.withdraw(peerId)
          await this.reply(channel, { type: 'ack', rid: frame.rid })
          return
        }
        case 'started': {
          await store.markStarted({ jobId: frame.jobId, attempt: frame.attempt, token: frame.token, node: peerId, startedAt: frame.startedAt, now: clock.now() })
          await this.reply(channel, { type: 'ack', rid: frame.rid })
          return
        }
        case 'addrs': {
          this.options.membership.setUpgradedPeers(peerId, frame.upgradedPeers)
          await this.reply(channel, { type: 'ack', rid: frame.rid })
          void this.checkReachability(peerId, frame.listenAddrs, remoteAddr)
          return
        }
        case 'log': {
          const { stored, dropped } = await store.appendLogs({
            jobId: frame.jobId, attempt: frame.attempt, token: frame.token, node: peerId, now: clock.now(), lines: frame.lines,
            maxLines: this.options.maxLogLinesPerJob ?? 50_000
          })
          this.stats.logLines += stored
          this.stats.logLinesDropped += dropped
          if (stored > 0) this.options.onLogs?.(frame.jobId)
          await this.reply(channel, { type: 'ack', rid: frame.rid })
          return
        }
        case 'outputs': {
          await this.grantOutputs(channel, peerId, frame)
          return
        }
        case 'result': {
          const { type: _t, rid: _r, jobId, attempt, token, wantNext, ...reported } = frame
          let result = reported
          if (result.artifacts.length > 0) {
            const problem = this.options.transfers == null ? 'this coordinator stores no outputs' : await this.options.transfers.checkArtifacts(jobId, attempt, result.artifacts)
            // Outputs the node says it uploaded but the store does not hold: the attempt did not deliver, another may.
            if (problem != null) result = { ...result, outcome: 'failed', artifacts: [], error: { code: 'output-upload-failed', message: problem, retryable: true } }
          }
          if (result.outcome === 'failed' && result.error?.retryable === true) {
            // Another node may well succeed: the job gets its next attempt instead of ending failed.
            auction.release(peerId, jobId, attempt)
            // A draining node hands work back; that must not cost the job one of its attempts.
            const handedBack = result.error.code === 'node-shutdown'
              ? await this.options.recovery.release(peerId, jobId, attempt, token)
              : await this.options.recovery.retry(peerId, jobId, attempt, token, result.error)
            if (!handedBack) {
              const reason = 'the attempt is no longer current'
              // Stale results with a final outcome are logged by the store; this path must log its own.
              if (await store.getJob(jobId) != null) {
                await store.appendEvent({ jobId, at: clock.now(), type: 'stale-report', actor: peerId, attempt, detail: { report: 'result', reason, errorCode: result.error.code } })
              }
              throw new StaleAttemptError(jobId, attempt, reason)
            }
            await this.ackResult(channel, peerId, frame.rid, wantNext)
            return
          }
          try {
            await store.recordResult({ jobId, attempt, token, node: peerId, now: clock.now(), result: { attempt, ...result } })
          } finally {
            // Whatever the store says (recorded, duplicate, stale), the node no longer holds the attempt. Released
            // only now, and the next award (if asked) taken in the same turn: a busy node never looks free in between,
            // which would let held-back jobs out to gossip (Announcer, meshFull).
            auction.release(peerId, jobId, attempt)
          }
          await this.ackResult(channel, peerId, frame.rid, wantNext)
          return
        }
      }
    } catch (err) {
      if (err instanceof StaleAttemptError) {
        this.stats.staleReports++
        await this.reply(channel, { type: 'stale', rid: frame.rid, jobId: err.jobId, attempt: err.attempt, reason: err.reason })
        return
      }
      this.stats.handlerFailures++
      this.options.log.error('session request failed', { peerId, type: frame.type, error: errorMessage(err) })
      await this.reply(channel, { type: 'error', rid: frame.rid, code: 'internal', message: 'the coordinator could not handle this request; retry later' })
    }
  }

  /**
   * Completes an award the auction committed: stops its announcement, and
   * signs its input URLs and opens its secrets. If that fails the attempt
   * cannot run, so it goes back for a later try (not left to its lease) and
   * null is returned.
   */
  private async grant (peerId: string, outcome: Extract<BidOutcome, { type: 'award' }>): Promise<NextAward | null> {
    const { auction, announcer } = this.options
    const { jobId, number: attempt } = outcome.attempt
    announcer.awarded(jobId, attempt)
    this.options.onAwarded?.(jobId)
    try {
      const prepared = await this.options.prepareAward?.(jobId, outcome.spec) ?? { spec: outcome.spec, owner: null }
      const inputs = await this.inputSources(prepared.spec, prepared.owner)
      return {
        jobId, attempt, token: outcome.token, spec: prepared.spec, inputs,
        ...(this.options.transfers != null ? { maxFileBytes: this.options.transfers.maxFileBytes, maxJobBytes: this.options.transfers.maxJobBytes } : {})
      }
    } catch (err) {
      this.options.log.warn('cannot prepare the award; the attempt goes back', { jobId, error: errorMessage(err) })
      auction.release(peerId, jobId, attempt)
      await this.options.recovery.retry(peerId, jobId, attempt, outcome.token, { code: 'award-unavailable', message: `the coordinator could not prepare the award: ${errorMessage(err)}`, retryable: true })
      return null
    }
  }

  /**
   * The `next` of a result's ack (session 1.1): when the node asked, the
   * oldest open attempt it can run, awarded. A failure here must not cost
   * the result its ack: it is logged and the node bids as usual.
   */
  private async nextFor (peerId: string, wantNext: boolean | undefined, why: 'next' | 'standby' = 'next'): Promise<{ next?: NextAward }> {
    if (wantNext !== true) return {}
    const capacity = this.options.membership.get(peerId)?.capacity
    if (capacity == null) return {}
    try {
      const outcome = await this.options.auction.next(peerId, capacity.slots, capacity.freeSlots, why)
      if (outcome == null) return {}
      const award = await this.grant(peerId, outcome)
      return award != null ? { next: award } : {}
    } catch (err) {
      this.stats.handlerFailures++
      this.options.log.error('could not award a next attempt with an ack', { peerId, error: errorMessage(err) })
      return {}
    }
  }

  /**
   * Acknowledges a result whose attempt the node no longer holds, with its
   * next attempt when asked (session 1.1); without one, the freed slot may
   * serve a waiting standby (1.2).
   */
  private async ackResult (channel: Channel, peerId: string, rid: number, wantNext: boolean | undefined): Promise<void> {
    const next = await this.nextFor(peerId, wantNext)
    await this.reply(channel, { type: 'ack', rid, ...next })
    if (next.next == null) await this.serveStandby(peerId)
  }

  /**
   * A result freed one of the node's slots and brought no next attempt: if
   * the node waits on standby, hand it the oldest open job it can run (one
   * announced while the node was full would otherwise wait for its
   * re-announcement). A failure is logged; the standby keeps waiting.
   */
  private async serveStandby (peerId: string): Promise<void> {
    try {
      await this.standby.serve(peerId, async () => (await this.nextFor(peerId, true, 'standby')).next ?? null)
    } catch (err) {
      this.stats.handlerFailures++
      this.options.log.error('could not serve a standby after a result', { peerId, error: errorMessage(err) })
    }
  }

  /**
   * Attempts a node believes it holds but whose token is no longer current:
   * those missing from what the store says the node holds (`stored`: current
   * claimed/running attempts of this node). Each is refused (the node stops
   * it) and recorded as a `stale-report`, so the job's log shows that a
   * replaced claimant came back.
   */
  private async revoked (peerId: string, running: RunningRef[], stored: AttemptRecord[], report: 'hello' | 'renew'): Promise<Array<{ jobId: string, attempt: number }>> {
    const live = new Set(stored.map(a => `${a.jobId}/${a.number}/${a.token}`))
    const out: Array<{ jobId: string, attempt: number }> = []
    for (const r of running) {
      if (live.has(`${r.jobId}/${r.attempt}/${r.token}`)) continue
      out.push({ jobId: r.jobId, attempt: r.attempt })
      // Read only for the rare revoked attempt: the event names the job's state.
      const job = await this.options.store.getJob(r.jobId)
      // Its own result is recorded and the ack is still on its way: stopping is harmless, but nothing was stale.
      if (job == null || job.result?.attempt === r.attempt) continue
      this.stats.staleReports++
      await this.options.store.appendEvent({
        jobId: r.jobId, at: this.options.clock.now(), type: 'stale-report', actor: peerId, attempt: r.attempt,
        detail: { report, reason: `attempt ${r.attempt} is no longer this node's (job ${job.state}, current attempt ${job.attempt}); told to stop it` }
      })
    }
    return out
  }

  private async inputSources (spec: JobSpec, owner: string | null): Promise<InputSource[]> {
    if (spec.inputs.length === 0) return []
    const transfers = this.options.transfers
    if (transfers == null) {
      if (spec.inputs.some(i => i.object != null)) throw new Error('this coordinator has no object store')
      return spec.inputs.map(i => ({ path: i.path, url: i.url!, sha256: i.sha256 ?? null, size: null }))
    }
    return await transfers.inputSources(spec, owner)
  }

  /** Upload URLs for the current attempt's holder only: the same fencing as a result. */
  private async grantOutputs (channel: Channel, peerId: string, frame: Extract<NodeFrame, { type: 'outputs' }>): Promise<void> {
    const { store, clock } = this.options
    const transfers = this.options.transfers
    if (transfers == null) {
      await this.reply(channel, { type: 'error', rid: frame.rid, code: 'objects-disabled', message: 'this coordinator stores no outputs' })
      return
    }
    const job = await store.getJob(frame.jobId)
    const held = job?.attempts.find(a => a.number === frame.attempt)
    const current = job != null && job.attempt === frame.attempt && (job.state === 'claimed' || job.state === 'running') &&
      held?.token === frame.token && held.node === peerId
    if (!current) {
      const reason = job == null ? 'no such job' : `attempt ${frame.attempt} is not the current attempt held by this node (job ${job.state}, current attempt ${job.attempt})`
      if (job != null) {
        await store.appendEvent({ jobId: frame.jobId, at: clock.now(), type: 'stale-report', actor: peerId, attempt: frame.attempt, detail: { report: 'outputs', reason } })
      }
      throw new StaleAttemptError(frame.jobId, frame.attempt, reason)
    }
    try {
      const files = await transfers.outputUrls(frame.jobId, frame.attempt, frame.files)
      await this.reply(channel, { type: 'uploads', rid: frame.rid, files })
    } catch (err) {
      if (!(err instanceof TooLargeError)) throw err
      await this.reply(channel, { type: 'error', rid: frame.rid, code: 'too-large', message: err.message })
    }
  }

  private async openFor (capacity: NodeCapacity, max: number): Promise<AnnouncedJob[]> {
    const open = await this.options.store.openJobs(Math.max(max * 4, 64), this.options.clock.now())
    const out: AnnouncedJob[] = []
    for (const job of open) {
      const a = toAnnounced(job)
      if (mismatch(capacity, a) == null) out.push(a)
      if (out.length >= max) break
    }
    return out
  }
}
