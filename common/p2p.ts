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
import { preSharedKey } from '@libp2p/pnet'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { dcutr } from '@libp2p/dcutr'
import type { ConnectionGater, PeerId, PrivateKey } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { DecodeError } from '../protocol/codec.js'
import type { Logger } from './log.js'
import { swarmKeyOf } from './network-key.js'
import { relayService, type RelayLimits } from './relay.js'
import { installYamuxWindowThreshold } from './yamux-window.js'
import { ANNOUNCE_TOPIC, HEARTBEAT_TOPIC, BEACON_TOPIC } from '../protocol/ids.js'

export type RGridServices = {
  identify: Identify
  ping: Ping
  dht: KadDHT
  pubsub: GossipSub
  /** Direct connection upgrade through relay: replaces a relayed connection with a direct one where the NAT allows. */
  dcutr: unknown
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
   * Peers refused at every step of a connection (revoked nodes), and fault
   * injection: while `gate.cut` is true every dial and every inbound
   * connection is refused, as if the host's network were unplugged.
   * @default none (nobody refused, never cut)
   */
  gate?: PeerGate
  /**
   * The mesh's network key (base64url, see common/network-key.ts): a
   * libp2p private network, so peers without it cannot complete a
   * handshake. Open meshes (`--open`) run without one.
   * @default none
   */
  networkKey?: string
  /**
   * Inbound connections accepted per second from one IP address. libp2p's
   * default of 5 refused the sixth node of a mesh started at once on one
   * machine (and would refuse a lab's machines behind one NAT address): the
   * mesh then silently had five nodes. Still a bound on a connection flood.
   * @default 100
   */
  inboundConnectionsPerHostPerSecond?: number
  /**
   * Serve circuit relay v2 with these bounds, so nodes that cannot be
   * dialled get a relayed address (bootstrap peers always do; coordinators
   * with `--relay`). Every host can dial and listen through a relay and runs
   * DCUtR whether or not it serves one.
   * @default none (not a relay)
   */
  relay?: RelayLimits
}

/**
 * What a host's connection gater refuses: every connection while `cut`
 * (fault injection, see {@link cutOff} and {@link heal}), and always the
 * peers in `denied` (nodes whose join token was revoked).
 */
export interface PeerGate { cut: boolean, denied: Set<string> }

/** A gate that refuses nobody. */
export function openGate (): PeerGate { return { cut: false, denied: new Set() } }

/** Refuses `peers` from now on and closes their connections; returns how many peers were new. */
export function denyPeers (host: RGridHost, gate: PeerGate, peers: Iterable<string>): number {
  let added = 0
  for (const p of peers) {
    if (gate.denied.has(p) || p === host.peerId.toString()) continue
    gate.denied.add(p)
    added++
    for (const c of host.getConnections()) {
      if (c.remotePeer.toString() === p) c.abort(new Error('peer denied: its join token was revoked'))
    }
  }
  return added
}

/**
 * Gossipsub peer scoring. Gossipsub's defaults score no topic, so invalid
 * messages cost nothing; here each rejected message (a validator said
 * Reject: garbage, forged, or over the per-peer rate) counts on both topics,
 * squared, so a handful graylist the sender (its RPCs are then ignored) and
 * the penalty decays over about ten minutes. IP colocation scoring is off:
 * a lab's machines behind one NAT address, and every simulated mesh on one
 * machine, share an IP; admission is the join token's job.
 */
export const SCORE_THRESHOLDS = { gossipThreshold: -10, publishThreshold: -50, graylistThreshold: -80, acceptPXThreshold: 10, opportunisticGraftThreshold: 20 }

