/**
 * Submitters' API keys: `rgk_<id>_<secret>`, sent as `Authorization: Bearer`.
 * Only the secret's sha256 is stored; the key is printed once at creation.
 * A verified key is remembered for `cacheMs` so a busy client does not cost
 * a database read per request; a revocation therefore takes effect within
 * that time on every coordinator.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Clock } from '../common/clock.js'
import type { Store } from './store/types.js'

const KEY = /^rgk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/

/** Who is calling: a key's owner, or anybody on an open coordinator. */
export interface Principal {
  /** The API key id; null on an open coordinator (jobs then have no owner). */
  keyId: string | null
  name: string
  /** Sees and controls every job. */
  admin: boolean
}

export const OPEN_PRINCIPAL: Principal = Object.freeze({ keyId: null, name: 'open', admin: true })

/** Missing, malformed, unknown or revoked credentials (HTTP 401). */
export class UnauthorizedError extends Error {
  override readonly name = 'UnauthorizedError'
}

/** A valid key asking for something only an admin key may do (HTTP 403). */
export class ForbiddenError extends Error {
  override readonly name = 'ForbiddenError'
}

export function newApiKey (): { id: string, secret: string, key: string } {
  const id = randomBytes(8).toString('hex')
  const secret = randomBytes(32).toString('base64url')
  return { id, secret, key: `rgk_${id}_${secret}` }
}

export function keySha256 (secret: string): string {
  return createHash('sha256').update(secret).digest('hex')
}

export interface ApiKeyAuthOptions {
  store: Store
  clock: Clock
  /** How long a verified key is trusted without asking the store again, in ms. @default 5000 */
  cacheMs?: number
}

export class ApiKeyAuth {
  private readonly cache = new Map<string, { principal: Principal, until: number }>()

  constructor (private readonly options: ApiKeyAuthOptions) {}

  /** @throws UnauthorizedError */
  async authenticate (authorization: string | undefined): Promise<Principal> {
    if (authorization == null || authorization === '') throw new UnauthorizedError('this coordinator needs an API key: send Authorization: Bearer rgk_… (rgrid-coordinator key create)')
    const m = /^Bearer\s+(\S+)$/i.exec(authorization.trim())
    if (m == null) throw new UnauthorizedError('the Authorization header must be "Bearer rgk_…"')
    const parsed = KEY.exec(m[1]!)
    if (parsed == null) throw new UnauthorizedError('that is not an RGrid API key (rgk_<id>_<secret>)')
    const [, id, secret] = parsed as unknown as [string, string, string]
    const now = this.options.clock.now()
    const digest = keySha256(secret)
    const cached = this.cache.get(id + digest)
    if (cached != null && cached.until > now) return cached.principal
    const record = await this.options.store.findApiKey(id)
    if (record == null || !timingSafeEqual(Buffer.from(record.secretSha256, 'hex'), Buffer.from(digest, 'hex'))) {
      throw new UnauthorizedError(`API key ${id} is not valid`)
    }
    if (record.revokedAt != null) throw new UnauthorizedError(`API key ${id} was revoked`)
    const principal: Principal = { keyId: record.id, name: record.name, admin: record.admin }
    if (this.cache.size > 10_000) this.cache.clear()
    this.cache.set(id + digest, { principal, until: now + (this.options.cacheMs ?? 5_000) })
    return principal
  }
}
