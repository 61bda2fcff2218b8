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
  /**
   * Open attempts a losing bidder could take instead (a counter-offer), so a
   * node with a free slot gets work from one round trip whenever work is
   * waiting. @default () => []
   */
  /** A counter-offered attempt turned out not to be open any more. */
  onNotOpen?: (jobId: string) => void
  counterOffers?: (node: string, isOpenRound: (jobId: string, attempt: number) => boolean) => Array<{ jobId: string, attempt: number }>
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

export class Auction {
  private readonly rounds = new Map<string, Round>()
  private readonly decided = new Map<string, number>()
  /** Awards per node not yet finished: guards against a node bidding past its slots. */
  private readonly active = new Map<string, number>()
  private readonly bidWindowMs: number
  private readonly leaseMs: number
  private readonly decidedTtlMs: number
  private sweepAt = 0
  /** Counters for metrics and benchmarks. */
  readonly stats = { bids: 0, awards: 0, refusals: 0, lostRaces: 0, counterOffers: 0 }

  constructor (private readonly options: AuctionOptions) {
    this.bidWindowMs = options.bidWindowMs ?? 8
    this.leaseMs = options.leaseMs ?? 30_000
    this.decidedTtlMs = options.decidedTtlMs ?? 30_000
  }

  /** Handles one bid; resolves with the award or the reason for refusal. */
  async bid (node: string, bid: Bid): Promise<BidOutcome> {
    this.stats.bids++
    const key = `${bid.jobId}/${bid.attempt}`
    if ((this.active.get(node) ?? 0) >= bid.slots) return this.refuse('overloaded')
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

  /** The node finished (or lost) an attempt: frees its slot in our accounting. */
  release (node: string): void {
    const n = (this.active.get(node) ?? 0) - 1
    if (n <= 0) this.active.delete(node)
    else this.active.set(node, n)
  }

  /** Awards currently counted against a node. */
  activeOn (node: string): number {
    return this.active.get(node) ?? 0
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
    const eligible = round.bids.filter(b => (this.active.get(b.node) ?? 0) < b.bid.slots)
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
    this.active.set(winner.node, (this.active.get(winner.node) ?? 0) + 1)
    this.commit(winner.node, winner.bid, round.bids.length, false).then((outcome) => {
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
   * attempt it can run instead, if any (bounded tries; each is the store's
   * conditional write, so a race still has exactly one winner).
   */
  private async counterOffer (node: string, bid: Bid): Promise<BidOutcome> {
    const offers = this.options.counterOffers?.(node, (jobId, attempt) => this.rounds.has(`${jobId}/${attempt}`) || this.decided.has(`${jobId}/${attempt}`)) ?? []
    for (const offer of offers.slice(0, 3)) {
      if ((this.active.get(node) ?? 0) >= bid.slots) break
      const key = `${offer.jobId}/${offer.attempt}`
      if (this.rounds.has(key) || this.decided.has(key)) continue
      this.decided.set(key, this.options.clock.now() + this.decidedTtlMs)
      this.active.set(node, (this.active.get(node) ?? 0) + 1)
      const outcome = await this.commit(node, { ...bid, jobId: offer.jobId, attempt: offer.attempt }, 1, true)
      if (outcome.type === 'award') {
        this.stats.counterOffers++
        return outcome
      }
      if (outcome.reason !== 'taken' && outcome.reason !== 'cancelled') this.decided.delete(key)
      else this.options.onNotOpen?.(offer.jobId)
    }
    return this.refuse('taken')
  }

  private async commit (node: string, bid: Bid, bidCount: number, counterOffer: boolean): Promise<BidOutcome> {
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
        detail: counterOffer
          ? { bids: 0, counterOffer: true, reason: 'the node lost another auction with a free slot; oldest open job it can run', freeSlots: bid.freeSlots, slots: bid.slots }
          : { bids: bidCount, freeSlots: bid.freeSlots, slots: bid.slots }
      })
      this.stats.awards++
      return { type: 'award', token, spec, attempt: record, counterOffer }
    } catch (err) {
      this.release(node)
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
