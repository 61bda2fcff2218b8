/**
 * Token buckets keyed by peer (or API key): `rate` tokens per second refill
 * a bucket of `burst`. The map is bounded so a flood of distinct keys cannot
 * grow it without limit: the least recently used bucket goes first (a key
 * that comes back starts full, which errs on the side of admitting).
 */
import type { Clock } from './clock.js'

export interface RateLimiterOptions {
  /** Sustained rate, per second. */
  ratePerSecond: number
  /** Largest burst. */
  burst: number
  clock: Clock
  /** Keys tracked at once. @default 10000 */
  maxKeys?: number
}

export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number, at: number }>()
  private readonly maxKeys: number
  /** Requests refused so far. */
  refused = 0

  constructor (private readonly options: RateLimiterOptions) {
    if (!(options.ratePerSecond > 0) || !(options.burst >= 1)) throw new RangeError('a rate limiter needs ratePerSecond > 0 and burst >= 1')
    this.maxKeys = options.maxKeys ?? 10_000
  }

  /** Whether `key` has a bucket (was seen, and not evicted since). */
  has (key: string): boolean {
    return this.buckets.has(key)
  }

  /** Takes `cost` tokens for `key`; false (nothing taken) when there are not enough. */
  take (key: string, cost = 1): boolean {
    const now = this.options.clock.now()
    const { ratePerSecond, burst } = this.options
    let b = this.buckets.get(key)
    if (b == null) {
      b = { tokens: burst, at: now }
      if (this.buckets.size >= this.maxKeys) {
        const oldest = this.buckets.keys().next().value
        if (oldest != null) this.buckets.delete(oldest)
      }
    } else {
      this.buckets.delete(key)
      b.tokens = Math.min(burst, b.tokens + Math.max(0, now - b.at) * ratePerSecond / 1000)
      b.at = now
    }
    this.buckets.set(key, b)
    if (b.tokens < cost) { this.refused++; return false }
    b.tokens -= cost
    return true
  }

  /** Seconds until `cost` tokens will be there for `key` (0 when they are). */
  retryAfterSeconds (key: string, cost = 1): number {
    const b = this.buckets.get(key)
    if (b == null) return 0
    const now = this.options.clock.now()
    const tokens = Math.min(this.options.burst, b.tokens + Math.max(0, now - b.at) * this.options.ratePerSecond / 1000)
    return tokens >= cost ? 0 : Math.ceil((cost - tokens) / this.options.ratePerSecond)
  }
}
