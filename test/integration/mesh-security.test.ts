/**
 * Mesh admission and abuse resistance on a real mesh (bootstrap, coordinator
 * and nodes as separate processes over TCP on 127.0.0.1):
 * - the private network: a peer without the network key cannot complete a
 *   handshake with any member; one with it can;
 * - revoking a join token cuts its node off within about a heartbeat: its
 *   session ends, it exits with the reason, its running attempt goes to
 *   another node, every other peer refuses it, and it cannot come back;
 * - gossipsub peer scoring graylists an insider that sends invalid messages
 *   or floods the heartbeat topic; the session protocol rate-limits frames.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { BINS, LocalMesh } from '../../dist/cli/local-mesh.js'
import { createHost, type RGridHost } from '../../common/p2p.js'
import { decodeJoinToken } from '../../common/join-token.js'
import { newNetworkKey } from '../../common/network-key.js'
import { ANNOUNCE_TOPIC, BEACON_TOPIC, HEARTBEAT_TOPIC } from '../../protocol/ids.js'
import { encode } from '../../protocol/codec.js'
import { RogueSession, startRogue, until } from '../helpers/rogue.js'
import { submit, getJob, waitForJob, TERMINAL } from '../helpers/http.js'

let mesh: LocalMesh
let dataDir: string
const hosts: RGridHost[] = []

const HEARTBEAT_MS = 1_000
/**
 * How long a revoked machine may still reach the coordinator and be told why. The revocation test restarts
 * the machine with a fresh token and expects that reason; at the default 5 s a slow CI machine restarted it
 * after the coordinator had started refusing its connections, and the restarted node retried without ever
 * hearing why (docs/operations.md).
 */
const DENY_AFTER_CUT_MS = 60_000

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-meshsec-'))
  // node-0 and node-1 join with the mesh's token; node-1 is the one the tests keep running jobs on.
  mesh = new LocalMesh({ dataDir, logLevel: (process.env.RGRID_TEST_LOG_LEVEL ?? 'info') as 'info', nodes: 2, slots: 2, runtime: 'process', coordinatorArgs: ['--max-session-frames-per-second', '100', '--deny-after-cut-ms', String(DENY_AFTER_CUT_MS)], nodeArgs: i => ['--labels', `idx=${i}`] })
  await mesh.start()
  await mesh.waitForNodes(2)
}, 120_000)

afterAll(async () => {
  for (const h of hosts) await h.stop().catch(() => undefined)
  await mesh?.stop()
  if (process.env.RGRID_KEEP_TEST_DIR == null) rmSync(dataDir, { recursive: true, force: true })
  else console.log(`kept ${dataDir}`)
})

async function stats (): Promise<any> {
  return await (await fetch(`${mesh.httpUrl}/v1/stats`)).json()
}

async function nodes (): Promise<Array<{ peerId: string, session: boolean }>> {
  return (await (await fetch(`${mesh.httpUrl}/v1/nodes`)).json() as { nodes: Array<{ peerId: string, session: boolean }> }).nodes
}

/** What node-0's status file (rewritten every 2 s) says of its security, or undefined before it exists. */
function node0Security (): { deniedPeers: number, graylistedPeers: string[], heartbeat: { overRate: number } } | undefined {
  try {
    return (JSON.parse(readFileSync(join(dataDir, 'node-0', 'status.json'), 'utf8')) as { security: ReturnType<typeof node0Security> }).security
  } catch {
    // Not written yet, or caught between its write and rename: ask again.
    return undefined
  }
}

/** An insider rogue connected to the coordinator and the two nodes that stay (node B is revoked and gone). */
async function rogueInMesh (): Promise<RGridHost> {
  return await startRogue({
    bootstrapAddr: mesh.bootstrapAddr, coordinatorAddr: mesh.coordinatorAddr, coordinatorPeerId: mesh.coordinatorPeerId,
    nodePeerIds: mesh.nodePeerIds.slice(0, 2), joinToken: mesh.joinToken
  })
}

async function host (networkKey?: string): Promise<RGridHost> {
  const h = await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], ...(networkKey != null ? { networkKey } : {}) })
  await h.start()
  hosts.push(h)
  return h
}

describe('private network', () => {
  it('a peer without the network key (or with another one) cannot complete a handshake; one with it can', async () => {
    const key = decodeJoinToken(mesh.joinToken).networkKey
    const targets = [mesh.bootstrapAddr, mesh.coordinatorAddr]
    for (const [label, h] of [['no key', await host()], ['another key', await host(newNetworkKey())]] as const) {
      for (const addr of targets) {
        await expect(h.dial(multiaddr(addr), { signal: AbortSignal.timeout(5_000) }), `${label} → ${addr}`).rejects.toThrow()
        expect(h.getConnections().length, `${label} holds no connection`).toBe(0)
      }
    }
    const insider = await host(key)
    for (const addr of targets) {
      const conn = await insider.dial(multiaddr(addr), { signal: AbortSignal.timeout(5_000) })
      expect(conn.status).toBe('open')
    }
  })
})

