/**
 * Session 1.1: a node's result may ask for its next attempt, and the
 * coordinator's ack carries it. Checked against a real coordinator process,
 * from both sides of the version line: a peer speaking 1.1.0, one speaking
 * only 1.0.0 (an older node), a real node (which uses it under load), and
 * the node's session client against a peer that serves only 1.0.0 (an older
 * coordinator), where it must fall back and never ask.
 */
import { describe, it, expect } from 'vitest'
import { randomUUID } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import type { LocalMesh } from '../../dist/cli/local-mesh.js'
import { SESSION_PROTOCOL, SESSION_PROTOCOL_V1, SESSION_PROTOCOL_V1_1 } from '../../protocol/ids.js'
import { createHost, type RGridHost } from '../../common/p2p.js'
import { FrameChannel } from '../../common/session.js'
import { decodeNodeFrame } from '../../protocol/codec.js'
import type { CoordinatorFrame, NodeFrame } from '../../protocol/schemas.js'
import { SessionClient } from '../../node/session-client.js'
import { silentLogger } from '../../common/log.js'
import { decodeJoinToken } from '../../common/join-token.js'
import { submit, getJob, waitForAll, waitForJob, TERMINAL } from '../helpers/http.js'
import { RogueSession, until } from '../helpers/rogue.js'
import { meshWithRogueForFile } from '../helpers/rogue-mesh.js'
import { rogueNodeFor } from '../helpers/rogue-node.js'

let mesh: LocalMesh
let rogue: RGridHost
let url: string

interface Stats { auction: { chained: number, awards: number }, announcer: { heldBack: number, jobs: number } }

async function stats (): Promise<Stats> {
  const res = await fetch(`${url}/v1/stats`)
  expect(res.status).toBe(200)
  return await res.json() as Stats
}

/** Waits until the job has been open at least `ms` (the coordinator hands out only jobs open 20 ms or more). */
async function openFor (id: string, ms: number): Promise<void> {
  const job = await getJob(url, id)
  const createdAt = typeof job.createdAt === 'number' ? job.createdAt : Date.parse(String(job.createdAt))
  expect(Number.isFinite(createdAt)).toBe(true)
  await until(`job ${id} to be open ${ms} ms`, () => Date.now() - createdAt >= ms ? true : undefined, 5_000, 10)
}

const { greet, rogueJob, events, result } = rogueNodeFor(() => ({ url, joinToken: mesh.joinToken }))

meshWithRogueForFile('rgrid-session-next-', { nodes: 1, slots: 1, runtime: 'process' }, env => {
  mesh = env.mesh
  rogue = env.rogue
  url = env.mesh.httpUrl
})

describe('a real node under a backlog (first: no rogue session has been open)', () => {
  it('a real node takes a backlog through acks, each job once, and the backlog is held back from gossip', async () => {
    // Fill the node's one slot first: jobs submitted to a full mesh are held back.
    const first = await submit(url, { command: ['sh', '-c', 'sleep 0.3; echo first'] })
    expect((await waitForJob(url, first.body.id, j => j.state === 'running' || TERMINAL.has(j.state), 20_000)).state).toBe('running')
    const before = await stats()
    const res = await fetch(`${url}/v1/jobs/batch`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jobs: Array.from({ length: 12 }, (_, i) => ({ command: ['sh', '-c', `echo n${i}`] })) })
    })
    expect(res.status).toBe(201)
    const ids = ((await res.json()) as { jobs: Array<{ id: string }> }).jobs.map(j => j.id)
    const jobs = await waitForAll(url, ids, 30_000)
    expect(jobs.map(j => j.state)).toEqual(ids.map(() => 'succeeded'))
    expect(jobs.map(j => j.result?.stdout)).toEqual(ids.map((_, i) => `n${i}\n`))
    for (const j of jobs) expect(j.attempts).toHaveLength(1)
    // Oldest first: each job started after the one submitted before it.
    const starts = jobs.map(j => j.attempts[0]!.startedAt ?? 0)
    expect([...starts].sort((a, b) => a - b)).toEqual(starts)
    const after = await stats()
    const firstJob = await getJob(url, first.body.id)
    const seen = JSON.stringify({ before: { auction: before.auction, announcer: before.announcer }, after: { auction: after.auction, announcer: after.announcer }, first: { state: firstJob.state, attempts: firstJob.attempts } })
    expect(after.auction.awards - before.auction.awards, seen).toBe(12)
    // One slot, always busy: each job came with the previous one's ack, and none was gossiped.
    expect(after.auction.chained - before.auction.chained, seen).toBe(12)
    expect(after.announcer.heldBack - before.announcer.heldBack, seen).toBe(12)
    expect(after.announcer.jobs - before.announcer.jobs, seen).toBe(0)
  })

  it('a job held back while every slot is taken reaches a node that joins', async () => {
    const long = await submit(url, { command: ['sh', '-c', 'sleep 8; echo long'] })
    const running = await waitForJob(url, long.body.id, j => j.state === 'running' || TERMINAL.has(j.state), 20_000)
    expect(running.state).toBe('running')
    const before = await stats()
    const x = await submit(url, { command: ['sh', '-c', 'echo x'] })
    await until('the job to be held back', async () => (await stats()).announcer.heldBack > before.announcer.heldBack ? true : undefined, 5_000)
    expect((await stats()).announcer.jobs).toBe(before.announcer.jobs)
    const [joined] = await mesh.addNodes(1)
    const done = await waitForJob(url, x.body.id, j => TERMINAL.has(j.state), 30_000)
    expect(done.state).toBe('succeeded')
    expect(done.result?.stdout).toBe('x\n')
    expect(done.attempts.map(a => a.node)).toEqual([joined])
    // Still running on the first node: x did not wait for it.
    expect((await getJob(url, long.body.id)).state).toBe('running')
  })
})

