/**
 * A bootstrap peer: a long-lived, well-known member of the mesh that new
 * peers dial first. It serves the DHT and relays the heartbeat topic
 * (gossipsub only forwards topics a peer subscribes to), through which nodes
 * hear coordinator beacons and find their coordinator. It validates every
 * message so it never spreads garbage.
 *
 * It does not relay announcements: a node can only bid over a session, i.e.
 * a direct connection to the coordinator, whose flood-publish reaches it on
 * that connection; copies through the bootstrap would only cost CPU.
 */
import type { PrivateKey } from '@libp2p/interface'
import { HEARTBEAT_TOPIC, BEACON_TOPIC } from '../protocol/ids.js'
import { decodeHeartbeatTopic } from '../protocol/codec.js'
import { createHost, fullAddrs, installValidator, type RGridHost } from '../common/p2p.js'
import { relayOf, trustListenAddrs, type RelayLimits } from '../common/relay.js'
import type { Logger } from '../common/log.js'
import { HeartbeatGuard } from '../common/gossip-guard.js'
import { systemClock } from '../common/clock.js'

export interface BootstrapPeerOptions {
  privateKey: PrivateKey
  /** @default ['/ip4/0.0.0.0/tcp/4001'] */
  listen?: string[]
  /** Other bootstrap peers to stay connected to. @default [] */
  peers?: string[]
  /** The mesh's network key (private network); none for an open mesh. @default none */
  networkKey?: string
  /**
   * Serve circuit relay v2 with these bounds (nodes behind NAT reserve a
   * slot here); `false` serves none.
   * @default RELAY_DEFAULTS (common/relay.ts)
   */
  relay?: RelayLimits | false
  log: Logger
}

export class BootstrapPeer {
  private host: RGridHost | null = null
  private starting: Promise<void> | null = null

  constructor (private readonly options: BootstrapPeerOptions) {}

  async start (): Promise<void> {
    this.starting ??= this.doStart()
    await this.starting
  }

  private async doStart (): Promise<void> {
    const host = await createHost({
      privateKey: this.options.privateKey,
      listen: this.options.listen ?? ['/ip4/0.0.0.0/tcp/4001'],
      bootstrap: this.options.peers ?? [],
      dhtServer: true,
      ...(this.options.relay !== false ? { relay: this.options.relay ?? {} } : {}),
      ...(this.options.networkKey != null ? { networkKey: this.options.networkKey } : {})
    })
    const log = this.options.log
    // The same per-author rate as every peer, so the bootstrap never relays a flood.
    const guard = new HeartbeatGuard({ clock: systemClock })
    installValidator(host, HEARTBEAT_TOPIC, decodeHeartbeatTopic, guard.only('node-heartbeat'), log)
    // Beacons pass through us too: a node that cannot reach a coordinator yet learns its addresses here.
    installValidator(host, BEACON_TOPIC, decodeHeartbeatTopic, guard.only('coordinator-beacon'), log)
    await host.start()
    trustListenAddrs(host)
    host.services.pubsub.subscribe(HEARTBEAT_TOPIC)
    host.services.pubsub.subscribe(BEACON_TOPIC)
    this.host = host
    log.info('bootstrap peer started', { peerId: host.peerId.toString(), addrs: fullAddrs(host), relay: relayOf(host) != null })
  }

  /** Full multiaddrs (with /p2p/) this peer listens on. */
  addrs (): string[] {
    if (this.host == null) throw new Error('bootstrap peer not started')
    return fullAddrs(this.host)
  }

  async stop (): Promise<void> {
    const starting = this.starting
    if (starting == null) return
    await starting.catch(() => undefined)
    const host = this.host
    this.host = null
    this.starting = null
    await host?.stop()
  }
}