function topicScore (): Record<string, number> {
  return {
    topicWeight: 1,
    timeInMeshWeight: 0.01,
    timeInMeshQuantum: 1000,
    timeInMeshCap: 300,
    firstMessageDeliveriesWeight: 0.5,
    firstMessageDeliveriesDecay: 0.9,
    firstMessageDeliveriesCap: 20,
    // Announcements are bursty and heartbeats relayed by many: delivery
    // quotas would punish quiet honest peers, so they are not scored.
    meshMessageDeliveriesWeight: 0,
    meshMessageDeliveriesDecay: 0.5,
    meshMessageDeliveriesCap: 1,
    meshMessageDeliveriesThreshold: 1,
    meshMessageDeliveriesWindow: 10,
    meshMessageDeliveriesActivation: 5000,
    meshFailurePenaltyWeight: 0,
    meshFailurePenaltyDecay: 0.5,
    invalidMessageDeliveriesWeight: -10,
    // Per decay interval (1 s): 0.995^600 ≈ 0.05, about ten minutes to forgive.
    invalidMessageDeliveriesDecay: 0.995
  }
}

/**
 * Cuts the host off: from now on the gate refuses every connection, and the
 * open ones are aborted (the far side sees the link drop, as when a cable is
 * pulled or a firewall starts resetting connections).
 */
export function cutOff (host: RGridHost, gate: PeerGate): number {
  gate.cut = true
  const open = host.getConnections()
  for (const c of open) c.abort(new Error('fault injection: cut off the network'))
  return open.length
}

/** Lets connections through again and redials `peers` (bootstrap, coordinators). */
export async function heal (host: RGridHost, gate: PeerGate, peers: string[], signal: AbortSignal): Promise<void> {
  gate.cut = false
  await Promise.allSettled(peers.map(async addr => await host.dial(multiaddr(addr), { signal })))
}

/**
 * Yamux stream settings. A stream whose reader pauses it (the session frame
 * reader does when frames pile up unread) keeps what is still in flight in
 * its read buffer, up to the receive window already granted; libp2p resets a
 * stream whose read buffer passes `maxReadBufferLength`. Yamux grows a busy
 * stream's window up to 16 MiB by default, four times that limit, so a paused
 * session could be reset by its peer's ordinary traffic. A window of at most
 * half the read buffer keeps a paused stream within it; 2 MiB per round trip
 * is far more than a session carries.
 */
export const YAMUX_STREAM_OPTIONS = { maxStreamWindowSize: 2 * 1024 * 1024, maxReadBufferLength: 4 * 1024 * 1024 }

/** Creates (but does not start) a host. */
export async function createHost (options: HostOptions): Promise<RGridHost> {
  installYamuxWindowThreshold()
  return await createLibp2p<RGridServices>({
    privateKey: options.privateKey,
    start: false,
    addresses: { listen: options.listen },
    transports: [tcp(), circuitRelayTransport({ reservationCompletionTimeout: 10_000 })],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux({ streamOptions: YAMUX_STREAM_OPTIONS })],
    // A busy event loop makes pings time out; aborting the connection then
    // turns a slow node into a partition. Liveness is our heartbeat's job.
    connectionMonitor: { abortConnectionOnPingFailure: false },
    connectionManager: {
      inboundConnectionThreshold: options.inboundConnectionsPerHostPerSecond ?? 100,
      // Connections still in their handshake; the default 10 is too few when a rack starts together.
      maxIncomingPendingConnections: 100
    },
    ...(options.gate != null ? { connectionGater: gateOf(options.gate) } : {}),
    ...(options.networkKey != null ? { connectionProtector: preSharedKey({ psk: swarmKeyOf(options.networkKey) }) } : {}),
    peerDiscovery: options.bootstrap.length > 0 ? [bootstrap({ list: options.bootstrap, timeout: 100 })] : [],
    services: {
      identify: identify(),
      ping: ping(),
      dcutr: dcutr(),
      ...(options.relay != null ? { relay: relayService(options.relay) } : {}),
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
        globalSignaturePolicy: 'StrictSign',
        scoreParams: {
          topics: { [ANNOUNCE_TOPIC]: topicScore() as never, [HEARTBEAT_TOPIC]: topicScore() as never, [BEACON_TOPIC]: topicScore() as never },
          topicScoreCap: 10,
          IPColocationFactorWeight: 0,
          behaviourPenaltyWeight: -10,
          behaviourPenaltyDecay: 0.9
        },
        scoreThresholds: SCORE_THRESHOLDS
      })
    }
  })
}