describe('session 1.1: the next attempt rides on the result\'s ack', () => {
  it('awards the oldest open job the node can run with the ack, and nothing when none is waiting', async () => {
    const a = await rogueJob(`a-${randomUUID()}`)
    const b = await rogueJob(`b-${randomUUID()}`)
    // A 1.1.0 peer (no standing bids): it bids, and asks for its next job with each result.
    const s = await RogueSession.open(rogue, mesh.coordinatorPeerId, SESSION_PROTOCOL_V1_1)
    try {
      await greet(s)
      await s.send({ type: 'bid', rid: 2, jobId: a, attempt: 1, freeSlots: 1, slots: 1 })
      const award = await s.frame()
      expect(award).toMatchObject({ type: 'award', rid: 2, jobId: a, attempt: 1 })
      if (award.type !== 'award') throw new Error('unreachable')
      await openFor(b, 50)
      await s.send(result(3, award, 'A\n', true))
      const ack = await s.frame()
      expect(ack).toMatchObject({ type: 'ack', rid: 3, next: { jobId: b, attempt: 1, spec: { labels: { zone: 'rogue' } } } })
      if (ack.type !== 'ack' || ack.next == null) throw new Error('unreachable')
      // Nothing else waits for this capacity: the ack comes alone.
      await s.send(result(4, ack.next, 'B\n', true))
      const last = await s.frame()
      expect(last).toEqual({ type: 'ack', rid: 4 })
    } finally {
      s.close()
    }
    const [ja, jb] = await waitForAll(url, [a, b], 10_000)
    expect(ja?.state).toBe('succeeded')
    expect(ja?.result?.stdout).toBe('A\n')
    expect(jb?.state).toBe('succeeded')
    expect(jb?.result?.stdout).toBe('B\n')
    expect(jb?.attempts).toHaveLength(1)
    expect(jb?.attempts[0]?.node).toBe(rogue.peerId.toString())
    const awarded = (await events(b)).filter(e => e.type === 'awarded')
    expect(awarded).toHaveLength(1)
    expect(awarded[0]?.detail).toMatchObject({ next: true, bids: 0 })
  })

  it('never sends next unasked, and still serves 1.0.0 (an older node)', async () => {
    const c = await rogueJob(`c-${randomUUID()}`)
    const d = await rogueJob(`d-${randomUUID()}`)
    const s = await RogueSession.open(rogue, mesh.coordinatorPeerId, SESSION_PROTOCOL_V1)
    try {
      await greet(s)
      await s.send({ type: 'bid', rid: 2, jobId: c, attempt: 1, freeSlots: 1, slots: 1 })
      const award = await s.frame()
      expect(award).toMatchObject({ type: 'award', rid: 2, jobId: c })
      if (award.type !== 'award') throw new Error('unreachable')
      await openFor(d, 50)
      // A 1.0.0 result: no wantNext, so a plain ack although d waits for exactly this capacity.
      await s.send(result(3, award, 'C\n'))
      expect(await s.frame()).toEqual({ type: 'ack', rid: 3 })
      await s.send({ type: 'bid', rid: 4, jobId: d, attempt: 1, freeSlots: 1, slots: 1 })
      const second = await s.frame()
      expect(second).toMatchObject({ type: 'award', rid: 4, jobId: d })
      if (second.type !== 'award') throw new Error('unreachable')
      await s.send(result(5, second, 'D\n'))
      expect(await s.frame()).toEqual({ type: 'ack', rid: 5 })
    } finally {
      s.close()
    }
    const done = await waitForAll(url, [c, d], 10_000)
    expect(done.map(j => j.state)).toEqual(['succeeded', 'succeeded'])
    expect(done.map(j => j.result?.stdout)).toEqual(['C\n', 'D\n'])
  })
})

