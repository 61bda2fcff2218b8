/**
 * Admission by join token: the coordinator admits only nodes whose hello
 * carries a valid token (made by `rgrid-coordinator token create`); others
 * are told why and their connection is closed, and a real node with a bad
 * token exits with the reason. An open mesh (`--open`) admits anyone.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BINS, LocalMesh } from '../../dist/cli/local-mesh.js'
import { decodeJoinToken, encodeJoinToken } from '../../common/join-token.js'
import type { RGridHost } from '../../common/p2p.js'
import { RogueSession, startRogue, until } from '../helpers/rogue.js'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import { submit, waitForJob, TERMINAL } from '../helpers/http.js'

const CAPACITY = { slots: 1, freeSlots: 1, cpus: 1, memoryMb: 256, labels: {}, runtime: 'process', version: 'test' }
let mesh: LocalMesh
let dataDir: string
let rogue: RGridHost | null = null

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-join-'))
  mesh = new LocalMesh({ dataDir, nodes: 1, slots: 1, runtime: 'process' })
  await mesh.start()
  await mesh.waitForNodes(1)
  rogue = await startRogue(mesh)
}, 120_000)

afterAll(async () => {
  await rogue?.stop()
  await mesh?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

/** Opens a session, dialling the coordinator again if an earlier refusal closed the connection. */
async function openSession (host: RGridHost): Promise<RogueSession> {
  for (let i = 0; ; i++) {
    try {
      return await RogueSession.open(host, mesh.coordinatorPeerId)
    } catch (err) {
      if (i >= 10) throw err
      await new Promise(resolve => setTimeout(resolve, 100))
      await host.dial(multiaddr(mesh.coordinatorAddr)).catch(() => undefined)
    }
  }
}

const openConnections = (host: RGridHost): number => host.getConnections(peerIdFromString(mesh.coordinatorPeerId)).filter(c => c.status === 'open').length

async function hello (join: { id: string, secret: string } | undefined, host: RGridHost = rogue!): Promise<Record<string, unknown>> {
  const s = await openSession(host)
  let reply: Record<string, unknown>
  try {
    await s.send({ type: 'hello', rid: 1, capacity: CAPACITY, running: [], ...(join != null ? { join } : {}) })
    reply = await s.frame().catch((err: unknown) => { throw new Error(`hello with ${join == null ? "no token" : join.id}: ${(err as Error).message}`) }) as unknown as Record<string, unknown>
  } finally {
    s.close()
  }
  // Refused means cut off: the coordinator closes the connection too.
  if (reply.code === 'join-refused') await until('the coordinator to close the refused connection', () => openConnections(host) === 0 ? true : undefined)
  return reply
}

async function runNode (args: string[]): Promise<{ code: number | null, stderr: string }> {
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BINS.node, 'join', ...args, '--runtime', 'process', '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', join(dataDir, `node-${Date.now()}`)])
    let stderr = ''
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`the node did not exit: ${stderr.slice(-2000)}`)) }, 30_000)
    child.on('exit', code => { clearTimeout(timer); resolve({ code, stderr }) })
  })
}

