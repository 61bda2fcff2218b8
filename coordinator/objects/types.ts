/**
 * Where job inputs and outputs live. Nodes never hold credentials: the
 * coordinator hands them short-lived presigned URLs, and the store checks
 * them. Two backends: the embedded filesystem store served by the
 * coordinator's own HTTP server, and S3/MinIO.
 */

/** Conditions a presigned PUT carries. The embedded store enforces both; S3 enforces neither (see docs/objects.md). */
export interface PutConstraints {
  /** Exact size of the upload, in bytes. */
  size: number
  /** Lower-case hex sha256 the content must have. */
  sha256: string
}

export interface GetOptions {
  /** Content-Type the download is served with. @default 'application/octet-stream' */
  contentType?: string
}

export interface ObjectStore {
  readonly kind: 'embedded' | 's3'
  /** Idempotent; e.g. creates the bucket when asked to. */
  start: (signal?: AbortSignal) => Promise<void>
  /** Idempotent. */
  stop: () => Promise<void>
  presignPut: (key: string, expiresMs: number, constraints: PutConstraints) => Promise<string>
  presignGet: (key: string, expiresMs: number, options?: GetOptions) => Promise<string>
  /** The object's size, or null when there is none under `key`. */
  stat: (key: string, signal?: AbortSignal) => Promise<{ size: number } | null>
}

/** The object store did not answer or refused the coordinator's own credentials. */
export class ObjectStoreUnavailableError extends Error {
  override readonly name = 'ObjectStoreUnavailableError'
}

/** Keys are made by the coordinator only; this is what they look like. */
export const OBJECT_KEY = /^(inputs\/(?:[0-9a-f]{16}\/)?[0-9a-f]{64}|outputs\/[0-9a-f-]{36}\/\d{1,4}\/[^\0\\]{1,1024})$/

/**
 * The key of a stored input, from its content hash, in its owner's
 * namespace: one API key's uploads are never another's, even for the same
 * bytes, so knowing a hash does not give access to someone else's file.
 * Jobs of an open coordinator (no owner) share `inputs/`.
 */
export function inputKey (sha256: string, owner: string | null = null): string {
  return owner == null ? `inputs/${sha256}` : `inputs/${owner}/${sha256}`
}

/** The key of an output file of one attempt. */
export function outputKey (jobId: string, attempt: number, path: string): string {
  return `outputs/${jobId}/${attempt}/${path}`
}
