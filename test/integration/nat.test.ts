/**
 * Nodes behind NAT, on a network the test builds (cli/nat-lab.ts):
 * bootstrap and coordinator in a "public" namespace, two nodes in "home"
 * namespaces whose routers masquerade outgoing connections and drop new
 * incoming ones. Nobody can dial the nodes; they only dial out. Jobs run on
 * them, a cancel reaches a running job, and a killed NATed node's job is
 * rescheduled. Skipped (loudly) only where the kernel refuses namespaces;
 * under CI=true it must run.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { createNatLab, netnsUnavailable, startIn, type NatLab } from '../../dist/cli/nat-lab.js'
import { until } from '../helpers/rogue.js'

const DIST = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist')
const RELAY_PEER = join(dirname(fileURLToPath(import.meta.url)), '..', 'helpers', 'relay-peer.mjs')
const BIN = { bootstrap: join(DIST, 'bootstrap', 'cli.js'), coordinator: join(DIST, 'coordinator', 'cli.js'), node: join(DIST, 'node', 'cli.js') }

const unavailable = netnsUnavailable()
if (unavailable != null) {
  if (process.env.CI === 'true') throw new Error(`CI=true but the NAT tests cannot build namespaces: ${unavailable}`)
  console.warn(`\n*** NAT tests SKIPPED: ${unavailable} ***\n`)
}

let lab: NatLab
let dataDir: string
let publicNodeId = ''
let firewalledNodeId = ''
let httpUrl = ''
let bootstrapAddr = ''
let keyPath = ''
const children: ChildProcess[] = []
const nodeIds: string[] = []

/** Starts an RGrid program in a namespace (cli/nat-lab.ts), kept for afterAll; resolves its first `lines` stdout lines. */
async function start (ns: string, bin: string, args: string[], lines: number): Promise<{ child: ChildProcess, lines: string[] }> {
  const r = await startIn(ns, [bin, ...args], lines, 30_000)
  children.push(r.child)
  return r
}

/** An HTTP call made from inside the public namespace (the test's own namespace cannot reach it). */
function api (method: string, path: string, body?: unknown): { status: number, body: any } {
  const script = `fetch(${JSON.stringify(httpUrl + path)}, ${JSON.stringify({ method, headers: { 'content-type': 'application/json' }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) })})` +
    '.then(async r => { process.stdout.write(JSON.stringify({ status: r.status, body: await r.json() })) }, e => { process.stdout.write(JSON.stringify({ status: 0, body: String(e) })) })'
  const r = spawnSync('ip', ['netns', 'exec', lab.pub.ns, process.execPath, '-e', script], { encoding: 'utf8', timeout: 15_000 })
  return JSON.parse(r.stdout) as { status: number, body: any }
}


/** A bare libp2p peer (test/helpers/relay-peer.mjs) in a namespace that dials `target`; its JSON lines as they come. */
/** `ask()` has it ping the target again. */
function relayPeer (ns: string, target: string, listen: string[]): { child: ChildProcess, events: Array<Record<string, any>>, ask: () => void } {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, RELAY_PEER, keyPath, target, ...listen], { stdio: ['pipe', 'pipe', 'pipe'] })
  children.push(child)
  const events: Array<Record<string, any>> = []
  createInterface({ input: child.stdout! }).on('line', l => { events.push(JSON.parse(l) as Record<string, any>) })
  child.stderr!.on('data', (c: Buffer) => { events.push({ event: 'stderr', text: c.toString() }) })
  return { child, events, ask: () => { child.stdin!.write('ping\n') } }
}

/** A node's status file, as `rgrid-node status` reads it. */
function statusOf (dir: string): Record<string, any> | undefined {
  try {
    return JSON.parse(readFileSync(join(dataDir, dir, 'status.json'), 'utf8')) as Record<string, any>
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || err instanceof SyntaxError) return undefined
    throw err
  }
}

