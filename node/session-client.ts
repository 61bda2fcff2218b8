/**
 * The node's end of the session protocol: one stream to the coordinator,
 * opened by the node, carrying requests with ids and their replies, plus
 * frames the coordinator pushes (cancellations).
 */
import type { PeerId } from '@libp2p/interface'
import { SESSION_PROTOCOL, SESSION_PROTOCOL_V1, SESSION_PROTOCOLS } from '../protocol/ids.js'
import { decodeCoordinatorFrame } from '../protocol/codec.js'
import type { CoordinatorFrame, NodeFrame } from '../protocol/schemas.js'
import { FrameChannel } from '../common/session.js'
import type { RGridHost } from '../common/p2p.js'
import type { Logger } from '../common/log.js'
import { AbortedError, errorMessage } from '../common/errors.js'

type Channel = FrameChannel<CoordinatorFrame, NodeFrame>
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never
export type NodeRequest = DistributiveOmit<NodeFrame, 'rid'>

/** The session is gone (closed, reset, or never opened). Requests on it may be retried. */
export class SessionClosedError extends Error {
  override readonly name = 'SessionClosedError'
}

/** The coordinator did not answer within the request timeout. */
export class RequestTimeoutError extends Error {
  override readonly name = 'RequestTimeoutError'
  constructor (readonly requestType: string, readonly timeoutMs: number) {
    super(`no reply to ${requestType} within ${timeoutMs} ms`)
  }
}

export interface SessionClientOptions {
  host: RGridHost
  coordinator: PeerId
  log: Logger
  /** Frames the coordinator sends without a request (cancel, probe). */
  onPush: (frame: CoordinatorFrame) => void
  /** Called once when the session ends, for whatever reason. */
  onClose: () => void
  /** @default 10000 */
  requestTimeoutMs?: number
  /** Fault injection: added before every request goes out, in ms (a slow link). @default () => 0 */
  linkDelayMs?: () => number
}

export class SessionClient {
  private channel: Channel | null = null
  private nextRid = 1
  private readonly pending = new Map<number, { resolve: (f: CoordinatorFrame) => void, reject: (e: Error) => void, timer: NodeJS.Timeout }>()
  private closed = false

  constructor (private readonly options: SessionClientOptions) {}

  get isOpen (): boolean {
    return !this.closed && this.channel?.isOpen === true
  }

  /** The session protocol the coordinator agreed to (an older coordinator speaks only 1.0.0). */
  protocol: string = SESSION_PROTOCOL_V1

  /** Whether a result may ask for the next attempt (`wantNext`, session 1.1 and later). */
  get offersNext (): boolean {
    return this.protocol !== SESSION_PROTOCOL_V1
  }

  /** Whether the coordinator keeps standing bids (`standby`, `withdraw`: session 1.2). */
  get offersStandby (): boolean {
    return this.protocol === SESSION_PROTOCOL
  }

  /** The coordinator at the other end, as a peer id string. */
  get coordinatorId (): string {
    return this.options.coordinator.toString()
  }

  /** Opens the stream; the caller sends `hello` next. */
  async open (signal: AbortSignal): Promise<void> {
    // Over a relay too, when that is the only path to the coordinator (the relay's bounds then reset it now and then; the session reopens).
    const stream = await this.options.host.dialProtocol(this.options.coordinator, SESSION_PROTOCOLS, { signal, runOnLimitedConnection: true })
    this.protocol = stream.protocol
    this.channel = new FrameChannel(stream, { decode: decodeCoordinatorFrame })
    void this.readLoop(this.channel)
  }

  /**
   * Sends a request and resolves with the coordinator's reply to it.
   * `timeoutMs`: for requests the coordinator answers late on purpose (`standby`).
   */
  async request (frame: NodeRequest, signal?: AbortSignal, timeoutMs = this.options.requestTimeoutMs ?? 10_000): Promise<CoordinatorFrame> {
    const delayMs = this.options.linkDelayMs?.() ?? 0
    if (delayMs > 0) await new Promise(resolve => setTimeout(resolve, delayMs))
    const channel = this.channel
    if (channel == null || !this.isOpen) throw new SessionClosedError('no session to the coordinator')
    const rid = this.nextRid++
    const reply = new Promise<CoordinatorFrame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(rid)
        reject(new RequestTimeoutError(frame.type, timeoutMs))
      }, timeoutMs)
      this.pending.set(rid, { resolve, reject, timer })
      signal?.addEventListener('abort', () => {
        const p = this.pending.get(rid)
        if (p == null) return
        clearTimeout(p.timer)
        this.pending.delete(rid)
        reject(new AbortedError(`${frame.type} aborted`))
      }, { once: true })
    })
    try {
      await channel.send({ ...frame, rid } as NodeFrame)
    } catch (err) {
      const p = this.pending.get(rid)
      if (p != null) { clearTimeout(p.timer); this.pending.delete(rid) }
      throw new SessionClosedError(`send failed: ${errorMessage(err)}`)
    }
    return await reply
  }

  private async readLoop (channel: Channel): Promise<void> {
    try {
      while (true) {
        const next = await channel.next()
        if (next == null) break
        if ('error' in next) {
          this.options.log.warn('undecodable frame from coordinator', { error: next.error.message })
          continue
        }
        const frame = next.frame
        const rid = 'rid' in frame ? frame.rid : null
        const waiter = rid != null ? this.pending.get(rid) : undefined
        if (rid != null && waiter != null) {
          clearTimeout(waiter.timer)
          this.pending.delete(rid)
          waiter.resolve(frame)
        } else if (frame.type === 'cancel' || frame.type === 'probe' || frame.type === 'drain' || frame.type === 'reachability' || frame.type === 'offer' || (frame.type === 'error' && frame.code === 'join-revoked')) {
          this.options.onPush(frame)
        } else if (frame.type === 'error') {
          this.options.log.warn('coordinator reported an error', { code: frame.code, message: frame.message })
        } else {
          this.options.log.debug('reply to an unknown request', { type: frame.type })
        }
      }
    } catch (err) {
      this.options.log.info('session read ended', { error: errorMessage(err) })
    } finally {
      this.shutdown()
    }
  }

  private shutdown (): void {
    if (this.closed) return
    this.closed = true
    for (const [rid, p] of this.pending) {
      clearTimeout(p.timer)
      p.reject(new SessionClosedError('session closed'))
      this.pending.delete(rid)
    }
    this.options.onClose()
  }

  async close (): Promise<void> {
    const channel = this.channel
    this.shutdown()
    if (channel != null) await channel.close()
  }
}
