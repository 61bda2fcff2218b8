import { describe, it, expect, beforeEach, afterEach, vi } from 'vitest'
import { Auction, type AuctionOptions, type BidOutcome } from '../../coordinator/auction.js'
import { SqliteStore } from '../../coordinator/store/sqlite.js'
import { systemClock } from '../../common/clock.js'
import { silentLogger } from '../../common/log.js'
import { uuidv7 } from '../../common/ids.js'
import { decodeJobSpec } from '../../protocol/codec.js'
import type { Bid } from '../../protocol/schemas.js'

const spec = decodeJobSpec({ command: ['true'] })
const node = (i: number): string => `12D3KooWNode${String(i).padStart(4, '0')}abcdefgh`

let store: SqliteStore
const auctions: Auction[] = []

beforeEach(async () => {
  store = SqliteStore.open({ path: ':memory:' })
  await store.migrate()
})

afterEach(async () => {
  vi.useRealTimers()
  for (const a of auctions.splice(0)) a.stop()
  await store.close()
})

function auction (options: Partial<AuctionOptions> = {}): Auction {
  const a = new Auction({
    store, clock: systemClock, log: silentLogger,
    specOf: async (id) => (await store.getJob(id))?.spec ?? null,
    ...options
  })
  auctions.push(a)
  return a
}

async function newJob (): Promise<string> {
  const now = Date.now()
  const id = uuidv7(now)
  await store.createJob({ id, spec, now })
  return id
}

const bid = (jobId: string, freeSlots: number, slots: number, attempt = 1): Bid =>
  ({ type: 'bid', rid: 0, jobId, attempt, freeSlots, slots })

const award = (o: BidOutcome): Extract<BidOutcome, { type: 'award' }> => {
  if (o.type !== 'award') throw new Error(`expected an award, got refuse ${o.reason}`)
  return o
}

/** Resolves with the promise's value, or 'timeout' after `ms` of real time. */
async function within<T> (p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<'timeout'>(resolve => { timer = setTimeout(() => { resolve('timeout') }, ms) })
  try {
    return await Promise.race([p, timeout])
  } finally {
    clearTimeout(timer)
  }
}

