#!/usr/bin/env node
/**
 * rgrid-bootstrap: runs a bootstrap peer. Prints its full multiaddr (with
 * /p2p/<peer id>) as the first line of stdout, for scripts to capture.
 */
import { join } from 'node:path'
import { BootstrapPeer } from './bootstrap.js'
import { loadOrCreateIdentity } from '../common/identity.js'
import { createLogger, type LogLevel } from '../common/log.js'
import { logUnhandledRejections, parseArgsOrExit, stopOnSignals, usageError } from '../common/lifecycle.js'
import { preferredAddr } from '../common/addrs.js'
import { readHandoff, writeHandoff } from '../common/handoff.js'
import { parseNetworkKeyFile } from '../common/network-key.js'
import { decodeJoinToken } from '../common/join-token.js'
import { readFile } from 'node:fs/promises'
import { RELAY_FLAGS, RELAY_HELP, relayLimitsFromFlags } from '../common/relay-flags.js'
import type { RelayLimits } from '../common/relay.js'

const HELP = `Usage: rgrid-bootstrap [--listen MULTIADDR]... [--peer MULTIADDR]... [--data-dir DIR]

A long-lived libp2p peer that new coordinators and nodes dial first. It serves
the DHT, relays RGrid gossip, and is a circuit relay (v2, bounded) for nodes
that cannot be dialled (behind NAT). Its identity is kept in DIR/peer.key, so its
address stays the same across restarts.

  --listen MULTIADDR  address to listen on (repeatable)   [/ip4/0.0.0.0/tcp/4001]
  --peer MULTIADDR    another bootstrap peer to stay connected to (repeatable)
  --data-dir DIR      where the identity is kept         [./.rgrid/bootstrap]
  --addr-file FILE    also write the address to FILE (for containers started together)
  --network-key-file FILE
                      the mesh's network key (rgrid-coordinator network-key);
                      waits up to 2 min for FILE. Without it (or --token-file)
                      the peer only talks to open meshes (--open)
  --token-file FILE   take the network key from a join token in FILE instead
  --no-relay          do not serve circuit relay
${RELAY_HELP}  --log-level LEVEL   debug|info|warn|error              [info]
`

async function main (): Promise<void> {
  const args = parseArgsOrExit('rgrid-bootstrap', {
    options: {
      listen: { type: 'string', multiple: true },
      peer: { type: 'string', multiple: true },
      'data-dir': { type: 'string' },
      'log-level': { type: 'string' },
      'addr-file': { type: 'string' },
      'network-key-file': { type: 'string' },
      'token-file': { type: 'string' },
      'no-relay': { type: 'boolean' },
      ...RELAY_FLAGS,
      help: { type: 'boolean', short: 'h' }
    },
    strict: true
  }).values
  if (args.help === true) { process.stdout.write(HELP); return }
  const log = createLogger('bootstrap', { level: (args['log-level'] ?? 'info') as LogLevel })
  logUnhandledRejections(log)
  const dataDir = args['data-dir'] ?? join('.rgrid', 'bootstrap')
  let relay: RelayLimits | false
  try { relay = args['no-relay'] === true ? false : relayLimitsFromFlags(args) } catch (err) { usageError('rgrid-bootstrap', (err as Error).message) }
  let networkKey: string | undefined
  if (args['network-key-file'] != null) networkKey = parseNetworkKeyFile(await readHandoff(args['network-key-file'], 120_000))
  else if (args['token-file'] != null) networkKey = decodeJoinToken(await readFile(args['token-file'], 'utf8')).networkKey
  const peer = new BootstrapPeer({
    ...(networkKey != null ? { networkKey } : {}),
    privateKey: await loadOrCreateIdentity(dataDir),
    listen: args.listen ?? ['/ip4/0.0.0.0/tcp/4001'],
    peers: args.peer ?? [],
    relay,
    log
  })
  await peer.start()
  process.stdout.write(preferredAddr(peer.addrs()) + '\n')
  if (args['addr-file'] != null) await writeHandoff(args['addr-file'], preferredAddr(peer.addrs()))
  stopOnSignals(peer, log)
}

main().catch((err: unknown) => {
  process.stderr.write(`rgrid-bootstrap: ${(err as Error).message}\n`)
  process.exit(1)
})
