/**
 * End to end over real processes: bootstrap, coordinator and three nodes on
 * 127.0.0.1, each its own program, talking libp2p over TCP.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { until } from '../helpers/rogue.js'
import { submit, getJob, waitForAll, waitForJob, maxOverlap, TERMINAL } from '../helpers/http.js'

const SLOTS = 2
let mesh: LocalMesh
let dataDir: string

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-mesh-'))
  mesh = new LocalMesh({
    dataDir,
    nodes: 3,
    slots: SLOTS,
    runtime: 'process',
    // node-2 carries a label, so label-constrained jobs must land there.
    nodeArgs: i => i === 2 ? ['--labels', 'zone=b'] : []
  })
  await mesh.start()
  await mesh.waitForNodes(3)
})

afterAll(async () => {
  await mesh?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

describe('a mesh of separate processes', () => {
  it('runs 50 jobs, each exactly once, within node slots, spread over all nodes', async () => {
    const ids: string[] = []
    for (let i = 0; i < 50; i++) {
      const { status, body } = await submit(mesh.httpUrl, { command: ['sh', '-c', `echo out-${i}; echo err-${i} >&2; sleep 0.15`] })
      expect(status).toBe(201)
      expect(body.state).toBe('announced')
      ids.push(body.id)
    }
    const jobs = await waitForAll(mesh.httpUrl, ids, 90_000)
    const perNode = new Map<string, Array<[number, number]>>()
    jobs.forEach((job, i) => {
      expect(job.state, `job ${i}`).toBe('succeeded')
      expect(job.result?.exitCode).toBe(0)
      expect(job.result?.stdout).toBe(`out-${i}\n`)
      expect(job.result?.stderr).toBe(`err-${i}\n`)
      // Exactly one attempt, claimed once, by one of our nodes.
      expect(job.attempts).toHaveLength(1)
      const a = job.attempts[0]!
      expect(mesh.nodePeerIds).toContain(a.node)
      expect(a.state).toBe('succeeded')
      expect(a.finishedAt).not.toBeNull()
      const list = perNode.get(a.node) ?? []
      list.push([a.awardedAt, a.finishedAt!])
      perNode.set(a.node, list)
    })
    // Every node took part, and none ever held more attempts than its slots.
    expect([...perNode.keys()].sort()).toEqual([...mesh.nodePeerIds].sort())
    for (const [node, intervals] of perNode) {
      expect(intervals.length, `jobs on ${node}`).toBeGreaterThanOrEqual(5)
      expect(maxOverlap(intervals), `concurrency on ${node}`).toBeLessThanOrEqual(SLOTS)
    }
    // The event log agrees: one award per job.
    for (const id of ids.slice(0, 10)) {
      const { events } = await (await fetch(`${mesh.httpUrl}/v1/jobs/${id}/events`)).json() as { events: Array<{ type: string }> }
      const types = events.map(e => e.type)
      expect(types.filter(t => t === 'awarded')).toHaveLength(1)
      expect(types).toEqual(expect.arrayContaining(['submitted', 'awarded', 'started', 'finished']))
    }
  })

  it('reports failures with exit code and reason', async () => {
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', 'echo bad >&2; exit 7'] })
    const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state))
    expect(job.state).toBe('failed')
    expect(job.result?.exitCode).toBe(7)
    expect(job.result?.stderr).toBe('bad\n')
    expect(job.result?.error?.code).toBe('exit-nonzero')

    const missing = await submit(mesh.httpUrl, { command: ['/no/such/program'] })
    const job2 = await waitForJob(mesh.httpUrl, missing.body.id, j => TERMINAL.has(j.state))
    expect(job2.state).toBe('failed')
    expect(job2.result?.error?.code).toBe('spawn-failed')
  })

  it('enforces timeoutSeconds on the node', async () => {
    const started = Date.now()
    const { body } = await submit(mesh.httpUrl, { command: ['sleep', '60'], timeoutSeconds: 1 })
    const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state), 20_000)
    expect(job.state).toBe('failed')
    expect(job.result?.error?.code).toBe('timeout')
    expect(Date.now() - started).toBeLessThan(15_000)
  })

  it('places label-constrained jobs only on matching nodes and leaves unmatched ones announced', async () => {
    const ids: string[] = []
    for (let i = 0; i < 6; i++) ids.push((await submit(mesh.httpUrl, { command: ['true'], labels: { zone: 'b' } })).body.id)
    const jobs = await waitForAll(mesh.httpUrl, ids)
    for (const job of jobs) {
      expect(job.state).toBe('succeeded')
      expect(job.attempts[0]?.node).toBe(mesh.nodePeerIds[2])
    }
    const nobody = await submit(mesh.httpUrl, { command: ['true'], labels: { gpu: 'h100' } })
    const tooBig = await submit(mesh.httpUrl, { command: ['true'], resources: { cpus: 1, memoryMb: 1024 * 1024 } })
    // A job submitted later finishing proves the nodes heard and passed over the earlier ones.
    const probe = await submit(mesh.httpUrl, { command: ['true'] })
    await waitForJob(mesh.httpUrl, probe.body.id, j => j.state === 'succeeded')
    for (const id of [nobody.body.id, tooBig.body.id]) {
      const job = await getJob(mesh.httpUrl, id)
      expect(job.state).toBe('announced')
      expect(job.attempts).toHaveLength(0)
    }
  })

  it('cancels an announced job and stops a running one on its node', async () => {
    const unmatched = await submit(mesh.httpUrl, { command: ['true'], labels: { gpu: 'none-here' } })
    const res1 = await fetch(`${mesh.httpUrl}/v1/jobs/${unmatched.body.id}/cancel`, { method: 'POST' })
    expect(res1.status).toBe(200)
    expect((await getJob(mesh.httpUrl, unmatched.body.id)).state).toBe('cancelled')

    const marker = join(dataDir, `cancel-marker-${Date.now()}`)
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', `sleep 30; touch ${marker}`] })
    const running = await waitForJob(mesh.httpUrl, body.id, j => j.state === 'running')
    const node = running.attempts[0]!.node
    const res = await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/cancel`, { method: 'POST' })
    expect(res.status).toBe(200)
    expect((await res.json() as { state: string }).state).toBe('cancelled')
    // The node frees the slot: it reports no running attempts soon after.
    const deadline = Date.now() + 10_000
    let busy = true
    while (busy && Date.now() < deadline) {
      const { nodes } = await (await fetch(`${mesh.httpUrl}/v1/nodes`)).json() as { nodes: Array<{ peerId: string, running: number }> }
      busy = (nodes.find(n => n.peerId === node)?.running ?? 0) > 0
      if (busy) await new Promise(resolve => setTimeout(resolve, 100))
    }
    expect(busy).toBe(false)
    const again = await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/cancel`, { method: 'POST' })
    expect(again.status).toBe(409)
    expect((await getJob(mesh.httpUrl, body.id)).state).toBe('cancelled')
  })

  it('rejects malformed specs with 400 naming the field, and lists nodes', async () => {
    const bad = await submit(mesh.httpUrl, { command: 'echo hi' })
    expect(bad.status).toBe(400)
    expect(bad.body.error.code).toBe('invalid-request')
    expect(bad.body.error.message).toContain('command')
    const bad2 = await submit(mesh.httpUrl, { command: ['true'], resources: { cpus: -1 } })
    expect(bad2.status).toBe(400)
    expect(bad2.body.error.message).toContain('resources.cpus')

    const { nodes } = await (await fetch(`${mesh.httpUrl}/v1/nodes`)).json() as { nodes: Array<{ peerId: string, capacity: { slots: number }, freeSlots: number, lastHeartbeatAt: number }> }
    expect(nodes.map(n => n.peerId).sort()).toEqual([...mesh.nodePeerIds].sort())
    for (const n of nodes) {
      expect(n.capacity.slots).toBe(SLOTS)
      expect(Date.now() - n.lastHeartbeatAt).toBeLessThan(10_000)
    }
    // Nodes on this machine listen on loopback and connected from it: the dial-back reaches them.
    const reach = await until('the dial-back to have checked every node', async () => {
      const list = (await (await fetch(`${mesh.httpUrl}/v1/nodes`)).json() as { nodes: Array<{ reachability: string, dialableAddrs: string[] }> }).nodes
      return list.every(n => n.reachability !== 'unknown') ? list : undefined
    })
    for (const n of reach) {
      expect(n.reachability).toBe('public')
      expect(n.dialableAddrs.some(a => a.startsWith('/ip4/127.0.0.1/tcp/'))).toBe(true)
    }
    const health = await (await fetch(`${mesh.httpUrl}/healthz`)).json() as { ok: boolean, peerId: string }
    expect(health).toMatchObject({ ok: true, peerId: mesh.coordinatorPeerId })
  })
})
