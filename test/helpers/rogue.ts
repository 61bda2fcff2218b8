/**
 * A rogue mesh peer for adversarial tests: an in-process libp2p host with its
 * own key (so it can sign gossip, but as itself) and raw access to the
 * session protocol, so it can send frames no honest node would.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { createHost, type RGridHost } from '../../common/p2p.js'
import { ANNOUNCE_TOPIC, HEARTBEAT_TOPIC, BEACON_TOPIC, SESSION_PROTOCOL } from '../../protocol/ids.js'
import { decodeCoordinatorFrame, encode, DecodeError } from '../../protocol/codec.js'
import type { CoordinatorFrame } from '../../protocol/schemas.js'
import { decodeJoinToken } from '../../common/join-token.js'

/** Polls `check` until it returns a non-undefined value or the deadline passes. */
export async function until<T> (what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs
  while (true) {
    const value = await check()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
}

/**
 * Starts a rogue host joined to the mesh through the bootstrap peer, directly
 * connected to the coordinator and subscribed to both topics. Resolves once
 * the rogue is also connected to every node and knows that the coordinator
 * and all nodes subscribe to both topics, so what it publishes (flood
 * publish) reaches each of them directly.
 */
export async function startRogue (mesh: { bootstrapAddr: string, coordinatorAddr: string, coordinatorPeerId: string, nodePeerIds: string[], joinToken?: string }): Promise<RGridHost> {
  // An insider: it holds a join token, hence the mesh's network key.
  const networkKey = mesh.joinToken != null && mesh.joinToken !== '' ? decodeJoinToken(mesh.joinToken).networkKey : undefined
  const host = await createHost({
    privateKey: await generateKeyPair('Ed25519'),
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: [mesh.bootstrapAddr],
    ...(networkKey != null ? { networkKey } : {})
  })
  await host.start()
  host.services.pubsub.subscribe(ANNOUNCE_TOPIC)
  host.services.pubsub.subscribe(HEARTBEAT_TOPIC)
  host.services.pubsub.subscribe(BEACON_TOPIC)
  await host.dial(multiaddr(mesh.bootstrapAddr))
  await host.dial(multiaddr(mesh.coordinatorAddr))
  // Nodes are DHT clients but the DHT servers know where they are: connect
  // to them directly too, so our gossip reaches them first-hand rather than
  // only through peers that validate it.
  for (const node of mesh.nodePeerIds) {
    const info = await host.peerRouting.findPeer(peerIdFromString(node), { signal: AbortSignal.timeout(10_000) })
    await host.dial(info.multiaddrs.map(a => a.encapsulate(`/p2p/${node}`)), { signal: AbortSignal.timeout(10_000) })
  }
  await until('the coordinator and every node to be gossip peers of the rogue on the topics each listens to', () => {
    const ps = host.services.pubsub
    const on = (topic: string, targets: string[]): boolean => {
      const subs = new Set(ps.getSubscribers(topic).map(p => p.toString()))
      return targets.every(t => subs.has(t))
    }
    // Coordinators hear heartbeats; nodes hear beacons; both hear announcements.
    return on(ANNOUNCE_TOPIC, [mesh.coordinatorPeerId, ...mesh.nodePeerIds]) && on(HEARTBEAT_TOPIC, [mesh.coordinatorPeerId]) && on(BEACON_TOPIC, mesh.nodePeerIds) ? true : undefined
  })
  return host
}

export type ReadResult =
  | { kind: 'frame', frame: CoordinatorFrame }
  | { kind: 'undecodable', error: DecodeError }
  /** The coordinator closed or reset the stream. */
  | { kind: 'end', error: string | null }
  | { kind: 'timeout' }

/**
 * One raw session stream to the coordinator. Unlike FrameChannel it can write
 * arbitrary bytes and frames of any size, and reads with a deadline.
 */
export class RogueSession {
  private constructor (readonly stream: Stream, private readonly lp: LengthPrefixedStream<Stream>) {}

  /** `protocol`: the session version to speak. @default SESSION_PROTOCOL */
  static async open (host: RGridHost, coordinatorPeerId: string, protocol = SESSION_PROTOCOL): Promise<RogueSession> {
    const stream = await host.dialProtocol(peerIdFromString(coordinatorPeerId), protocol, { signal: AbortSignal.timeout(10_000) })
    // Our own limit is generous on purpose: we want to be able to send oversized frames.
    return new RogueSession(stream, lpStream(stream, { maxDataLength: 8 * 1024 * 1024 }))
  }

  /** Sends any value as one JSON frame, whether or not it matches a schema. */
  async send (frame: unknown): Promise<void> {
    await this.lp.write(encode(frame), { signal: AbortSignal.timeout(10_000) })
  }

  /** Sends arbitrary bytes as one length-prefixed frame. */
  async sendRaw (bytes: Uint8Array): Promise<void> {
    await this.lp.write(bytes, { signal: AbortSignal.timeout(10_000) })
  }

  /**
   * The next frame from the coordinator, or how the stream ended. A timeout
   * leaves the stream in an unknown state: treat it as the end of the test.
   */
  async read (timeoutMs = 5_000): Promise<ReadResult> {
    let bytes
    try {
      bytes = await this.lp.read({ signal: AbortSignal.timeout(timeoutMs) })
    } catch (err) {
      const e = err as Error
      if (e.name === 'AbortError' || e.name === 'TimeoutError') {
        if (this.stream.status === 'open') return { kind: 'timeout' }
      }
      return { kind: 'end', error: `${e.name}: ${e.message}` }
    }
    try {
      return { kind: 'frame', frame: decodeCoordinatorFrame(bytes.subarray()) }
    } catch (err) {
      if (err instanceof DecodeError) return { kind: 'undecodable', error: err }
      throw err
    }
  }

  /** Reads the next frame and fails unless it is one. */
  async frame (timeoutMs = 5_000): Promise<CoordinatorFrame> {
    const r = await this.read(timeoutMs)
    if (r.kind !== 'frame') throw new Error(`expected a frame from the coordinator, got ${JSON.stringify(r)}`)
    return r.frame
  }

  close (): void {
    if (this.stream.status === 'open') this.stream.abort(new Error('rogue done'))
  }
}
