import { describe, it, expect } from 'vitest'
import { Candidates, rendezvousHash, type CandidatesOptions } from '../../node/candidates.js'
import type { AnnouncedJob } from '../../protocol/schemas.js'

const SELF_A = '12D3KooWSelfAAAAabcdefgh'
const SELF_B = '12D3KooWSelfBBBBabcdefgh'
const T0 = 1_000_000
const all = (): boolean => true

/** A deterministic job id for index i. */
const jobId = (i: number): string => `00000000-0000-7000-8000-${i.toString(16).padStart(12, '0')}`
const job = (i: number, attempt = 1): AnnouncedJob =>
  ({ jobId: jobId(i), attempt, resources: { cpus: 1, memoryMb: 256 }, labels: {}, timeoutSeconds: 60 })
const jobs = (from: number, n: number): AnnouncedJob[] => Array.from({ length: n }, (_, k) => job(from + k))

/** The rendezvous hash the ordering is documented to use. */
const rank = (self: string, id: string): number => rendezvousHash(self, id)

function drain (c: Candidates, now = T0, accept: (j: AnnouncedJob) => boolean = all): string[] {
  const out: string[] = []
  for (let j = c.take(now, accept); j != null; j = c.take(now, accept)) out.push(`${j.job.jobId}/${j.job.attempt}`)
  return out
}
const ids = (list: AnnouncedJob[]): string[] => list.map(j => `${j.jobId}/${j.attempt}`)
const make = (options: Partial<CandidatesOptions> = {}): Candidates => new Candidates({ self: SELF_A, ...options })

