/**
 * The auction: turns racing bids for one attempt into exactly one award.
 *
 * - A bid from an idle node (all slots free) wins at once: nobody can offer
 *   more, and waiting would only add latency.
 * - Otherwise the first bid opens a short window (`bidWindowMs`); when it
 *   closes, the bid with the largest free fraction wins (ties: most free
 *   slots, then earliest). Nodes delay their bids in proportion to their
 *   load, so the window rarely has to wait for the best one.
 * - The decision is committed by the store's conditional write; if that
 *   loses (another coordinator awarded it, or the job was cancelled), every
 *   bidder is refused. The store, not this map, is the source of truth.
 */
import type { Bid, JobSpec } from '../protocol/schemas.js'
import type { Store, AttemptRecord } from './store/types.js'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/log.js'
import { ConflictError, NotFoundError, errorMessage } from '../common/errors.js'
import { newFencingToken } from '../common/ids.js'

export type BidOutcome =
  | { type: 'award', token: string, spec: JobSpec, attempt: AttemptRecord, counterOffer: boolean }
  | { type: 'refuse', reason: 'taken' | 'not-open' | 'cancelled' | 'unknown-job' | 'overloaded' }

export interface AuctionOptions {
  store: Store
  clock: Clock
  log: Logger
  /** Looks up a job's spec for the award (a cache in front of the store). */
  specOf: (jobId: string) => Promise<JobSpec | null>
  /** Wait for better bids after the first bid from a busy node, in ms. @default 8 */
  bidWindowMs?: number
  /** Lease given with an award; renewed by the claimant. @default 30000 */
  leaseMs?: number
  /** How long a decided attempt is remembered to refuse late bids without a store query. @default 30000 */
  decidedTtlMs?: number
  /** A counter-offered attempt turned out not to be open any more. */
  onNotOpen?: (jobId: string) => void
  /**
   * Open attempts a node could take without an auction, oldest first: a
   * losing bidder's counter-offer, a result's `next`, or what a node
   * arriving on standby is handed (`why`). So a node with a free slot gets
   * work from one round trip whenever work is waiting. @default () => []
   */
  counterOffers?: (node: string, isOpenRound: (jobId: string, attempt: number) => boolean, why: 'counter-offer' | 'next' | 'standby') => Array<{ jobId: string, attempt: number }>
}

interface PendingBid {
  node: string
  bid: Bid
  at: number
  resolve: (outcome: BidOutcome) => void
}

interface Round {
  bids: PendingBid[]
  timer: NodeJS.Timeout | null
}

/** One bid as `explain` shows it. */
export interface BidRecord { node: string, attempt: number, at: number, freeSlots: number, outcome: string }

export class Auction {
  private readonly rounds = new Map<string, Round>()
  private readonly decided = new Map<string, number>()
  /**
   * Attempts this coordinator awarded per node and has not seen end: guards
   * against a node bidding past its slots. Results may reach another
   * coordinator, so the node's own list of held attempts (hello, renew)
   * corrects it: see {@link syncHeld}.
   */
  private readonly active = new Map<string, Map<string, number>>()
  private readonly bidWindowMs: number
  private readonly leaseMs: number
  private readonly decidedTtlMs: number
  private sweepAt = 0
  /** Counters for metrics and benchmarks. */
  readonly stats = { bids: 0, awards: 0, refusals: 0, lostRaces: 0, counterOffers: 0, chained: 0, standby: 0, refusedBy: {} as Record<string, number> }

  constructor (private readonly options: AuctionOptions) {
    this.bidWindowMs = options.bidWindowMs ?? 8
    this.leaseMs = options.leaseMs ?? 30_000
    this.decidedTtlMs = options.decidedTtlMs ?? 30_000
  }

  /** Handles one bid; resolves with the award or the reason for refusal. */
  /** Recent bids per job, for `explain` (in memory, bounded: the last 2000 jobs, 20 bids each). */
  private readonly recentBids = new Map<string, BidRecord[]>()

