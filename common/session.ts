/**
 * A framed JSON channel over one libp2p stream: length-prefixed frames
 * (lpStream), each a protocol message. Both ends of the session protocol use
 * it; the node side adds request/response matching (node/session-client.ts).
 *
 * Writes are frame-atomic (lpStream sends prefix and body in one call), so
 * concurrent senders never interleave bytes.
 */
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { encode, DecodeError } from '../protocol/codec.js'
import { LIMITS } from '../protocol/limits.js'

export interface FrameChannelOptions<In> {
  decode: (bytes: Uint8Array) => In
  /** @default LIMITS.sessionFrameBytes */
  maxFrameBytes?: number
}

export class FrameChannel<In, Out> {
  private readonly lp: LengthPrefixedStream<Stream>
  private closed = false

  constructor (readonly stream: Stream, private readonly options: FrameChannelOptions<In>) {
    this.lp = lpStream(stream, { maxDataLength: options.maxFrameBytes ?? LIMITS.sessionFrameBytes })
  }

  get isOpen (): boolean {
    return !this.closed && this.stream.status === 'open'
  }

  async send (frame: Out, signal?: AbortSignal): Promise<void> {
    await this.lp.write(encode(frame), signal != null ? { signal } : undefined)
  }

  /**
   * Reads the next frame. Returns `{ frame }`, or `{ error }` for a frame that
   * arrived whole but did not decode (the channel stays usable), or null once
   * the stream has ended. Transport errors (oversized length prefix, reset)
   * are thrown.
   */
  async next (signal?: AbortSignal): Promise<{ frame: In } | { error: DecodeError } | null> {
    let bytes
    try {
      bytes = await this.lp.read(signal != null ? { signal } : undefined)
    } catch (err) {
      if (this.isEndOfStream(err)) return null
      throw err
    }
    try {
      return { frame: this.options.decode(bytes.subarray()) }
    } catch (err) {
      if (err instanceof DecodeError) return { error: err }
      throw err
    }
  }

  private isEndOfStream (err: unknown): boolean {
    const name = (err as Error | undefined)?.name
    return this.stream.status !== 'open' || name === 'UnexpectedEOFError' || name === 'StreamResetError' ||
      name === 'StreamClosedError' || name === 'StreamStateError'
  }

  /** Closes gracefully, aborting if the remote does not cooperate in time. */
  async close (timeoutMs = 2_000): Promise<void> {
    if (this.closed) return
    this.closed = true
    try {
      await this.stream.close({ signal: AbortSignal.timeout(timeoutMs) })
    } catch (err) {
      this.stream.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }

  abort (reason: Error): void {
    this.closed = true
    this.stream.abort(reason)
  }
}
