/**
 * Circuit relay v2 and connection upgrades (issue 11): the bounds a relay
 * serves with, how a node that cannot be dialled takes a relay slot, and
 * how a node tells which of its connections came through a relay and which
 * were upgraded to direct ones by DCUtR.
 *
 * In RGrid a relayed connection mostly carries small things: identify,
 * ping, the DCUtR handshake and the coordinator's reachability check. Gossip
 * and sessions run on the direct connections every node opens itself; only a
 * node whose firewall lets it reach nothing but a bootstrap peer holds its
 * session through the relay. Files move over presigned HTTP URLs, never
 * through a relay.
 */
import { RELAY_V2_HOP_CODEC, circuitRelayServer, type CircuitRelayService } from '@libp2p/circuit-relay-v2'
import type { Connection } from '@libp2p/interface'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { RGridHost } from './p2p.js'
import type { Logger } from './log.js'
import { errorMessage } from './errors.js'

/** What a relay serves, per reservation and per relayed connection. */
export interface RelayLimits {
  /**
   * Reservations held at once. Each is a slot for one node behind NAT;
   * past this, new reservations are refused (the node tries another relay).
   * @default 256
   */
  maxReservations?: number
  /** How long a reservation lasts before the node must refresh it, in ms. @default 3_600_000 (1 h) */
  reservationTtlMs?: number
  /** Longest a relayed connection stays open, in ms; then the relay resets it. @default 120_000 (2 min) */
  connectionDurationMs?: number
  /**
   * Most bytes (both directions) one relayed connection may carry; then the
   * relay resets it. Room for a few full session frames (512 KiB at most),
   * so a node whose session runs through the relay always gets its largest
   * frame through on a fresh connection.
   * @default 4_194_304 (4 MiB)
   */
  connectionBytes?: number
  /** Relayed connections one peer may be setting up at once through this relay (HOP streams per connection). @default 64 */
  maxInboundHopStreams?: number
}

export const RELAY_DEFAULTS = {
  maxReservations: 256,
  reservationTtlMs: 3_600_000,
  connectionDurationMs: 120_000,
  connectionBytes: 4_194_304,
  maxInboundHopStreams: 64
} as const satisfies Required<RelayLimits>

/** The libp2p relay service with RGrid's bounds; every reservation gets the per-connection limits. */
export function relayService (limits: RelayLimits = {}): ReturnType<typeof circuitRelayServer> {
  const l = { ...RELAY_DEFAULTS, ...limits }
  return circuitRelayServer({
    maxInboundHopStreams: l.maxInboundHopStreams,
    reservations: {
      maxReservations: l.maxReservations,
      reservationTtl: l.reservationTtlMs,
      // Never unlimited: a bootstrap peer must not become a free bandwidth pipe.
      applyDefaultLimit: true,
      defaultDurationLimit: l.connectionDurationMs,
      defaultDataLimit: BigInt(l.connectionBytes)
    }
  })
}

/** The relay service of a host that runs one (bootstrap peers, and coordinators with `--relay`). */
export function relayOf (host: RGridHost): CircuitRelayService | null {
  const services = host.services as unknown as { relay?: CircuitRelayService }
  return services.relay ?? null
}

/**
 * The relay's peer id in `<relay addr>/p2p/<relay>/p2p-circuit/p2p/<peerId>`;
 * null when the address is not a relayed address of `peerId`.
 */
export function relayPeerOf (addr: string, peerId: string): string | null {
  const m = /\/p2p\/([A-Za-z0-9]+)\/p2p-circuit\/p2p\/([A-Za-z0-9]+)$/.exec(addr)
  if (m == null || m[2] !== peerId || m[1] === peerId) return null
  return m[1]!
}

/** Whether the host is connected to `peerId` directly and that peer serves circuit relay (per identify). */
export async function isConnectedRelay (host: RGridHost, peerId: string): Promise<boolean> {
  const conns = connectionsTo(host, peerId, false)
  if (conns.length === 0) return false
  try {
    return (await host.peerStore.get(conns[0]!.remotePeer)).protocols.includes(RELAY_V2_HOP_CODEC)
  } catch (err) {
    // Connected but not yet identified: not known to relay.
    if ((err as Error).name === 'NotFoundError') return false
    throw err
  }
}

/** Whether a multiaddr goes through a relay. */
export function isRelayed (addr: string): boolean {
  return addr.includes('/p2p-circuit')
}

/** A listener of the transport manager (one per listen address; a relay slot is one). */
interface Listener { close: () => Promise<void> }

/**
 * The parts of a running libp2p host that RGrid needs and libp2p 3 does not
 * expose: adding a listen address (a relay slot) and telling the address
 * manager which addresses are known to be dialable. `createLibp2p` builds
 * both for every host.
 */
interface HostInternals {
  transportManager: { listen: (addrs: Multiaddr[]) => Promise<void>, getAddrs: () => Multiaddr[], getListeners: () => Listener[] }
  addressManager: {
    confirmObservedAddr: (addr: Multiaddr, options?: { type?: 'transport', ttl?: number }) => void
    removeObservedAddr: (addr: Multiaddr) => void
  }
}

