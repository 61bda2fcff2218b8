/**
 * Bounded capture of a job's stdout or stderr. A job may print gigabytes; we
 * keep only the last bytes because the tail is where the error messages are.
 */
import { Writable } from 'node:stream'
import { LIMITS } from '../../protocol/limits.js'
import type { JobError } from '../../protocol/schemas.js'
import type { RunOutcome } from './types.js'

/** What a collector holds once the stream is over. */
export interface CapturedOutput {
  /** The kept bytes decoded as UTF-8 (invalid sequences become U+FFFD). */
  text: string
  /** True when earlier bytes were dropped to stay within the limit. */
  truncated: boolean
  /** Every byte ever pushed, kept or not. */
  totalBytes: number
}

/**
 * Keeps the last `limit` bytes pushed into it in a fixed ring buffer, so memory
 * stays at `limit` bytes however much the job prints.
 */
export class OutputCollector {
  /** Allocated on first push: most jobs print nothing on one of their streams. */
  private ring: Buffer | null = null
  /** Next write position in `ring`. */
  private pos = 0
  private total = 0

  /**
   * @param limit - bytes kept. @default LIMITS.outputBytes
   */
  constructor (readonly limit: number = LIMITS.outputBytes) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`output limit must be a positive integer, got ${limit}`)
  }

  /** Appends a chunk; strings are encoded as UTF-8. */
  push (chunk: Buffer | Uint8Array | string): void {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk
    if (bytes.length === 0) return
    this.total += bytes.length
    const ring = this.ring ?? (this.ring = Buffer.allocUnsafe(this.limit))
    if (bytes.length >= this.limit) {
      // Only the chunk's own tail can survive; copy it and restart the ring.
      ring.set(bytes.subarray(bytes.length - this.limit))
      this.pos = 0
      return
    }
    const first = Math.min(bytes.length, this.limit - this.pos)
    ring.set(bytes.subarray(0, first), this.pos)
    if (first < bytes.length) ring.set(bytes.subarray(first), 0)
    this.pos = (this.pos + bytes.length) % this.limit
  }

  /**
   * Takes the tail another collector kept (rgrid-spawn's ring buffer) and the
   * count of every byte it saw, as if they had been pushed here.
   */
  restore (tail: Uint8Array, totalBytes: number): void {
    this.push(tail)
    this.total = Math.max(this.total, totalBytes)
  }

  /** True once more than `limit` bytes were pushed. */
  get truncated (): boolean {
    return this.total > this.limit
  }

  /** The kept bytes, oldest first. */
  bytes (): Buffer {
    if (this.ring === null) return Buffer.alloc(0)
    if (this.total < this.limit) return Buffer.from(this.ring.subarray(0, this.total))
    return Buffer.concat([this.ring.subarray(this.pos), this.ring.subarray(0, this.pos)])
  }

  /** Decodes the kept bytes. */
  result (): CapturedOutput {
    let kept = this.bytes()
    if (this.truncated) {
      // The cut may land inside a multi-byte character; drop its orphaned
      // continuation bytes (10xxxxxx, at most 3) so the text does not start
      // with a replacement character that was never in the output.
      let skip = 0
      while (skip < 3 && skip < kept.length && ((kept[skip] ?? 0) & 0xc0) === 0x80) skip++
      kept = kept.subarray(skip)
    }
    return { text: kept.toString('utf8'), truncated: this.truncated, totalBytes: this.total }
  }

  /**
   * A Writable feeding this collector, for APIs that want a stream (such as
   * dockerode's `demuxStream`). Its callback runs synchronously, so every
   * byte written is in the collector by the time `write()` returns.
   */
  writable (): Writable {
    return new Writable({
      write: (chunk: Buffer, _encoding, callback) => {
        this.push(chunk)
        callback()
      }
    })
  }
}

/** Builds a run's outcome from its two collectors, finished now. */
export function outcomeOf (
  stdout: OutputCollector, stderr: OutputCollector, startedAt: number | null,
  outcome: RunOutcome['outcome'], exitCode: number | null, error: JobError | null
): RunOutcome {
  const out = stdout.result()
  const err = stderr.result()
  return {
    outcome, exitCode, error, startedAt, finishedAt: Date.now(),
    stdout: out.text, stderr: err.text, stdoutTruncated: out.truncated, stderrTruncated: err.truncated
  }
}
