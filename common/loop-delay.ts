/**
 * Event-loop delay in fixed windows, from `perf_hooks.monitorEventLoopDelay`.
 *
 * A node that supervises containers and moves files must still answer gossip
 * heartbeats on time; its event-loop delay is the figure that shows whether
 * it does (issue 10: p99 under 50 ms on a busy node). Windows rather than one
 * histogram since start, so a reader sees the recent past, not the average
 * of a long calm life.
 *
 * Sampling wakes the event loop at every tick of its resolution, and at rest
 * those wake-ups were most of what an idle node did (about 200 loop
 * iterations a second at 10 ms). So the fine resolution is kept for busy
 * nodes, the ones the figure is about; a node idle for a whole window samples
 * coarsely until it turns busy, which closes the coarse window at once
 * (docs/performance.md, change 11).
 */
import { monitorEventLoopDelay } from 'node:perf_hooks'

/**
 * Delay figures of one window, in ms; `seq` counts windows from 1, so a reader
 * can tell a new one from the last. `resolutionMs` is the sampling interval it
 * was measured with; a window cut short by the node turning busy is shorter
 * than `windowMs`.
 */
export interface LoopDelayWindow { seq: number, p50: number, p99: number, max: number, samples: number, resolutionMs: number }

export interface LoopDelayMonitorOptions {
  /** Length of a window, in ms. @default 2000 */
  windowMs?: number
  /** Sampling resolution of the histogram while the node is busy, in ms. @default 10 */
  resolutionMs?: number
  /** Sampling resolution after a whole window idle, in ms. @default 100 */
  idleResolutionMs?: number
  /** Whether the node has work now (jobs running). @default always busy: fine sampling throughout */
  isBusy?: () => boolean
}

const ms = (ns: number): number => Math.round(ns / 1e4) / 100

export class LoopDelayMonitor {
  private histogram: ReturnType<typeof monitorEventLoopDelay> | null = null
  private resolutionMs = 0
  /** Whether the node was busy at any point of the current window. */
  private busySeen = false
  private timer: NodeJS.Timeout | null = null
  private last: LoopDelayWindow | null = null
  private worstP99 = 0
  private worstMax = 0

  constructor (private readonly options: LoopDelayMonitorOptions = {}) {}

  /** Idempotent. */
  start (): void {
    if (this.histogram != null) return
    this.sample(this.options.resolutionMs ?? 10)
    this.timer = setInterval(() => { this.roll() }, this.options.windowMs ?? 2_000)
    this.timer.unref()
  }

  /**
   * The node has work: sample finely from now on. A coarse window in progress
   * closes here, so no window mixes two resolutions. Cheap when already fine.
   */
  busy (): void {
    this.busySeen = true
    const fine = this.options.resolutionMs ?? 10
    if (this.histogram == null || this.resolutionMs === fine) return
    // A coarse window without a sample yet has nothing to report: just sample finely from here.
    if (this.histogram.count === 0) this.sample(fine)
    else this.roll()
  }

  private sample (resolutionMs: number): void {
    this.histogram?.disable()
    this.histogram = monitorEventLoopDelay({ resolution: resolutionMs })
    this.histogram.enable()
    this.resolutionMs = resolutionMs
  }

  /** Idempotent. */
  stop (): void {
    if (this.timer != null) clearInterval(this.timer)
    this.timer = null
    this.histogram?.disable()
    this.histogram = null
    this.resolutionMs = 0
  }

  private roll (): void {
    const h = this.histogram
    if (h == null) return
    this.last = { seq: (this.last?.seq ?? 0) + 1, p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), max: ms(h.max), samples: h.count, resolutionMs: this.resolutionMs }
    this.worstP99 = Math.max(this.worstP99, this.last.p99)
    this.worstMax = Math.max(this.worstMax, this.last.max)
    const busy = this.busySeen || (this.options.isBusy?.() ?? true)
    this.busySeen = false
    const next = busy ? this.options.resolutionMs ?? 10 : this.options.idleResolutionMs ?? 100
    if (next !== this.resolutionMs) this.sample(next)
    else h.reset()
  }

  /** The window in progress: its resolution and how many samples it holds so far (null when stopped). */
  current (): { resolutionMs: number, samples: number } | null {
    return this.histogram == null ? null : { resolutionMs: this.resolutionMs, samples: this.histogram.count }
  }

  /** The last complete window (null before the first one closes), and the worst window since start. */
  snapshot (): { lastWindow: LoopDelayWindow | null, worstWindowP99: number, worstMax: number } {
    return { lastWindow: this.last, worstWindowP99: this.worstP99, worstMax: this.worstMax }
  }
}
