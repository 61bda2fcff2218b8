/**
 * Growing and shrinking the mesh through a fake Hetzner Cloud API (the only
 * faked service; test/helpers/fake-hetzner.ts, checked against the real
 * `hcloud` CLI). One small node and 40 jobs that need more than it has: the
 * coordinator creates servers, bounded by --max-servers; the test plays the
 * cloud by starting an `rgrid-node` for each created server from its
 * cloud-init user data (token and labels); the backlog drains; the idle
 * servers are drained and deleted, and their tokens revoked.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse } from 'yaml'
import { BINS, LocalMesh } from '../../dist/cli/local-mesh.js'
import { FakeHetzner } from '../helpers/fake-hetzner.js'
import { submit, waitForAll } from '../helpers/http.js'
import { until } from '../helpers/rogue.js'

let fake: FakeHetzner
let mesh: LocalMesh
let dataDir: string
const machines = new Map<number, ChildProcess>()

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-prov-'))
  fake = new FakeHetzner({ token: 'test-hcloud-token' })
  const endpoint = await fake.start()
  mesh = new LocalMesh({
    dataDir, nodes: 1, slots: 1, runtime: 'process', nodeArgs: () => ['--cpus', '1', '--memory-mb', '1024'],
    coordinatorArgs: [
      '--hetzner-token', fake.token, '--hetzner-endpoint', endpoint, '--server-type', 'cx22', '--location', 'fsn1',
      '--max-servers', '3', '--scale-up-after', '1s', '--idle-before-delete', '2s', '--scale-up-cooldown', '1s',
      '--billing-hour-window', '0s', '--provision-every', '1s', '--join-deadline', '60s', '--mesh-id', 'test'
    ]
  })
  await mesh.start()
  await mesh.waitForNodes(1)
}, 120_000)

afterAll(async () => {
  for (const m of machines.values()) if (m.exitCode == null) m.kill('SIGKILL')
  await mesh?.stop()
  await fake?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

/** Boots a "server": an rgrid-node configured by the server's own cloud-init user data. */
function boot (serverId: number): ChildProcess {
  const doc = parse(fake.userData(serverId)!) as { write_files: Array<{ path: string, content: string }> }
  const config = JSON.parse(doc.write_files.find(f => f.path === '/etc/rgrid/node.json')!.content) as Record<string, unknown>
  const file = join(dataDir, `server-${serverId}.json`)
  writeFileSync(file, JSON.stringify(config))
  // The cloud's machine differs from ours only in where it keeps data and how it runs jobs.
  const child = spawn(process.execPath, [BINS.node, 'join', '--config', file, '--runtime', 'process', '--cpus', '2', '--memory-mb', '4096', '--slots', '1',
    '--data-dir', join(dataDir, `server-${serverId}`), '--listen', '/ip4/127.0.0.1/tcp/0', '--drain-timeout-ms', '1000'], { stdio: 'ignore' })
  machines.set(serverId, child)
  return child
}