/** Runs `sleep 60` on the node the labels pick, cancels it, and waits for the node to report the attempt cancelled. */
async function cancelRunningJob (labels: Record<string, string>): Promise<void> {
  const id = api('POST', '/v1/jobs', { command: ['sleep', '60'], labels }).body.id as string
  await until('the job to run', () => api('GET', `/v1/jobs/${id}`).body.state === 'running' ? true : undefined, 30_000, 200)
  expect(api('POST', `/v1/jobs/${id}/cancel`).status).toBe(200)
  const job = await until('the attempt to be cancelled on the node', () => {
    const j = api('GET', `/v1/jobs/${id}`).body
    return j.attempts[0]?.state === 'cancelled' ? j : undefined
  }, 20_000, 200)
  expect(job.state).toBe('cancelled')
}

describe.skipIf(unavailable != null)('nodes behind NAT', () => {
  beforeAll(async () => {
    lab = createNatLab(3)
    dataDir = mkdtempSync(join(tmpdir(), 'rgrid-nat-'))
    const keyFile = join(dataDir, 'network.key')
    const coordinatorDir = join(dataDir, 'coordinator')
    spawnSync(process.execPath, [BIN.coordinator, 'network-key', '--network-key-file', keyFile, '--data-dir', coordinatorDir], { stdio: 'inherit' })
    keyPath = keyFile
    const bs = await start(lab.pub.ns, BIN.bootstrap, ['--listen', `/ip4/${lab.pub.addr}/tcp/4001`, '--listen', `/ip6/${lab.pub.addr6}/tcp/4001`, '--data-dir', join(dataDir, 'bootstrap'), '--network-key-file', keyFile], 1)
    const co = await start(lab.pub.ns, BIN.coordinator, ['--listen', `/ip4/${lab.pub.addr}/tcp/4002`, '--http', `${lab.pub.addr}:8080`, '--bootstrap', bs.lines[0]!, '--data-dir', coordinatorDir, '--no-api-keys'], 2)
    httpUrl = co.lines[1]!
    bootstrapAddr = bs.lines[0]!
    const token = spawnSync(process.execPath, [BIN.coordinator, 'token', 'create', '--data-dir', coordinatorDir, '--addr', co.lines[0]!], { encoding: 'utf8' }).stdout.trim()
    for (const [i, home] of lab.homes.slice(0, 2).entries()) {
      const n = await start(home.ns, BIN.node, ['join', token, bs.lines[0]!, '--listen', '/ip4/0.0.0.0/tcp/0', '--listen', '/ip6/::/tcp/0', '--runtime', 'process', '--slots', '2', '--labels', `home=${i},nat=yes`, '--data-dir', join(dataDir, `node-${i}`)], 1)
      nodeIds.push(n.lines[0]!)
    }
    // A node on the public side, for contrast: the coordinator can dial it.
    const pub = await start(lab.pub.ns, BIN.node, ['join', token, bs.lines[0]!, '--listen', '/ip4/0.0.0.0/tcp/0', '--listen', '/ip6/::/tcp/0', '--runtime', 'process', '--slots', '1', '--labels', 'home=public', '--data-dir', join(dataDir, 'node-public')], 1)
    publicNodeId = pub.lines[0]!
    // The third home's firewall lets nothing out to the coordinator's port: only the bootstrap peer is reachable.
    lab.blockPort(2, 4002)
    const fw = await start(lab.homes[2]!.ns, BIN.node, ['join', token, bs.lines[0]!, '--listen', '/ip4/0.0.0.0/tcp/0', '--runtime', 'process', '--slots', '1', '--labels', 'home=2,firewall=yes', '--data-dir', join(dataDir, 'node-fw')], 1)
    firewalledNodeId = fw.lines[0]!
    await until('the NATed nodes, the public one and the firewalled one to hold a session', () => {
      const r = api('GET', '/v1/nodes')
      return r.status === 200 && (r.body.nodes as Array<{ session: boolean }>).filter(n => n.session).length === 4 ? true : undefined
    }, 60_000, 200)
  }, 120_000)

  afterAll(async () => {
    for (const c of children) if (c.exitCode == null && c.signalCode == null) c.kill('SIGKILL')
    await Promise.all(children.map(async c => { if (c.exitCode == null && c.signalCode == null) await new Promise(resolve => c.once('exit', resolve)) }))
    lab?.destroy()
    if (dataDir != null) rmSync(dataDir, { recursive: true, force: true })
  })

  it('the coordinator cannot dial a node, yet jobs run on both and their results come back', async () => {
    // The premise: from the public side the homes are unreachable.
    const probe = spawnSync('ip', ['netns', 'exec', lab.pub.ns, process.execPath, '-e',
      `const s=require('net').connect(1,'${lab.homes[0]!.addr}');s.on('error',e=>{console.log(e.code);process.exit(0)});s.on('connect',()=>{console.log('connected');process.exit(1)})`], { encoding: 'utf8', timeout: 10_000 })
    expect(probe.stdout.trim()).toBe('ENETUNREACH')
    const ids = Array.from({ length: 20 }, (_, i) => api('POST', '/v1/jobs', { command: ['sh', '-c', `echo nat-${i}`], labels: { home: String(i % 2) } }).body.id as string)
    const jobs = await until('20 jobs to succeed', () => {
      const all = ids.map(id => api('GET', `/v1/jobs/${id}`).body)
      return all.every(j => j.state === 'succeeded') ? all : undefined
    }, 60_000, 200)
    expect(jobs.map(j => j.result.stdout)).toEqual(ids.map((_, i) => `nat-${i}\n`))
    expect(new Set(jobs.map(j => j.attempts[0].node))).toEqual(new Set(nodeIds))
  }, 90_000)

  it('the NATed nodes take a relay slot on the bootstrap peer and are found relayed, the public one public; each node\'s status says so', async () => {
    type Row = { peerId: string, reachability: string, dialableAddrs: string[], relayedAddrs: string[] }
    const rows = await until('the dial-back to have checked all three nodes, the NATed ones through their relay slots', () => {
      const nodes = api('GET', '/v1/nodes').body.nodes as Row[]
      const mine = [...nodeIds, publicNodeId].map(id => nodes.find(n => n.peerId === id))
      return mine.every(n => n != null && n.reachability !== 'unknown' && n.reachability !== 'outbound-only') ? mine as Row[] : undefined
    }, 45_000, 200)
    expect(rows.map(r => r.reachability)).toEqual(['relayed', 'relayed', 'public'])
    expect(rows[2]!.dialableAddrs.some(a => a.startsWith(`/ip4/${lab.pub.addr}/tcp/`))).toBe(true)
    // A public IP address too: listed for the dial-back although libp2p announces it only once confirmed.
    expect(rows[2]!.dialableAddrs.some(a => a.startsWith(`/ip6/${lab.pub.addr6}/tcp/`))).toBe(true)
    for (const [i, r] of rows.slice(0, 2).entries()) {
      // Reached through the bootstrap peer's relay: <bootstrap addr>/p2p-circuit/p2p/<node>.
      expect(r.dialableAddrs).toEqual([])
      expect(r.relayedAddrs).toContain(`${bootstrapAddr}/p2p-circuit/p2p/${nodeIds[i]!}`)
      // The bootstrap peer announces its public address too, so the relay slot carries it.
      expect(r.relayedAddrs.some(a => a.startsWith(`/ip6/${lab.pub.addr6}/tcp/4001/`))).toBe(true)
    }
    // What each node was told, as `rgrid-node status` shows it (from the status file the node rewrites every 2 s).
    const told = (dir: string): string | undefined => {
      try {
        return (JSON.parse(readFileSync(join(dataDir, dir, 'status.json'), 'utf8')) as { reachability: { reachability: string } }).reachability.reachability
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' || err instanceof SyntaxError) return undefined
        throw err
      }
    }
    await until('every node\'s status to show its reachability', () => ['node-0', 'node-1', 'node-public'].every(d => !['unknown', 'outbound-only'].includes(told(d) ?? 'unknown')) ? true : undefined, 15_000, 200)
    expect(['node-0', 'node-1', 'node-public'].map(told)).toEqual(['relayed', 'relayed', 'public'])
    const text = spawnSync(process.execPath, [BIN.node, 'status', '--data-dir', join(dataDir, 'node-0')], { encoding: 'utf8' }).stdout
    expect(text).toContain(`reachable: relayed: not dialable, reached through ${bootstrapAddr}/p2p-circuit/p2p/${nodeIds[0]!}`)
  }, 60_000)

  it('a public peer that reaches a NATed node through its relay gets a direct connection (DCUtR), and the node reports it', async () => {
    const row = (api('GET', '/v1/nodes').body.nodes as Array<{ peerId: string, relayedAddrs: string[] }>).find(n => n.peerId === nodeIds[0])!
    const relayedAddr = row.relayedAddrs.find(a => a.startsWith('/ip4/'))!
    expect(relayedAddr).toBeDefined()
    // Listens only on the public (3fff::/20) side: its address is what the NATed node dials to upgrade.
    const peer = relayPeer(lab.pub.ns, relayedAddr, [`/ip6/${lab.pub.addr6}/tcp/0`])
    const ready = await until('the peer to start', () => peer.events.find(e => e.event === 'ready'), 20_000, 100)
    const dialed = await until('the relayed dial', () => peer.events.find(e => e.event === 'dialed' || e.event === 'error'), 20_000, 100)
    expect(dialed).toMatchObject({ event: 'dialed', relayed: true })
    // DCUtR: the NATed node sees the peer's public address and dials it; the relayed connection is closed.
    const direct = await until('a direct connection from the NATed node', () => peer.events.find(e => e.event === 'open' && e.peer === nodeIds[0] && e.relayed === false), 20_000, 100)
    expect(direct.direction).toBe('inbound')
    // From the home router's public address: the NAT let the node's own outgoing connection through.
    expect(direct.addr.startsWith(`/ip6/${lab.homes[0]!.wan6}/tcp/`)).toBe(true)
    await until('the relayed connection to close', () => peer.events.find(e => e.event === 'close' && e.peer === nodeIds[0] && e.relayed === true), 20_000, 100)
    // The first ping raced the upgrade (it may have run on the relayed connection DCUtR closed); ping again now.
    await until('the first ping to end', () => peer.events.find(e => e.event === 'ping' || e.event === 'ping-error'), 15_000, 100)
    const from = peer.events.length
    peer.ask()
    expect(await until('a ping over the direct connection', () => peer.events.slice(from).find(e => e.event === 'ping' || e.event === 'ping-error'), 15_000, 100)).toMatchObject({ event: 'ping' })
    const s = await until('the node to report the upgraded peer', () => {
      const st = statusOf('node-0')
      return (st?.reachability?.holePunchedPeers as string[] | undefined)?.includes(ready.peerId as string) === true ? st : undefined
    }, 15_000, 200)
    expect(s!.reachability.reachability).toBe('relayed')
    const text = spawnSync(process.execPath, [BIN.node, 'status', '--data-dir', join(dataDir, 'node-0')], { encoding: 'utf8' }).stdout
    expect(text).toMatch(/reachable: relayed: .*; direct after hole punching with 1 peer/)
    await until('the coordinator to learn of it', () => {
      const n = (api('GET', '/v1/nodes').body.nodes as Array<{ peerId: string, holePunchedPeers: number }>).find(x => x.peerId === nodeIds[0])
      return n != null && n.holePunchedPeers >= 1 ? true : undefined
    }, 15_000, 200)
    peer.child.stdin!.end()
  }, 90_000)

  it('a peer in another home reaches a NATed node over the relay (no direct path exists between two NATs)', async () => {
    const row = (api('GET', '/v1/nodes').body.nodes as Array<{ peerId: string, relayedAddrs: string[] }>).find(n => n.peerId === nodeIds[0])!
    const peer = relayPeer(lab.homes[1]!.ns, row.relayedAddrs[0]!, ['/ip4/0.0.0.0/tcp/0'])
    expect(await until('the relayed dial', () => peer.events.find(e => e.event === 'dialed' || e.event === 'error'), 20_000, 100)).toMatchObject({ event: 'dialed', relayed: true })
    const ping = await until('a ping over the relay', () => peer.events.find(e => e.event === 'ping' || e.event === 'ping-error'), 15_000, 100)
    expect(ping).toMatchObject({ event: 'ping' })
    expect(typeof ping.ms).toBe('number')
    peer.child.stdin!.end()
  }, 60_000)

  it('a node whose firewall lets it reach only the bootstrap peer holds its session through the relay: its jobs run, their logs come back, a cancel reaches it', async () => {
    // The premise: the coordinator's port is refused from that home.
    const probe = spawnSync('ip', ['netns', 'exec', lab.homes[2]!.ns, process.execPath, '-e',
      `const s=require('net').connect(4002,'${lab.pub.addr}');s.on('error',e=>{console.log(e.code);process.exit(0)});s.on('connect',()=>{console.log('connected');process.exit(1)})`], { encoding: 'utf8', timeout: 10_000 })
    expect(probe.stdout.trim()).toBe('ECONNREFUSED')
    const s = await until('the node\'s status to show its session', () => {
      const st = statusOf('node-fw')
      return (st?.coordinators as string[] | undefined)?.length === 1 ? st! : undefined
    }, 15_000, 200)
    // Its only connection to the coordinator runs through the bootstrap peer's relay.
    const bootstrapId = bootstrapAddr.split('/p2p/')[1]!
    const relayed = (s.connections as string[]).filter(a => a.includes('/p2p-circuit'))
    expect(relayed.length, JSON.stringify(s.connections)).toBeGreaterThanOrEqual(1)
    for (const a of relayed) expect(a).toMatch(new RegExp(`/tcp/4001/p2p/${bootstrapId}/p2p-circuit/p2p/${s.coordinators[0] as string}$`))
    const ids = Array.from({ length: 5 }, (_, i) => api('POST', '/v1/jobs', { command: ['sh', '-c', `echo fw-${i}`], labels: { firewall: 'yes' } }).body.id as string)
    const jobs = await until('5 jobs to succeed on it', () => {
      const all = ids.map(id => api('GET', `/v1/jobs/${id}`).body)
      return all.every(j => j.state === 'succeeded') ? all : undefined
    }, 60_000, 200)
    expect(jobs.map(j => j.result.stdout)).toEqual(ids.map((_, i) => `fw-${i}\n`))
    expect(new Set(jobs.map(j => j.attempts[0].node))).toEqual(new Set([firewalledNodeId]))
    // Gossip cannot run through the relay: the jobs reached the node on its session, as awards on the standbys it
    // keeps there (session 1.2; a node without standbys gets announced jobs pushed as offers instead).
    await until('the node\'s status to count awards on standby', () => (statusOf('node-fw')?.stats?.standbyAwards as number | undefined ?? 0) >= 1 ? true : undefined, 15_000, 200)
    // Its log lines came through the relay too.
    const logs = await until('the job\'s log lines', () => {
      const l = api('GET', `/v1/jobs/${ids[0]!}/logs`).body.lines as Array<{ text: string }>
      return l.length > 0 ? l : undefined
    }, 15_000, 200)
    expect(logs.map(l => l.text)).toContain('fw-0')
    // A cancel reaches a job running there, over the relayed session.
    await cancelRunningJob({ firewall: 'yes' })
  }, 120_000)

  it('a cancel reaches a job running on a NATed node', async () => {
    await cancelRunningJob({ home: '1' })
  }, 60_000)

  it('killing a NATed node reschedules its job on the other one', async () => {
    const id = api('POST', '/v1/jobs', { command: ['sh', '-c', 'sleep 3; echo survived'], labels: { nat: 'yes' }, maxAttempts: 3 }).body.id as string
    const running = await until('the job to run', () => {
      const j = api('GET', `/v1/jobs/${id}`).body
      return j.state === 'running' ? j : undefined
    }, 30_000, 200)
    const victim = nodeIds.indexOf(running.attempts[0].node as string)
    expect(victim).toBeGreaterThanOrEqual(0)
    // The node is the child of `ip netns exec`, which exec'd node: the same process.
    const node = children[2 + victim]!  // bootstrap, coordinator, then the NATed nodes in order
    node.kill('SIGKILL')
    const job = await until('the job to succeed elsewhere', () => {
      const j = api('GET', `/v1/jobs/${id}`).body
      return j.state === 'succeeded' ? j : undefined
    }, 60_000, 200)
    expect(job.result.stdout).toBe('survived\n')
    expect(job.attempts.at(-1).node).toBe(nodeIds[1 - victim])
  }, 90_000)
})
