/**
 * The mesh's network key: the pre-shared key of a libp2p private network
 * (`@libp2p/pnet`). Every connection is encrypted with it before the noise
 * handshake, so a peer without it cannot even complete a handshake.
 *
 * A private network needs one key shared by every member, so the key is the
 * mesh's, not a token's: it is created once in the coordinators' store and
 * every join token carries it next to its own admission secret (see
 * docs/security.md for why revocation does not rotate it).
 */
import { randomBytes } from 'node:crypto'

/** Name of the store setting that holds the key. */
export const NETWORK_KEY_SETTING = 'network-key'
const KEY_TEXT = /^[A-Za-z0-9_-]{43}$/
const SWARM_HEADER = '/key/swarm/psk/1.0.0/\n/base16/\n'

/** Thrown for a network key or key file that cannot be used. */
export class InvalidNetworkKeyError extends Error {
  override readonly name = 'InvalidNetworkKeyError'
}

/** A fresh key: 32 random bytes, base64url. */
export function newNetworkKey (): string {
  return randomBytes(32).toString('base64url')
}

export function isNetworkKey (text: string): boolean {
  return KEY_TEXT.test(text) && Buffer.from(text, 'base64url').byteLength === 32
}

/** The key in the swarm-key format `@libp2p/pnet` (and go-ipfs) read. */
export function swarmKeyOf (key: string): Uint8Array {
  if (!isNetworkKey(key)) throw new InvalidNetworkKeyError('a network key is 32 bytes in base64url (43 characters)')
  return new TextEncoder().encode(SWARM_HEADER + Buffer.from(key, 'base64url').toString('hex'))
}

/** File contents for `--network-key-file`: the swarm-key format, so other libp2p tools can read it too. */
export function formatNetworkKeyFile (key: string): string {
  return new TextDecoder().decode(swarmKeyOf(key)) + '\n'
}

/** Reads a key file: the swarm-key format, or the bare base64url key. */
export function parseNetworkKeyFile (text: string): string {
  const trimmed = text.trim()
  if (isNetworkKey(trimmed)) return trimmed
  const lines = trimmed.split(/\r?\n/)
  if (lines.length === 3 && lines[0] === '/key/swarm/psk/1.0.0/' && lines[1] === '/base16/' && /^[0-9a-fA-F]{64}$/.test(lines[2] ?? '')) {
    return Buffer.from(lines[2]!, 'hex').toString('base64url')
  }
  throw new InvalidNetworkKeyError('not a network key file (expected /key/swarm/psk/1.0.0/, /base16/ and 64 hex digits, or a 43-character base64url key)')
}