function gateOf (gate: PeerGate): ConnectionGater {
  const cut = (): boolean => gate.cut
  const peer = (p: PeerId): boolean => gate.cut || gate.denied.has(p.toString())
  return {
    denyDialPeer: peer,
    denyDialMultiaddr: cut,
    denyInboundConnection: cut,
    denyOutboundConnection: peer,
    denyInboundEncryptedConnection: peer,
    denyOutboundEncryptedConnection: peer,
    denyInboundUpgradedConnection: peer,
    denyOutboundUpgradedConnection: peer
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

/** What a topic's accept function says of a decoded message. */
export type GossipVerdict = 'accept' | 'ignore' | 'reject'

/**
 * Installs a gossip topic validator that runs our decoder: garbage is
 * rejected (and counted against the peer that delivered it by gossipsub's
 * peer score) instead of being relayed. Only signed messages are accepted.
 * `accept` may also reject a well-formed message (forged: wrong author, or
 * an author over its rate), which scores the same way; `ignore` drops a
 * message without blaming anyone. A boolean means accept or ignore.
 *
 * Only the author is blamed for a well-formed message `accept` rejects: when
 * another peer relayed it, it is ignored instead, so a peer that relays in
 * good faith (the bootstrap peer relays everything well-formed) never loses
 * score for what a forger wrote. Garbage is always rejected: every RGrid
 * peer runs the decoders, so only its first sender can deliver it.
 */
export function installValidator (
  host: RGridHost,
  topic: string,
  decode: (data: Uint8Array) => unknown,
  accept: (from: PeerId, message: unknown, via: PeerId) => boolean | GossipVerdict,
  log: Logger
): void {
  host.services.pubsub.topicValidators.set(topic, (peer: PeerId, message: Message) => {
    if (message.type !== 'signed') return TopicValidatorResult.Reject
    let decoded: unknown
    try {
      decoded = decode(message.data)
    } catch (err) {
      if (err instanceof DecodeError) {
        log.warn('rejected gossip message', { topic, from: message.from.toString(), error: err.message })
        return TopicValidatorResult.Reject
      }
      throw err
    }
    decodedByValidator.set(message.data, decoded)
    const verdict = accept(message.from, decoded, peer)
    if (verdict === true || verdict === 'accept') return TopicValidatorResult.Accept
    if (verdict === 'reject') {
      const direct = peer.equals(message.from)
      log.debug('refused gossip message', { topic, from: message.from.toString(), via: peer.toString(), blamed: direct })
      return direct ? TopicValidatorResult.Reject : TopicValidatorResult.Ignore
    }
    return TopicValidatorResult.Ignore
  })
}

/** Peers whose gossipsub score is at or below the graylist threshold: their RPCs are ignored. */
export function graylisted (host: RGridHost): string[] {
  return host.getPeers().map(p => p.toString()).filter(p => gossipScore(host, p) <= SCORE_THRESHOLDS.graylistThreshold)
}

/** A peer's gossipsub score (the implementation has it; the exported interface does not declare it). */
export function gossipScore (host: RGridHost, peerId: string): number {
  const pubsub = host.services.pubsub as unknown as { getScore?: (p: string) => number }
  if (typeof pubsub.getScore !== 'function') throw new Error('this gossipsub has no getScore')
  return pubsub.getScore(peerId)
}

/** The host's full multiaddrs, each ending in /p2p/<peer id>. */
export function fullAddrs (host: RGridHost): string[] {
  return host.getMultiaddrs().map(a => a.toString())
}
