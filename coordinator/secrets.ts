/**
 * Job secrets (`spec.secretEnv`) at rest: sealed with AES-256-GCM under a
 * key kept outside the database (a file in the coordinator's data dir), so
 * a database dump or backup alone does not reveal them. The stored spec
 * keeps only the names, each value replaced by {@link REDACTED}; the real
 * values are unsealed only to put them into an award.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import type { JobSpec } from '../protocol/schemas.js'

/** What listings show instead of a secret's value. */
export const REDACTED = '[redacted]'
const VERSION = 'v1'

/** A sealed value cannot be opened: wrong key, or damaged. */
export class SecretsUnavailableError extends Error {
  override readonly name = 'SecretsUnavailableError'
  constructor (readonly jobId: string, detail: string) {
    super(`the secrets of job ${jobId} cannot be opened (${detail}); every coordinator sharing a database needs the same secrets key file`)
  }
}

export class SecretBox {
  private readonly key: Buffer

  /** @param key 32 bytes */
  constructor (key: Uint8Array) {
    if (key.byteLength !== 32) throw new RangeError('a secrets key is 32 bytes')
    this.key = Buffer.from(key)
  }

  /** `v1.<iv>.<tag>.<ciphertext>` in base64url; the job id is bound in as associated data. */
  seal (jobId: string, values: Record<string, string>): string {
    const iv = randomBytes(12)
    const cipher = createCipheriv('aes-256-gcm', this.key, iv)
    cipher.setAAD(Buffer.from(jobId))
    const body = Buffer.concat([cipher.update(JSON.stringify(values), 'utf8'), cipher.final()])
    return [VERSION, iv.toString('base64url'), cipher.getAuthTag().toString('base64url'), body.toString('base64url')].join('.')
  }

  /** @throws SecretsUnavailableError */
  open (jobId: string, sealed: string): Record<string, string> {
    const [version, iv, tag, body] = sealed.split('.')
    if (version !== VERSION || iv == null || tag == null || body == null) throw new SecretsUnavailableError(jobId, 'unknown format')
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, Buffer.from(iv, 'base64url'))
      decipher.setAAD(Buffer.from(jobId))
      decipher.setAuthTag(Buffer.from(tag, 'base64url'))
      const text = Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString('utf8')
      return JSON.parse(text) as Record<string, string>
    } catch {
      throw new SecretsUnavailableError(jobId, 'authentication failed')
    }
  }
}

/**
 * The spec as stored and listed: secret names kept, values redacted. Specs
 * stored before `secretEnv` existed have none.
 */
export function redactSpec (spec: JobSpec): JobSpec {
  const names = Object.keys(spec.secretEnv ?? {})
  if (names.length === 0) return spec
  return { ...spec, secretEnv: Object.fromEntries(names.map(k => [k, REDACTED])) }
}