function internals (host: RGridHost): HostInternals {
  const components = (host as unknown as { components?: Partial<HostInternals> }).components
  if (components?.transportManager == null || components.addressManager == null) throw new Error('this libp2p host exposes no transport or address manager')
  return components as HostInternals
}

/**
 * Every address the host listens on, verified or not, each ending in
 * /p2p/<own id>: what a node lists for the coordinator's dial-back. libp2p
 * leaves a listen address on a public IP out of `getMultiaddrs()` until it
 * is confirmed dialable, and the dial-back is what confirms it.
 */
export function listenAddrsOf (host: RGridHost): string[] {
  const self = `/p2p/${host.peerId.toString()}`
  return [...new Set(internals(host).transportManager.getAddrs().map(a => {
    const text = a.toString()
    return text.endsWith(self) ? text : text + self
  }))]
}

/**
 * Tells libp2p these listen addresses are dialable, so identify announces
 * them (and DCUtR can upgrade to them) until they are withdrawn
 * ({@link withdrawAddrs}). A node does this with what the coordinator's
 * dial-back reached; bootstrap peers and coordinators with
 * {@link trustListenAddrs}.
 */
export function confirmAddrs (host: RGridHost, addrs: string[]): void {
  const am = internals(host).addressManager
  for (const a of addrs) {
    if (isRelayed(a)) continue
    // libp2p 3 keeps a confirmed transport address until it is removed; the ttl only has to be long.
    am.confirmObservedAddr(multiaddr(a), { type: 'transport', ttl: CONFIRMED_ADDR_TTL_MS })
  }
}

/** A year: confirmed addresses last until withdrawn or the process ends. */
const CONFIRMED_ADDR_TTL_MS = 365 * 24 * 3_600_000

/** Stops announcing addresses confirmed earlier (a later dial-back no longer reached them). */
export function withdrawAddrs (host: RGridHost, addrs: string[]): void {
  const am = internals(host).addressManager
  for (const a of addrs) if (!isRelayed(a)) am.removeObservedAddr(multiaddr(a))
}

/**
 * Bootstrap peers and coordinators are servers whose operators chose their
 * listen addresses: announce them all. Without this, libp2p would leave out
 * every public address until something verified it, and a bootstrap peer on
 * a public IP would have no address to print, to give relay clients, or to
 * put in beacons.
 */
export function trustListenAddrs (host: RGridHost): void {
  confirmAddrs(host, internals(host).transportManager.getAddrs().map(String))
}

/**
 * Takes a slot on one relay (full multiaddr with /p2p/); resolves with the
 * slot's listener when the relay grants it (the relayed address then appears
 * among the host's multiaddrs, and the transport refreshes the reservation),
 * or throws when it refuses or cannot be reached. Close the listener to give
 * the slot up. {@link RelaySlotKeeper} calls it.
 *
 * libp2p 3 has no public call to add a listen address to a running host, so
 * this reaches its transport manager; which also never drops a listener
 * whose listen failed, so this closes it itself (else each failed attempt
 * would leave one behind).
 */
export async function reserveRelaySlot (host: RGridHost, relayAddr: string): Promise<{ close: () => Promise<void> }> {
  const tm = internals(host).transportManager
  const before = new Set(tm.getListeners())
  let failure: unknown = null
  try {
    await tm.listen([multiaddr(`${relayAddr}/p2p-circuit`)])
  } catch (err) {
    failure = err
  }
  const made = tm.getListeners().filter(l => !before.has(l))
  const close = async (): Promise<void> => { await Promise.all(made.map(async l => { await l.close() })) }
  if (failure != null) {
    await close()
    throw failure
  }
  return { close }
}

export interface RelaySlotKeeperOptions {
  host: RGridHost
  /** Relays to ask, in order (full multiaddrs with /p2p/): the bootstrap peers. */
  relays: () => string[]
  log: Logger
  /** First wait before asking again when no relay granted a slot, in ms; doubles up to maxRetryMs. @default 30_000 */
  retryMs?: number
  /** @default 1_800_000 (30 min) */
  maxRetryMs?: number
}

/**
 * Keeps one relay slot: asks the given relays in order until one grants it,
 * and asks again (with a growing wait) while the host holds none, e.g.
 * after the relay restarted. Named relays rather than the transport's own
 * search, which walks the DHT without end when no relay exists.
 */
export class RelaySlotKeeper {
  private timer: NodeJS.Timeout | null = null
  private running = false
  private readonly retryMs: number
  private readonly maxRetryMs: number
  private waitMs: number
  /** The listener of the slot held (or last held): closed before asking again, so none pile up. */
  private slot: { close: () => Promise<void> } | null = null
  readonly stats = { attempts: 0, granted: 0, refused: 0 }

  constructor (private readonly options: RelaySlotKeeperOptions) {
    this.retryMs = options.retryMs ?? 30_000
    this.maxRetryMs = options.maxRetryMs ?? 1_800_000
    this.waitMs = this.retryMs
  }

