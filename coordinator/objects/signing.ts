/**
 * Signed, expiring URLs for the embedded object store: an HMAC-SHA256 over
 * the method, the key, the expiry and the upload's constraints, so a URL
 * cannot be reused for another object, another method, another size or
 * after it expires. Checked in constant time.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'

export interface SignedFields {
  method: 'GET' | 'PUT'
  key: string
  /** Epoch ms after which the URL is refused. */
  expiresAt: number
  size?: number
  sha256?: string
  contentType?: string
}

function canonical (f: SignedFields): string {
  return ['rgrid-object-v1', f.method, f.key, String(f.expiresAt), f.size == null ? '' : String(f.size), f.sha256 ?? '', f.contentType ?? ''].join('\n')
}

export function sign (secret: Uint8Array, fields: SignedFields): string {
  return createHmac('sha256', secret).update(canonical(fields)).digest('base64url')
}

export type SignatureProblem = 'bad-signature' | 'expired'

/** Null when `signature` is valid for `fields` at `now`. */
export function verify (secret: Uint8Array, fields: SignedFields, signature: string, now: number): SignatureProblem | null {
  const expected = Buffer.from(sign(secret, fields), 'base64url')
  const given = Buffer.from(signature, 'base64url')
  // Compare first (constant time), then look at the expiry: a forged URL must not learn it is merely expired.
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return 'bad-signature'
  if (now > fields.expiresAt) return 'expired'
  return null
}