describe('join tokens', () => {
  it('admits a hello with the token and refuses one without, with a wrong secret, or with an unknown id', async () => {
    const t = decodeJoinToken(mesh.joinToken)
    expect(await hello(undefined)).toMatchObject({ type: 'error', code: 'join-refused', message: expect.stringContaining('join token') })
    expect(await hello({ id: t.id, secret: 'x'.repeat(43) })).toMatchObject({ type: 'error', code: 'join-refused', message: expect.stringContaining('secret') })
    expect(await hello({ id: 'unknown-token-id', secret: t.secret })).toMatchObject({ type: 'error', code: 'join-refused', message: expect.stringContaining('not known') })
    const stats = await (await fetch(`${mesh.httpUrl}/v1/stats`)).json() as { sessions: { joinRefused: number } }
    expect(stats.sessions.joinRefused).toBe(3)
    // Refused peers are not members: only the real node is listed.
    const { nodes } = await (await fetch(`${mesh.httpUrl}/v1/nodes`)).json() as { nodes: Array<{ peerId: string }> }
    expect(nodes.map(n => n.peerId)).not.toContain(rogue!.peerId.toString())
    expect(await hello({ id: t.id, secret: t.secret })).toMatchObject({ type: 'welcome' })
  })

  it('refuses expired and revoked tokens', async () => {
    const shortLived = decodeJoinToken(await mesh.createToken(['--expires', '1m']))
    expect(await hello({ id: shortLived.id, secret: shortLived.secret })).toMatchObject({ type: 'welcome' })
    const revoke = spawn(process.execPath, [BINS.coordinator, 'token', 'revoke', shortLived.id, '--data-dir', join(dataDir, 'coordinator')])
    let out = ''
    revoke.stdout.on('data', (c: Buffer) => { out += c.toString() })
    expect(await new Promise(resolve => revoke.on('exit', resolve))).toBe(0)
    expect(out).toContain('revoked')
    // The coordinator reads revocations on its own schedule (twice per
    // heartbeat); a hello sent before it has would race the cut-off of the
    // session it opens, so wait until it has denied the token's peer.
    await until('the coordinator to deny the peer of the revoked token', async () => {
      const stats = await (await fetch(`${mesh.httpUrl}/v1/stats`)).json() as { admission: { deniedPeers: number } }
      return stats.admission.deniedPeers >= 1 ? true : undefined
    })
    // The peer bound to the token is refused as cut off…
    expect(await hello({ id: shortLived.id, secret: shortLived.secret })).toMatchObject({ type: 'error', code: 'join-refused', message: expect.stringMatching(/cut off when join token \S+ was revoked/) })
    // …and a new identity presenting the revoked token is refused for the token itself.
    const other = await startRogue(mesh)
    try {
      expect(await hello({ id: shortLived.id, secret: shortLived.secret }, other)).toMatchObject({ type: 'error', code: 'join-refused', message: `join token ${shortLived.id} was revoked` })
    } finally {
      await other.stop()
    }
  })

  it('a node with a forged token exits with the reason; one with an expired token does not start', async () => {
    const t = decodeJoinToken(mesh.joinToken)
    const forged = encodeJoinToken({ ...t, secret: 'A'.repeat(43) })
    const refused = await runNode([forged, mesh.bootstrapAddr])
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain('the coordinator refused this node')
    expect(refused.stderr).toContain('secret')
    const expired = await runNode([encodeJoinToken({ ...t, expiresAt: Date.now() - 1000 })])
    expect(expired.code).not.toBe(0)
    expect(expired.stderr).toMatch(/join token expired/)
    const damaged = await runNode(['rgrid1.not-base64-json!'])
    expect(damaged.code).not.toBe(0)
    expect(damaged.stderr).toMatch(/damaged/)
  })

  it('the joined node runs jobs (the token carried everything it needed)', async () => {
    const { body } = await submit(mesh.httpUrl, { command: ['echo', 'admitted'] })
    const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state))
    expect(job.result?.stdout).toBe('admitted\n')
    expect(job.attempts[0]!.node).toBe(mesh.nodePeerIds[0])
  })
})

describe('open mesh', () => {
  it('--open admits a node without a token', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rgrid-open-'))
    const open = new LocalMesh({ dataDir: dir, nodes: 1, slots: 1, runtime: 'process', open: true })
    try {
      await open.start()
      await open.waitForNodes(1)
      expect(open.joinToken).toBe('')
      const { body } = await submit(open.httpUrl, { command: ['echo', 'open'] })
      expect((await waitForJob(open.httpUrl, body.id, j => TERMINAL.has(j.state))).result?.stdout).toBe('open\n')
      await until('the open-mode warning in the coordinator log', async () => {
        const { readFileSync } = await import('node:fs')
        return readFileSync(join(dir, 'logs', 'coordinator.log'), 'utf8').includes('open mode') ? true : undefined
      })
    } finally {
      await open.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
