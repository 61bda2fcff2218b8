/**
 * Dial-back: can this coordinator open a connection to a node at the
 * addresses the node listens on? A node behind NAT or a firewall cannot be
 * dialled; it takes part over the connections it opened itself (issue 11).
 * The answer is what `GET /v1/nodes` and `rgrid-node status` show.
 *
 * A plain TCP connect is enough to tell: it proves the address accepts
 * connections from here, and needs no libp2p handshake (so it costs the node
 * one accepted and closed socket, nothing more).
 */
import { connect } from 'node:net'
import { multiaddr } from '@multiformats/multiaddr'

/** How a node can be reached, as the coordinator found it. */
export type Reachability = 'public' | 'relayed' | 'outbound-only' | 'unknown'

export interface DialBackResult {
  reachability: Reachability
  /** The listen addresses that accepted a connection. */
  dialable: string[]
  /** The relayed addresses the coordinator reached the node through. */
  relayed: string[]
}

/**
 * Opens a connection to the node (`peerId`) through the relay named in
 * `addr` and closes it again; resolves true when the node answered (the
 * connection's encryption handshake proves which peer answered, and the
 * probe checks it is `peerId`). Given by the coordinator, which owns the
 * libp2p host and decides which relays it will use.
 */
export type RelayProbe = (addr: string, peerId: string, signal: AbortSignal) => Promise<boolean>

export interface DialBackOptions {
  /** How long one connection attempt may take, in ms. @default 2000 */
  connectTimeoutMs?: number
  /** Most direct addresses tried per node (a node lists one per interface). @default 8 */
  maxAddrs?: number
  /** Most relayed addresses tried per node, one after another. @default 4 */
  maxRelayedAddrs?: number
  /** Tries a relayed address when no direct one answers. @default none (relayed addresses are not tried) */
  relayProbe?: RelayProbe
  /** How long one relayed connection attempt may take, in ms. @default 10000 */
  relayTimeoutMs?: number
}

/** Whether an IP address is the machine's own loopback. */
function isLoopback (host: string): boolean {
  return host === '::1' || host.startsWith('127.')
}

/** host and port of a /ip4|ip6/…/tcp/… multiaddr; null for anything else (relay, dns, unspecified). */
export function tcpTarget (addr: string): { host: string, port: number } | null {
  let components
  try {
    components = multiaddr(addr).getComponents()
  } catch {
    // Not a multiaddr at all: the caller skips it, like any other address it cannot dial.
    return null
  }
  const ip = components[0]
  const tcp = components[1]
  if (ip == null || tcp == null || (ip.name !== 'ip4' && ip.name !== 'ip6') || tcp.name !== 'tcp' || ip.value == null || tcp.value == null) return null
  if (ip.value === '0.0.0.0' || ip.value === '::') return null
  // A circuit address (…/p2p-circuit) names the relay, not the node.
  if (components.some(c => c.name === 'p2p-circuit')) return null
  return { host: ip.value, port: Number(tcp.value) }
}

async function tryConnect (host: string, port: number, timeoutMs: number, signal: AbortSignal): Promise<boolean> {
  return await new Promise<boolean>(resolve => {
    const socket = connect({ host, port, timeout: timeoutMs, signal })
    const done = (ok: boolean): void => { socket.destroy(); resolve(ok) }
    socket.once('connect', () => { done(true) })
    socket.once('timeout', () => { done(false) })
    socket.once('error', () => { done(false) })
  })
}

export class DialBack {
  constructor (private readonly options: DialBackOptions = {}) {}

  /**
   * Tries every TCP listen address of a node at once; `unknown` when it
   * listed none we can dial. `remoteAddr` is where the node's session
   * connection came from: a loopback listen address is only the node's own
   * when that was loopback too (same machine); otherwise it would name
   * something on the coordinator's machine, so it is skipped. Only relayed
   * addresses that end in the node's own id (`peerId`) are tried.
   */
  async check (listenAddrs: string[], remoteAddr: string, signal: AbortSignal, peerId = ''): Promise<DialBackResult> {
    const remote = tcpTarget(remoteAddr)
    const sameMachine = remote != null && isLoopback(remote.host)
    const targets = listenAddrs
      .map(a => ({ addr: a, target: tcpTarget(a) }))
      .filter((t): t is { addr: string, target: { host: string, port: number } } => t.target != null && (sameMachine || !isLoopback(t.target.host)))
      .slice(0, this.options.maxAddrs ?? 8)
    // Picked from the whole list: relayed addresses come last, after one address per interface.
    const circuits = listenAddrs.filter(a => peerId !== '' && a.endsWith(`/p2p-circuit/p2p/${peerId}`)).slice(0, this.options.maxRelayedAddrs ?? 4)
    if (targets.length === 0 && circuits.length === 0) return { reachability: 'unknown', dialable: [], relayed: [] }
    const timeoutMs = this.options.connectTimeoutMs ?? 2_000
    const results = await Promise.all(targets.map(async t => await tryConnect(t.target.host, t.target.port, timeoutMs, signal)))
    const dialable = targets.filter((_, i) => results[i]).map(t => t.addr)
    if (dialable.length > 0) return { reachability: 'public', dialable, relayed: [] }
    const relayed = await this.probeRelayed(circuits, peerId, signal)
    return { reachability: relayed.length > 0 ? 'relayed' : 'outbound-only', dialable, relayed }
  }

  /** The relayed addresses that reach the node; tried one after another, each a full libp2p connection. */
  private async probeRelayed (circuits: string[], peerId: string, signal: AbortSignal): Promise<string[]> {
    const probe = this.options.relayProbe
    if (probe == null) return []
    const ok: string[] = []
    for (const addr of circuits) {
      const attempt = AbortSignal.any([signal, AbortSignal.timeout(this.options.relayTimeoutMs ?? 10_000)])
      // The probe reports its own failures (false); a throw here is a bug and fails the whole check.
      if (await probe(addr, peerId, attempt)) ok.push(addr)
    }
    return ok
  }
}
