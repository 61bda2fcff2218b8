/** The coordinator's dial-back: which listen addresses accept a connection from here. */
import { describe, it, expect, afterAll } from 'vitest'
import { createServer, type Server } from 'node:net'
import { DialBack, tcpTarget } from '../../dist/coordinator/dial-back.js'

const servers: Server[] = []
afterAll(async () => { await Promise.all(servers.map(async s => { await new Promise(resolve => { s.close(resolve) }) })) })

async function listening (): Promise<number> {
  const server = createServer(socket => { socket.destroy() })
  servers.push(server)
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  return (server.address() as { port: number }).port
}

/** A port nothing listens on: bound, then closed. */
async function closedPort (): Promise<number> {
  const server = createServer()
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  const { port } = server.address() as { port: number }
  await new Promise(resolve => { server.close(resolve) })
  return port
}

describe('dial-back', () => {
  it('reads host and port from TCP multiaddrs and skips what it cannot dial', () => {
    expect(tcpTarget('/ip4/10.0.0.5/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN')).toEqual({ host: '10.0.0.5', port: 4001 })
    expect(tcpTarget('/ip6/::1/tcp/4001')).toEqual({ host: '::1', port: 4001 })
    expect(tcpTarget('/ip4/0.0.0.0/tcp/4001')).toBeNull()
    expect(tcpTarget('/dns4/example.org/tcp/4001')).toBeNull()
    expect(tcpTarget('/ip4/10.0.0.5/udp/4001/quic-v1')).toBeNull()
    expect(tcpTarget('/ip4/10.0.0.9/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit')).toBeNull()
    expect(tcpTarget('not a multiaddr')).toBeNull()
  })

  it('is public when a listen address accepts a connection, outbound-only when none does', async () => {
    const open = await listening()
    const closed = await closedPort()
    const d = new DialBack({ connectTimeoutMs: 1_000 })
    const signal = AbortSignal.timeout(10_000)
    expect(await d.check([`/ip4/127.0.0.1/tcp/${closed}`, `/ip4/127.0.0.1/tcp/${open}`], '/ip4/127.0.0.1/tcp/40000', signal)).toEqual({ reachability: 'public', dialable: [`/ip4/127.0.0.1/tcp/${open}`], relayed: [] })
    expect(await d.check([`/ip4/127.0.0.1/tcp/${closed}`], '/ip4/127.0.0.1/tcp/40000', signal)).toEqual({ reachability: 'outbound-only', dialable: [], relayed: [] })
    expect(await d.check(['/dns4/example.org/tcp/1'], '/ip4/127.0.0.1/tcp/40000', signal)).toEqual({ reachability: 'unknown', dialable: [], relayed: [] })
    // From another machine, a loopback listen address names the coordinator's own host: not tried.
    expect(await d.check([`/ip4/127.0.0.1/tcp/${open}`], '/ip4/10.231.0.7/tcp/40000', signal)).toEqual({ reachability: 'unknown', dialable: [], relayed: [] })
  })

  it('tries relayed addresses only when no direct one answers, only the node\'s own, and reports those the probe reached', async () => {
    const open = await listening()
    const closed = await closedPort()
    const node = '12D3KooWKwa9EMGPvgBQKoAuUxd2NRZbXwDVGDe8AXpEZqepCVYn'
    const relay = `/ip4/10.231.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit/p2p/${node}`
    const dead = relay.replace('10.231.0.1', '10.231.0.9')
    // Another peer's relayed address, handed in by this node: never tried.
    const someoneElse = relay.replace(node, '12D3KooWB7Gqf4Rbe7qxhRvfpuvD8cgiWyHvDrwG9uNkuKY6pbgK')
    const probed: Array<[string, string]> = []
    const d = new DialBack({
      connectTimeoutMs: 1_000,
      relayProbe: async (addr, peerId) => { probed.push([addr, peerId]); return addr !== dead }
    })
    const signal = AbortSignal.timeout(10_000)
    expect(await d.check([`/ip4/127.0.0.1/tcp/${closed}`, someoneElse, relay, dead], '/ip4/127.0.0.1/tcp/40000', signal, node)).toEqual({ reachability: 'relayed', dialable: [], relayed: [relay] })
    expect(probed).toEqual([[relay, node], [dead, node]])
    // Reached directly: the relay is not tried.
    probed.length = 0
    expect(await d.check([`/ip4/127.0.0.1/tcp/${open}`, relay], '/ip4/127.0.0.1/tcp/40000', signal, node)).toMatchObject({ reachability: 'public', relayed: [] })
    expect(probed).toEqual([])
    // Relayed addresses are picked from the whole list, however many direct ones come first.
    const many = Array.from({ length: 12 }, (_, i) => `/ip4/127.0.0.1/tcp/${closed}/p2p/${node}`.replace('127.0.0.1', `127.0.0.${i + 2}`))
    expect(await d.check([...many, relay], '/ip4/127.0.0.1/tcp/40000', signal, node)).toMatchObject({ reachability: 'relayed', relayed: [relay] })
    // A probe that reaches nobody leaves the node outbound-only; without a probe, relayed addresses are not tried.
    expect(await new DialBack({ relayProbe: async () => false }).check([relay], '/ip4/127.0.0.1/tcp/40000', signal, node)).toEqual({ reachability: 'outbound-only', dialable: [], relayed: [] })
    expect(await new DialBack().check([relay], '/ip4/127.0.0.1/tcp/40000', signal, node)).toEqual({ reachability: 'outbound-only', dialable: [], relayed: [] })
  })
})
