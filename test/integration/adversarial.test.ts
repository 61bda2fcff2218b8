/**
 * A rogue peer inside a real mesh (bootstrap, coordinator and two nodes as
 * separate processes): it holds its own key, so it can sign gossip and open
 * sessions, but only as itself. Everything it sends is forged or garbage,
 * and the mesh must neither act on it nor fall over.
 *
 * "Nothing happened" is never inferred from elapsed time: each test submits
 * a real job after the hostile traffic and waits for it to finish, which
 * proves the nodes and the coordinator have processed what came before.
 */
import { describe, it, expect } from 'vitest'
import { randomBytes, randomUUID } from 'node:crypto'
import type { LocalMesh } from '../../dist/cli/local-mesh.js'
import { ANNOUNCE_TOPIC, BEACON_TOPIC, HEARTBEAT_TOPIC } from '../../protocol/ids.js'
import { LIMITS } from '../../protocol/limits.js'
import { DecodeError, decodeAnnouncement, decodeHeartbeatTopic, decodeNodeFrame, encode } from '../../protocol/codec.js'
import { nodeFrameSchema } from '../../protocol/schemas.js'
import { uuidv7 } from '../../common/ids.js'
import type { RGridHost } from '../../common/p2p.js'
import { submit, getJob, waitForJob, TERMINAL } from '../helpers/http.js'
import { RogueSession } from '../helpers/rogue.js'
import { meshWithRogueForFile } from '../helpers/rogue-mesh.js'
import { decodeJoinToken } from '../../common/join-token.js'

const joinOf = (token: string): { id: string, secret: string } => { const t = decodeJoinToken(token); return { id: t.id, secret: t.secret } }

let mesh: LocalMesh
let rogue: RGridHost
let url: string

interface Stats {
  auction: { bids: number, awards: number, refusals: number }
  sessions: { sessions: number, frames: number, badFrames: number, staleReports: number, handlerFailures: number }
}

async function stats (): Promise<Stats> {
  const res = await fetch(`${url}/v1/stats`)
  expect(res.status).toBe(200)
  return await res.json() as Stats
}

async function events (id: string): Promise<Array<{ type: string, actor: string, attempt: number | null, detail: Record<string, unknown> }>> {
  const res = await fetch(`${url}/v1/jobs/${id}/events`)
  expect(res.status).toBe(200)
  return (await res.json() as { events: Array<{ type: string, actor: string, attempt: number | null, detail: Record<string, unknown> }> }).events
}

async function cancel (id: string): Promise<void> {
  const res = await fetch(`${url}/v1/jobs/${id}/cancel`, { method: 'POST' })
  expect(res.status).toBe(200)
}

/** Submits a real job and waits for it to succeed: proof the mesh still works and has caught up. */
async function realJobSucceeds (tag: string): Promise<void> {
  const { status, body } = await submit(url, { command: ['sh', '-c', `echo ${tag}`] })
  expect(status).toBe(201)
  const job = await waitForJob(url, body.id, j => TERMINAL.has(j.state), 30_000)
  expect(job.state).toBe('succeeded')
  expect(job.result?.stdout).toBe(`${tag}\n`)
  expect(mesh.nodePeerIds).toContain(job.attempts[0]?.node)
}

function allAlive (): boolean {
  return mesh.processes.every(p => p.child.exitCode === null && p.child.signalCode === null)
}

async function healthy (): Promise<void> {
  const res = await fetch(`${url}/healthz`)
  expect(res.status).toBe(200)
  expect(await res.json()).toMatchObject({ ok: true, peerId: mesh.coordinatorPeerId })
}

/**
 * A capacity no job can fit (every job needs at least 4 MiB), so the
 * coordinator never counter-offers the rogue a real job.
 */
const ROGUE_CAPACITY = { slots: 1, freeSlots: 0, cpus: 0.01, memoryMb: 1, labels: {}, runtime: 'process', version: 'rogue' }

