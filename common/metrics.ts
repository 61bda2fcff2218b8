/**
 * Prometheus text exposition without a dependency: counters and gauges are
 * read from the services' own stats when scraped, and one histogram type
 * for latencies. Names follow Prometheus conventions (`_total`, `_seconds`).
 */

/** A latency histogram with fixed buckets, in seconds. */
export class Histogram {
  private readonly counts: number[]
  private sum = 0
  private count = 0

  constructor (readonly name: string, readonly help: string, readonly buckets: number[] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]) {
    this.counts = buckets.map(() => 0)
  }

  observe (seconds: number): void {
    if (!Number.isFinite(seconds) || seconds < 0) return
    this.sum += seconds
    this.count++
    for (let i = 0; i < this.buckets.length; i++) if (seconds <= this.buckets[i]!) this.counts[i]!++
  }

  render (): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`]
    this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket{le="${b}"} ${this.counts[i]}`))
    lines.push(`${this.name}_bucket{le="+Inf"} ${this.count}`, `${this.name}_sum ${this.sum}`, `${this.name}_count ${this.count}`)
    return lines.join('\n')
  }
}

export interface Sample { labels?: Record<string, string>, value: number }

/** One metric family in text format. */
export function family (name: string, type: 'counter' | 'gauge', help: string, samples: Sample[] | number): string {
  const list = typeof samples === 'number' ? [{ value: samples }] : samples
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`]
  for (const s of list) {
    const labels = s.labels != null && Object.keys(s.labels).length > 0
      ? `{${Object.entries(s.labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')}}`
      : ''
    lines.push(`${name}${labels} ${Number.isFinite(s.value) ? s.value : 0}`)
  }
  return lines.join('\n')
}

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'
