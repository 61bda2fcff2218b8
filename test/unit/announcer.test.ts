/**
 * The announcer's batching: the first job after a quiet spell goes out in its
 * own tick; jobs that follow within the batch window share one message.
 */
import { describe, it, expect } from 'vitest'
import { setImmediate as tick } from 'node:timers/promises'
import { Announcer } from '../../dist/coordinator/announcer.js'
import { silentLogger } from '../../dist/common/log.js'
import { systemClock } from '../../dist/common/clock.js'
import type { Announcement, AnnouncedJob } from '../../protocol/schemas.js'

const job = (n: number): AnnouncedJob => ({ jobId: `0190a0b0-0000-7000-8000-${String(n).padStart(12, '0')}`, attempt: 1, resources: { cpus: 1, memoryMb: 64, diskMb: 0 }, labels: {}, timeoutSeconds: 60 })

function announcer (batchWindowMs?: number): { a: Announcer, sent: Announcement[] } {
  const sent: Announcement[] = []
  // The store is only read by the re-announce scan, which these tests never start.
  const a = new Announcer({ store: {} as never, clock: systemClock, log: silentLogger, publish: async m => { sent.push(m) }, ...(batchWindowMs != null ? { batchWindowMs } : {}) })
  return { a, sent }
}

async function until (ok: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!ok()) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise(resolve => setTimeout(resolve, 1))
  }
}

describe('Announcer batching', () => {
  it('sends the first job at once and batches the ones that follow within the window', async () => {
    const { a, sent } = announcer(50)
    a.enqueue(job(1))
    await tick()
    await tick()
    expect(sent.map(m => m.jobs.map(j => j.jobId))).toEqual([[job(1).jobId]])
    // Three ticks' worth of submissions inside the window: held back, then one message.
    a.enqueue(job(2))
    await tick()
    a.enqueue(job(3))
    await tick()
    a.enqueue(job(4))
    await tick()
    expect(sent).toHaveLength(1)
    await until(() => sent.length === 2)
    expect(sent[1]!.jobs.map(j => j.jobId)).toEqual([job(2).jobId, job(3).jobId, job(4).jobId])
    a.stop()
  })

  it('with a zero window publishes every tick', async () => {
    const { a, sent } = announcer(0)
    for (let i = 1; i <= 3; i++) {
      a.enqueue(job(i))
      await until(() => sent.length === i)
    }
    expect(sent.map(m => m.jobs.length)).toEqual([1, 1, 1])
    a.stop()
  })
})