describe('Auction', () => {
  it('awards an idle node at once, without waiting for the window', async () => {
    const a = auction({ bidWindowMs: 5_000 })
    const jobId = await newJob()
    const outcome = await within(a.bid(node(1), bid(jobId, 4, 4)), 1_000)
    expect(outcome).not.toBe('timeout')
    const won = award(outcome as BidOutcome)
    expect(won.token).toMatch(/^[0-9a-f]{32}$/)
    expect(won.spec).toEqual(spec)
    expect(won.attempt).toMatchObject({ jobId, number: 1, node: node(1), state: 'claimed', token: won.token })
    const job = await store.getJob(jobId)
    expect(job?.state).toBe('claimed')
    expect(job?.attempts.map(x => [x.node, x.token])).toEqual([[node(1), won.token]])
    expect(a.activeOn(node(1))).toBe(1)
  })

  it('waits the window for busy bids, then awards the largest free fraction', async () => {
    // Only the bid window's timers are faked: the store commits its writes on setImmediate (group commit).
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] })
    const a = auction({ bidWindowMs: 50 })
    const jobId = await newJob()
    const settled: string[] = []
    const track = (n: number, p: Promise<BidOutcome>): Promise<BidOutcome> => p.then(o => { settled.push(node(n)); return o })
    const pending = [
      track(1, a.bid(node(1), bid(jobId, 1, 4))),
      track(2, a.bid(node(2), bid(jobId, 3, 4))),
      track(3, a.bid(node(3), bid(jobId, 2, 4)))
    ]
    await vi.advanceTimersByTimeAsync(49)
    expect(settled).toEqual([])
    expect((await store.getJob(jobId))?.state).toBe('announced')
    await vi.advanceTimersByTimeAsync(1)
    const [o1, o2, o3] = await Promise.all(pending)
    expect(o1).toEqual({ type: 'refuse', reason: 'taken' })
    expect(award(o2!).attempt.node).toBe(node(2))
    expect(o3).toEqual({ type: 'refuse', reason: 'taken' })
    expect((await store.getJob(jobId))?.attempts.map(x => x.node)).toEqual([node(2)])
  })

  it('breaks a tie on free fraction by most free slots', async () => {
    const a = auction({ bidWindowMs: 20 })
    const jobId = await newJob()
    const [small, big] = await Promise.all([a.bid(node(1), bid(jobId, 1, 2)), a.bid(node(2), bid(jobId, 2, 4))])
    expect(small).toEqual({ type: 'refuse', reason: 'taken' })
    expect(award(big!).attempt.node).toBe(node(2))
  })

  it('an idle bid closes a window opened by a busy bid, and wins it', async () => {
    const a = auction({ bidWindowMs: 5_000 })
    const jobId = await newJob()
    const outcomes = await within(Promise.all([a.bid(node(1), bid(jobId, 3, 4)), a.bid(node(2), bid(jobId, 2, 2))]), 1_000)
    expect(outcomes).not.toBe('timeout')
    const [busy, idle] = outcomes as BidOutcome[]
    expect(busy).toEqual({ type: 'refuse', reason: 'taken' })
    expect(award(idle!).attempt.node).toBe(node(2))
  })

  it('a losing bidder is counter-offered the open job it is handed, not the one it lost', async () => {
    const lost = await newJob()
    const open = await newJob()
    const a = auction({ bidWindowMs: 8, counterOffers: () => [{ jobId: open, attempt: 1 }] })
    const [first, second] = await Promise.all([a.bid(node(1), bid(lost, 4, 4)), a.bid(node(2), bid(lost, 4, 4))])
    const won = award(first!)
    const offered = award(second!)
    expect(won.attempt).toMatchObject({ jobId: lost, node: node(1) })
    expect(offered.attempt).toMatchObject({ jobId: open, number: 1, node: node(2) })
    expect(offered.counterOffer).toBe(true)
    expect((await store.getJob(open))?.attempts.map(x => x.node)).toEqual([node(2)])
    expect(a.stats.counterOffers).toBe(1)
  })

  it('next(): awards the oldest open job offered, and nothing to a node whose slots are all held', async () => {
    const jobs = [await newJob(), await newJob()]
    const a = auction({ counterOffers: () => jobs.map(jobId => ({ jobId, attempt: 1 })) })
    const first = await a.next(node(1), 1, 1)
    expect(first?.attempt).toMatchObject({ jobId: jobs[0], node: node(1) })
    // One slot, now held by our count.
    expect(await a.next(node(1), 1, 0)).toBeNull()
    a.release(node(1), jobs[0]!, 1)
    const second = await a.next(node(1), 1, 1)
    expect(second?.attempt).toMatchObject({ jobId: jobs[1], node: node(1) })
    expect(a.stats.chained).toBe(2)
    const events = (await store.listEvents(jobs[1]!)).filter(e => e.type === 'awarded')
    expect(events[0]?.detail).toMatchObject({ next: true, bids: 0 })
  })

  it('direct(): awards the given job to a node on standby; busy while a round has it, full past its slots; a bid after it loses', async () => {
    const [j1, j2, j3] = [await newJob(), await newJob(), await newJob()]
    const a = auction({ bidWindowMs: 50 })
    const won = await a.direct(node(1), { jobId: j1, attempt: 1 }, 2, 2)
    expect(won).not.toBe('busy')
    expect(won).not.toBe('full')
    expect(award(won as BidOutcome).attempt).toMatchObject({ jobId: j1, node: node(1) })
    expect(a.stats.standby).toBe(1)
    expect((await store.listEvents(j1)).find(e => e.type === 'awarded')?.detail).toMatchObject({ standby: true, bids: 0 })
    // The job was never announced, but a late bid on it must still lose.
    expect(await a.bid(node(2), bid(j1, 1, 1))).toEqual({ type: 'refuse', reason: 'taken' })
    // A busy bid opens a round on j2: direct() leaves it to the round.
    const round = a.bid(node(3), bid(j2, 1, 2))
    expect(await a.direct(node(1), { jobId: j2, attempt: 1 }, 2, 1)).toBe('busy')
    expect(award(await round).attempt).toMatchObject({ jobId: j2, node: node(3) })
    // Node 1 holds one of two slots; a second direct award fills it, a third finds it full.
    expect(award(await a.direct(node(1), { jobId: j3, attempt: 1 }, 2, 1) as BidOutcome).attempt.jobId).toBe(j3)
    const j4 = await newJob()
    expect(await a.direct(node(1), { jobId: j4, attempt: 1 }, 2, 0)).toBe('full')
    expect((await store.getJob(j4))?.state).toBe('announced')
  })

  it('direct(): a cancelled job is refused and settled; the node is not charged a slot', async () => {
    const j = await newJob()
    await store.cancel({ jobId: j, now: Date.now(), actor: 'http', reason: 'test' })
    const a = auction()
    expect(await a.direct(node(1), { jobId: j, attempt: 1 }, 1, 1)).toEqual({ type: 'refuse', reason: 'cancelled' })
    expect(a.activeOn(node(1))).toBe(0)
  })

  it('20 concurrent idle bids: exactly one award, 19 refusals, one attempt stored', async () => {
    const a = auction({ bidWindowMs: 8 })
    const jobId = await newJob()
    const outcomes = await Promise.all(Array.from({ length: 20 }, (_, i) => a.bid(node(i), bid(jobId, 4, 4))))
    const awards = outcomes.filter(o => o.type === 'award')
    expect(awards).toHaveLength(1)
    expect(outcomes.filter(o => o.type === 'refuse' && o.reason === 'taken')).toHaveLength(19)
    const job = await store.getJob(jobId)
    expect(job?.attempts).toHaveLength(1)
    expect(job?.attempts[0]?.token).toBe(award(awards[0]!).token)
    expect((await store.listEvents(jobId)).filter(e => e.type === 'awarded')).toHaveLength(1)
    const counted = Array.from({ length: 20 }, (_, i) => a.activeOn(node(i)))
    expect(counted.reduce((s, n) => s + n, 0)).toBe(1)
  })

  it('two auctions (two coordinators) on one store still award once', async () => {
    const a = auction()
    const b = auction()
    const jobId = await newJob()
    const outcomes = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).bid(node(i), bid(jobId, 4, 4))))
    expect(outcomes.filter(o => o.type === 'award')).toHaveLength(1)
    expect(outcomes.filter(o => o.type === 'refuse' && o.reason === 'taken')).toHaveLength(19)
    expect((await store.getJob(jobId))?.attempts).toHaveLength(1)
    // The loser's winner slot was given back.
    expect(a.activeOn(node(0)) + b.activeOn(node(1))).toBe(1)
  })

  it('refuses a late bid after the decision as taken', async () => {
    const a = auction()
    const jobId = await newJob()
    award(await a.bid(node(1), bid(jobId, 4, 4)))
    expect(await a.bid(node(2), bid(jobId, 4, 4))).toEqual({ type: 'refuse', reason: 'taken' })
    expect(await a.bid(node(2), bid(jobId, 1, 4))).toEqual({ type: 'refuse', reason: 'taken' })
    expect(a.activeOn(node(2))).toBe(0)
    expect((await store.getJob(jobId))?.attempts).toHaveLength(1)
  })

  it('still refuses a late bid once the decision is forgotten: the store decides', async () => {
    let t = 1_000_000
    const a = auction({ clock: { now: () => t }, decidedTtlMs: 10 })
    const first = await newJob()
    const second = await newJob()
    award(await a.bid(node(1), bid(first, 4, 4)))
    t += 5_000
    award(await a.bid(node(1), bid(second, 4, 4))) // closing a round sweeps expired decisions
    expect(await a.bid(node(2), bid(first, 4, 4))).toEqual({ type: 'refuse', reason: 'taken' })
    expect(a.stats.lostRaces).toBe(1)
    expect(a.activeOn(node(2))).toBe(0)
    expect((await store.getJob(first))?.attempts.map(x => x.node)).toEqual([node(1)])
  })

  it('refuses a bid for a cancelled job without awarding it', async () => {
    const a = auction()
    const jobId = await newJob()
    await store.cancel({ jobId, now: Date.now(), actor: 'http', reason: 'test' })
    const outcome = await a.bid(node(1), bid(jobId, 4, 4))
    expect(outcome).toEqual({ type: 'refuse', reason: 'cancelled' })
    expect(a.activeOn(node(1))).toBe(0)
    const job = await store.getJob(jobId)
    expect(job?.state).toBe('cancelled')
    expect(job?.attempts).toEqual([])
  })

  it('refuses a bid for an unknown job, and does not remember it as decided', async () => {
    const a = auction()
    const jobId = uuidv7(Date.now())
    expect(await a.bid(node(1), bid(jobId, 4, 4))).toEqual({ type: 'refuse', reason: 'unknown-job' })
    expect(a.activeOn(node(1))).toBe(0)
    await store.createJob({ id: jobId, spec, now: Date.now() })
    expect(award(await a.bid(node(1), bid(jobId, 4, 4))).attempt.node).toBe(node(1))
  })

  it('refuses a node bidding beyond its slots as overloaded; release() frees it', async () => {
    const a = auction()
    const [j1, j2, j3] = [await newJob(), await newJob(), await newJob()]
    award(await a.bid(node(1), bid(j1, 2, 2)))
    award(await a.bid(node(1), bid(j2, 1, 2)))
    expect(a.activeOn(node(1))).toBe(2)
    expect(await a.bid(node(1), bid(j3, 2, 2))).toEqual({ type: 'refuse', reason: 'overloaded' })
    expect((await store.getJob(j3))?.state).toBe('announced')
    a.release(node(1), j1, 1)
    expect(a.activeOn(node(1))).toBe(1)
    award(await a.bid(node(1), bid(j3, 1, 2)))
    a.release(node(1), j2, 1)
    a.release(node(1), j3, 1)
    a.release(node(1), j3, 1) // releasing twice is harmless
    expect(a.activeOn(node(1))).toBe(0)
  })

  it('forgets awards the node says it does not hold once past the grace period', async () => {
    let now = 1_000_000
    const a = auction({ clock: { now: () => now } })
    const [j1, j2] = [await newJob(), await newJob()]
    award(await a.bid(node(1), bid(j1, 2, 2)))
    award(await a.bid(node(1), bid(j2, 1, 2)))
    a.syncHeld(node(1), [{ jobId: j1, attempt: 1 }], 5_000)
    expect(a.activeOn(node(1))).toBe(2) // j2's award may still be on its way
    now += 5_000
    a.syncHeld(node(1), [{ jobId: j1, attempt: 1 }], 5_000)
    expect(a.activeOn(node(1))).toBe(1)
  })

  it('stop() refuses bids still waiting in a window', async () => {
    const a = auction({ bidWindowMs: 60_000 })
    const jobId = await newJob()
    const pending = a.bid(node(1), bid(jobId, 1, 4))
    a.stop()
    expect(await within(pending, 1_000)).toEqual({ type: 'refuse', reason: 'not-open' })
    expect((await store.getJob(jobId))?.state).toBe('announced')
  })
})
