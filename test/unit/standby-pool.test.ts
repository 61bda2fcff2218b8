/**
 * The coordinator's pool of standing bids (session 1.2), with a real
 * Auction on an in-memory SQLite store: which waiting node gets a job, what
 * is left to announce, and how waits end (expiry, withdraw, replaced,
 * session gone).
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { Auction } from '../../coordinator/auction.js'
import { StandbyPool } from '../../coordinator/standby.js'
import { SqliteStore } from '../../coordinator/store/sqlite.js'
import { systemClock } from '../../common/clock.js'
import { silentLogger } from '../../common/log.js'
import { uuidv7 } from '../../common/ids.js'
import { decodeJobSpec } from '../../protocol/codec.js'
import type { AnnouncedJob, CoordinatorFrame, NodeCapacity } from '../../protocol/schemas.js'
import { until } from '../helpers/rogue.js'

const spec = decodeJobSpec({ command: ['true'] })
const node = (i: number): string => `12D3KooWNode${String(i).padStart(4, '0')}abcdefgh`
const cap = (slots: number, labels: Record<string, string> = {}): NodeCapacity =>
  ({ slots, freeSlots: slots, cpus: 4, memoryMb: 4096, labels, runtime: 'process', version: 'test' })

let store: SqliteStore
let auction: Auction
let pools: StandbyPool[] = []

beforeEach(async () => {
  store = SqliteStore.open({ path: ':memory:' })
  await store.migrate()
  auction = new Auction({ store, clock: systemClock, log: silentLogger, specOf: async id => (await store.getJob(id))?.spec ?? null })
})

afterEach(async () => {
  for (const p of pools) p.close()
  pools = []
  auction.stop()
  await store.close()
})

async function newJob (labels: Record<string, string> = {}): Promise<AnnouncedJob> {
  const now = Date.now()
  const id = uuidv7(now)
  await store.createJob({ id, spec: { ...spec, labels }, now })
  return { jobId: id, attempt: 1, resources: { cpus: 1, memoryMb: 256 }, labels, timeoutSeconds: 60 }
}

interface Answer { peerId: string, frame: CoordinatorFrame }

function pool (capacities: Map<string, NodeCapacity>, options: { maxWaitMs?: number, grantFails?: boolean } = {}): { p: StandbyPool, answers: Answer[], add: (peerId: string, rid: number, waitMs?: number, alive?: () => boolean) => void } {
  const answers: Answer[] = []
  const p = new StandbyPool({
    auction, log: silentLogger,
    capacityOf: id => capacities.get(id),
    grant: async (_peerId, outcome) => options.grantFails === true ? null : ({ jobId: outcome.attempt.jobId, attempt: outcome.attempt.number, token: outcome.token, spec: outcome.spec, inputs: [] }),
    ...(options.maxWaitMs != null ? { maxWaitMs: options.maxWaitMs } : {})
  })
  pools.push(p)
  const add = (peerId: string, rid: number, waitMs = 30_000, alive = () => true): void => {
    p.add(peerId, rid, waitMs, async (frame) => { answers.push({ peerId, frame }); return true }, alive)
  }
  return { p, answers, add }
}

const awarded = (answers: Answer[]): Array<[string, number, string]> =>
  answers.flatMap(a => a.frame.type === 'award' ? [[a.peerId, a.frame.rid, a.frame.jobId] as [string, number, string]] : [])

describe('StandbyPool', () => {
  it('awards a new job to a waiting node on its request, and leaves nothing to announce', async () => {
    const { p, answers, add } = pool(new Map([[node(1), cap(1)]]))
    add(node(1), 7)
    const job = await newJob()
    expect(await p.place([job])).toEqual([])
    expect(awarded(answers)).toEqual([[node(1), 7, job.jobId]])
    expect((await store.getJob(job.jobId))?.attempts[0]).toMatchObject({ node: node(1) })
    expect(p.size).toBe(0)
    expect(p.stats.placed).toBe(1)
  })

  it('returns the jobs no waiting node fits: none waiting, labels missing, or every slot held', async () => {
    const { p, answers, add } = pool(new Map([[node(1), cap(1, { gpu: 'no' })]]))
    const a = await newJob()
    expect(await p.place([a])).toEqual([a])
    add(node(1), 1)
    const b = await newJob({ gpu: 'yes' })
    expect(await p.place([b])).toEqual([b])
    // Node 1 holds its one slot by the auction's count (awarded elsewhere): nothing is placed on it.
    const c = await newJob()
    await auction.direct(node(1), { jobId: c.jobId, attempt: 1 }, 1, 1)
    const d = await newJob()
    expect(await p.place([d])).toEqual([d])
    expect(awarded(answers)).toEqual([])
    expect(p.size).toBe(1)
  })

  it('gives each job to the node with the largest free share, ties to the one waiting longest; one job per standby', async () => {
    const { p, answers, add } = pool(new Map([[node(1), cap(4)], [node(2), cap(4)], [node(3), cap(1)]]))
    add(node(2), 1)
    add(node(1), 1)
    add(node(1), 2)
    add(node(3), 1)
    // Job 0: all idle, node 2 waits longest. Job 1: nodes 1 and 3 idle, node 1 waits longer. Job 2: node 3 is idle,
    // node 1 has a slot held. Job 3: node 1's second standby. Job 4: nobody left.
    const jobs = [await newJob(), await newJob(), await newJob(), await newJob(), await newJob()]
    const left = await p.place(jobs)
    expect(left).toEqual([jobs[4]])
    const byJob = (x: [string, number, string], y: [string, number, string]): number => x[2].localeCompare(y[2])
    expect(awarded(answers).sort(byJob)).toEqual([
      [node(2), 1, jobs[0]!.jobId],
      [node(1), 1, jobs[1]!.jobId],
      [node(3), 1, jobs[2]!.jobId],
      [node(1), 2, jobs[3]!.jobId]
    ].sort(byJob))
  })

  it('a job someone else has (a lost race, a round in progress) is not announced, and the standby keeps waiting', async () => {
    const { p, answers, add } = pool(new Map([[node(1), cap(1)]]))
    add(node(1), 1)
    const taken = await newJob()
    await store.award({ jobId: taken.jobId, attempt: 1, node: node(9), token: 'f'.repeat(32), now: Date.now(), leaseMs: 10_000, detail: {} })
    expect(await p.place([taken])).toEqual([])
    expect(p.stats.lostRaces).toBe(1)
    expect(p.size).toBe(1)
    const bidOn = await newJob()
    const round = auction.bid(node(5), { type: 'bid', rid: 0, jobId: bidOn.jobId, attempt: 1, freeSlots: 1, slots: 2 })
    expect(await p.place([bidOn])).toEqual([])
    await round
    expect(awarded(answers)).toEqual([])
    expect(p.size).toBe(1)
  })

  it('when the award cannot be prepared the job is not announced here (it went back) and the node keeps waiting', async () => {
    const { p, answers, add } = pool(new Map([[node(1), cap(1)]]), { grantFails: true })
    add(node(1), 1)
    expect(await p.place([await newJob()])).toEqual([])
    expect(answers).toEqual([])
    expect(p.size).toBe(1)
    expect(p.stats.grantFailures).toBe(1)
  })

  it('answers empty when the wait ends, on withdraw, and when a node sends more standbys than it has slots', async () => {
    const { p, answers, add } = pool(new Map([[node(1), cap(2)], [node(2), cap(1)]]), { maxWaitMs: 60_000 })
    add(node(1), 1, 150)
    await until('the wait to end', () => answers.length === 1 ? true : undefined, 5_000, 5)
    expect(answers[0]).toEqual({ peerId: node(1), frame: { type: 'open', rid: 1, jobs: [] } })
    add(node(1), 2)
    add(node(1), 3)
    expect(p.withdraw(node(1))).toBe(2)
    expect(answers.slice(1).map(a => a.frame)).toEqual([{ type: 'open', rid: 2, jobs: [] }, { type: 'open', rid: 3, jobs: [] }])
    add(node(2), 4)
    add(node(2), 5)
    expect(answers.at(-1)).toEqual({ peerId: node(2), frame: { type: 'open', rid: 4, jobs: [] } })
    expect(p.size).toBe(1)
    expect(p.stats).toMatchObject({ expired: 1, withdrawn: 2, replaced: 1 })
  })

  it('serve(): a freed node\'s oldest waiting standby is answered with what the callback awards, or keeps waiting', async () => {
    const { p, answers, add } = pool(new Map([[node(1), cap(2)]]))
    add(node(1), 1)
    add(node(1), 2)
    expect(await p.serve(node(1), async () => null)).toBe(false)
    expect(p.size).toBe(2)
    const job = await newJob()
    const outcome = await auction.direct(node(1), { jobId: job.jobId, attempt: 1 }, 2, 2)
    if (outcome === 'busy' || outcome === 'full' || outcome.type !== 'award') throw new Error('expected an award')
    expect(await p.serve(node(1), async () => ({ jobId: job.jobId, attempt: 1, token: outcome.token, spec: outcome.spec, inputs: [] }))).toBe(true)
    expect(awarded(answers)).toEqual([[node(1), 1, job.jobId]])
    expect(p.size).toBe(1)
    expect(p.stats.served).toBe(1)
    // A node with nothing waiting: nothing to serve, and the callback is not asked.
    let asked = false
    expect(await p.serve(node(2), async () => { asked = true; return null })).toBe(false)
    expect(asked).toBe(false)
  })

  it('caps the wait at the coordinator\'s maximum', async () => {
    const { answers, add } = pool(new Map([[node(1), cap(1)]]), { maxWaitMs: 100 })
    add(node(1), 1, 120_000)
    await until('the capped wait to end', () => answers.length === 1 ? true : undefined, 5_000, 5)
    expect(answers[0]?.frame).toEqual({ type: 'open', rid: 1, jobs: [] })
  })

  it('never places a job on a standby whose session ended, and drop() forgets a node\'s standbys', async () => {
    const { p, answers, add } = pool(new Map([[node(1), cap(1)], [node(2), cap(1)]]))
    let open = true
    add(node(1), 1, 30_000, () => open)
    open = false
    const job = await newJob()
    expect(await p.place([job])).toEqual([job])
    add(node(2), 1)
    p.drop(node(2))
    expect(await p.place([job])).toEqual([job])
    expect(answers).toEqual([])
    expect(p.size).toBe(0)
  })
})
