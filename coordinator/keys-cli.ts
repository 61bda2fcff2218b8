/**
 * `rgrid-coordinator key create|list|revoke`: submitters' API keys, kept
 * hashed in the coordinator's store so every coordinator sharing the
 * database honours them. `create` prints the key once; it cannot be shown
 * again.
 */
import { newApiKey, keySha256 } from './api-keys.js'
import type { Store } from './store/types.js'

export interface KeyCommandOptions {
  store: Store
  /** `--name`: who the key is for (shown in listings and job events). */
  name: string | undefined
  admin: boolean
  now: number
}

/** Runs a key subcommand; returns what to print. @throws Error with a one-line message. */
export async function keyCommand (sub: string, rest: string[], o: KeyCommandOptions): Promise<string> {
  switch (sub) {
    case 'create': {
      if (rest.length > 0) throw new Error(`key create takes no arguments (got ${JSON.stringify(rest[0])}); use --name`)
      if (o.name == null || !/^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$/.test(o.name)) throw new Error('key create needs --name: 1 to 64 letters, digits, space, . _ @ -')
      const { id, secret, key } = newApiKey()
      await o.store.createApiKey({ id, name: o.name, secretSha256: keySha256(secret), admin: o.admin, createdAt: o.now })
      return key + '\n'
    }
    case 'list': {
      const keys = await o.store.listApiKeys()
      if (keys.length === 0) return 'no API keys (rgrid-coordinator key create --name NAME)\n'
      return keys.map(k => `${k.id}  ${k.name}${k.admin ? '  admin' : ''}  created ${new Date(k.createdAt).toISOString()}${k.revokedAt != null ? `  revoked ${new Date(k.revokedAt).toISOString()}` : ''}`).join('\n') + '\n'
    }
    case 'revoke': {
      if (rest.length !== 1) throw new Error('key revoke takes one key id (see key list)')
      if (!await o.store.revokeApiKey({ id: rest[0]!, now: o.now })) throw new Error(`no API key ${rest[0]!}`)
      return `API key ${rest[0]!} revoked; coordinators refuse it within 5 s\n`
    }
    default:
      throw new Error(`unknown key command ${JSON.stringify(sub)} (create, list, revoke)`)
  }
}
