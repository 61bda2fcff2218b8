/**
 * `rgrid-coordinator token create|list|revoke`: join tokens for nodes,
 * kept in the coordinator's store so every coordinator sharing the database
 * honours them. `create` reads the coordinator's identity and the addresses
 * it last listened on (DATA_DIR/addrs.json, written at start) unless
 * `--addr` names them (e.g. public addresses behind NAT).
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { loadOrCreateIdentity } from '../common/identity.js'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { encodeJoinToken, newTokenCredentials, secretSha256 } from '../common/join-token.js'
import type { Store } from './store/types.js'
import { NETWORK_KEY_SETTING, newNetworkKey } from '../common/network-key.js'

/** Where a running coordinator records its addresses for `token create`. */
export const ADDRS_FILE = 'addrs.json'

/** Parses `7d`, `12h`, `30m`, `never`; returns ms or null (never). */
export function parseExpiry (text: string): number | null {
  if (text === 'never') return null
  const m = /^(\d+)([mhd])$/.exec(text)
  if (m == null) throw new Error(`--expires takes e.g. 30m, 12h, 7d or never, got ${JSON.stringify(text)}`)
  return Number(m[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'm' | 'h' | 'd']
}

export interface TokenCommandOptions {
  store: Store
  dataDir: string
  /** `--addr` values: full multiaddrs with /p2p/PEERID. */
  addrs: string[]
  expires: string
  note: string
  now: number
  /** More addresses to dial (bootstrap peers), not trusted as coordinators. @default [] */
  dialAddrs?: string[]
}

/** Runs a token subcommand; returns what to print. @throws Error with a one-line message. */
export async function tokenCommand (sub: string, rest: string[], o: TokenCommandOptions): Promise<string> {
  switch (sub) {
    case 'create': {
      const ttl = parseExpiry(o.expires)
      let addrs = o.addrs
      if (addrs.length === 0) {
        try {
          addrs = JSON.parse(await readFile(join(o.dataDir, ADDRS_FILE), 'utf8')) as string[]
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
          throw new Error(`no ${ADDRS_FILE} in ${o.dataDir}: start the coordinator once with this --data-dir, or pass --addr /ip4/…/tcp/…/p2p/…`)
        }
      }
      const coordinators = new Set<string>()
      for (const a of addrs) {
        const peer = multiaddr(a).getComponents().findLast(c => c.name === 'p2p')?.value
        if (peer == null) throw new Error(`--addr ${a} does not end in /p2p/PEERID`)
        coordinators.add(peer)
      }
      // This coordinator is always trusted, even when --addr names only others.
      coordinators.add(peerIdFromPrivateKey(await loadOrCreateIdentity(o.dataDir)).toString())
      const { id, secret } = newTokenCredentials()
      const expiresAt = ttl == null ? null : o.now + ttl
      const networkKey = await o.store.ensureSetting({ name: NETWORK_KEY_SETTING, value: newNetworkKey() })
      await o.store.createJoinToken({ id, secretSha256: secretSha256(secret), createdAt: o.now, expiresAt, note: o.note })
      return encodeJoinToken({ id, secret, coordinators: [...coordinators], addrs: [...addrs, ...(o.dialAddrs ?? [])], expiresAt, networkKey }) + '\n'
    }
    case 'list': {
      const tokens = await o.store.listJoinTokens()
      if (tokens.length === 0) return 'no join tokens\n'
      return tokens.map(t => `${t.id}  created ${new Date(t.createdAt).toISOString()}  ${t.revokedAt != null ? `revoked ${new Date(t.revokedAt).toISOString()}` : t.expiresAt == null ? 'never expires' : `${t.expiresAt <= o.now ? 'expired' : 'expires'} ${new Date(t.expiresAt).toISOString()}`}${t.note !== '' ? `  ${t.note}` : ''}`).join('\n') + '\n'
    }
    case 'revoke': {
      if (rest.length !== 1) throw new Error('token revoke takes one token id (see token list)')
      if (!await o.store.revokeJoinToken({ id: rest[0]!, now: o.now })) throw new Error(`no join token ${rest[0]!}`)
      return `join token ${rest[0]!} revoked; running coordinators cut its nodes off within a heartbeat interval\n`
    }
    default:
      throw new Error(`unknown token command ${JSON.stringify(sub)} (create, list, revoke)`)
  }
}