  /** Starts keeping a slot. Idempotent. */
  start (): void {
    if (this.running) return
    this.running = true
    void this.check()
  }

  stop (): void {
    this.running = false
    if (this.timer != null) clearTimeout(this.timer)
    this.timer = null
    void this.drop()
  }

  private async drop (): Promise<void> {
    const slot = this.slot
    this.slot = null
    await slot?.close().catch((err: unknown) => { this.options.log.debug('closing a lost relay slot', { error: errorMessage(err) }) })
  }

  /** Whether the host holds a relayed address now. */
  holds (): boolean {
    return this.options.host.getMultiaddrs().some(a => isRelayed(a.toString()))
  }

  private async check (): Promise<void> {
    if (!this.running) return
    if (this.holds() || await this.take()) this.waitMs = this.retryMs
    else this.waitMs = Math.min(this.waitMs * 2, this.maxRetryMs)
    if (!this.running) return
    this.timer = setTimeout(() => { void this.check() }, this.waitMs)
    this.timer.unref()
  }

  private async take (): Promise<boolean> {
    // The slot held before is gone (relay restarted, connection lost): its listener would re-add stale addresses.
    await this.drop()
    const relays = this.options.relays()
    for (const relay of relays) {
      if (!this.running) return false
      this.stats.attempts++
      try {
        this.slot = await reserveRelaySlot(this.options.host, relay)
        this.stats.granted++
        this.options.log.info('holding a relay slot', { relay })
        return true
      } catch (err) {
        this.stats.refused++
        this.options.log.debug('relay refused a slot', { relay, error: errorMessage(err) })
      }
    }
    this.options.log.warn('no relay granted a slot; asking again later', { relaysAsked: relays.length })
    return false
  }
}

/** How the host's open connections run. */
export interface PathCounts {
  /** Connections that go straight to the peer. */
  direct: number
  /** Connections through a relay (limited). */
  relayed: number
}

/**
 * Tells, from connection events, which peers first reached this host over a
 * relay and then got a direct connection (DCUtR closes the relayed
 * connection once the direct one is open). Counts what it saw; the counts
 * are what `rgrid-node status` reports as "direct after hole punching".
 */
export class PathTracker {
  /** Peers whose relayed connection was replaced by a direct one. */
  private readonly upgraded = new Set<string>()
  /** Peers with a relayed connection and, since it opened, a direct one too: DCUtR at work. */
  private readonly pending = new Set<string>()
  private attached: { host: RGridHost, open: (e: CustomEvent<Connection>) => void, close: (e: CustomEvent<Connection>) => void } | null = null

  /** `onChange` runs when a peer is counted as upgraded or stops being. */
  constructor (private readonly onChange: () => void = () => {}) {}

  /** Starts watching the host's connections. Idempotent. */
  attach (host: RGridHost): void {
    if (this.attached != null) return
    const open = (e: CustomEvent<Connection>): void => { this.onOpen(host, e.detail) }
    const close = (e: CustomEvent<Connection>): void => { this.onClose(host, e.detail) }
    host.addEventListener('connection:open', open)
    host.addEventListener('connection:close', close)
    this.attached = { host, open, close }
  }

  detach (): void {
    if (this.attached == null) return
    this.attached.host.removeEventListener('connection:open', this.attached.open)
    this.attached.host.removeEventListener('connection:close', this.attached.close)
    this.attached = null
  }

  private onOpen (host: RGridHost, conn: Connection): void {
    if (isRelayed(conn.remoteAddr.toString())) return
    // A direct connection that opens while a relayed one to the same peer is up: the upgrade has started.
    const peer = conn.remotePeer.toString()
    if (connectionsTo(host, peer, true).length > 0) this.pending.add(peer)
  }

  private onClose (host: RGridHost, conn: Connection): void {
    const peer = conn.remotePeer.toString()
    const directLeft = connectionsTo(host, peer, false).length > 0
    if (!isRelayed(conn.remoteAddr.toString())) {
      if (!directLeft) {
        this.pending.delete(peer)
        if (this.upgraded.delete(peer)) this.onChange()
      }
      return
    }
    // The relayed connection went away while a direct one to the same peer stays: upgraded.
    if (this.pending.delete(peer) && directLeft) {
      this.upgraded.add(peer)
      this.onChange()
    }
  }

  /** Peers now reached directly after their relayed connection was upgraded. */
  upgradedPeers (): string[] {
    return [...this.upgraded]
  }

  /** Counts of the host's open connections by path. */
  static counts (host: RGridHost): PathCounts {
    let direct = 0
    let relayed = 0
    for (const c of host.getConnections()) {
      if (isRelayed(c.remoteAddr.toString())) relayed++
      else direct++
    }
    return { direct, relayed }
  }
}

/** The host's open connections to `peer` that go through a relay (`relayed`) or straight to it. */
function connectionsTo (host: RGridHost, peer: string, relayed: boolean): Connection[] {
  return host.getConnections().filter(c => c.remotePeer.toString() === peer && isRelayed(c.remoteAddr.toString()) === relayed)
}
