/**
 * Live logs: a running attempt's output, cut into lines and shipped to the
 * coordinator in batches over the session while the job runs. Bounded: a
 * batch is at most `maxBatchLines` lines or `maxBatchBytes`; at most
 * `maxPendingBytes` wait per attempt, and lines beyond that are dropped (and
 * said so in the log), because a job printing faster than the network must
 * not grow the node's memory. The attempt's final result still carries the
 * tail of its output, whatever happened to live lines.
 */
import { secretMasker, type Masker } from '../common/mask.js'
import { StringDecoder } from 'node:string_decoder'
import type { CoordinatorFrame, NodeFrame } from '../protocol/schemas.js'
import { LIMITS } from '../protocol/limits.js'
import type { Logger } from '../common/log.js'
import type { Clock } from '../common/clock.js'
import { errorMessage } from '../common/errors.js'

type Stream = 'stdout' | 'stderr'
interface Line { stream: Stream, at: number, text: string }

/** A `log` frame without its request id. */
export type LogRequest = Omit<Extract<NodeFrame, { type: 'log' }>, 'rid'>

export interface LogShipperOptions {
  /** Sends one batch (preferably to `coordinator`); throws when no session answers. */
  send: (request: LogRequest, coordinator?: string) => Promise<CoordinatorFrame>
  /** The coordinator refused a batch as stale: the attempt is no longer ours. */
  onStale: (jobId: string, attempt: number, reason: string) => void
  log: Logger
  clock: Clock
  /** How often pending lines are sent, in ms. @default 200 */
  flushMs?: number
  /** @default 500 */
  maxBatchLines?: number
  /** @default 262144 (256 KiB; a session frame is at most 512 KiB) */
  maxBatchBytes?: number
  /** Unsent output kept per attempt before lines are dropped, in bytes. @default 1048576 */
  maxPendingBytes?: number
  /** How long close() waits for the last lines to go out, in ms. @default 2000 */
  closeTimeoutMs?: number
}

/** One attempt's live log. */
export class AttemptLog {
  private readonly decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') }
  private readonly partial = { stdout: '', stderr: '' }
  private pending: Line[] = []
  private pendingBytes = 0
  private dropped = 0
  private sending: Promise<void> | null = null
  private timer: NodeJS.Timeout | null = null
  private stopped = false
  readonly stats = { shipped: 0, dropped: 0, batches: 0, sendFailures: 0 }

  constructor (private readonly ref: { jobId: string, attempt: number, token: string }, private readonly coordinator: string | undefined,
    private readonly o: Required<Omit<LogShipperOptions, 'log' | 'clock' | 'send' | 'onStale'>> & Pick<LogShipperOptions, 'log' | 'clock' | 'send' | 'onStale'>,
    /** Masks the job's secrets in each line (whole lines: a secret split across a line break is not seen). */
    private readonly mask: Masker = secretMasker({})) {
    this.timer = setInterval(() => { this.flush() }, o.flushMs)
    this.timer.unref()
  }

  /** Takes a chunk of output; complete lines are queued, the rest waits for its newline. */
  write (stream: Stream, chunk: Uint8Array): void {
    if (this.stopped) return
    const text = this.partial[stream] + this.decoders[stream].write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
    const parts = text.split('\n')
    let rest = parts.pop() ?? ''
    for (const p of parts) this.queue(stream, p.endsWith('\r') ? p.slice(0, -1) : p)
    // A "line" with no newline in sight is shipped in pieces rather than held without bound.
    // Masked whole first, and cut only where no secret can straddle the cut: the tail kept
    // back is at least as long as the longest secret, so one still arriving is not split.
    if (rest.length > LIMITS.logLineChars) rest = this.mask(rest)
    while (rest.length > LIMITS.logLineChars + this.mask.longest) {
      this.queue(stream, rest.slice(0, LIMITS.logLineChars))
      rest = rest.slice(LIMITS.logLineChars)
    }
    this.partial[stream] = rest
  }