describe('revocation', () => {
  it('cuts the node off within about a heartbeat: session, process, running attempt, every peer', async () => {
    const tokenB = await mesh.createToken(['--note', 'machine B'])
    const idB = decodeJoinToken(tokenB).id
    const [peerB] = await mesh.addNodes(1, tokenB)
    const nodeB = mesh.processes.find(p => p.name === 'node-2')!
    await until('node B to have a session', async () => (await nodes()).find(n => n.peerId === peerB && n.session) ? true : undefined, 30_000)

    // A long job that only node B may take (labels), so it is running there when B is revoked.
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', 'sleep 120'], labels: { idx: '2' }, maxAttempts: 3 })
    await waitForJob(mesh.httpUrl, body.id, j => j.state === 'running', 30_000).catch(async (err: unknown) => {
      const why = await (await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/explain`)).text()
      throw new Error(`${(err as Error).message}; explain: ${why}`)
    })
    expect((await getJob(mesh.httpUrl, body.id)).attempts[0]!.node).toBe(peerB)

    const exited = new Promise<number | null>(resolve => { nodeB.child.once('exit', code => { resolve(code) }) })
    let stderr = ''
    nodeB.child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    const revokedAt = Date.now()
    await mesh.coordinatorCommand(['token', 'revoke', idB, '--data-dir', join(dataDir, 'coordinator')])
    await until('node B to lose its session', async () => (await nodes()).find(n => n.peerId === peerB)?.session === false ? true : undefined, 10_000, 20)
    const cutMs = Date.now() - revokedAt
    // Reported for the closing note; the heartbeat interval is the bound the design aims at.
    console.log(`revocation: node B lost its session ${cutMs} ms after the revoke command returned (heartbeat ${HEARTBEAT_MS} ms)`)
    expect(await exited).toBe(2)
    expect(stderr).toMatch(/join token .* was revoked/)

    // Its attempt was given up at once with the reason, not after a lease.
    // Only node B carries idx=2, so the job waits, announced again, for another node that does.
    const job = await waitForJob(mesh.httpUrl, body.id, j => j.attempts[0]?.state === 'lost', 10_000)
    expect(job.state).toBe('announced')
    const events = (await (await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/events`)).json() as { events: Array<{ type: string, detail: { reason?: string } }> }).events
    expect(events.some(e => e.type === 'rescheduled' && /cut off.*revoked/.test(e.detail.reason ?? ''))).toBe(true)
    await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/cancel`, { method: 'POST' })

    // Every other peer learned the deny list from the coordinator's beacon.
    await until('node-0 to refuse node B', () => (node0Security()?.deniedPeers ?? 0) >= 1 ? true : undefined, 10_000)
    const s = await stats()
    expect(s.admission.deniedPeers).toBeGreaterThanOrEqual(1)

    // Same machine (same identity), fresh valid token: still refused, with the reason.
    const tokenC = await mesh.createToken()
    const again = spawn(process.execPath, [BINS.node, 'join', tokenC, mesh.bootstrapAddr, '--listen', '/ip4/127.0.0.1/tcp/0', '--runtime', 'process', '--data-dir', join(dataDir, 'node-2')], { stdio: ['ignore', 'pipe', 'pipe'] })
    let err2 = ''
    again.stderr.on('data', (c: Buffer) => { err2 += c.toString() })
    const code = await new Promise<number | null>(resolve => { again.once('exit', c => { resolve(c) }) })
    expect(code).toBe(2)
    expect(err2).toMatch(/cut off when join token .* was revoked/)
  }, 90_000)
})

describe('gossip scoring and rate limits', () => {
  it('graylists an insider that sends invalid gossip, and the mesh keeps working', async () => {
    const rogue = await rogueInMesh()
    hosts.push(rogue)
    const before = (await stats()).gossip.graylisted as number
    // Well-formed JSON that no schema accepts, and announcements forged by a non-coordinator: both are invalid.
    for (let i = 0; i < 5; i++) {
      await rogue.services.pubsub.publish(HEARTBEAT_TOPIC, encode({ v: 1, type: 'node-heartbeat', seq: 'x' }))
    }
    await until('the coordinator to graylist the rogue', async () => ((await stats()).gossip.graylisted as number) > before ? true : undefined, 10_000)
    const job = await submit(mesh.httpUrl, { command: ['echo', 'still fine'], labels: { idx: '1' } })
    expect((await waitForJob(mesh.httpUrl, job.body.id, j => TERMINAL.has(j.state))).state).toBe('succeeded')
  }, 60_000)

  it('an insider\'s heartbeat flood reaches no node, and one misusing the beacon topic is graylisted by nodes', async () => {
    const rogue = await rogueInMesh()
    hosts.push(rogue)
    const before = await stats()
    const capacity = { slots: 1, freeSlots: 1, cpus: 1, memoryMb: 256, labels: {}, runtime: 'process', version: 'rogue' }
    const heartbeat = (seq: number): Uint8Array => encode({ v: 1, type: 'node-heartbeat', seq, sentAt: Date.now(), capacity, running: [] })
    // Nodes do not listen to the heartbeat topic at all: a flood there costs them nothing. The
    // coordinator does not count or relay heartbeats from a peer it never admitted.
    for (let seq = 0; seq < 60; seq++) {
      const { recipients } = await rogue.services.pubsub.publish(HEARTBEAT_TOPIC, heartbeat(seq))
      for (const node of mesh.nodePeerIds) expect(recipients.map(String)).not.toContain(node)
    }
    // On the beacon topic, which nodes do hear, a heartbeat is invalid: nodes graylist its author.
    for (let seq = 60; seq < 70; seq++) await rogue.services.pubsub.publish(BEACON_TOPIC, heartbeat(seq))
    await until('node-0 to graylist the rogue', () => node0Security()?.graylistedPeers.includes(rogue.peerId.toString()) === true ? true : undefined, 15_000)
    expect(node0Security()?.heartbeat.overRate).toBe(0)
    expect((await nodes()).some(n => n.peerId === rogue.peerId.toString())).toBe(false)
    expect((await stats()).gossip.graylisted).toBeGreaterThanOrEqual(before.gossip.graylisted)
  }, 60_000)

  it('answers a session frame flood with rate-limited errors and cuts the flooder off', async () => {
    const rogue = await rogueInMesh()
    hosts.push(rogue)
    const t = decodeJoinToken(mesh.joinToken)
    const session = await RogueSession.open(rogue, mesh.coordinatorPeerId)
    await session.send({ type: 'hello', rid: 1, capacity: { slots: 1, freeSlots: 0, cpus: 1, memoryMb: 256, labels: { idx: 'rogue' }, runtime: 'process', version: 'rogue' }, running: [], join: { id: t.id, secret: t.secret } })
    expect((await session.frame()).type).toBe('welcome')
    const before = (await stats()).sessions.rateLimited as number
    // This coordinator allows 100 frames/s, bursts of 200. First a burst over the allowance but
    // well under the 200 refusals that cut a session: every frame is answered, those over the
    // rate with rate-limited.
    for (let i = 0; i < 300; i++) await session.send({ type: 'pull', rid: 100 + i, max: 1 })
    let answered = 0
    let limited = 0
    while (answered < 300) {
      const r = await session.read(5_000)
      if (r.kind !== 'frame') throw new Error(`the session ended after ${answered} answers: ${JSON.stringify(r)}`)
      answered++
      if (r.frame.type === 'error' && r.frame.code === 'rate-limited') limited++
    }
    expect(limited).toBeGreaterThan(0)
    // Then a flood: 200 refusals and the coordinator closes the whole connection.
    try {
      for (let sent = 0; sent < 20_000; sent++) await session.send({ type: 'pull', rid: 10_000 + sent, max: 1 })
    } catch {
      // The coordinator closed the connection: what the test is waiting for.
    }
    await until('the coordinator to refuse 200 frames over the rate', async () => ((await stats()).sessions.rateLimited - before) >= 200 ? true : undefined, 10_000)
    await until('the coordinator to close the flooder\'s connection', () => rogue.getConnections(peerIdFromString(mesh.coordinatorPeerId)).length === 0 ? true : undefined, 10_000)
    const job = await submit(mesh.httpUrl, { command: ['echo', 'after the flood'], labels: { idx: '1' } })
    expect((await waitForJob(mesh.httpUrl, job.body.id, j => TERMINAL.has(j.state))).state).toBe('succeeded')
  }, 90_000)

  it('a node keeps running jobs after garbage on every protocol it speaks', async () => {
    const rogue = await rogueInMesh()
    hosts.push(rogue)
    const target = mesh.nodePeerIds[1]!
    const nodeProcess = mesh.processes.find(p => p.name === 'node-1')!
    const peer = await rogue.peerStore.get(peerIdFromString(target))
    const protocols = peer.protocols
    // identify, ping, the DHT and gossipsub at least: a node serves no session protocol.
    expect(protocols.length).toBeGreaterThanOrEqual(4)
    const garbage = [
      randomBytes(1), randomBytes(64), randomBytes(70_000),
      Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]), // a length prefix far beyond any limit
      new TextEncoder().encode('{"type":"hello"}')
    ]
    let opened = 0
    for (const protocol of protocols) {
      for (const bytes of garbage) {
        try {
          const stream = await rogue.dialProtocol(peerIdFromString(target), protocol, { signal: AbortSignal.timeout(5_000) })
          opened++
          stream.send(bytes)
          await stream.close({ signal: AbortSignal.timeout(2_000) }).catch(() => { stream.abort(new Error('done')) })
        } catch {
          // The node may reset the stream or the connection: that is a fine answer to garbage.
        }
      }
    }
    expect(opened).toBeGreaterThan(0)
    expect(nodeProcess.child.exitCode).toBeNull()
    const job = await submit(mesh.httpUrl, { command: ['echo', 'after garbage'], labels: { idx: '1' } })
    expect((await waitForJob(mesh.httpUrl, job.body.id, j => TERMINAL.has(j.state))).state).toBe('succeeded')
  }, 90_000)
})