  /** The bids this coordinator saw for a job, oldest first. */
  bidsFor (jobId: string): BidRecord[] {
    return [...(this.recentBids.get(jobId) ?? [])]
  }

  async bid (node: string, bid: Bid): Promise<BidOutcome> {
    const at = this.options.clock.now()
    const outcome = await this.decide(node, bid)
    let list = this.recentBids.get(bid.jobId)
    if (list == null) {
      if (this.recentBids.size >= 2000) this.recentBids.delete(this.recentBids.keys().next().value!)
      list = []
      this.recentBids.set(bid.jobId, list)
    }
    if (list.length < 20) {
      list.push({
        node, attempt: bid.attempt, at, freeSlots: bid.freeSlots,
        outcome: outcome.type === 'award' ? (outcome.attempt.jobId === bid.jobId ? 'awarded' : 'lost; given another job') : `refused: ${outcome.reason}`
      })
    }
    return outcome
  }

  private async decide (node: string, bid: Bid): Promise<BidOutcome> {
    this.stats.bids++
    const key = `${bid.jobId}/${bid.attempt}`
    if (this.count(node) >= bid.slots && !(await this.resyncFromStore(node) < bid.slots)) return this.refuse('overloaded')
    const decidedUntil = this.decided.get(key)
    if (decidedUntil != null) {
      if (decidedUntil > this.options.clock.now()) return await this.counterOffer(node, bid)
      this.decided.delete(key)
    }
    return await new Promise<BidOutcome>((resolve) => {
      let round = this.rounds.get(key)
      if (round == null) {
        round = { bids: [], timer: null }
        this.rounds.set(key, round)
      }
      round.bids.push({ node, bid, at: this.options.clock.now(), resolve })
      if (bid.freeSlots >= bid.slots) {
        this.close(key, round)
      } else if (round.timer == null) {
        const r = round
        r.timer = setTimeout(() => { this.close(key, r) }, this.bidWindowMs)
      }
    })
  }

  private count (node: string): number {
    return this.active.get(node)?.size ?? 0
  }

  private hold (node: string, key: string): void {
    let held = this.active.get(node)
    if (held == null) {
      held = new Map()
      this.active.set(node, held)
    }
    held.set(key, this.options.clock.now())
  }

  /** The node finished (or lost) an attempt: frees its slot in our accounting. Idempotent. */
  release (node: string, jobId: string, attempt: number): void {
    const held = this.active.get(node)
    if (held == null) return
    held.delete(`${jobId}/${attempt}`)
    if (held.size === 0) this.active.delete(node)
  }

  /**
   * The node listed the attempts it holds: forget ours it does not hold,
   * unless awarded so recently that the award may still be on its way.
   */
  syncHeld (node: string, held: Array<{ jobId: string, attempt: number }>, graceMs = 5_000): void {
    const ours = this.active.get(node)
    if (ours == null) return
    const keys = new Set(held.map(h => `${h.jobId}/${h.attempt}`))
    const now = this.options.clock.now()
    for (const [key, at] of ours) {
      if (!keys.has(key) && now - at >= graceMs) ours.delete(key)
    }
    if (ours.size === 0) this.active.delete(node)
  }

  private readonly resyncedAt = new Map<string, number>()

  /**
   * Our count says the node is full, but its results may have gone to
   * another coordinator: ask the store what the node really holds (at most
   * once a second per node) and count that instead.
   */
  private async resyncFromStore (node: string): Promise<number> {
    const now = this.options.clock.now()
    if (now - (this.resyncedAt.get(node) ?? 0) < 1_000) return this.count(node)
    this.resyncedAt.set(node, now)
    const held = await this.options.store.heldAttempts(node)
    const ours = new Map<string, number>()
    for (const a of held) ours.set(`${a.jobId}/${a.number}`, a.awardedAt)
    if (ours.size === 0) this.active.delete(node)
    else this.active.set(node, ours)
    return ours.size
  }

  /** Awards currently counted against a node. */
  activeOn (node: string): number {
    return this.count(node)
  }

