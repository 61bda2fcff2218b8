/**
 * The coordinator's in-memory index of announced, unclaimed attempts,
 * oldest first. It only speeds things up (counter-offers, no store query per
 * refused bid); the store stays the source of truth and every award is
 * still its conditional write.
 */
import type { AnnouncedJob, NodeCapacity } from '../protocol/schemas.js'
import { mismatch } from '../protocol/matching.js'

export interface OpenEntry {
  job: AnnouncedJob
  /** When the coordinator first announced this attempt. */
  openedAt: number
}

export class OpenJobs {
  private readonly entries = new Map<string, OpenEntry>()

  constructor (private readonly maxEntries = 100_000) {}

  get size (): number {
    return this.entries.size
  }

  add (job: AnnouncedJob, now: number): void {
    if (this.entries.has(job.jobId)) return
    if (this.entries.size >= this.maxEntries) return
    this.entries.set(job.jobId, { job, openedAt: now })
  }

  get (jobId: string): AnnouncedJob | undefined {
    return this.entries.get(jobId)?.job
  }

  /** Removes the job; returns when it was opened, if it was open. */
  remove (jobId: string): number | undefined {
    const e = this.entries.get(jobId)
    this.entries.delete(jobId)
    return e?.openedAt
  }

  /**
   * Oldest open attempts a node with `capacity` could run that have been
   * open at least `minAgeMs` (younger ones are left to the auction, where
   * idle nodes get first pick), skipping those `skip` rejects.
   */
  pick (capacity: NodeCapacity, now: number, minAgeMs: number, limit: number, skip: (job: AnnouncedJob) => boolean): AnnouncedJob[] {
    const out: AnnouncedJob[] = []
    for (const e of this.entries.values()) {
      // Insertion order is age order: everything after this is younger still.
      if (now - e.openedAt < minAgeMs) break
      if (skip(e.job) || mismatch(capacity, e.job) != null) continue
      out.push(e.job)
      if (out.length >= limit) break
    }
    return out
  }
}
