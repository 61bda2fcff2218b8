/**
 * Standing bids (session 1.2): idle nodes wait on `standby` requests, and a
 * new job that fits one of them is awarded to it straight away instead of
 * being announced on gossip.
 *
 * Why: with the mesh idle, every announcement is decoded and its signature
 * checked by every node, and the idle ones all bid. On one machine that
 * cost grows with the number of nodes and throughput fell as nodes were
 * added (docs/performance.md). A node that is waiting anyway has bid on
 * any job that fits it in advance; awarding it one costs one store write
 * and one frame, whatever the size of the mesh.
 *
 * Awards made here are ordinary awards: the auction's conditional store
 * write decides, with the same fencing token, lease and accounting. Jobs
 * that find no waiting node that fits go to gossip as before.
 */
import type { AnnouncedJob, CoordinatorFrame, NextAward, NodeCapacity } from '../protocol/schemas.js'
import { mismatch } from '../protocol/matching.js'
import type { Logger } from '../common/log.js'
import { errorMessage } from '../common/errors.js'
import type { Auction, BidOutcome } from './auction.js'

/** One waiting standby request. */
interface Waiter {
  peerId: string
  rid: number
  since: number
  timer: NodeJS.Timeout
  /** Sends the answer on the node's session; false when it could not be sent. */
  reply: (frame: CoordinatorFrame) => Promise<boolean>
  /** Whether the session it came on is still open. */
  alive: () => boolean
}

export interface StandbyPoolOptions {
  auction: Pick<Auction, 'direct' | 'activeOn'>
  log: Logger
  /** A node's declared capacity (hello, renew), or undefined for a node we do not know. */
  capacityOf: (peerId: string) => NodeCapacity | undefined
  /**
   * Completes an award the auction committed (announcer bookkeeping, input
   * URLs, secrets); null when it could not, and the attempt went back.
   */
  grant: (peerId: string, outcome: Extract<BidOutcome, { type: 'award' }>) => Promise<NextAward | null>
  /** Longest wait this coordinator grants, whatever the node asked, in ms. @default 30000 */
  maxWaitMs?: number
  /** Monotonic time for ordering, in ms. @default performance.now */
  now?: () => number
}

export class StandbyPool {
  /** Waiting requests per node, oldest first. */
  private readonly waiting = new Map<string, Waiter[]>()
  readonly stats = { standbys: 0, placed: 0, served: 0, expired: 0, withdrawn: 0, replaced: 0, lostRaces: 0, grantFailures: 0, replyFailures: 0 }
  private readonly now: () => number

  constructor (private readonly options: StandbyPoolOptions) {
    this.now = options.now ?? (() => performance.now())
  }

  /** Standby requests waiting now. */
  get size (): number {
    let n = 0
    for (const list of this.waiting.values()) n += list.length
    return n
  }

  /** Nodes with at least one standby waiting. */
  get nodes (): number {
    return this.waiting.size
  }

  /**
   * Keeps a node's standby request until a job is placed on it, its wait
   * ends or the node withdraws. A node may have as many waiting as it has
   * slots; one more replaces (answers) its oldest.
   */
  add (peerId: string, rid: number, waitMs: number, reply: Waiter['reply'], alive: Waiter['alive']): void {
    this.stats.standbys++
    let list = this.waiting.get(peerId)
    if (list == null) { list = []; this.waiting.set(peerId, list) }
    const slots = this.options.capacityOf(peerId)?.slots ?? 1
    while (list.length >= slots) {
      this.stats.replaced++
      this.answerEmpty(list.shift()!)
    }
    const ms = Math.min(waitMs, this.options.maxWaitMs ?? 30_000)
    const waiter: Waiter = {
      peerId, rid, since: this.now(), reply, alive,
      timer: setTimeout(() => {
        if (this.remove(waiter)) { this.stats.expired++; this.answerEmpty(waiter) }
      }, ms)
    }
    waiter.timer.unref()
    list.push(waiter)
  }

  /** The node withdrew: answers each of its waiting requests empty. Returns how many. */
  withdraw (peerId: string): number {
    const list = this.waiting.get(peerId) ?? []
    this.waiting.delete(peerId)
    for (const w of list) { clearTimeout(w.timer); this.answerEmpty(w) }
    this.stats.withdrawn += list.length
    return list.length
  }

  /** The node's session ended: its requests die with it (nothing can be answered). */
  drop (peerId: string): void {
    for (const w of this.waiting.get(peerId) ?? []) clearTimeout(w.timer)
    this.waiting.delete(peerId)
  }

  /** Ends every wait (coordinator stopping), answering each empty. */
  close (): void {
    for (const peerId of [...this.waiting.keys()]) this.withdraw(peerId)
  }

