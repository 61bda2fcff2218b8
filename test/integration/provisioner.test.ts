/**
 * The provisioner against the fake Hetzner API with a real store and a
 * controlled clock: the budget ceiling under a burst of 10,000 jobs, a
 * restart that must neither duplicate nor leak servers, rate limits honoured
 * from RateLimit-Reset, another location tried when one has no capacity, and
 * a rejected token that stops provisioning once instead of looping.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { SqliteStore } from '../../coordinator/store/sqlite.js'
import { HetznerClient } from '../../coordinator/hetzner/client.js'
import { Provisioner, type MeshNode, type ProvisionerOptions } from '../../coordinator/provisioner/provisioner.js'
import { jobSpecSchema } from '../../protocol/schemas.js'
import { uuidv7 } from '../../common/ids.js'
import { silentLogger } from '../../common/log.js'
import { FakeHetzner } from '../helpers/fake-hetzner.js'

let fake: FakeHetzner
let endpoint: string
let store: SqliteStore
let now: number
const clock = { now: () => now }

beforeEach(async () => {
  fake = new FakeHetzner({ token: 'good-token' })
  endpoint = await fake.start()
  store = SqliteStore.open({ path: ':memory:' })
  await store.migrate()
  now = Date.now()
})

afterEach(async () => {
  await store.close()
  await fake.stop()
})

async function backlog (n: number, cpus = 1): Promise<void> {
  const spec = jobSpecSchema.parse({ command: ['true'], resources: { cpus, memoryMb: 512 } })
  for (let i = 0; i < n; i++) await store.createJob({ id: uuidv7(now - 60_000 + i), spec, now: now - 60_000 })
}

function provisioner (over: Partial<ProvisionerOptions> = {}, nodes: MeshNode[] = []): Provisioner {
  return new Provisioner({
    client: new HetznerClient({ token: 'good-token', endpoint }), store, log: silentLogger, clock, meshId: 'p1',
    serverType: 'cx22', locations: ['fsn1'], image: 'debian-12', maxServers: 100, maxHourlyEur: 1, scaleUpAfterMs: 30_000,
    cooldownMs: 0, hourEndWindowMs: 0, coordinatorAddrs: () => ['/ip4/127.0.0.1/tcp/4002/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'],
    coordinatorPeerIds: () => ['12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'], isLeader: () => true, nodes: () => nodes, drain: async () => true, networkKey: () => 'k'.repeat(43),
    ...over
  })
}

describe('provisioner', () => {
  it('keeps to the hourly budget under a burst of 10,000 jobs, however often it looks', async () => {
    await backlog(10_000)
    const types = await new HetznerClient({ token: 'good-token', endpoint }).serverTypes()
    const price = Number(types.find(t => t.name === 'cx22')!.prices.find(p => p.location === 'fsn1')!.price_hourly.gross)
    const p = provisioner({ maxHourlyEur: 0.05 })
    for (let i = 0; i < 5; i++) { now += 1000; await p.tick() }
    const expected = Math.floor(0.05 / price)
    expect(expected).toBeGreaterThan(0)
    expect(fake.servers()).toHaveLength(expected)
    expect(fake.createdCount).toBe(expected)
    expect(p.lastPlan).toMatch(/at the hourly budget/)
  })

  it('after a restart mid-scale-up counts the servers that exist, so it neither duplicates nor leaks', async () => {
    await backlog(40, 2)
    // The first coordinator dies in the middle of a scale-up: its first create went through, the second never left.
    let posts = 0
    const dying: typeof fetch = async (input, init) => {
      if (init?.method === 'POST' && ++posts === 2) throw new Error('the process was killed')
      return await fetch(input, init)
    }
    const first = provisioner({ maxServers: 3, client: new HetznerClient({ token: 'good-token', endpoint, fetch: dying }) })
    now += 1000
    await first.tick()
    expect(fake.servers(), JSON.stringify(first.stats)).toHaveLength(1)
    // A new process: nothing in memory, only the API's labels.
    const second = provisioner({ maxServers: 3 })
    for (let i = 0; i < 3; i++) { now += 1000; await second.tick() }
    expect(fake.servers()).toHaveLength(3)
    expect(fake.createdCount).toBe(3)
    expect(fake.deletedCount).toBe(0)
    for (const s of fake.servers()) expect(s.labels).toMatchObject({ rgrid: 'managed', 'rgrid-mesh': 'p1' })
    // Both processes recorded their creates in the shared store: nothing looked unknown, nothing was adopted.
    const events = await store.listCloudEvents({ limit: 100 })
    expect(events.filter(e => e.type === 'created')).toHaveLength(3)
    expect(events.filter(e => e.type === 'adopted')).toHaveLength(0)
    // Another mesh's provisioner in the same project does not count or touch these.
    const other = provisioner({ meshId: 'p2', maxServers: 3, joinDeadlineMs: 0 })
    now += 1000
    await other.tick()
    expect(fake.servers().filter(s => s.labels['rgrid-mesh'] === 'p1')).toHaveLength(3)
    expect(fake.deletedCount).toBe(0)
  })

  it('waits out a 429 until RateLimit-Reset, and tries the next location when one has no capacity', async () => {
    await backlog(1)
    const p = provisioner({ locations: ['fsn1', 'nbg1'] })
    fake.failNext('POST /servers', 429, 'rate_limit_exceeded', { 'RateLimit-Reset': String(Math.ceil(now / 1000) + 120) })
    now += 1000
    await p.tick()
    expect(p.stats.rateLimited).toBe(1)
    expect(fake.servers()).toHaveLength(0)
    now += 60_000
    await p.tick()
    // Still inside the window the API asked for: it did not even ask.
    expect(fake.servers()).toHaveLength(0)
    now += 70_000
    fake.failNext('POST /servers', 412, 'resource_unavailable')
    await p.tick()
    const servers = fake.servers()
    expect(servers, `${JSON.stringify(p.stats)} ${p.lastPlan} ${JSON.stringify(fake.requests.map(r => `${r.method} ${r.path}`))}`).toHaveLength(1)
    expect(servers[0].datacenter.location.name).toBe('nbg1')
  })

  it('stops once, with a clear reason, when the token is rejected', async () => {
    await backlog(5)
    const p = provisioner({ client: new HetznerClient({ token: 'wrong-token', endpoint }) })
    for (let i = 0; i < 5; i++) { now += 1000; await p.tick() }
    expect(p.stats.unauthorized).toBe(1)
    expect(p.disabledReason).toMatch(/401 unauthorized/)
    expect(fake.createdCount).toBe(0)
  })

  it('never provisions for jobs no server type could run, and says so', async () => {
    const spec = jobSpecSchema.parse({ command: ['true'], resources: { cpus: 64, memoryMb: 512 } })
    await store.createJob({ id: uuidv7(now - 60_000), spec, now: now - 60_000 })
    const p = provisioner()
    now += 1000
    await p.tick()
    expect(fake.createdCount).toBe(0)
    expect(p.lastPlan).toMatch(/need more than a cx22 has/)
  })

  it('adopts a server with our labels that the store has no record of, or deletes it when told to', async () => {
    const client = new HetznerClient({ token: 'good-token', endpoint })
    const stray = await client.createServer({ name: 'stray-1', serverType: 'cx22', image: 'debian-12', location: 'fsn1', labels: { rgrid: 'managed', 'rgrid-mesh': 'p1' } })
    const p = provisioner()
    now += 1000
    await p.tick()
    const adopted = await store.listCloudEvents({ limit: 10, serverId: stray.server.id })
    expect(adopted.map(e => e.type)).toEqual(['adopted'])
    expect(fake.servers()).toHaveLength(1)
    const other = await client.createServer({ name: 'stray-2', serverType: 'cx22', image: 'debian-12', location: 'fsn1', labels: { rgrid: 'managed', 'rgrid-mesh': 'p1' } })
    const strict = provisioner({ unknownServers: 'delete' })
    now += 1000
    await strict.tick()
    expect(fake.server(other.server.id)).toBeUndefined()
    expect((await store.listCloudEvents({ limit: 10, serverId: other.server.id }))[0]).toMatchObject({ type: 'deleted', reason: expect.stringContaining('policy: delete') })
    // The adopted one is known now and stays.
    expect(fake.server(stray.server.id)).toBeDefined()
  })

  it('deletes a server that never joins by its deadline, counts it, and passes SSH keys to new servers', async () => {
    await backlog(1)
    const p = provisioner({ joinDeadlineMs: 120_000, sshKeys: ['rgrid-ops'], maxServers: 1 })
    now += 1000
    await p.tick()
    const [server] = fake.servers()
    expect(server).toBeDefined()
    expect(fake.requests.find(r => r.method === 'POST' && r.path === '/v1/servers')?.body).toMatchObject({ ssh_keys: ['rgrid-ops'] })
    // No node ever joins for it: after the deadline it goes, and the event says why.
    now = Date.parse(server.created) + 130_000
    await p.tick()
    expect(fake.server(server.id)).toBeUndefined()
    expect(p.stats.neverJoined).toBe(1)
    expect((await store.listCloudEvents({ limit: 5, serverId: server.id }))[0]).toMatchObject({ type: 'deleted', reason: expect.stringContaining('never joined') })
  })

  it('falls back to the next server type when no location has the main one, and labels the generation', async () => {
    await backlog(1)
    const p = provisioner({ fallbackServerTypes: ['cx32'], generation: '7' })
    fake.failNext('POST /servers', 412, 'resource_unavailable')
    now += 1000
    await p.tick()
    const [server] = fake.servers()
    expect(server?.server_type.name).toBe('cx32')
    expect(server?.labels['rgrid-generation']).toBe('7')
    // A fallback smaller than the main type would break the plan: refused as a configuration error.
    const bad = provisioner({ serverType: 'cx32', fallbackServerTypes: ['cx22'] })
    now += 1000
    await bad.tick()
    expect(bad.disabledReason).toMatch(/smaller than cx32/)
  })
})