describe('Candidates', () => {
  it('returns null when empty', () => {
    expect(make().take(T0, all)).toBeNull()
  })

  it('takes every job of an earlier batch before any job of a later one', () => {
    const c = make()
    const first = jobs(0, 20)
    const second = jobs(100, 20)
    // Precondition: some later job outranks some earlier one by hash alone, so only batch order can explain the result.
    const minSecond = Math.min(...second.map(j => rank(SELF_A, j.jobId)))
    expect(first.some(j => rank(SELF_A, j.jobId) > minSecond)).toBe(true)
    c.add(first, T0)
    c.add(second, T0)
    const order = drain(c)
    expect(order).toHaveLength(40)
    expect(new Set(order.slice(0, 20))).toEqual(new Set(ids(first)))
    expect(new Set(order.slice(20))).toEqual(new Set(ids(second)))
  })

  it('orders a batch by the rendezvous hash of (self, job)', () => {
    const c = make()
    const batch = jobs(0, 100)
    c.add(batch, T0)
    const expected = [...batch].sort((x, y) => rank(SELF_A, x.jobId) - rank(SELF_A, y.jobId))
    expect(drain(c)).toEqual(ids(expected))
  })

  it('two nodes order the same batch differently; one node always the same way', () => {
    const order = (self: string): string[] => {
      const c = new Candidates({ self })
      c.add(jobs(0, 100), T0)
      return drain(c)
    }
    const a = order(SELF_A)
    const b = order(SELF_B)
    expect(new Set(a)).toEqual(new Set(b))
    expect(a).not.toEqual(b)
    expect(a[0]).not.toBe(b[0])
    expect(order(SELF_A)).toEqual(a)
  })

  it('spreads the first pick of many nodes over the batch', () => {
    const firstPicks = new Set<string>()
    for (let n = 0; n < 20; n++) {
      const c = new Candidates({ self: `12D3KooWNode${String(n).padStart(4, '0')}abcdefgh` })
      c.add(jobs(0, 100), T0)
      firstPicks.add(c.take(T0, all)!.job.jobId)
    }
    expect(firstPicks.size).toBeGreaterThanOrEqual(10)
  })

  it('the rendezvous hash spreads sequential job ids evenly (each node\'s first pick is near uniform)', () => {
    // 40 nodes, 200 batches of 16 sequential ids: count how often each position in the batch is a node's first pick.
    const counts = new Array<number>(16).fill(0)
    for (let n = 0; n < 40; n++) {
      const self = `12D3KooWNode${String(n).padStart(4, '0')}abcdefgh`
      for (let b = 0; b < 200; b++) {
        let best = 0
        for (let k = 1; k < 16; k++) if (rendezvousHash(self, jobId(b * 16 + k)) < rendezvousHash(self, jobId(b * 16 + best))) best = k
        counts[best]!++
      }
    }
    // 8,000 picks over 16 positions: 500 each expected; a poor mix (e.g. FNV without the final avalanche on ids differing at the end) leaves positions far off.
    for (const c of counts) expect(c).toBeGreaterThan(400)
    for (const c of counts) expect(c).toBeLessThan(600)
  })

  it('keeps a job announced again in its original batch, once', () => {
    const c = make()
    c.add([job(1)], T0)
    c.add([job(2)], T0)
    c.add([job(1), job(3)], T0)
    expect(c.size).toBe(3)
    const order = drain(c)
    expect(order[0]).toBe(`${jobId(1)}/1`)
    expect(order).toHaveLength(3)
  })

  it('treats attempts of one job as separate candidates', () => {
    const c = make()
    c.add([job(1, 1), job(1, 2)], T0)
    expect(c.size).toBe(2)
    expect(new Set(drain(c))).toEqual(new Set([`${jobId(1)}/1`, `${jobId(1)}/2`]))
  })

  it('remove() drops one attempt; removing an unknown one is a no-op', () => {
    const c = make()
    c.add([job(1), job(2), job(3)], T0)
    c.remove(jobId(2), 1)
    c.remove(jobId(3), 2)
    c.remove(jobId(99), 1)
    expect(c.size).toBe(2)
    expect(new Set(drain(c))).toEqual(new Set([`${jobId(1)}/1`, `${jobId(3)}/1`]))
  })

  it('drops a candidate older than ttlMs', () => {
    const c = make({ ttlMs: 1_000 })
    c.add([job(1)], T0)
    expect(c.take(T0 + 1_000, all)?.job.jobId).toBe(jobId(1))
    c.add([job(2)], T0)
    c.add([job(3)], T0 + 500)
    expect(c.take(T0 + 1_001, all)?.job.jobId).toBe(jobId(3))
    expect(c.size).toBe(0)
    expect(c.take(T0 + 1_001, all)).toBeNull()
  })

  it('uses a 60 s ttl by default', () => {
    const c = make()
    c.add([job(1), job(2)], T0)
    expect(c.take(T0 + 60_000, all)).not.toBeNull()
    expect(c.take(T0 + 60_001, all)).toBeNull()
  })

  it('a re-announcement brings back a candidate that expired but was not yet swept', () => {
    const c = make({ ttlMs: 1_000 })
    c.add([job(1)], T0)
    c.add([job(1)], T0 + 1_500) // re-announced after the ttl, before any take() swept it
    expect(c.take(T0 + 1_600, all)?.job.jobId).toBe(jobId(1))
  })

  it('a re-announcement within the ttl does not reset its age', () => {
    const c = make({ ttlMs: 1_000 })
    c.add([job(1)], T0)
    c.add([job(1)], T0 + 500)
    expect(c.take(T0 + 1_001, all)).toBeNull()
  })

  it('drops the candidates accept() rejects, and skips to the next', () => {
    const c = make()
    c.add(jobs(0, 10), T0)
    const rejected = new Set([jobId(0), jobId(1), jobId(2)])
    const seen: string[] = []
    const accept = (j: AnnouncedJob): boolean => { seen.push(j.jobId); return !rejected.has(j.jobId) }
    const got = c.take(T0, accept)
    expect(got).not.toBeNull()
    expect(rejected.has(got!.jobId)).toBe(false)
    expect(seen.length).toBeGreaterThan(0)
    // The rejected ones are gone for good, even for an accept-all take.
    const rest = drain(c)
    expect(rest).toHaveLength(6)
    for (const id of rejected) expect(rest).not.toContain(`${id}/1`)
    // Rejecting everything empties the set.
    c.add(jobs(20, 5), T0)
    expect(c.take(T0, () => false)).toBeNull()
    expect(c.size).toBe(0)
  })

  it('keeps at most max candidates, dropping the oldest', () => {
    const c = make({ max: 3 })
    c.add(jobs(0, 2), T0)
    c.add(jobs(10, 3), T0)
    expect(c.size).toBe(3)
    expect(new Set(drain(c))).toEqual(new Set(ids(jobs(10, 3))))
    c.add(jobs(20, 5), T0)
    expect(c.size).toBe(3)
    expect(new Set(drain(c))).toEqual(new Set(ids(jobs(22, 3))))
  })
})
