/**
 * Jobs this node has heard of and could bid on, in the order it will try
 * them: older announcements first, and within one announcement by a
 * rendezvous hash of (node, job). The hash makes different nodes prefer
 * different jobs of the same batch, so idle nodes rarely bid against each
 * other and a batch spreads over the mesh without coordination.
 */
import type { AnnouncedJob } from '../protocol/schemas.js'

interface Candidate {
  job: AnnouncedJob
  /** The coordinator that announced it. */
  source: string
  batch: number
  hash: number
  seenAt: number
}

export interface CandidatesOptions {
  /** This node's peer id, the rendezvous hash salt. */
  self: string
  /** Drop a candidate not bid on for this long, in ms; re-announcement brings it back. @default 60000 */
  ttlMs?: number
  /** Most candidates kept; the oldest are dropped beyond it. @default 10000 */
  max?: number
}

/**
 * 32-bit FNV-1a over the salt and the job id. Only the spread matters
 * here, not resistance to forgery: every node hashes every announced job,
 * and a SHA-1 per job per node cost more than the rest of `add` together.
 */
export function rendezvousHash (salt: string, jobId: string): number {
  let h = 0x811c9dc5
  for (const s of [salt, jobId]) {
    for (let i = 0; i < s.length; i++) {
      h ^= s.charCodeAt(i)
      h = Math.imul(h, 0x01000193)
    }
  }
  // Final avalanche (murmur3 fmix32): FNV alone spreads ids that differ only at the end poorly in the high bits.
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

function key (jobId: string, attempt: number): string {
  return `${jobId}/${attempt}`
}

export class Candidates {
  private readonly items = new Map<string, Candidate>()
  private batch = 0

  constructor (private readonly options: CandidatesOptions) {}

  get size (): number {
    return this.items.size
  }

  /** Adds one batch (an announcement or a pulled list). */
  add (jobs: AnnouncedJob[], now: number, source = ''): void {
    const batch = this.batch++
    const max = this.options.max ?? 10_000
    const ttlMs = this.options.ttlMs ?? 60_000
    for (const job of jobs) {
      const k = key(job.jobId, job.attempt)
      const known = this.items.get(k)
      if (known != null) {
        if (now - known.seenAt <= ttlMs) continue
        // Expired but not yet swept by take(): the re-announcement brings it back as new.
        this.items.delete(k)
      }
      if (this.items.size >= max) {
        const oldest = this.items.keys().next().value
        if (oldest != null) this.items.delete(oldest)
      }
      this.items.set(k, { job, source, batch, hash: rendezvousHash(this.options.self, job.jobId), seenAt: now })
    }
  }

  remove (jobId: string, attempt: number): void {
    this.items.delete(key(jobId, attempt))
  }

  /** Removes and returns the next job to bid on, skipping expired ones. */
  take (now: number, accept: (job: AnnouncedJob) => boolean): { job: AnnouncedJob, source: string } | null {
    const ttlMs = this.options.ttlMs ?? 60_000
    let best: Candidate | null = null
    let bestKey = ''
    for (const [k, c] of this.items) {
      if (now - c.seenAt > ttlMs || !accept(c.job)) { this.items.delete(k); continue }
      if (best == null || c.batch < best.batch || (c.batch === best.batch && c.hash < best.hash)) {
        best = c
        bestKey = k
      }
      // Insertion order is batch order: nothing later can beat an earlier batch.
      if (best.batch < c.batch) break
    }
    if (best == null) return null
    this.items.delete(bestKey)
    return { job: best.job, source: best.source }
  }
}
