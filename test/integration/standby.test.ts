/**
 * Session 1.2, standing bids, against a real coordinator process and real
 * node processes: idle nodes wait on `standby`, and new jobs go straight to
 * them without gossip or an auction. A raw 1.2 peer checks the frames: an
 * award on its standby, an empty answer when the wait ends or it withdraws,
 * work that already waits, and malformed standbys. Last, a node on standby
 * is killed with -9: its standbys die with its session and nothing is
 * placed on it.
 */
import { describe, it, expect } from 'vitest'
import { randomUUID } from 'node:crypto'
import type { LocalMesh } from '../../dist/cli/local-mesh.js'
import { SESSION_PROTOCOL } from '../../protocol/ids.js'
import type { RGridHost } from '../../common/p2p.js'
import { getJob, submit, waitForAll, waitForJob, TERMINAL } from '../helpers/http.js'
import { RogueSession, until } from '../helpers/rogue.js'
import { meshWithRogueForFile } from '../helpers/rogue-mesh.js'
import { rogueNodeFor } from '../helpers/rogue-node.js'

let mesh: LocalMesh
let rogue: RGridHost
let url: string

interface Stats {
  auction: { bids: number, awards: number, standby: number }
  announcer: { jobs: number, placed: number }
  standby: { placed: number, served: number, waiting: number, nodes: number, expired: number, withdrawn: number }
}

async function stats (): Promise<Stats> {
  const res = await fetch(`${url}/v1/stats`)
  expect(res.status).toBe(200)
  return await res.json() as Stats
}

const { greet, rogueJob, events, result } = rogueNodeFor(() => ({ url, joinToken: mesh.joinToken }))

meshWithRogueForFile('rgrid-standby-', { nodes: 2, slots: 2, runtime: 'process' }, env => {
  mesh = env.mesh
  rogue = env.rogue
  url = env.mesh.httpUrl
})

describe('standing bids on an idle mesh', () => {
  it('idle nodes wait on standby, one per free slot, and take jobs submitted one at a time without gossip or bids', async () => {
    await until('both nodes to wait on standby with both slots', async () => (await stats()).standby.waiting === 4 ? true : undefined, 20_000)
    const before = await stats()
    const ids: string[] = []
    for (let i = 0; i < 20; i++) {
      const { status, body } = await submit(url, { command: ['sh', '-c', `echo s${i}`] })
      expect(status).toBe(201)
      ids.push(body.id as string)
      expect((await waitForJob(url, body.id, j => TERMINAL.has(j.state), 20_000)).state).toBe('succeeded')
      // Its slot went back on standby before the next submission.
      await until('the standbys to be back', async () => (await stats()).standby.waiting === 4 ? true : undefined, 10_000, 10)
    }
    const jobs = await waitForAll(url, ids, 10_000)
    expect(jobs.map(j => j.result?.stdout)).toEqual(ids.map((_, i) => `s${i}\n`))
    for (const j of jobs) expect(j.attempts).toHaveLength(1)
    expect(new Set(jobs.map(j => j.attempts[0]!.node)).size).toBe(2)
    const after = await stats()
    const seen = JSON.stringify({ before, after })
    expect(after.standby.placed - before.standby.placed, seen).toBe(20)
    expect(after.announcer.placed - before.announcer.placed, seen).toBe(20)
    expect(after.auction.standby - before.auction.standby, seen).toBe(20)
    expect(after.auction.bids - before.auction.bids, seen).toBe(0)
    expect(after.announcer.jobs - before.announcer.jobs, seen).toBe(0)
    const awarded = (await events(ids[0]!)).filter(e => e.type === 'awarded')
    expect(awarded).toHaveLength(1)
    expect(awarded[0]?.detail).toMatchObject({ standby: true, bids: 0 })
  })
})

