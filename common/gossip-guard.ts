/**
 * The heartbeat topic's rules, the same on every peer so honest relays
 * never pass on what others refuse: an author may publish a few messages
 * per heartbeat interval, denied peers are not heard, and a coordinator
 * beacon counts only from a coordinator the peer trusts (when it knows
 * which those are).
 */
import type { PeerId } from '@libp2p/interface'
import type { HeartbeatTopicMessage } from '../protocol/schemas.js'
import { RateLimiter } from './rate-limit.js'
import type { Clock } from './clock.js'
import type { GossipVerdict } from './p2p.js'

export interface HeartbeatGuardOptions {
  clock: Clock
  /** Messages per second one author may publish on the topic, sustained. @default 3 (heartbeats are 1 s apart) */
  ratePerSecond?: number
  /** Burst allowance per author. @default 10 */
  burst?: number
  /** Peers not heard at all. @default none */
  denied?: Set<string>
  /** Whether a beacon's author is a trusted coordinator; absent: any author. */
  isCoordinator?: (peerId: string) => boolean
  /**
   * Authors not heard before that one peer may deliver per second; beyond,
   * their messages are dropped unrelayed. A mesh starting together arrives
   * as a burst through a few relays; a stream of fresh identities (minted
   * with the network key) does not get through one connection faster.
   * @default 2 per second, bursts of 200
   */
  newAuthorsPerSecond?: number
}

export class HeartbeatGuard {
  private readonly limiter: RateLimiter
  private readonly newAuthors: RateLimiter
  readonly stats = { overRate: 0, forgedBeacons: 0, denied: 0, newAuthorsDropped: 0 }

  constructor (private readonly options: HeartbeatGuardOptions) {
    this.limiter = new RateLimiter({ ratePerSecond: options.ratePerSecond ?? 3, burst: options.burst ?? 10, clock: options.clock })
    const fresh = options.newAuthorsPerSecond ?? 2
    this.newAuthors = new RateLimiter({ ratePerSecond: fresh, burst: fresh * 100, clock: options.clock })
  }

  /**
   * The accept function for a topic that carries only messages of `type`
   * (heartbeats, or beacons): anything else there is misuse and rejected, so
   * its author loses score; the rest goes through {@link verdict}.
   */
  only (type: HeartbeatTopicMessage['type']): (from: PeerId, message: unknown, via?: PeerId) => GossipVerdict {
    return (from, message, via) => (message as HeartbeatTopicMessage).type !== type ? 'reject' : this.verdict(from, message as HeartbeatTopicMessage, via)
  }

  verdict (from: PeerId, message: HeartbeatTopicMessage, via?: PeerId): GossipVerdict {
    const author = from.toString()
    if (this.options.denied?.has(author) === true) { this.stats.denied++; return 'reject' }
    if (via != null && !this.limiter.has(author) && !this.newAuthors.take(via.toString())) {
      this.stats.newAuthorsDropped++
      return 'ignore'
    }
    if (!this.limiter.take(author)) { this.stats.overRate++; return 'reject' }
    if (message.type === 'coordinator-beacon' && this.options.isCoordinator != null && !this.options.isCoordinator(author)) {
      this.stats.forgedBeacons++
      return 'reject'
    }
    return 'accept'
  }
}