  /**
   * Awards as many of `jobs` as fit waiting nodes, each to the fitting node
   * with the largest free share of its slots (the auction's rule; ties: the
   * one waiting longest). Returns the jobs still to announce. Jobs another
   * award already has (`busy`, a lost race) are settled and not returned.
   */
  async place (jobs: AnnouncedJob[]): Promise<AnnouncedJob[]> {
    if (this.waiting.size === 0 || jobs.length === 0) return jobs
    const left: AnnouncedJob[] = []
    const pending: Array<Promise<void>> = []
    for (const job of jobs) {
      const waiter = this.pick(job)
      if (waiter == null) { left.push(job); continue }
      pending.push(this.award(waiter, job).then((announce) => { if (announce) left.push(job) }))
    }
    await Promise.all(pending)
    return left
  }

  /** Takes the best waiting request for a job off the pool, or null. */
  private pick (job: AnnouncedJob): Waiter | null {
    let best: { waiter: Waiter, share: number } | null = null
    for (const [peerId, list] of this.waiting) {
      // A session that ended while its node's request was out for an award: never place on it.
      while (list.length > 0 && !list[0]!.alive()) clearTimeout(list.shift()!.timer)
      if (list.length === 0) { this.waiting.delete(peerId); continue }
      const capacity = this.options.capacityOf(peerId)
      if (capacity == null || mismatch(capacity, job) != null) continue
      const share = (capacity.slots - this.options.auction.activeOn(peerId)) / capacity.slots
      if (share <= 0) continue
      const waiter = list[0]!
      if (best == null || share > best.share || (share === best.share && waiter.since < best.waiter.since)) best = { waiter, share }
    }
    if (best == null) return null
    this.remove(best.waiter)
    return best.waiter
  }

  /** Awards the job on the waiter's request. Resolves true when the job still needs announcing. */
  private async award (waiter: Waiter, job: AnnouncedJob): Promise<boolean> {
    const capacity = this.options.capacityOf(waiter.peerId)
    if (capacity == null) { this.putBack(waiter); return true }
    let outcome: Awaited<ReturnType<Auction['direct']>>
    try {
      outcome = await this.options.auction.direct(waiter.peerId, job, capacity.slots, Math.max(0, capacity.slots - this.options.auction.activeOn(waiter.peerId)))
    } catch (err) {
      this.options.log.warn('standby award failed; the job is announced instead', { jobId: job.jobId, error: errorMessage(err) })
      this.putBack(waiter)
      return true
    }
    if (outcome === 'full') { this.putBack(waiter); return true }
    // Whoever has it decides it: announcing it too would only draw bids that lose.
    if (outcome === 'busy') { this.putBack(waiter); return false }
    if (outcome.type === 'refuse') {
      this.putBack(waiter)
      if (outcome.reason === 'taken' || outcome.reason === 'cancelled') { this.stats.lostRaces++; return false }
      return true
    }
    const award = await this.options.grant(waiter.peerId, outcome)
    if (award == null) {
      // The attempt went back (recovery requeues it); the node is still waiting.
      this.stats.grantFailures++
      this.putBack(waiter)
      return false
    }
    this.stats.placed++
    await this.answerAward(waiter, award)
    return false
  }

  /** Answers a standby taken off the pool with its award. */
  private async answerAward (waiter: Waiter, award: NextAward): Promise<void> {
    clearTimeout(waiter.timer)
    if (!await waiter.reply({ type: 'award', rid: waiter.rid, ...award })) {
      // The session broke under the award: the lease runs out and the job is rescheduled, as after any lost award.
      this.stats.replyFailures++
      this.options.log.warn('a standby award could not be sent; the job waits for its lease to run out', { peerId: waiter.peerId, jobId: award.jobId })
    }
  }

  /**
   * The node's slot freed (a result without a next attempt): one of its
   * waiting standbys may now take work that was announced while the node
   * was full. `award` picks it (null: nothing fits); the standby is answered
   * with it, or goes back to waiting.
   */
  async serve (peerId: string, award: () => Promise<NextAward | null>): Promise<boolean> {
    const list = this.waiting.get(peerId)
    const waiter = list?.[0]
    if (waiter == null || !waiter.alive()) return false
    this.remove(waiter)
    let granted: NextAward | null = null
    try {
      granted = await award()
    } finally {
      if (granted == null) this.putBack(waiter)
    }
    if (granted == null) return false
    this.stats.served++
    await this.answerAward(waiter, granted)
    return true
  }

  private putBack (waiter: Waiter): void {
    if (!waiter.alive()) { clearTimeout(waiter.timer); return }
    let list = this.waiting.get(waiter.peerId)
    if (list == null) { list = []; this.waiting.set(waiter.peerId, list) }
    list.unshift(waiter)
  }

  private remove (waiter: Waiter): boolean {
    const list = this.waiting.get(waiter.peerId)
    const i = list?.indexOf(waiter) ?? -1
    if (list == null || i < 0) return false
    list.splice(i, 1)
    if (list.length === 0) this.waiting.delete(waiter.peerId)
    return true
  }

  private answerEmpty (waiter: Waiter): void {
    clearTimeout(waiter.timer)
    void waiter.reply({ type: 'open', rid: waiter.rid, jobs: [] }).then((sent) => { if (!sent) this.stats.replyFailures++ })
  }
}
