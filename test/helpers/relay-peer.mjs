// A bare RGrid libp2p host for the NAT tests, run inside a lab namespace:
// it dials one address (a node's relayed address), pings the peer, and
// prints every connection it opens or closes as a JSON line, so the test
// sees which path (relayed or direct) the connection took and whether DCUtR
// upgraded it. Runs the compiled host (dist/), as the real programs do.
//
// usage: node relay-peer.mjs NETWORK_KEY_FILE TARGET LISTEN...
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { createHost } from '../../dist/common/p2p.js'
import { trustListenAddrs } from '../../dist/common/relay.js'
import { parseNetworkKeyFile } from '../../dist/common/network-key.js'

const [keyFile, target, ...listen] = process.argv.slice(2)
const out = obj => { process.stdout.write(JSON.stringify(obj) + '\n') }
const host = await createHost({
  privateKey: await generateKeyPair('Ed25519'),
  listen,
  bootstrap: [],
  networkKey: parseNetworkKeyFile(readFileSync(keyFile, 'utf8'))
})
const relayed = c => c.remoteAddr.toString().includes('/p2p-circuit')
host.addEventListener('connection:open', e => { out({ event: 'open', peer: e.detail.remotePeer.toString(), addr: e.detail.remoteAddr.toString(), direction: e.detail.direction, relayed: relayed(e.detail) }) })
host.addEventListener('connection:close', e => { out({ event: 'close', peer: e.detail.remotePeer.toString(), addr: e.detail.remoteAddr.toString(), relayed: relayed(e.detail) }) })
await host.start()
// Announce its (public) listen address, as a bootstrap peer or coordinator does, or a node the dial-back found public.
trustListenAddrs(host)
out({ event: 'ready', peerId: host.peerId.toString(), addrs: host.getMultiaddrs().map(String) })
let target_ = null
const ping = async () => {
  try {
    out({ event: 'ping', ms: await host.services.ping.ping(target_, { signal: AbortSignal.timeout(10_000) }) })
  } catch (err) {
    out({ event: 'ping-error', message: String(err?.message ?? err) })
  }
}
try {
  const conn = await host.dial(multiaddr(target), { signal: AbortSignal.timeout(15_000) })
  target_ = conn.remotePeer
  out({ event: 'dialed', addr: conn.remoteAddr.toString(), relayed: relayed(conn) })
  await ping()
} catch (err) {
  out({ event: 'error', message: String(err?.message ?? err) })
}
// Commands on stdin, one per line: "ping" pings the target again (over whichever connection is open now).
createInterface({ input: process.stdin }).on('line', line => {
  if (line.trim() === 'ping' && target_ != null) void ping()
}).on('close', () => { void host.stop().then(() => process.exit(0)) })