describe('provisioning on Hetzner Cloud (fake API)', () => {
  it('creates servers for a backlog the mesh cannot run, within the limit, and gives them back when idle', async () => {
    const ids: string[] = []
    for (let i = 0; i < 40; i++) ids.push((await submit(mesh.httpUrl, { command: ['sh', '-c', `sleep 0.2; echo big-${i}`], resources: { cpus: 2, memoryMb: 512 } })).body.id)
    // Scale-up: three servers (the limit), labelled as ours, each with its own join token in its user data.
    await until('three servers created', () => fake.servers().length >= 3 ? true : undefined, 30_000)
    const servers = fake.servers()
    expect(servers).toHaveLength(3)
    const tokens = new Set<string>()
    for (const s of servers) {
      expect(s.labels).toMatchObject({ rgrid: 'managed', 'rgrid-mesh': 'test' })
      expect(s.server_type.name).toBe('cx22')
      const data = fake.userData(s.id)!
      expect(data.startsWith('#cloud-config')).toBe(true)
      expect(data).not.toContain(fake.token)
      tokens.add(String(s.labels['rgrid-token']))
      boot(s.id)
    }
    expect(tokens.size).toBe(3)
    const jobs = await waitForAll(mesh.httpUrl, ids, 120_000)
    for (const [i, job] of jobs.entries()) {
      expect(job.state, `job ${i}`).toBe('succeeded')
      expect(job.result?.stdout).toBe(`big-${i}\n`)
      // The small node could not run them; the servers did.
      expect(job.attempts.at(-1)!.node).not.toBe(mesh.nodePeerIds[0])
    }
    // Scale-down: idle servers are drained, then deleted; the cloud then stops the machines.
    await until('every server given back', () => {
      for (const [id, m] of machines) if (fake.server(id) == null && m.exitCode == null) m.kill('SIGTERM')
      return fake.servers().length === 0 ? true : undefined
    }, 60_000, 200)
    expect(fake.createdCount).toBe(3)
    expect(fake.deletedCount).toBe(3)
    // Their join tokens died with them.
    const list = await new Promise<string>((resolve, reject) => {
      const c = spawn(process.execPath, [BINS.coordinator, 'token', 'list', '--data-dir', join(dataDir, 'coordinator')])
      let out = ''
      c.stdout.on('data', (b: Buffer) => { out += b.toString() })
      c.on('exit', code => { if (code === 0) resolve(out); else reject(new Error(`token list exited ${code}`)) })
    })
    for (const t of tokens) expect(list).toMatch(new RegExp(`${t}\\s+created \\S+\\s+revoked`))
    const { provisioner } = await (await fetch(`${mesh.httpUrl}/v1/stats`)).json() as { provisioner: { created: number, deleted: number, neverJoined: number, disabled: string | null } }
    expect(provisioner).toMatchObject({ created: 3, deleted: 3, neverJoined: 0, disabled: null })
    // The event log says what was done to each server and why.
    const { events } = await (await fetch(`${mesh.httpUrl}/v1/cloud/events?limit=100`)).json() as { events: Array<{ type: string, serverId: number, reason: string }> }
    for (const srv of servers) {
      const mine = events.filter(e => e.serverId === srv.id).map(e => e.type).reverse()
      expect(mine).toEqual(['created', 'draining', 'deleted'])
    }
    expect(events.find(e => e.type === 'created')!.reason).toMatch(/jobs waited over 1 s/)
    expect(events.find(e => e.type === 'deleted')!.reason).toMatch(/idle for/)
    const prom = await (await fetch(`${mesh.httpUrl}/metrics`)).text()
    expect(prom).toContain('rgrid_provisioner_servers_created_total 3')
    expect(prom).toContain('rgrid_provisioner_disabled 0')
    // A job no server type could run: no server is created for it, and explain says why.
    const { body } = await submit(mesh.httpUrl, { command: ['true'], resources: { cpus: 64, memoryMb: 512 } })
    const e = await (await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/explain`)).json() as { next: string }
    expect(e.next).toContain('No cx22 server could run it either, so none will be created for it.')
    const scans = (): number => fake.requests.filter(r => r.method === 'GET' && r.path === '/v1/servers').length
    const seen = scans()
    await until('three more provisioner scans', () => (scans() >= seen + 3 ? true : undefined))
    expect(fake.createdCount).toBe(3)
    await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/cancel`, { method: 'POST' })
  })

  it('a coordinator killed with SIGKILL in the middle of a scale-up and restarted creates no duplicate and leaks nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rgrid-prov-kill-'))
    const slow = new FakeHetzner({ token: 'test-hcloud-token', slowCreateMs: 1500 })
    const endpoint = await slow.start()
    const m = new LocalMesh({
      dataDir: dir, nodes: 1, slots: 1, runtime: 'process', nodeArgs: () => ['--cpus', '1', '--memory-mb', '1024'],
      coordinatorArgs: ['--hetzner-token', slow.token, '--hetzner-endpoint', endpoint, '--max-servers', '3', '--scale-up-after', '1s',
        '--scale-up-cooldown', '1s', '--provision-every', '1s', '--join-deadline', '10m', '--mesh-id', 'kill']
    })
    try {
      await m.start()
      await m.waitForNodes(1)
      for (let i = 0; i < 10; i++) await submit(m.httpUrl, { command: ['true'], resources: { cpus: 2, memoryMb: 512 } })
      // The first server exists and the second create is on its way (the fake answers creates slowly): kill now.
      await until('a scale-up under way', () => slow.createdCount >= 1 && slow.requests.filter(r => r.method === 'POST').length >= 2 ? true : undefined, 30_000, 20)
      await m.restart('coordinator')
      await until('the restarted coordinator reaches the limit', () => slow.servers().length >= 3 ? true : undefined, 30_000)
      // Settle: a few more scans must not add any.
      const seen = slow.requests.filter(r => r.method === 'GET' && r.path === '/v1/servers').length
      await until('three more scans', () => slow.requests.filter(r => r.method === 'GET' && r.path === '/v1/servers').length >= seen + 3 ? true : undefined, 30_000)
      expect(slow.servers()).toHaveLength(3)
      expect(slow.createdCount).toBe(3)
      expect(slow.deletedCount).toBe(0)
      for (const s of slow.servers()) expect(s.labels).toMatchObject({ rgrid: 'managed', 'rgrid-mesh': 'kill' })
      // The server whose create answer never arrived was found by its labels and adopted, with a record saying so.
      const { events } = await (await fetch(`${m.httpUrl}/v1/cloud/events`)).json() as { events: Array<{ type: string }> }
      expect(events.filter(e => e.type === 'created')).toHaveLength(2)
      expect(events.filter(e => e.type === 'adopted')).toHaveLength(1)
    } finally {
      await m.stop()
      await slow.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
