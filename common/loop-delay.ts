/**
 * Event-loop delay in fixed windows, from `perf_hooks.monitorEventLoopDelay`.
 *
 * A node that supervises containers and moves files must still answer gossip
 * heartbeats on time; its event-loop delay is the figure that shows whether
 * it does (issue 10: p99 under 50 ms on a busy node). Windows rather than one
 * histogram since start, so a reader sees the recent past, not the average
 * of a long calm life.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks'

/** Delay figures of one window, in ms; `seq` counts windows from 1, so a reader can tell a new one from the last. */
export interface LoopDelayWindow { seq: number, p50: number, p99: number, max: number, samples: number }

export interface LoopDelayMonitorOptions {
  /** Length of a window, in ms. @default 2000 */
  windowMs?: number
  /** Sampling resolution of the histogram, in ms. @default 10 */
  resolutionMs?: number
}

const ms = (ns: number): number => Math.round(ns / 1e4) / 100

export class LoopDelayMonitor {
  private histogram: ReturnType<typeof monitorEventLoopDelay> | null = null
  private timer: NodeJS.Timeout | null = null
  private last: LoopDelayWindow | null = null
  private worstP99 = 0
  private worstMax = 0

  constructor (private readonly options: LoopDelayMonitorOptions = {}) {}

  /** Idempotent. */
  start (): void {
    if (this.histogram != null) return
    this.histogram = monitorEventLoopDelay({ resolution: this.options.resolutionMs ?? 10 })
    this.histogram.enable()
    this.timer = setInterval(() => { this.roll() }, this.options.windowMs ?? 2_000)
    this.timer.unref()
  }

  /** Idempotent. */
  stop (): void {
    if (this.timer != null) clearInterval(this.timer)
    this.timer = null
    this.histogram?.disable()
    this.histogram = null
  }

  private roll (): void {
    const h = this.histogram
    if (h == null) return
    this.last = { seq: (this.last?.seq ?? 0) + 1, p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), max: ms(h.max), samples: h.count }
    this.worstP99 = Math.max(this.worstP99, this.last.p99)
    this.worstMax = Math.max(this.worstMax, this.last.max)
    h.reset()
  }

  /** The last complete window (null before the first one closes), and the worst window since start. */
  snapshot (): { lastWindow: LoopDelayWindow | null, worstWindowP99: number, worstMax: number } {
    return { lastWindow: this.last, worstWindowP99: this.worstP99, worstMax: this.worstMax }
  }
}