  stop (): void {
    for (const [key, round] of this.rounds) {
      if (round.timer != null) clearTimeout(round.timer)
      for (const b of round.bids) b.resolve(this.refuse('not-open'))
      this.rounds.delete(key)
    }
  }

  private refuse (reason: 'taken' | 'not-open' | 'cancelled' | 'unknown-job' | 'overloaded'): BidOutcome {
    this.stats.refusals++
    this.stats.refusedBy[reason] = (this.stats.refusedBy[reason] ?? 0) + 1
    return { type: 'refuse', reason }
  }

  private close (key: string, round: Round): void {
    if (this.rounds.get(key) !== round) return
    this.rounds.delete(key)
    if (round.timer != null) clearTimeout(round.timer)
    const now = this.options.clock.now()
    this.sweep(now)
    // Best free fraction, then most free slots, then earliest; skip nodes
    // that filled up while the window was open.
    const eligible = round.bids.filter(b => this.count(b.node) < b.bid.slots)
    eligible.sort((a, b) =>
      (b.bid.freeSlots / b.bid.slots) - (a.bid.freeSlots / a.bid.slots) ||
      b.bid.freeSlots - a.bid.freeSlots || a.at - b.at)
    const winner = eligible[0]
    for (const b of round.bids) {
      if (b === winner) continue
      if (!eligible.includes(b)) { b.resolve(this.refuse('overloaded')); continue }
      this.counterOffer(b.node, b.bid).then(b.resolve, (err: unknown) => {
        this.options.log.error('counter-offer failed', { node: b.node, error: errorMessage(err) })
        b.resolve(this.refuse('taken'))
      })
    }
    // Nobody eligible: the attempt stays open for later bids.
    if (winner == null) return
    this.decided.set(key, now + this.decidedTtlMs)
    this.hold(winner.node, key)
    this.commit(winner.node, winner.bid, round.bids.length, 'auction').then((outcome) => {
      // Only a lost race settles the attempt; on any other failure later bids must still be heard.
      if (outcome.type === 'refuse' && outcome.reason !== 'taken' && outcome.reason !== 'cancelled') this.decided.delete(key)
      winner.resolve(outcome)
    }, (err: unknown) => {
      this.decided.delete(key)
      this.options.log.error('award failed', { jobId: winner.bid.jobId, error: errorMessage(err) })
      winner.resolve(this.refuse('not-open'))
    })
  }

  /**
   * The bid lost, but the bidder has a free slot: award it the oldest open
   * attempt it can run instead, if any.
   */
  private async counterOffer (node: string, bid: Bid): Promise<BidOutcome> {
    const outcome = await this.awardOldest(node, bid, 'counter-offer')
    if (outcome == null) return this.refuse('taken')
    this.stats.counterOffers++
    return outcome
  }

  /**
   * The node reported a result and asked for its next attempt (session
   * 1.1, `wantNext`): award it the oldest open attempt it can run, as a
   * counter-offer would. Null when nothing is waiting for it, or it holds
   * all its slots by our count. Nothing is refused: the node just goes on
   * bidding on what it hears. `why`: 'standby' when a node on standby
   * (session 1.2) is handed what waits already.
   */
  async next (node: string, slots: number, freeSlots: number, why: 'next' | 'standby' = 'next'): Promise<Extract<BidOutcome, { type: 'award' }> | null> {
    if (this.count(node) >= slots) return null
    const outcome = await this.awardOldest(node, { type: 'bid', rid: 0, jobId: '', attempt: 1, freeSlots, slots }, why)
    if (outcome != null) {
      if (why === 'next') this.stats.chained++
      else this.stats.standby++
    }
    return outcome
  }

  /**
   * Awards one open attempt to a node waiting on standby (session 1.2),
   * without an auction: the attempt was never announced, so no node is
   * bidding on it. `busy`: a round or an award in flight has it already,
   * and settles it; `full`: the node holds all its slots by our count.
   * Otherwise the store's conditional write decides, as for any award.
   */
  async direct (node: string, job: { jobId: string, attempt: number }, slots: number, freeSlots: number): Promise<BidOutcome | 'busy' | 'full'> {
    if (this.count(node) >= slots) return 'full'
    const outcome = await this.claim(node, { type: 'bid', rid: 0, jobId: job.jobId, attempt: job.attempt, freeSlots, slots }, 'standby')
    if (outcome !== 'busy' && outcome.type === 'award') this.stats.standby++
    return outcome
  }

