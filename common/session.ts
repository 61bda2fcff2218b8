/**
 * A framed JSON channel over one libp2p stream: length-prefixed frames (the
 * same wire format as lpStream), each a protocol message. Both ends of the
 * session protocol use it; the node side adds request/response matching
 * (node/session-client.ts).
 *
 * Writes are frame-atomic (each flush is one send of whole frames), so
 * concurrent senders never interleave bytes.
 */
import type { Stream } from '@libp2p/interface'
import { FrameReader, encodeFrames } from './frame-reader.js'
import { encode, DecodeError } from '../protocol/codec.js'
import { LIMITS } from '../protocol/limits.js'

export interface FrameChannelOptions<In> {
  decode: (bytes: Uint8Array) => In
  /** @default LIMITS.sessionFrameBytes */
  maxFrameBytes?: number
}

export class FrameChannel<In, Out> {
  private readonly reader: FrameReader
  private closed = false
  private pending: Array<{ bytes: Uint8Array, resolve: () => void, reject: (err: Error) => void }> = []
  private flushScheduled = false

  constructor (readonly stream: Stream, private readonly options: FrameChannelOptions<In>) {
    this.reader = new FrameReader(stream, { maxFrameBytes: options.maxFrameBytes ?? LIMITS.sessionFrameBytes })
  }

  get isOpen (): boolean {
    return !this.closed && this.stream.status === 'open'
  }

  /**
   * Sends a frame. Frames sent in the same turn of the event loop go out
   * together in one write: under load this turns many small yamux, noise and
   * socket writes into one (see docs/design.md).
   */
  async send (frame: Out, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    const bytes = encode(frame)
    await new Promise<void>((resolve, reject) => {
      this.pending.push({ bytes, resolve, reject })
      if (!this.flushScheduled) {
        this.flushScheduled = true
        setImmediate(() => { void this.flush() })
      }
    })
  }

  private async flush (): Promise<void> {
    this.flushScheduled = false
    const batch = this.pending
    this.pending = []
    if (batch.length === 0) return
    try {
      if (!this.stream.send(encodeFrames(batch.map(b => b.bytes)))) await drained(this.stream)
      for (const b of batch) b.resolve()
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err))
      for (const b of batch) b.reject(e)
    }
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
      bytes = await this.reader.next(signal)
    } catch (err) {
      if (this.isEndOfStream(err)) return null
      throw err
    }
    if (bytes == null) return null
    try {
      return { frame: this.options.decode(bytes) }
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

/**
 * Resolves on the stream's next 'drain', rejects if it closes first: the wait
 * lpStream's writes used. Not `stream.onDrain()`: in @libp2p/utils 7.4 that
 * keeps the promise of the first drain, so every later wait would return at
 * once and writes to a peer that stopped reading would pile up unbounded.
 */
export async function drained (stream: Stream): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const onDrain = (): void => { stream.removeEventListener('close', onClose); resolve() }
    const onClose = (): void => { stream.removeEventListener('drain', onDrain); reject(new Error('the stream closed before its write buffer drained')) }
    stream.addEventListener('drain', onDrain, { once: true })
    stream.addEventListener('close', onClose, { once: true })
  })
}
