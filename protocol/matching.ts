/**
 * Whether a node can run a job. Nodes use it before bidding and the
 * coordinator uses it when handing open jobs to a node, so both agree.
 */
import type { AnnouncedJob, NodeCapacity } from './schemas.js'

/**
 * An image reference in the one spelling Docker resolves it to: registry
 * (`docker.io` when absent), repository (`library/` for official images)
 * and a tag (`latest` when neither tag nor digest is given). Without this,
 * `evil/miner`, `docker.io/evil/miner:latest` and `evil/miner@sha256:…`
 * would each slip past a pattern written for another spelling.
 */
export function normalizeImage (ref: string): { repo: string, tag: string | null, digest: string | null } {
  let rest = ref
  let digest: string | null = null
  const at = rest.indexOf('@')
  if (at >= 0) { digest = rest.slice(at + 1); rest = rest.slice(0, at) }
  let tag: string | null = null
  const colon = rest.lastIndexOf(':')
  if (colon > rest.lastIndexOf('/')) { tag = rest.slice(colon + 1); rest = rest.slice(0, colon) }
  const parts = rest.split('/')
  const first = parts[0] ?? ''
  const hasRegistry = parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost')
  let registry = hasRegistry ? first : 'docker.io'
  let path = (hasRegistry ? parts.slice(1) : parts).join('/')
  if (registry === 'index.docker.io' || registry === 'registry-1.docker.io') registry = 'docker.io'
  if (registry === 'docker.io' && !path.includes('/')) path = `library/${path}`
  if (tag == null && digest == null) tag = 'latest'
  return { repo: `${registry}/${path}`, tag, digest }
}

function wildcard (pattern: string, text: string): boolean {
  const re = new RegExp('^' + pattern.split('*').map(p => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$')
  return re.test(text)
}

/**
 * Whether `image` matches a pattern where `*` stands for any run of
 * characters. Both are normalised first (see {@link normalizeImage}); a
 * pattern without a tag matches every tag and digest of its repositories,
 * `repo:*` too; a pattern that starts with `*` matches the normalised
 * reference as a whole (`*` matches every image).
 */
export function imageMatches (pattern: string, image: string): boolean {
  const img = normalizeImage(image)
  const full = `${img.repo}${img.tag != null ? `:${img.tag}` : ''}${img.digest != null ? `@${img.digest}` : ''}`
  if (pattern.startsWith('*')) return wildcard(pattern, full) || wildcard(pattern, image)
  const p = normalizeImage(pattern)
  if (!wildcard(p.repo, img.repo)) return false
  const tagGiven = pattern.slice(pattern.lastIndexOf('/') + 1).includes(':') || pattern.includes('@')
  if (!tagGiven || p.tag === '*') return true
  if (p.digest != null) return img.digest != null && wildcard(p.digest, img.digest)
  return img.tag != null && p.tag != null && wildcard(p.tag, img.tag)
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
