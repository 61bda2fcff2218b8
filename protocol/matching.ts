/**
 * Whether a node can run a job. Nodes use it before bidding and the
 * coordinator uses it when handing open jobs to a node, so both agree.
 */
import type { AnnouncedJob, NodeCapacity } from './schemas.js'

/** Why a node cannot run a job, or null when it can (slots aside). */
export function mismatch (capacity: NodeCapacity, job: Pick<AnnouncedJob, 'resources' | 'labels'>): string | null {
  if (job.resources.cpus > capacity.cpus) return `needs ${job.resources.cpus} cpus, node has ${capacity.cpus}`
  if (job.resources.memoryMb > capacity.memoryMb) return `needs ${job.resources.memoryMb} MiB, node has ${capacity.memoryMb}`
  for (const [k, v] of Object.entries(job.labels)) {
    if (capacity.labels[k] !== v) return `needs label ${k}=${v}`
  }
  return null
}
