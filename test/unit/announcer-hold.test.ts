import { describe, it, expect } from 'vitest'
import { Announcer } from '../../coordinator/announcer.js'
import type { Store } from '../../coordinator/store/types.js'
import type { AnnouncedJob, Announcement } from '../../protocol/schemas.js'
import { silentLogger } from '../../common/log.js'
import { until } from '../helpers/rogue.js'

const job = (i: number): AnnouncedJob => ({ jobId: `01890000-0000-7000-8000-${String(i).padStart(12, '0')}`, attempt: 1, resources: { cpus: 1, memoryMb: 256 }, labels: {}, timeoutSeconds: 60 })

function announcer (full: { value: boolean }, maxHeld?: number): { a: Announcer, sent: Announcement[] } {
  const sent: Announcement[] = []
  const a = new Announcer({
    store: {} as unknown as Store, clock: { now: () => Date.now() }, log: silentLogger,
    publish: async (m) => { sent.push(m) },
    meshFull: () => full.value, releaseCheckMs: 5, takenFlushMs: 1,
    ...(maxHeld != null ? { maxHeld } : {})
  })
  return { a, sent }
}

const announcedIds = (sent: Announcement[]): string[] => sent.flatMap(m => m.jobs.map(j => j.jobId))
const takenIds = (sent: Announcement[]): string[] => sent.flatMap(m => m.taken.map(t => t.jobId))

describe('Announcer: holding jobs back while every slot is taken', () => {
  it('announces at once while a slot is free', async () => {
    const { a, sent } = announcer({ value: false })
    a.enqueue(job(1))
    await until('the announcement', () => sent.length > 0 ? true : undefined, 2_000, 1)
    expect(announcedIds(sent)).toEqual([job(1).jobId])
    expect(a.heldCount).toBe(0)
    a.stop()
  })

  it('holds new jobs while full, announces the rest oldest first once a slot frees, and never a job awarded meanwhile', async () => {
    const full = { value: true }
    const { a, sent } = announcer(full)
    for (let i = 1; i <= 4; i++) a.enqueue(job(i))
    await until('the jobs to be held', () => a.heldCount === 4 ? true : undefined, 2_000, 1)
    expect(sent).toHaveLength(0)
    expect(a.stats.heldBack).toBe(4)
    // Handed out with an ack while held: nobody heard of it, so no taken notice either.
    a.awarded(job(2).jobId, 1)
    a.forget(job(3).jobId)
    expect(a.heldCount).toBe(2)
    expect(a.stats.awardedUnannounced).toBe(1)
    full.value = false
    await until('the held jobs to be announced', () => announcedIds(sent).length === 2 ? true : undefined, 2_000, 1)
    expect(announcedIds(sent)).toEqual([job(1).jobId, job(4).jobId])
    expect(takenIds(sent)).toEqual([])
    expect(a.heldCount).toBe(0)
    // Announced jobs that are then awarded do get a taken notice.
    a.awarded(job(1).jobId, 1)
    await until('the taken notice', () => takenIds(sent).length === 1 ? true : undefined, 2_000, 1)
    expect(takenIds(sent)).toEqual([job(1).jobId])
    a.stop()
  })

  it('announces whatever the load once maxHeld jobs wait', async () => {
    const { a, sent } = announcer({ value: true }, 2)
    a.enqueue(job(1))
    a.enqueue(job(2))
    await until('two held', () => a.heldCount === 2 ? true : undefined, 2_000, 1)
    a.enqueue(job(3))
    await until('the overflow to be announced', () => sent.length > 0 ? true : undefined, 2_000, 1)
    expect(announcedIds(sent)).toEqual([job(3).jobId])
    expect(a.heldCount).toBe(2)
    a.stop()
  })

  it('a scan whose store read raced an award does not bring the awarded job back', async () => {
    const sent: Announcement[] = []
    let resolveRead: (jobs: unknown[]) => void = () => {}
    const store = { openJobs: async () => await new Promise(resolve => { resolveRead = resolve }), appendEvent: async () => {} } as unknown as Store
    const a = new Announcer({ store, clock: { now: () => Date.now() }, log: silentLogger, publish: async (m) => { sent.push(m) }, meshFull: () => true, scanMs: 5, releaseCheckMs: 5 })
    a.start()
    await until('the scan to read the store', () => resolveRead.length > 0 || sent.length > 0 ? true : undefined, 2_000, 1)
    // Awarded (with an ack) while the scan's read is under way; the read still lists it as open.
    a.awarded(job(7).jobId, 1)
    const spec = { command: ['true'], resources: { cpus: 1, memoryMb: 256 }, labels: {}, timeoutSeconds: 60 }
    resolveRead([{ jobId: job(7).jobId, attempt: 1, spec, createdAt: Date.now() }, { jobId: job(8).jobId, attempt: 1, spec, createdAt: Date.now() }])
    await until('the other open job to be held', () => a.heldCount === 1 ? true : undefined, 2_000, 1)
    a.stop()
    expect(a.heldCount).toBe(1)
    expect(a.stats.heldBack).toBe(1)
  })

  it('a job enqueued twice before the flush (submission and a scan) is announced once', async () => {
    const { a, sent } = announcer({ value: false })
    a.enqueue(job(1))
    a.enqueue(job(1))
    a.enqueue({ ...job(1), attempt: 2 })
    await until('the announcement', () => sent.length > 0 ? true : undefined, 2_000, 1)
    expect(sent.flatMap(m => m.jobs.map(j => `${j.jobId}/${j.attempt}`))).toEqual([`${job(1).jobId}/1`, `${job(1).jobId}/2`])
    a.stop()
  })
})

describe('Announcer: placing jobs on nodes waiting on standby first', () => {
  function placing (place: (jobs: AnnouncedJob[], a: Announcer) => Promise<AnnouncedJob[]>): { a: Announcer, sent: Announcement[] } {
    const sent: Announcement[] = []
    const a: Announcer = new Announcer({
      store: {} as unknown as Store, clock: { now: () => Date.now() }, log: silentLogger,
      publish: async (m) => { sent.push(m) }, takenFlushMs: 1,
      place: async jobs => await place(jobs, a)
    })
    return { a, sent }
  }

  it('announces only what was not placed, and sends no taken notice for a placed job', async () => {
    const { a, sent } = placing(async (jobs, self) => {
      // Placed: job 1 is awarded during placement, as the session server does.
      self.awarded(jobs[0]!.jobId, 1)
      return jobs.slice(1)
    })
    a.enqueue(job(1))
    a.enqueue(job(2))
    await until('the announcement', () => sent.length > 0 ? true : undefined, 2_000, 1)
    expect(announcedIds(sent)).toEqual([job(2).jobId])
    expect(a.stats.placed).toBe(1)
    // Job 2 was gossiped, so its award is taken back; job 1's never was.
    a.awarded(job(2).jobId, 1)
    await until('the taken notice', () => takenIds(sent).length > 0 ? true : undefined, 2_000, 1)
    expect(takenIds(sent)).toEqual([job(2).jobId])
    a.stop()
  })

  it('announces the whole batch when placing fails', async () => {
    const { a, sent } = placing(async () => { throw new Error('boom') })
    a.enqueue(job(1))
    a.enqueue(job(2))
    await until('the announcement', () => sent.length > 0 ? true : undefined, 2_000, 1)
    expect(announcedIds(sent)).toEqual([job(1).jobId, job(2).jobId])
    expect(a.stats.failures).toBe(1)
    a.stop()
  })
})
