/**
 * Length-prefixed frames (unsigned varint length, then the bytes) read
 * straight from a libp2p stream's 'message' events.
 *
 * Why not `lpStream().read()`: it reads the length prefix one byte at a time,
 * each byte an awaited read that copies into a fresh list, and a prefix longer
 * than one byte throws and catches a RangeError on the way. On a busy session
 * that was several percent of a node's CPU (docs/performance.md). Here every
 * frame that arrives whole is cut out of its chunk synchronously, without a
 * copy, and `next()` only waits when none is queued.
 *
 * Limits: a length above `maxFrameBytes`, or a prefix longer than that length
 * needs, fails the reader at once, before any of the frame is buffered. Frames
 * read but not yet taken are bounded too: above `maxQueuedBytes` (each frame
 * counted with its bytes plus a fixed overhead) the stream is paused until
 * they are taken. Pausing stops window updates, but a sender may still use the
 * window it holds; the stream itself aborts if its own buffer overflows.
 */
import type { Stream } from '@libp2p/interface'

/** The length prefix announced a frame larger than the reader accepts. */
export class FrameTooLargeError extends Error {
  override readonly name = 'FrameTooLargeError'
  constructor (readonly length: number, readonly limit: number) {
    super(`session frame of ${length} bytes is over the limit of ${limit}`)
  }
}

/** The length prefix ran on past the bytes any allowed length needs. */
export class FramePrefixError extends Error {
  override readonly name = 'FramePrefixError'
  constructor (readonly prefixBytes: number) {
    super(`session frame length prefix longer than ${prefixBytes} bytes`)
  }
}

/** Bytes an unsigned varint needs for `n`. */
export function varintLength (n: number): number {
  let bytes = 1
  while (n >= 0x80) { n = Math.floor(n / 0x80); bytes++ }
  return bytes
}

/** Writes `n` as an unsigned varint at `offset`; returns the offset after it. */
export function writeVarint (n: number, into: Uint8Array, offset: number): number {
  while (n >= 0x80) {
    into[offset++] = (n & 0x7f) | 0x80
    n = Math.floor(n / 0x80)
  }
  into[offset++] = n
  return offset
}

/** One buffer holding each frame behind its length prefix: one send for many frames. */
export function encodeFrames (frames: readonly Uint8Array[]): Uint8Array {
  let total = 0
  for (const f of frames) total += varintLength(f.byteLength) + f.byteLength
  const out = new Uint8Array(total)
  let offset = 0
  for (const f of frames) {
    offset = writeVarint(f.byteLength, out, offset)
    out.set(f, offset)
    offset += f.byteLength
  }
  return out
}

export interface FrameReaderOptions {
  /** Largest frame accepted, in bytes. */
  maxFrameBytes: number
  /** Frames read but not yet taken, in bytes, above which the stream is paused. @default 4 × maxFrameBytes */
  maxQueuedBytes?: number
}

export class FrameReader {
  private readonly maxPrefixBytes: number
  private readonly maxQueuedBytes: number
  private readonly frames: Uint8Array[] = []
  private head = 0
  private queuedBytes = 0
  /** Bytes of a frame (prefix included) not yet complete. */
  private parts: Uint8Array[] = []
  private partBytes = 0
  /** Bytes the incomplete frame needs in all, prefix included; 0 while its prefix is incomplete. */
  private needed = 0
  private failure: Error | null = null
  private waiter: { wake: () => void } | null = null
  private paused = false

  constructor (private readonly stream: Stream, private readonly options: FrameReaderOptions) {
    this.maxPrefixBytes = varintLength(options.maxFrameBytes)
    this.maxQueuedBytes = options.maxQueuedBytes ?? 4 * options.maxFrameBytes
    stream.addEventListener('message', evt => { this.onData(evt.data instanceof Uint8Array ? evt.data : evt.data.subarray()) })
    stream.addEventListener('remoteCloseWrite', () => { this.wake() })
    // The end can also come after the close, once the stream's own buffer is handed over.
    stream.addEventListener('end', () => { this.wake() })
    stream.addEventListener('close', evt => {
      if (evt.error != null && this.failure == null) this.failure = evt.error
      this.wake()
    })
  }

