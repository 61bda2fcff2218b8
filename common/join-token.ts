/**
 * Join tokens: what an operator hands to a machine so `rgrid-node join
 * TOKEN` needs nothing else. A token carries the coordinators' peer ids and
 * addresses (whom to dial and trust), a secret the coordinator checks
 * (only its sha256 is stored), and the mesh's network key, without which
 * no connection to the mesh completes its handshake. Format: `rgrid1.` + base64url(JSON).
 */
import { createHash, randomBytes } from 'node:crypto'
import { z } from 'zod'

const PREFIX = 'rgrid1.'
/** Longest token accepted, in characters: a few coordinators and their addresses. */
export const MAX_TOKEN_CHARS = 8192

const payloadSchema = z.strictObject({
  /** Token id (public; names the token in the coordinator's store). */
  i: z.string().regex(/^[A-Za-z0-9_-]{8,64}$/),
  /** Secret (base64url, 32 bytes). */
  s: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
  /** Coordinator peer ids to trust. */
  c: z.array(z.string().min(16).max(128).regex(/^[1-9A-HJ-NP-Za-km-z]+$/)).min(1).max(16),
  /** Multiaddrs to dial (with /p2p/). */
  a: z.array(z.string().min(1).max(512)).max(64),
  /** Expiry (epoch ms) or null. */
  e: z.number().int().nonnegative().nullable(),
  /** The mesh's network key (private network pre-shared key, base64url 32 bytes). */
  n: z.string().regex(/^[A-Za-z0-9_-]{43}$/)
})

export interface JoinToken {
  id: string
  secret: string
  coordinators: string[]
  addrs: string[]
  expiresAt: number | null
  /** The mesh's network key; see common/network-key.ts. */
  networkKey: string
}

/** Thrown for a string that is not a valid token, saying why. */
export class InvalidJoinTokenError extends Error {
  override readonly name = 'InvalidJoinTokenError'
}

export function isJoinToken (text: string): boolean {
  return text.startsWith(PREFIX)
}

export function newTokenCredentials (): { id: string, secret: string } {
  // The id is hex: it also travels as a Hetzner label value, which must start and end with a letter or digit.
  return { id: randomBytes(9).toString('hex'), secret: randomBytes(32).toString('base64url') }
}

export function secretSha256 (secret: string): string {
  return createHash('sha256').update(secret).digest('hex')
}

export function encodeJoinToken (t: JoinToken): string {
  const payload = payloadSchema.parse({ i: t.id, s: t.secret, c: t.coordinators, a: t.addrs, e: t.expiresAt, n: t.networkKey })
  return PREFIX + Buffer.from(JSON.stringify(payload)).toString('base64url')
}

/** @throws InvalidJoinTokenError */
export function decodeJoinToken (text: string): JoinToken {
  const trimmed = text.trim()
  if (!trimmed.startsWith(PREFIX)) throw new InvalidJoinTokenError('a join token starts with "rgrid1."')
  if (trimmed.length > MAX_TOKEN_CHARS) throw new InvalidJoinTokenError(`a join token has at most ${MAX_TOKEN_CHARS} characters`)
  let raw: unknown
  try {
    raw = JSON.parse(Buffer.from(trimmed.slice(PREFIX.length), 'base64url').toString('utf8'))
  } catch {
    throw new InvalidJoinTokenError('the join token is damaged (not base64url JSON); copy it again')
  }
  const parsed = payloadSchema.safeParse(raw)
  if (!parsed.success) throw new InvalidJoinTokenError(`the join token is damaged: ${parsed.error.issues[0]?.message ?? 'invalid'}`)
  const p = parsed.data
  return { id: p.i, secret: p.s, coordinators: p.c, addrs: p.a, expiresAt: p.e, networkKey: p.n }
}
