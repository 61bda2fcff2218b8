/**
 * The libp2p host every RGrid program runs: TCP, noise, yamux, identify,
 * ping, kad-dht and gossipsub. Roles differ only in options.
 */
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify, type Identify } from '@libp2p/identify'
import { ping, type Ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper, type KadDHT } from '@libp2p/kad-dht'
import { bootstrap } from '@libp2p/bootstrap'
import { gossipsub, TopicValidatorResult, type GossipSub, type Message } from '@libp2p/gossipsub'
import type { ConnectionGater, PeerId, PrivateKey } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { DecodeError } from '../protocol/codec.js'
import type { Logger } from './log.js'

export type RGridServices = {
  identify: Identify
  ping: Ping
  dht: KadDHT
  pubsub: GossipSub
}
export type RGridHost = Libp2p<RGridServices>

/** Our own DHT protocol, so RGrid meshes never mix with the public IPFS DHT. */
export const DHT_PROTOCOL = '/rgrid/kad/1.0.0'

export interface HostOptions {
  privateKey: PrivateKey
  /** Multiaddrs to listen on, e.g. `/ip4/127.0.0.1/tcp/0`. */
  listen: string[]
  /** Peers to dial at start and keep dialling (full multiaddrs with /p2p/). */
  bootstrap: string[]
  /**
   * Serve DHT queries. Bootstrap peers and coordinators do; nodes are clients.
   * @default false
   */
  dhtServer?: boolean
  /**
   * Gossipsub heartbeat, which drives mesh maintenance. Below ~700 ms the
   * tail latency got worse on 2 cores (see docs/design.md).
   * @default 700
   */
  gossipHeartbeatMs?: number
  /**
   * Fault injection: while `gate.cut` is true every dial and every inbound
   * connection is refused, as if the host's network were unplugged.
   * @default none (never cut)
   */
  gate?: PartitionGate
  /**
   * Inbound connections accepted per second from one IP address. libp2p's
   * default of 5 refused the sixth node of a mesh started at once on one
   * machine (and would refuse a lab's machines behind one NAT address): the
   * mesh then silently had five nodes. Still a bound on a connection flood.
   * @default 100
   */
  inboundConnectionsPerHostPerSecond?: number
}

/** A switch that cuts a host off the network; see {@link cutOff} and {@link heal}. */
export interface PartitionGate { cut: boolean }

/**
 * Cuts the host off: from now on the gate refuses every connection, and the
 * open ones are aborted (the far side sees the link drop, as when a cable is
 * pulled or a firewall starts resetting connections).
 */
export function cutOff (host: RGridHost, gate: PartitionGate): number {
  gate.cut = true
  const open = host.getConnections()
  for (const c of open) c.abort(new Error('fault injection: cut off the network'))
  return open.length
}

/** Lets connections through again and redials `peers` (bootstrap, coordinators). */
export async function heal (host: RGridHost, gate: PartitionGate, peers: string[], signal: AbortSignal): Promise<void> {
  gate.cut = false
  await Promise.allSettled(peers.map(async addr => await host.dial(multiaddr(addr), { signal })))
}

/** Creates (but does not start) a host. */
export async function createHost (options: HostOptions): Promise<RGridHost> {
  return await createLibp2p<RGridServices>({
    privateKey: options.privateKey,
    start: false,
    addresses: { listen: options.listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // A busy event loop makes pings time out; aborting the connection then
    // turns a slow node into a partition. Liveness is our heartbeat's job.
    connectionMonitor: { abortConnectionOnPingFailure: false },
    connectionManager: {
      inboundConnectionThreshold: options.inboundConnectionsPerHostPerSecond ?? 100,
      // Connections still in their handshake; the default 10 is too few when a rack starts together.
      maxIncomingPendingConnections: 100
    },
    ...(options.gate != null ? { connectionGater: gateOf(options.gate) } : {}),
    peerDiscovery: options.bootstrap.length > 0 ? [bootstrap({ list: options.bootstrap, timeout: 100 })] : [],
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: DHT_PROTOCOL,
        clientMode: options.dhtServer !== true,
        // Loopback and LAN meshes are the common case for tests and research.
        peerInfoMapper: passthroughMapper
      }),
      pubsub: gossipsub({
        // Messages published before the mesh forms would otherwise throw;
        // announcements are re-sent and pullable, so losing one is fine.
        allowPublishToZeroTopicPeers: true,
        floodPublish: true,
        emitSelf: false,
        heartbeatInterval: options.gossipHeartbeatMs ?? 700,
        // Every node also holds a direct connection to the coordinator, whose
        // flood-publish reaches it first; a smaller mesh degree cuts the
        // duplicate copies each node decrypts and drops (docs/design.md).
        D: 4,
        Dlo: 3,
        Dhi: 8,
        Dout: 2,
        Dscore: 2,
        globalSignaturePolicy: 'StrictSign'
      })
    }
  })
}

function gateOf (gate: PartitionGate): ConnectionGater {
  const denied = (): boolean => gate.cut
  return {
    denyDialPeer: denied,
    denyDialMultiaddr: denied,
    denyInboundConnection: denied,
    denyOutboundConnection: denied,
    denyInboundEncryptedConnection: denied,
    denyOutboundEncryptedConnection: denied,
    denyInboundUpgradedConnection: denied,
    denyOutboundUpgradedConnection: denied
  }
}

/**
 * Messages decoded by a validator, so the message handler need not decode
 * them again (keyed by the message's bytes; entries go with the message).
 */
const decodedByValidator = new WeakMap<Uint8Array, unknown>()

/** Decodes a gossip message, reusing the validator's work when there was one. */
export function decodeGossip<T> (data: Uint8Array, decode: (data: Uint8Array) => T): T {
  const cached = decodedByValidator.get(data)
  if (cached !== undefined) return cached as T
  return decode(data)
}

/**
 * Installs a gossip topic validator that runs our decoder: garbage is
 * rejected (and counted against the sender by gossipsub's peer score)
 * instead of being relayed. Only signed messages are accepted.
 */
export function installValidator (
  host: RGridHost,
  topic: string,
  decode: (data: Uint8Array) => unknown,
  accept: (from: PeerId, message: unknown) => boolean,
  log: Logger
): void {
  host.services.pubsub.topicValidators.set(topic, (_peer: PeerId, message: Message) => {
    if (message.type !== 'signed') return TopicValidatorResult.Reject
    try {
      const decoded = decode(message.data)
      decodedByValidator.set(message.data, decoded)
      return accept(message.from, decoded) ? TopicValidatorResult.Accept : TopicValidatorResult.Ignore
    } catch (err) {
      if (err instanceof DecodeError) {
        log.warn('rejected gossip message', { topic, from: message.from.toString(), error: err.message })
        return TopicValidatorResult.Reject
      }
      throw err
    }
  })
}

/** The host's full multiaddrs, each ending in /p2p/<peer id>. */
export function fullAddrs (host: RGridHost): string[] {
  return host.getMultiaddrs().map(a => a.toString())
}
