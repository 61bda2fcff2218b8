/**
 * How this node can be reached, and what it does about it (issue 11). The
 * coordinator's dial-back says `public`, or `outbound-only` when nothing
 * could connect to the node (NAT, firewall). An outbound-only node then
 * takes one slot on a circuit relay (a bootstrap peer, or a coordinator
 * with `--relay`), and tells its coordinators its new addresses; they check
 * the relayed address and answer `relayed`. Peers that reach the node over
 * the relay get a direct connection where the NAT allows (DCUtR); those are
 * counted as "direct after hole punching".
 *
 * Nothing here is needed for the node to work: sessions, bids, awards,
 * results and logs run over the connection the node opened to the
 * coordinator. The relayed address is what lets other peers reach it.
 */
import type { Logger } from '../common/log.js'
import type { Clock } from '../common/clock.js'
import { errorMessage } from '../common/errors.js'
import type { RGridHost } from '../common/p2p.js'
import { PathTracker, RelaySlotKeeper, confirmAddrs, isRelayed, listenAddrsOf, withdrawAddrs, type PathCounts } from '../common/relay.js'
import type { SessionClient } from './session-client.js'

export interface NodeReachabilityOptions {
  log: Logger
  clock: Clock
  /** The sessions open now, to tell each coordinator when the node's addresses change. */
  sessions: () => SessionClient[]
  /** Relays to ask for a slot, in order (full multiaddrs): bootstrap peers, then coordinators (which serve one with `--relay`). */
  relays: () => string[]
  /**
   * Take a relay slot when the coordinator finds the node outbound-only.
   * @default true
   */
  useRelay?: boolean
  /** Wait this long after an address or path change before telling coordinators, so a burst sends one frame, in ms. @default 300 */
  settleMs?: number
}

/** What `rgrid-node status` shows. */
export interface ReachabilityStatus {
  /** The coordinator's last finding: public, relayed, outbound-only, or unknown before the first check. */
  reachability: string
  /** Listen addresses the coordinator could connect to. */
  dialable: string[]
  /** Relayed addresses the coordinator reached the node through. */
  relayed: string[]
  /** Relayed addresses this node holds now (its relay slots). */
  relayAddrs: string[]
  /** Peers that reached this node over a relay and now have a direct connection (DCUtR). */
  holePunchedPeers: string[]
  /** Open connections by path. */
  paths: PathCounts
  checkedAt: number | null
}

export class NodeReachability {
  private host: RGridHost | null = null
  private verdict: { reachability: string, dialable: string[], relayed: string[], checkedAt: number } | null = null
  private slot: RelaySlotKeeper | null = null
  /** Listen addresses announced because the last dial-back reached them. */
  private confirmed: string[] = []
  private readonly tracker: PathTracker
  private lastSent = ''
  private settleTimer: NodeJS.Timeout | null = null
  private readonly onSelfUpdate = (): void => { this.changed() }
  readonly stats = { addrsSent: 0, addrsFailures: 0 }

  constructor (private readonly options: NodeReachabilityOptions) {
    this.tracker = new PathTracker(() => { this.changed() })
  }

  /** Starts watching the host's addresses and connections. Idempotent. */
  start (host: RGridHost): void {
    if (this.host != null) return
    this.host = host
    this.tracker.attach(host)
    host.addEventListener('self:peer:update', this.onSelfUpdate)
  }

  stop (): void {
    this.slot?.stop()
    this.slot = null
    if (this.settleTimer != null) clearTimeout(this.settleTimer)
    this.settleTimer = null
    this.tracker.detach()
    this.host?.removeEventListener('self:peer:update', this.onSelfUpdate)
    this.host = null
  }

  /** The addresses to list in `hello` and `addrs` frames: all we listen on, confirmed or not (the dial-back confirms). */
  listenAddrs (): string[] {
    if (this.host == null) return []
    return listenAddrsOf(this.host).filter(a => a.length <= 256).slice(0, 16)
  }

  /** A `reachability` push from a coordinator. */
  onVerdict (reachability: string, dialable: string[], relayed: string[]): void {
    this.verdict = { reachability, dialable, relayed, checkedAt: this.options.clock.now() }
    this.options.log.info('reachability checked by the coordinator', { reachability, dialable, relayed })
    // The coordinator reached these: announce them (identify, DCUtR); stop announcing what it no longer reached.
    if (this.host != null) {
      withdrawAddrs(this.host, this.confirmed.filter(a => !dialable.includes(a)))
      if (dialable.length > 0) confirmAddrs(this.host, dialable)
      this.confirmed = dialable
    }
    if (reachability === 'outbound-only' && this.slot == null && this.options.useRelay !== false && this.host != null) {
      // Kept from now on: the keeper asks again whenever the slot is lost (relay restarted, connection gone).
      this.options.log.info('not dialable: taking a relay slot')
      this.slot = new RelaySlotKeeper({ host: this.host, relays: this.options.relays, log: this.options.log })
      this.slot.start()
    }
  }

  status (): ReachabilityStatus {
    const relayAddrs = this.listenAddrs().filter(isRelayed)
    return {
      reachability: this.verdict?.reachability ?? 'unknown',
      dialable: this.verdict?.dialable ?? [],
      relayed: this.verdict?.relayed ?? [],
      relayAddrs,
      holePunchedPeers: this.tracker.upgradedPeers(),
      paths: this.host != null ? PathTracker.counts(this.host) : { direct: 0, relayed: 0 },
      checkedAt: this.verdict?.checkedAt ?? null
    }
  }

  /** Remembers what the coordinators were told in `hello`, so only real changes send `addrs`. */
  introduced (): void {
    this.lastSent = this.key()
  }

  private key (): string {
    return JSON.stringify([this.listenAddrs().sort(), this.tracker.upgradedPeers().length])
  }

  private changed (): void {
    if (this.settleTimer != null || this.host == null) return
    this.settleTimer = setTimeout(() => {
      this.settleTimer = null
      void this.tell()
    }, this.options.settleMs ?? 300)
    this.settleTimer.unref()
  }

  private async tell (): Promise<void> {
    const key = this.key()
    if (key === this.lastSent) return
    this.lastSent = key
    const frame = { type: 'addrs' as const, listenAddrs: this.listenAddrs(), upgradedPeers: this.tracker.upgradedPeers().length }
    await Promise.all(this.options.sessions().map(async s => {
      try {
        await s.request(frame)
        this.stats.addrsSent++
      } catch (err) {
        // The next hello lists the addresses again; nothing is lost.
        this.stats.addrsFailures++
        this.options.log.debug('could not tell a coordinator our addresses', { error: errorMessage(err) })
      }
    }))
  }
}
