/**
 * A peer's persisted identity. Called only from CLI entry points: a stable
 * peer id across restarts is what lets the coordinator recognise a node and
 * what operators put in their bootstrap lists.
 */
import { mkdir, readFile, writeFile, rename } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'

/** File name of the identity key inside a data dir. */
export const IDENTITY_FILE = 'peer.key'

/** Loads `DIR/peer.key`, creating an Ed25519 key there (mode 0600) if absent. */
export async function loadOrCreateIdentity (dataDir: string): Promise<PrivateKey> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  const file = join(dataDir, IDENTITY_FILE)
  try {
    return privateKeyFromProtobuf(await readFile(file))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot read identity ${file}: ${(err as Error).message}`)
  }
  const key = await generateKeyPair('Ed25519')
  // Write then rename so a crash never leaves a half-written key behind.
  const tmp = `${file}.${process.pid}.tmp`
  await writeFile(tmp, privateKeyToProtobuf(key), { mode: 0o600 })
  await rename(tmp, file)
  return key
}
