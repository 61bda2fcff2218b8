/**
 * The node's standing bids against a scripted session: how many go out,
 * what an award or an empty answer does to the node's slots, withdrawal,
 * and the pause after a coordinator that answers at once.
 */
import { describe, it, expect } from 'vitest'
import { NodeStandby } from '../../node/standby.js'
import type { SessionClient, NodeRequest } from '../../node/session-client.js'
import type { Award, CoordinatorFrame } from '../../protocol/schemas.js'
import { silentLogger } from '../../common/log.js'
import { until } from '../helpers/rogue.js'

/** A session whose replies the test gives, request by request. */
class ScriptedSession {
  offersStandby = true
  readonly sent: Array<{ frame: NodeRequest, timeoutMs: number | undefined, answer: (f: CoordinatorFrame) => void, fail: (e: Error) => void }> = []
  private rid = 0

  async request (frame: NodeRequest, _signal?: AbortSignal, timeoutMs?: number): Promise<CoordinatorFrame> {
    return await new Promise((resolve, reject) => {
      const rid = ++this.rid
      const reply = { frame, timeoutMs, answer: (f: CoordinatorFrame) => { resolve({ ...f, rid } as CoordinatorFrame) }, fail: reject }
      this.sent.push(reply)
      // A withdraw: the coordinator answers every standby out empty, then acks.
      if (frame.type === 'withdraw') {
        for (const s of this.sent) if (s.frame.type === 'standby') s.answer({ type: 'open', rid: 0, jobs: [] })
        reply.answer({ type: 'ack', rid: 0 })
      }
    })
  }

  standbys (): ScriptedSession['sent'] {
    return this.sent.filter(s => s.frame.type === 'standby')
  }
}

const award = (jobId: string): Award => ({
  type: 'award', rid: 0, jobId, attempt: 1, token: 'a'.repeat(32), inputs: [],
  spec: { command: ['true'], env: {}, secretEnv: {}, inputs: [], outputs: [], resources: { cpus: 1, memoryMb: 256, diskMb: 0 }, labels: {}, timeoutSeconds: 60, maxAttempts: 3, runtime: null, image: null, network: false } as unknown as Award['spec']
})

function setup (slots: number, retryMs = 50): { st: NodeStandby, session: ScriptedSession, taken: string[], freed: () => number, state: { running: number, bidding: boolean } } {
  const session = new ScriptedSession()
  const taken: string[] = []
  let freedCount = 0
  const state = { running: 0, bidding: true }
  const st: NodeStandby = new NodeStandby({
    log: silentLogger, waitMs: 5_000, retryMs,
    session: () => ({ coordinator: 'c1', session: session as unknown as SessionClient }),
    wanted: () => state.bidding ? slots - state.running - st.size : 0,
    take: (a) => { state.running++; taken.push(a.jobId) },
    onFreed: () => { freedCount++ }
  })
  return { st, session, taken, freed: () => freedCount, state }
}

describe('NodeStandby', () => {
  it('sends one standby per free slot, with a request timeout beyond the wait', () => {
    const { st, session } = setup(3)
    st.fill()
    expect(session.standbys()).toHaveLength(3)
    expect(session.standbys()[0]).toMatchObject({ frame: { type: 'standby', waitMs: 5_000 }, timeoutMs: 15_000 })
    expect(st.size).toBe(3)
    // Already as many as wanted: nothing more goes out.
    st.fill()
    expect(session.standbys()).toHaveLength(3)
  })

  it('an award passes the standby\'s slot straight to the job; an expired wait frees the slot', async () => {
    const { st, session, taken, freed, state } = setup(2)
    st.fill()
    session.standbys()[0]!.answer(award('job-a'))
    await until('the award to be taken', () => taken.length === 1 ? true : undefined, 2_000, 1)
    expect(taken).toEqual(['job-a'])
    expect(st.size).toBe(1)
    expect(state.running).toBe(1)
    expect(freed()).toBe(0)
    // Nothing more is wanted: one slot runs the job, the other is on standby.
    st.fill()
    expect(session.standbys()).toHaveLength(2)
    await new Promise(resolve => setTimeout(resolve, 120))
    session.standbys()[1]!.answer({ type: 'open', rid: 0, jobs: [] })
    await until('the slot to be freed', () => freed() === 1 ? true : undefined, 2_000, 1)
    expect(st.size).toBe(0)
    expect(st.stats).toMatchObject({ sent: 2, awards: 1, empty: 1 })
  })

  it('withdraw() ends every standby out, and no new one goes out until it is acknowledged', async () => {
    const { st, session, freed } = setup(2)
    st.fill()
    const w = st.withdraw()
    st.fill()
    await w
    expect(session.sent.map(s => s.frame.type)).toEqual(['standby', 'standby', 'withdraw'])
    // A coordinator that hangs holds a stopping node for 2 s here, not for the 10 s request timeout.
    expect(session.sent[2]!.timeoutMs).toBe(2_000)
    expect(st.size).toBe(0)
    expect(freed()).toBe(2)
    expect(st.stats.withdrawals).toBe(1)
  })

  it('pauses after a failure or an empty answer that came at once, and says when to try again', async () => {
    // A pause long enough that a loaded machine cannot end it between two lines of this test.
    const { st, session, freed } = setup(1, 1_000)
    st.fill()
    session.standbys()[0]!.answer({ type: 'error', rid: 0, code: 'rate-limited', message: 'slow down' })
    await until('the failure to be seen', () => st.stats.failures === 1 ? true : undefined, 2_000, 1)
    st.fill()
    expect(session.standbys()).toHaveLength(1)
    // onFreed once for the failure, once when the pause ends.
    await until('the pause to end', () => freed() === 2 ? true : undefined, 5_000, 5)
    st.fill()
    expect(session.standbys()).toHaveLength(2)
    session.standbys()[1]!.answer({ type: 'open', rid: 0, jobs: [] })
    await until('the empty answer to be seen', () => st.stats.empty === 1 ? true : undefined, 2_000, 1)
    st.fill()
    expect(session.standbys()).toHaveLength(2)
  })

  it('sends nothing to a coordinator without standing bids, or while the node takes no work', () => {
    const { st, session, state } = setup(2)
    session.offersStandby = false
    st.fill()
    expect(session.sent).toHaveLength(0)
    session.offersStandby = true
    state.bidding = false
    st.fill()
    expect(session.sent).toHaveLength(0)
  })

  it('a session that fails the request frees the slot', async () => {
    const { st, session, freed } = setup(1)
    st.fill()
    session.standbys()[0]!.fail(new Error('session closed'))
    await until('the slot to be freed', () => freed() >= 1 ? true : undefined, 2_000, 1)
    expect(st.size).toBe(0)
    expect(st.stats.failures).toBe(1)
  })
})