describe('the node\'s session client and the version line', () => {
  it('speaks the newest version (1.2.0) to a current coordinator and offers next and standby', async () => {
    const client = new SessionClient({ host: rogue, coordinator: peerIdFromString(mesh.coordinatorPeerId), log: silentLogger, onPush: () => {}, onClose: () => {} })
    await client.open(AbortSignal.timeout(10_000))
    try {
      expect(client.protocol).toBe(SESSION_PROTOCOL)
      expect(SESSION_PROTOCOL).toBe('/rgrid/session/1.2.0')
      expect(client.offersNext).toBe(true)
      expect(client.offersStandby).toBe(true)
    } finally {
      await client.close()
    }
  })

  it('falls back to 1.0.0 against a coordinator without 1.1.0, and never asks for next there', async () => {
    // An older coordinator: it serves only 1.0.0, and (like one) refuses a frame with a key it does not know.
    const old = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], networkKey: decodeJoinToken(mesh.joinToken).networkKey })
    const seen: NodeFrame[] = []
    await old.handle(SESSION_PROTOCOL_V1, (stream) => {
      const ch = new FrameChannel<NodeFrame, CoordinatorFrame>(stream, { decode: decodeNodeFrame })
      void (async () => {
        for (let next = await ch.next(); next != null; next = await ch.next()) {
          if ('error' in next) continue
          seen.push(next.frame)
          const f = next.frame
          if ('wantNext' in f) await ch.send({ type: 'error', rid: f.rid, code: 'bad-frame', message: 'unknown key wantNext' })
          else await ch.send({ type: 'ack', rid: f.rid })
        }
      })().catch(() => {})
    })
    await old.start()
    const client = new SessionClient({ host: rogue, coordinator: old.peerId, log: silentLogger, onPush: () => {}, onClose: () => {} })
    try {
      await rogue.dial(old.getMultiaddrs().map(a => multiaddr(a.toString())), { signal: AbortSignal.timeout(10_000) })
      await client.open(AbortSignal.timeout(10_000))
      expect(client.protocol).toBe(SESSION_PROTOCOL_V1)
      expect(client.offersNext).toBe(false)
      expect(client.offersStandby).toBe(false)
      // The reporter asks only where offersNext holds; a result sent as it would be gets a plain ack.
      const { Reporter } = await import('../../node/reporter.js')
      let asked = 0
      const reporter = new Reporter({ log: silentLogger, session: () => client, next: { want: () => { asked++; return true }, take: () => { throw new Error('no next on 1.0.0') } } })
      const jobId = '01890000-0000-7000-8000-000000000001'
      await reporter.result({
        type: 'result', jobId, attempt: 1, token: 'a'.repeat(32), outcome: 'succeeded', exitCode: 0, stdout: '', stderr: '',
        stdoutTruncated: false, stderrTruncated: false, startedAt: Date.now(), finishedAt: Date.now(), error: null, artifacts: []
      })
      expect(asked).toBe(0)
      expect(seen.filter(f => f.type === 'result')).toHaveLength(1)
      expect(seen[0]).not.toHaveProperty('wantNext')
    } finally {
      await client.close()
      await old.stop()
    }
  })
})