describe('session 1.2 frames', () => {
  it('a standby is answered with the award of a new job that fits, which is never announced', async () => {
    const s = await RogueSession.open(rogue, mesh.coordinatorPeerId, SESSION_PROTOCOL)
    try {
      await greet(s)
      await s.send({ type: 'standby', rid: 2, waitMs: 30_000 })
      await until('the standby to wait', async () => (await stats()).standby.waiting >= 5 ? true : undefined, 5_000, 10)
      const before = await stats()
      const id = await rogueJob(`r-${randomUUID()}`)
      const award = await s.frame()
      expect(award).toMatchObject({ type: 'award', rid: 2, jobId: id, attempt: 1, spec: { labels: { zone: 'rogue' } } })
      if (award.type !== 'award') throw new Error('unreachable')
      expect((await stats()).announcer.jobs).toBe(before.announcer.jobs)
      await s.send(result(3, award, 'R\n'))
      expect(await s.frame()).toEqual({ type: 'ack', rid: 3 })
      const done = await waitForJob(url, id, j => TERMINAL.has(j.state), 10_000)
      expect(done.state).toBe('succeeded')
      expect(done.attempts.map(a => a.node)).toEqual([rogue.peerId.toString()])
    } finally {
      s.close()
    }
  })

  it('a job that already waits is awarded on the standby at once', async () => {
    const id = await rogueJob(`w-${randomUUID()}`)
    // Announced to a mesh where nobody fits it, it stays open; the coordinator hands out directly only jobs open 20 ms or more.
    const created = (await getJob(url, id) as unknown as { createdAt: unknown }).createdAt
    const createdAt = typeof created === 'number' ? created : Date.parse(String(created))
    expect(Number.isFinite(createdAt)).toBe(true)
    await until('the job to be open 50 ms', () => Date.now() - createdAt >= 50 ? true : undefined, 5_000, 5)
    const s = await RogueSession.open(rogue, mesh.coordinatorPeerId, SESSION_PROTOCOL)
    try {
      await greet(s)
      await s.send({ type: 'standby', rid: 2, waitMs: 30_000 })
      const award = await s.frame()
      expect(award).toMatchObject({ type: 'award', rid: 2, jobId: id })
      if (award.type !== 'award') throw new Error('unreachable')
      await s.send(result(3, award, 'W\n'))
      expect(await s.frame()).toEqual({ type: 'ack', rid: 3 })
    } finally {
      s.close()
    }
    expect((await waitForJob(url, id, j => TERMINAL.has(j.state), 10_000)).state).toBe('succeeded')
  })

  it('a job announced while the node was full reaches its waiting standby when a result frees the slot', async () => {
    const s = await RogueSession.open(rogue, mesh.coordinatorPeerId, SESSION_PROTOCOL)
    try {
      await greet(s)
      const a = await rogueJob(`a-${randomUUID()}`)
      await s.send({ type: 'bid', rid: 2, jobId: a, attempt: 1, freeSlots: 1, slots: 1 })
      const award = await s.frame()
      expect(award).toMatchObject({ type: 'award', rid: 2, jobId: a })
      if (award.type !== 'award') throw new Error('unreachable')
      // Our one slot is held: the standby waits, and a job that fits only us is announced instead of placed.
      await s.send({ type: 'standby', rid: 3, waitMs: 30_000 })
      const before = await stats()
      const b = await rogueJob(`b-${randomUUID()}`)
      await until('b to be announced', async () => (await stats()).announcer.jobs > before.announcer.jobs ? true : undefined, 5_000, 10)
      expect(await s.read(300)).toEqual({ kind: 'timeout' })
      // The result (without wantNext) frees the slot: the ack, then b on the waiting standby.
      await s.send(result(4, award, 'A\n'))
      expect(await s.frame()).toEqual({ type: 'ack', rid: 4 })
      const second = await s.frame()
      expect(second).toMatchObject({ type: 'award', rid: 3, jobId: b })
      if (second.type !== 'award') throw new Error('unreachable')
      await s.send(result(5, second, 'B\n'))
      expect(await s.frame()).toEqual({ type: 'ack', rid: 5 })
      // Handed over by the result, not by a later re-announcement.
      expect((await stats()).standby.served - before.standby.served).toBe(1)
    } finally {
      s.close()
    }
  })

  it('a standby is answered empty when its wait ends and when the node withdraws; the withdraw is acked after', async () => {
    const s = await RogueSession.open(rogue, mesh.coordinatorPeerId, SESSION_PROTOCOL)
    try {
      await greet(s)
      const before = await stats()
      await s.send({ type: 'standby', rid: 2, waitMs: 200 })
      expect(await s.frame(5_000)).toEqual({ type: 'open', rid: 2, jobs: [] })
      await s.send({ type: 'standby', rid: 3, waitMs: 30_000 })
      await until('the standby to wait', async () => (await stats()).standby.nodes === 3 ? true : undefined, 5_000, 10)
      await s.send({ type: 'withdraw', rid: 4 })
      expect(await s.frame()).toEqual({ type: 'open', rid: 3, jobs: [] })
      expect(await s.frame()).toEqual({ type: 'ack', rid: 4 })
      const after = await stats()
      expect(after.standby.expired - before.standby.expired).toBe(1)
      expect(after.standby.withdrawn - before.standby.withdrawn).toBe(1)
    } finally {
      s.close()
    }
  })

  it('refuses malformed standbys with a clear error and keeps the session', async () => {
    const s = await RogueSession.open(rogue, mesh.coordinatorPeerId, SESSION_PROTOCOL)
    try {
      await greet(s)
      for (const bad of [{ type: 'standby', rid: 2, waitMs: 10 }, { type: 'standby', rid: 3, waitMs: 3_600_000 }, { type: 'standby', rid: 4 }, { type: 'withdraw', rid: 5, all: true }]) {
        await s.send(bad)
        const reply = await s.frame()
        expect(reply).toMatchObject({ type: 'error', code: 'bad-frame' })
      }
      // Still served afterwards.
      await s.send({ type: 'withdraw', rid: 6 })
      expect(await s.frame()).toEqual({ type: 'ack', rid: 6 })
    } finally {
      s.close()
    }
  })
})

describe('a node on standby killed with -9', () => {
  it('its standbys die with its session, nothing is placed on it, and the other node takes every job', async () => {
    await until('both nodes on standby', async () => (await stats()).standby.nodes === 2 ? true : undefined, 20_000, 10)
    const victimProc = mesh.processes.find(p => p.name === 'node-0')
    expect(victimProc).toBeDefined()
    const victim = mesh.nodePeerIds[0]!
    victimProc!.child.kill('SIGKILL')
    await until('the victim\'s standbys to be gone', async () => (await stats()).standby.nodes === 1 ? true : undefined, 15_000, 20)
    const ids: string[] = []
    for (let i = 0; i < 6; i++) ids.push((await submit(url, { command: ['sh', '-c', `echo k${i}`] })).body.id as string)
    const jobs = await waitForAll(url, ids, 30_000)
    expect(jobs.map(j => j.state)).toEqual(ids.map(() => 'succeeded'))
    for (const j of jobs) {
      expect(j.attempts).toHaveLength(1)
      expect(j.attempts[0]!.node).not.toBe(victim)
    }
  })
})
