/**
 * Recovery against a real store: awards a node never received are put back
 * on the market after a grace period; retryable failures get another attempt
 * with backoff, until the job's attempts are used up.
 */
import { describe, it, expect, beforeEach } from 'vitest'
import { SqliteStore } from '../../coordinator/store/sqlite.js'
import { Recovery } from '../../coordinator/recovery.js'
import type { JobSummary } from '../../coordinator/store/types.js'
import { decodeJobSpec } from '../../protocol/codec.js'
import { uuidv7, newFencingToken } from '../../common/ids.js'
import { silentLogger } from '../../common/log.js'

let store: SqliteStore
let now: number
let requeued: Array<{ job: JobSummary, notBefore: number }>
let recovery: Recovery

beforeEach(async () => {
  store = SqliteStore.open({ path: ':memory:' })
  await store.migrate()
  now = 1_800_000_000_000
  requeued = []
  recovery = new Recovery({
    store, log: silentLogger, clock: { now: () => now }, orphanGraceMs: 5_000, retryBackoffMs: 1_000,
    requeue: (job, notBefore) => { requeued.push({ job, notBefore }) }
  })
})

async function awarded (node: string, maxAttempts = 3): Promise<{ id: string, token: string }> {
  const id = uuidv7(now)
  await store.createJob({ id, spec: decodeJobSpec({ command: ['true'], maxAttempts }), now })
  const token = newFencingToken()
  await store.award({ jobId: id, attempt: 1, node, token, now, leaseMs: 30_000, detail: {} })
  return { id, token }
}

describe('Recovery', () => {
  it('reschedules an award the node does not hold, but only after the grace period', async () => {
    const held = await awarded('node-a')
    const orphan = await awarded('node-a')
    now += 1_000
    await recovery.reconcile('node-a', [{ jobId: held.id, attempt: 1, token: held.token }])
    expect(requeued).toHaveLength(0) // the award may still be on its way
    now += 5_000
    await recovery.reconcile('node-a', [{ jobId: held.id, attempt: 1, token: held.token }])
    expect(requeued.map(r => r.job.id)).toEqual([orphan.id])
    const job = await store.getJob(orphan.id)
    expect(job?.state).toBe('announced')
    expect(job?.attempt).toBe(2)
    expect(job?.attempts[0]?.state).toBe('lost')
    const events = await store.listEvents(orphan.id)
    expect(events.map(e => e.type)).toContain('rescheduled')
    // The job the node does hold is untouched.
    expect((await store.getJob(held.id))?.state).toBe('claimed')
    expect(recovery.stats.orphansRescheduled).toBe(1)
  })

  it('retries a retryable failure with doubling backoff, then fails the job when attempts run out', async () => {
    const { id, token } = await awarded('node-a', 2)
    const error = { code: 'node-shutdown', message: 'the node shut down', retryable: true }
    expect(await recovery.retry('node-a', id, 1, token, error)).toBe(true)
    expect(requeued).toHaveLength(1)
    expect(requeued[0]!.notBefore).toBe(now + 1_000)
    expect((await store.openJobs(10, now)).map(j => j.jobId)).not.toContain(id)
    expect((await store.openJobs(10, now + 1_000)).map(j => j.jobId)).toContain(id)
    // A stale report for attempt 1 cannot reschedule again.
    expect(await recovery.retry('node-a', id, 1, token, error)).toBe(false)
    const token2 = newFencingToken()
    await store.award({ jobId: id, attempt: 2, node: 'node-b', token: token2, now: now + 1_000, leaseMs: 30_000, detail: {} })
    expect(await recovery.retry('node-b', id, 2, token2, error)).toBe(true)
    const job = await store.getJob(id)
    expect(job?.state).toBe('failed')
    expect(job?.result?.error?.code).toBe('attempts-exhausted')
    expect(recovery.stats.exhausted).toBe(1)
  })
})