  /**
   * Awards the node the oldest open attempt it can run (bounded tries; each
   * is the store's conditional write, so a race still has exactly one
   * winner), or null.
   */
  private async awardOldest (node: string, bid: Bid, why: 'counter-offer' | 'next' | 'standby'): Promise<Extract<BidOutcome, { type: 'award' }> | null> {
    const offers = this.options.counterOffers?.(node, (jobId, attempt) => this.rounds.has(`${jobId}/${attempt}`) || this.decided.has(`${jobId}/${attempt}`), why) ?? []
    for (const offer of offers.slice(0, 3)) {
      if (this.count(node) >= bid.slots) break
      const outcome = await this.claim(node, { ...bid, jobId: offer.jobId, attempt: offer.attempt }, why)
      if (outcome === 'busy') continue
      if (outcome.type === 'award') return outcome
      if (outcome.reason === 'taken' || outcome.reason === 'cancelled') this.options.onNotOpen?.(offer.jobId)
    }
    return null
  }

  /**
   * An award without an auction (counter-offer, next, standby) of the bid's
   * attempt: `busy` when a round or an award in flight has it. As after an
   * auction, only a lost race settles the attempt.
   */
  private async claim (node: string, bid: Bid, how: 'counter-offer' | 'next' | 'standby'): Promise<BidOutcome | 'busy'> {
    const key = `${bid.jobId}/${bid.attempt}`
    if (this.rounds.has(key) || this.decided.has(key)) return 'busy'
    this.decided.set(key, this.options.clock.now() + this.decidedTtlMs)
    this.hold(node, key)
    const outcome = await this.commit(node, bid, 0, how)
    if (outcome.type === 'refuse' && outcome.reason !== 'taken' && outcome.reason !== 'cancelled') this.decided.delete(key)
    return outcome
  }

  private async commit (node: string, bid: Bid, bidCount: number, how: 'auction' | 'counter-offer' | 'next' | 'standby'): Promise<BidOutcome> {
    const { jobId, attempt } = bid
    try {
      const spec = await this.options.specOf(jobId)
      if (spec == null) throw new NotFoundError('job', jobId)
      const token = newFencingToken()
      const record = await this.options.store.award({
        jobId,
        attempt,
        node,
        token,
        now: this.options.clock.now(),
        leaseMs: this.leaseMs,
        detail: how === 'counter-offer'
          ? { bids: 0, counterOffer: true, reason: 'the node lost another auction with a free slot; oldest open job it can run', freeSlots: bid.freeSlots, slots: bid.slots }
          : how === 'next'
            ? { bids: 0, next: true, reason: 'the node reported a result and asked for its next job; oldest open job it can run', freeSlots: bid.freeSlots, slots: bid.slots }
            : how === 'standby'
              ? { bids: 0, standby: true, reason: 'a node was waiting on standby with a free slot; awarded before any announcement', freeSlots: bid.freeSlots, slots: bid.slots }
              : { bids: bidCount, freeSlots: bid.freeSlots, slots: bid.slots }
      })
      this.stats.awards++
      return { type: 'award', token, spec, attempt: record, counterOffer: how === 'counter-offer' || how === 'next' }
    } catch (err) {
      this.release(node, jobId, attempt)
      if (err instanceof ConflictError) {
        this.stats.lostRaces++
        return this.refuse(err.currentState === 'cancelled' ? 'cancelled' : 'taken')
      }
      if (err instanceof NotFoundError) return this.refuse('unknown-job')
      throw err
    }
  }

  private sweep (now: number): void {
    if (now < this.sweepAt) return
    this.sweepAt = now + 1_000
    for (const [key, expires] of this.decided) {
      if (expires <= now) this.decided.delete(key)
    }
  }
}