  /**
   * The next whole frame, or null once the remote has closed its end (a frame
   * cut short by the close is dropped). Throws the reader's failure (an
   * oversized frame, a reset) and the signal's reason. One call at a time.
   */
  async next (signal?: AbortSignal): Promise<Uint8Array | null> {
    while (true) {
      if (this.head < this.frames.length) return this.take()
      if (this.failure != null) throw this.failure
      if (this.ended()) return null
      signal?.throwIfAborted()
      if (this.waiter != null) throw new Error('FrameReader.next() is already waiting')
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => { this.waiter = null; reject(signal!.reason) }
        this.waiter = { wake: () => { signal?.removeEventListener('abort', onAbort); resolve() } }
        signal?.addEventListener('abort', onAbort, { once: true })
      })
    }
  }

  private take (): Uint8Array {
    const frame = this.frames[this.head]!
    this.frames[this.head++] = EMPTY
    this.queuedBytes -= frame.byteLength + FRAME_OVERHEAD_BYTES
    if (this.head === this.frames.length) {
      this.frames.length = 0
      this.head = 0
    } else if (this.head > 1024) {
      this.frames.splice(0, this.head)
      this.head = 0
    }
    if (this.paused && this.queuedBytes <= this.maxQueuedBytes / 2) {
      this.paused = false
      // A stream closed meanwhile cannot be resumed (it throws); what it held was already handed over.
      if (this.stream.readStatus === 'paused') this.stream.resume()
    }
    return frame
  }

  /** The remote will send nothing more, and the stream holds nothing unread for us. */
  private ended (): boolean {
    return this.stream.remoteWriteStatus !== 'writable' && this.stream.readBufferLength === 0
  }

  private wake (): void {
    const w = this.waiter
    this.waiter = null
    w?.wake()
  }

  private fail (err: Error): void {
    this.failure = err
    this.parts = []
    this.partBytes = 0
    this.wake()
  }

  private onData (data: Uint8Array): void {
    if (this.failure != null || data.byteLength === 0) return
    if (this.partBytes > 0) {
      this.parts.push(data)
      this.partBytes += data.byteLength
      // Still short of a frame whose size is known: gather, copy once when whole.
      if (this.needed > 0 && this.partBytes < this.needed) return
      data = concat(this.parts, this.partBytes)
      this.parts = []
      this.partBytes = 0
      this.needed = 0
    }
    const before = this.frames.length
    let offset = 0
    while (offset < data.byteLength) {
      let length = 0
      let factor = 1
      let i = offset
      let complete = false
      while (i < data.byteLength) {
        const b = data[i++]!
        length += (b & 0x7f) * factor
        factor *= 0x80
        if (b < 0x80) { complete = true; break }
        if (i - offset >= this.maxPrefixBytes) { this.fail(new FramePrefixError(this.maxPrefixBytes)); return }
      }
      if (!complete) { this.keep(data.subarray(offset), 0); break }
      if (length > this.options.maxFrameBytes) { this.fail(new FrameTooLargeError(length, this.options.maxFrameBytes)); return }
      const end = i + length
      if (end > data.byteLength) { this.keep(data.subarray(offset), end - offset); break }
      this.frames.push(data.subarray(i, end))
      this.queuedBytes += length + FRAME_OVERHEAD_BYTES
      offset = end
    }
    if (this.frames.length > before) {
      if (!this.paused && this.queuedBytes > this.maxQueuedBytes && this.stream.readStatus === 'readable') {
        this.paused = true
        this.stream.pause()
      }
      this.wake()
    }
  }

  private keep (rest: Uint8Array, needed: number): void {
    this.parts = [rest]
    this.partBytes = rest.byteLength
    this.needed = needed
  }
}

const EMPTY = new Uint8Array(0)
/** What a queued frame costs beyond its bytes (its view object), so many tiny frames count too. */
const FRAME_OVERHEAD_BYTES = 64

function concat (parts: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total)
  let offset = 0
  for (const p of parts) { out.set(p, offset); offset += p.byteLength }
  return out
}
