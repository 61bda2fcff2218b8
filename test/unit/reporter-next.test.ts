import { describe, it, expect } from 'vitest'
import { Reporter, type ResultRequest } from '../../node/reporter.js'
import type { SessionClient, NodeRequest } from '../../node/session-client.js'
import type { CoordinatorFrame, NextAward } from '../../protocol/schemas.js'
import { silentLogger } from '../../common/log.js'

const JOB = '01890000-0000-7000-8000-000000000001'
const NEXT: NextAward = {
  jobId: '01890000-0000-7000-8000-000000000002', attempt: 1, token: 'b'.repeat(32), inputs: [],
  spec: { command: ['true'], env: {}, inputs: [], outputs: [], resources: { cpus: 1, memoryMb: 256 }, labels: {}, timeoutSeconds: 60, maxAttempts: 3 } as unknown as NextAward['spec']
}
const report: ResultRequest = {
  type: 'result', jobId: JOB, attempt: 1, token: 'a'.repeat(32), outcome: 'succeeded', exitCode: 0, stdout: '', stderr: '',
  stdoutTruncated: false, stderrTruncated: false, startedAt: 1, finishedAt: 2, error: null, artifacts: []
}

/** A session that records what it is sent and answers with `answer`. */
function fakeSession (offersNext: boolean, answer: (frame: NodeRequest) => CoordinatorFrame): { session: SessionClient, sent: NodeRequest[] } {
  const sent: NodeRequest[] = []
  const session = {
    isOpen: true, offersNext, coordinatorId: 'coord-1',
    request: async (frame: NodeRequest) => { sent.push(frame); return answer(frame) }
  } as unknown as SessionClient
  return { session, sent }
}

describe('Reporter and the next attempt (session 1.1)', () => {
  it('asks with the result and hands the next award over before the result settles', async () => {
    const order: string[] = []
    const { session, sent } = fakeSession(true, () => ({ type: 'ack', rid: 1, next: NEXT }))
    const r = new Reporter({
      log: silentLogger, session: () => session,
      next: { want: () => true, take: (award, coordinator) => { order.push(`take ${award.jobId} from ${coordinator}`) } }
    })
    await r.result(report).then(() => { order.push('settled') })
    expect(sent).toHaveLength(1)
    expect(sent[0]).toMatchObject({ type: 'result', jobId: JOB, wantNext: true })
    expect(order).toEqual([`take ${NEXT.jobId} from coord-1`, 'settled'])
  })

  it('does not ask when the node takes no work now, nor on a 1.0.0 session', async () => {
    for (const [offersNext, want] of [[true, false], [false, true]] as const) {
      const { session, sent } = fakeSession(offersNext, () => ({ type: 'ack', rid: 1 }))
      let taken = 0
      const r = new Reporter({ log: silentLogger, session: () => session, next: { want: () => want, take: () => { taken++ } } })
      await r.result(report)
      expect(sent[0]).not.toHaveProperty('wantNext')
      expect(taken).toBe(0)
    }
  })

  it('a next award sent without a taker is logged, and the result still settles', async () => {
    const errors: string[] = []
    const log = { ...silentLogger, error: (msg: string) => { errors.push(msg) }, child: () => log }
    const { session } = fakeSession(true, () => ({ type: 'ack', rid: 1, next: NEXT }))
    const r = new Reporter({ log, session: () => session })
    await r.result(report)
    expect(r.pending).toBe(0)
    expect(errors).toHaveLength(1)
  })
})

describe('Reporter holding `started`', () => {
  const started = { type: 'started' as const, jobId: JOB, attempt: 1, token: 'a'.repeat(32), startedAt: 1 }

  it('sends no `started` for a job whose result comes within the hold (200 ms by default)', async () => {
    const { session, sent } = fakeSession(false, () => ({ type: 'ack', rid: 1 }))
    const r = new Reporter({ log: silentLogger, session: () => session })
    r.started(started)
    // Well past the old 20 ms hold, well within the default.
    await new Promise(resolve => setTimeout(resolve, 60))
    await r.result(report)
    expect(sent.map(f => f.type)).toEqual(['result'])
  })

  it('sends `started` once the hold is over while the job still runs', async () => {
    const { session, sent } = fakeSession(false, () => ({ type: 'ack', rid: 1 }))
    const r = new Reporter({ log: silentLogger, session: () => session, startedDelayMs: 30 })
    const t0 = Date.now()
    r.started(started)
    const deadline = Date.now() + 5000
    while (sent.length === 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 5))
    expect(sent.map(f => f.type)).toEqual(['started'])
    expect(Date.now() - t0).toBeGreaterThanOrEqual(25)
    await r.result(report)
    expect(sent.map(f => f.type)).toEqual(['started', 'result'])
  })
})