async function greet (s: RogueSession, rid: number): Promise<void> {
  // A member gone bad: it holds the mesh's join token, so it gets past admission.
  await s.send({ type: 'hello', rid, capacity: ROGUE_CAPACITY, running: [], join: joinOf(mesh.joinToken) })
  expect(await s.frame()).toMatchObject({ type: 'welcome', rid })
}

const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text)

meshWithRogueForFile('rgrid-adversarial-', { nodes: 2, slots: 2, runtime: 'process' }, env => {
  mesh = env.mesh
  rogue = env.rogue
  url = env.mesh.httpUrl
})

describe('a rogue peer inside the mesh', () => {
  it('cannot make nodes bid with announcements it signs itself', async () => {
    const before = await stats()
    // A real job no node can run: it stays announced unless a node is tricked into it.
    const labelled = await submit(url, { command: ['sh', '-c', 'echo must-not-run'], labels: { zone: 'nowhere' } })
    expect(labelled.status).toBe(201)

    const fakeIds = Array.from({ length: 50 }, () => uuidv7(Date.now()))
    const announced = (jobId: string): Record<string, unknown> =>
      ({ jobId, attempt: 1, resources: { cpus: 0.1, memoryMb: 16 }, labels: {}, timeoutSeconds: 60 })
    const forged: unknown[] = []
    for (let i = 0; i < fakeIds.length; i += 10) {
      forged.push({ v: 1, type: 'announce', sentAt: Date.now(), jobs: fakeIds.slice(i, i + 10).map(announced), taken: [] })
    }
    // The real job again, its label requirement stripped, so any node would take it.
    forged.push({ v: 1, type: 'announce', sentAt: Date.now(), jobs: [announced(labelled.body.id)], taken: [] })

    const targets = [mesh.coordinatorPeerId, ...mesh.nodePeerIds]
    for (const a of forged) {
      const bytes = encode(a)
      // Well-formed in every respect: only the signer gives the forgery away.
      expect(() => decodeAnnouncement(bytes)).not.toThrow()
      const { recipients } = await rogue.services.pubsub.publish(ANNOUNCE_TOPIC, bytes)
      expect(recipients.map(String)).toEqual(expect.arrayContaining(targets))
    }

    await realJobSucceeds(`after-forged-announcements-${randomUUID()}`)

    // Nodes that believed the forgeries would have bid on 51 jobs each (about 100 bids).
    const after = await stats()
    const bids = after.auction.bids - before.auction.bids
    expect(bids, 'bids while 51 forged jobs were announced').toBeLessThan(10)
    const job = await getJob(url, labelled.body.id)
    expect(job.state).toBe('announced')
    expect(job.attempts).toHaveLength(0)
    await cancel(labelled.body.id)
  })

  it('answers hello-required to a session that bids before saying hello, and awards nothing', async () => {
    const labelled = await submit(url, { command: ['true'], labels: { zone: 'nowhere' } })
    expect(labelled.status).toBe(201)
    const id: string = labelled.body.id
    const bid = { type: 'bid', rid: 7, jobId: id, attempt: 1, freeSlots: 1, slots: 1 }
    expect(nodeFrameSchema.safeParse(bid).success).toBe(true)

    const s = await RogueSession.open(rogue, mesh.coordinatorPeerId)
    try {
      await s.send(bid)
      expect(await s.frame()).toMatchObject({ type: 'error', rid: 7, code: 'hello-required' })
      await s.send({ type: 'pull', rid: 8, max: 10 })
      expect(await s.frame()).toMatchObject({ type: 'error', rid: 8, code: 'hello-required' })
    } finally {
      s.close()
    }
    const job = await getJob(url, id)
    expect(job.state).toBe('announced')
    expect(job.attempts).toHaveLength(0)
    expect((await events(id)).map(e => e.type)).not.toContain('awarded')
    await cancel(id)
  })

  it('answers bad-frame to garbage, cuts the session after 20, and aborts on an oversized frame', async () => {
    const before = await stats()
    const now = Date.now()
    const garbage: Uint8Array[] = [
      utf8('not json at all'),
      Uint8Array.from([0xff, 0xfe, 0xfd, 0x00]),
      new Uint8Array(0),
      encode(42),
      encode(null),
      encode([]),
      encode('hello'),
      encode({ type: 'nope', rid: 1 }),
      encode({ type: 'bid', rid: 1 }),
      encode({ type: 'hello', rid: 1, capacity: { ...ROGUE_CAPACITY, slots: -1 }, running: [] }),
      encode({ type: 'bid', rid: 2, jobId: 'not-a-uuid', attempt: 1, freeSlots: 1, slots: 1 }),
      encode({ type: 'bid', rid: 3, jobId: uuidv7(now), attempt: 1, freeSlots: 1, slots: 1, bribe: 100 }),
      utf8('{"type":"hello","rid":1'),
      utf8('['.repeat(20_000) + ']'.repeat(20_000)),
      utf8('{"__proto__":{"polluted":true},"type":"pull","rid":1,"max":1,"x":1}'),
      randomBytes(1024),
      encode({ type: 'pull', rid: 1, max: 0 }),
      encode({ type: 'renew', rid: 1.5, capacity: ROGUE_CAPACITY, running: [] }),
      // A string field over its own limit, inside a frame under the frame limit.
      encode({
        type: 'result', rid: 4, jobId: uuidv7(now), attempt: 1, token: randomBytes(16).toString('hex'), outcome: 'succeeded',
        exitCode: 0, stdout: 'x'.repeat(LIMITS.outputBytes * 4 + 1), stderr: '', stdoutTruncated: false, stderrTruncated: false,
        startedAt: now, finishedAt: now, error: null
      }),
      encode({ type: 'started', rid: 5, jobId: uuidv7(now), attempt: 0, token: 'zz', startedAt: -1 })
    ]
    expect(garbage).toHaveLength(20)
    // Each really is a bad frame (not, say, a valid frame that only needs hello).
    for (const g of garbage) expect(() => decodeNodeFrame(g)).toThrow(DecodeError)

    const s = await RogueSession.open(rogue, mesh.coordinatorPeerId)
    try {
      for (const [i, g] of garbage.slice(0, 19).entries()) {
        await s.sendRaw(g)
        expect(await s.frame(), `reply to garbage #${i}`).toMatchObject({ type: 'error', rid: null, code: 'bad-frame' })
        if (i === 9) await healthy()
      }
      // The 20th bad frame: at most its error reply, then the coordinator cuts the stream.
      await s.sendRaw(garbage[19]!)
      let r = await s.read(5_000)
      if (r.kind === 'frame') {
        expect(r.frame).toMatchObject({ type: 'error', code: 'bad-frame' })
        r = await s.read(5_000)
      }
      expect(r.kind, `after 20 bad frames: ${JSON.stringify(r)}`).toBe('end')
    } finally {
      s.close()
    }

    // A frame announced as 600 KiB (limit 512 KiB): aborted on the length
    // prefix, not buffered and not answered.
    const s2 = await RogueSession.open(rogue, mesh.coordinatorPeerId)
    try {
      await greet(s2, 1)
      const big = new Uint8Array(600 * 1024).fill(0x61)
      expect(big.byteLength).toBeGreaterThan(LIMITS.sessionFrameBytes)
      const written = s2.sendRaw(big).then(() => 'written', (err: Error) => `write failed: ${err.name}`)
      const r = await s2.read(10_000)
      expect(r.kind, `after an oversized frame: ${JSON.stringify(r)}`).toBe('end')
      await written
    } finally {
      s2.close()
    }

    const after = await stats()
    expect(after.sessions.badFrames - before.sessions.badFrames).toBeGreaterThanOrEqual(20)
    expect(after.sessions.handlerFailures).toBe(before.sessions.handlerFailures)
    await healthy()
    await realJobSucceeds(`after-garbage-frames-${randomUUID()}`)
    expect(allAlive()).toBe(true)
  })

  it('cannot report a result (or a start) for an attempt it does not hold', async () => {
    const marker = `real-${randomUUID()}`
    const { body } = await submit(url, { command: ['sh', '-c', `echo ${marker}; sleep 3`] })
    const id: string = body.id
    const running = await waitForJob(url, id, j => j.state === 'running' || TERMINAL.has(j.state), 20_000)
    expect(running.state, 'the real attempt is reported started while it runs').toBe('running')
    const attempt = running.attempts.at(-1)!.number
    const holder = running.attempts.at(-1)!.node
    expect(mesh.nodePeerIds).toContain(holder)

    const token = randomBytes(16).toString('hex')
    const s = await RogueSession.open(rogue, mesh.coordinatorPeerId)
    try {
      await greet(s, 1)
      await s.send({ type: 'started', rid: 2, jobId: id, attempt, token, startedAt: Date.now() })
      expect(await s.frame()).toMatchObject({ type: 'stale', rid: 2, jobId: id, attempt })
      const result = {
        type: 'result', rid: 3, jobId: id, attempt, token, outcome: 'succeeded', exitCode: 0,
        stdout: 'forged\n', stderr: '', stdoutTruncated: false, stderrTruncated: false,
        startedAt: Date.now() - 1000, finishedAt: Date.now(), error: null
      }
      expect(nodeFrameSchema.safeParse(result).success).toBe(true)
      await s.send(result)
      expect(await s.frame()).toMatchObject({ type: 'stale', rid: 3, jobId: id, attempt })
    } finally {
      s.close()
    }
    // The forgery was judged while the real attempt was still running.
    const mid = await getJob(url, id)
    expect(mid.state).toBe('running')
    expect(mid.result).toBeNull()

    const job = await waitForJob(url, id, j => TERMINAL.has(j.state), 20_000)
    expect(job.state).toBe('succeeded')
    expect(job.result?.stdout).toBe(`${marker}\n`)
    expect(job.result?.exitCode).toBe(0)
    expect(job.attempts).toHaveLength(1)
    expect(job.attempts[0]).toMatchObject({ number: attempt, node: holder, state: 'succeeded' })

    const rogueId = rogue.peerId.toString()
    const stale = (await events(id)).filter(e => e.type === 'stale-report')
    expect(stale.map(e => e.actor)).toEqual([rogueId, rogueId])
    expect(stale.map(e => e.detail.report).sort()).toEqual(['result', 'started'])
    for (const e of stale) expect(e.attempt).toBe(attempt)
  })

  it('is refused an attempt a real node already holds', async () => {
    const marker = `held-${randomUUID()}`
    const { body } = await submit(url, { command: ['sh', '-c', `echo ${marker}; sleep 2`] })
    const id: string = body.id
    const running = await waitForJob(url, id, j => j.state === 'running' || TERMINAL.has(j.state), 20_000)
    expect(running.state, 'the real attempt is reported started while it runs').toBe('running')
    const { number: attempt, node: holder } = running.attempts.at(-1)!
    expect(mesh.nodePeerIds).toContain(holder)

    const s = await RogueSession.open(rogue, mesh.coordinatorPeerId)
    try {
      await greet(s, 1)
      // An idle bidder with every slot free: it would win any open round outright.
      await s.send({ type: 'bid', rid: 2, jobId: id, attempt, freeSlots: 1, slots: 1 })
      expect(await s.frame()).toMatchObject({ type: 'refuse', rid: 2, jobId: id, attempt, reason: 'taken' })
      // The next attempt is not open either (this one goes to the store's conditional write).
      await s.send({ type: 'bid', rid: 3, jobId: id, attempt: attempt + 1, freeSlots: 1, slots: 1 })
      expect(await s.frame()).toMatchObject({ type: 'refuse', rid: 3, jobId: id, attempt: attempt + 1, reason: 'taken' })
    } finally {
      s.close()
    }
    const mid = await getJob(url, id)
    expect(mid.attempts).toHaveLength(1)
    expect(mid.attempts[0]).toMatchObject({ number: attempt, node: holder })

    const job = await waitForJob(url, id, j => TERMINAL.has(j.state), 20_000)
    expect(job.state).toBe('succeeded')
    expect(job.result?.stdout).toBe(`${marker}\n`)
    expect(job.attempts).toHaveLength(1)
    expect(job.attempts[0]).toMatchObject({ number: attempt, node: holder, state: 'succeeded' })
    const awarded = (await events(id)).filter(e => e.type === 'awarded')
    expect(awarded).toHaveLength(1)
    expect(awarded[0]?.detail.node).toBe(holder)
  })

  it('survives garbage gossip on both topics', async () => {
    const deep = (n: number): Uint8Array => utf8('['.repeat(n) + ']'.repeat(n))
    const heartbeatGarbage: Uint8Array[] = [
      randomBytes(200),
      Uint8Array.from([0xc3, 0x28, 0xa0, 0xa1]),
      utf8('{"v":1,"type":"node-heartbeat"'),
      encode({ v: 1, type: 'node-heartbeat', seq: 'one', sentAt: -5, capacity: { slots: 'two' }, running: {} }),
      encode({ v: 2, type: 'coordinator-beacon', seq: 0, sentAt: Date.now(), addrs: [] }),
      encode({ v: 1, type: 'node-heartbeat', seq: 0, sentAt: Date.now(), capacity: ROGUE_CAPACITY, running: [], pad: 'x'.repeat(LIMITS.heartbeatBytes) }),
      utf8('1e999'),
      deep(8_000)
    ]
    const announceGarbage: Uint8Array[] = [
      randomBytes(4096),
      utf8('null'),
      encode({ v: 1, type: 'announce', sentAt: Date.now(), jobs: [], taken: [] }),
      encode({ v: 1, type: 'announce', sentAt: Date.now(), jobs: [{ jobId: 'x', attempt: 'first', resources: {}, labels: [], timeoutSeconds: 0 }] }),
      encode({ v: 1, type: 'announce', sentAt: Date.now(), jobs: Array.from({ length: LIMITS.announcementJobs + 1 }, () => ({ jobId: uuidv7(Date.now()), attempt: 1, resources: { cpus: 1, memoryMb: 16 }, labels: {}, timeoutSeconds: 60 })) }),
      encode({ v: 1, type: 'announce', sentAt: Date.now(), jobs: [], taken: [], pad: 'x'.repeat(LIMITS.announcementBytes + 1024) }),
      deep(100_000)
    ]
    for (const g of heartbeatGarbage) expect(() => decodeHeartbeatTopic(g)).toThrow(DecodeError)
    for (const g of announceGarbage) expect(() => decodeAnnouncement(g)).toThrow(DecodeError)

    // Each topic's garbage goes to the peers that listen to it: heartbeats to the coordinator,
    // beacons to the nodes, announcements to both.
    const everyone = [mesh.coordinatorPeerId, ...mesh.nodePeerIds]
    for (const [topic, list, targets] of [[HEARTBEAT_TOPIC, heartbeatGarbage, [mesh.coordinatorPeerId]], [BEACON_TOPIC, heartbeatGarbage, mesh.nodePeerIds], [ANNOUNCE_TOPIC, announceGarbage, everyone]] as const) {
      for (const g of list) {
        const { recipients } = await rogue.services.pubsub.publish(topic, g)
        expect(recipients.map(String)).toEqual(expect.arrayContaining(targets))
      }
    }

    await realJobSucceeds(`after-garbage-gossip-${randomUUID()}`)
    await healthy()
    const { nodes } = await (await fetch(`${url}/v1/nodes`)).json() as { nodes: Array<{ peerId: string, session: boolean }> }
    for (const id of mesh.nodePeerIds) expect(nodes.find(n => n.peerId === id)?.session, `session of ${id}`).toBe(true)
    expect(allAlive()).toBe(true)
  })
})