  private queue (stream: Stream, line: string): void {
    // Masked before it is cut into pieces, so no secret is split by a cut.
    const text = this.mask(line)
    for (let i = 0; i === 0 || i < text.length; i += LIMITS.logLineChars) {
      const piece = text.slice(i, i + LIMITS.logLineChars)
      const bytes = Buffer.byteLength(piece) + 64
      if (this.pendingBytes + bytes > this.o.maxPendingBytes) { this.dropped++; this.stats.dropped++; continue }
      if (this.dropped > 0) {
        this.pending.push({ stream: 'stderr', at: this.o.clock.now(), text: `[rgrid: ${this.dropped} lines dropped from the live log; the result keeps the output's tail]` })
        this.dropped = 0
      }
      this.pending.push({ stream, at: this.o.clock.now(), text: piece })
      this.pendingBytes += bytes
    }
  }

  /** Sends one batch if none is in flight. */
  private flush (): void {
    if (this.sending != null || this.pending.length === 0 || this.stopped) return
    const batch: Line[] = []
    let bytes = 0
    for (const l of this.pending) {
      const b = Buffer.byteLength(l.text) + 64
      if (batch.length >= this.o.maxBatchLines || (batch.length > 0 && bytes + b > this.o.maxBatchBytes)) break
      batch.push(l)
      bytes += b
    }
    this.sending = (async () => {
      try {
        const { jobId, attempt, token } = this.ref
        const reply = await this.o.send({ type: 'log', jobId, attempt, token, lines: batch }, this.coordinator)
        if (reply.type === 'stale') {
          this.stop()
          this.o.onStale(this.ref.jobId, this.ref.attempt, reply.reason)
          return
        }
        if (reply.type !== 'ack') throw new Error(reply.type === 'error' ? reply.message : `unexpected ${reply.type}`)
        // Sent: only now leave the queue, so a failed send is retried in order.
        this.pending.splice(0, batch.length)
        this.pendingBytes -= bytes
        this.stats.shipped += batch.length
        this.stats.batches++
      } catch (err) {
        this.stats.sendFailures++
        this.o.log.debug('log batch not sent; retrying', { jobId: this.ref.jobId, error: errorMessage(err) })
      } finally {
        this.sending = null
      }
    })()
  }

  private stop (): void {
    this.stopped = true
    if (this.timer != null) clearInterval(this.timer)
    this.timer = null
  }

  /**
   * The job ended: ships what is left, waiting at most `closeTimeoutMs`,
   * before the result goes out (lines arriving after the result are refused).
   */
  async close (): Promise<void> {
    if (this.stopped) return
    for (const s of ['stdout', 'stderr'] as const) {
      const rest = this.partial[s] + this.decoders[s].end()
      if (rest !== '') this.queue(s, rest)
      this.partial[s] = ''
    }
    const deadline = this.o.clock.now() + this.o.closeTimeoutMs
    while (!this.stopped && (this.pending.length > 0 || this.sending != null) && this.o.clock.now() < deadline) {
      this.flush()
      if (this.sending != null) await Promise.race([this.sending, new Promise(resolve => setTimeout(resolve, 50))])
      else await new Promise(resolve => setTimeout(resolve, 50))
    }
    if (this.pending.length > 0) this.o.log.warn('live log lines not delivered before the result', { jobId: this.ref.jobId, lines: this.pending.length })
    this.stop()
  }
}

export class LogShipper {
  private readonly o: ConstructorParameters<typeof AttemptLog>[2]

  constructor (options: LogShipperOptions) {
    this.o = {
      ...options,
      flushMs: options.flushMs ?? 200,
      maxBatchLines: Math.min(options.maxBatchLines ?? 500, LIMITS.logBatchLines),
      maxBatchBytes: options.maxBatchBytes ?? 256 * 1024,
      maxPendingBytes: options.maxPendingBytes ?? 1024 * 1024,
      closeTimeoutMs: options.closeTimeoutMs ?? 2_000
    }
  }

  open (ref: { jobId: string, attempt: number, token: string }, coordinator?: string, mask?: Masker): AttemptLog {
    return new AttemptLog(ref, coordinator, this.o, mask)
  }
}
