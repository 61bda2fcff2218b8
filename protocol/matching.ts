/**
 * Whether a node can run a job. Nodes use it before bidding and the
 * coordinator uses it when handing open jobs to a node, so both agree.
 */
import type { AnnouncedJob, NodeCapacity } from './schemas.js'

/** Whether `image` matches a pattern where `*` stands for any run of characters. */
export function imageMatches (pattern: string, image: string): boolean {
  const re = new RegExp('^' + pattern.split('*').map(p => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$')
  return re.test(image)
}

/**
 * Why the node's image policy refuses `image`, or null. A deny pattern wins
 * over an allow pattern; with an allow list, an image must match one entry.
 */
export function imageRefusal (images: NodeCapacity['images'], image: string): string | null {
  if (images == null) return null
  const denied = images.deny?.find(p => imageMatches(p, image))
  if (denied != null) return `image ${image} is denied by the node (${denied})`
  if (images.allow != null && !images.allow.some(p => imageMatches(p, image))) return `image ${image} is not on the node's allow-list`
  return null
}

/** Why a node cannot run a job, or null when it can (slots aside). */
export function mismatch (capacity: NodeCapacity, job: Pick<AnnouncedJob, 'resources' | 'labels'> & Partial<Pick<AnnouncedJob, 'image' | 'network'>>): string | null {
  if (job.resources.cpus > capacity.cpus) return `needs ${job.resources.cpus} cpus, node has ${capacity.cpus}`
  if (job.resources.memoryMb > capacity.memoryMb) return `needs ${job.resources.memoryMb} MiB, node has ${capacity.memoryMb}`
  for (const [k, v] of Object.entries(job.labels)) {
    if (capacity.labels[k] !== v) return `needs label ${k}=${v}`
  }
  if (job.network === true && capacity.network !== true) return 'needs network access, which the node does not allow'
  if (job.image != null) {
    const refused = imageRefusal(capacity.images, job.image)
    if (refused != null) return refused
  }
  return null
}
