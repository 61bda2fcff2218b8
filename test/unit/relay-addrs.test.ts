/** Reading relayed addresses: which relay a node names, and only for its own id. */
import { describe, it, expect } from 'vitest'
import { isRelayed, relayPeerOf } from '../../dist/common/relay.js'

const NODE = '12D3KooWKwa9EMGPvgBQKoAuUxd2NRZbXwDVGDe8AXpEZqepCVYn'
const RELAY = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'

describe('relayed addresses', () => {
  it('name the relay of a node\'s own relayed address, and nothing else', () => {
    expect(relayPeerOf(`/ip4/10.0.0.1/tcp/4001/p2p/${RELAY}/p2p-circuit/p2p/${NODE}`, NODE)).toBe(RELAY)
    expect(relayPeerOf(`/ip6/3fff:231::1/tcp/4001/p2p/${RELAY}/p2p-circuit/p2p/${NODE}`, NODE)).toBe(RELAY)
    // Another peer's relayed address, a relay that is the node itself, a direct address, garbage.
    expect(relayPeerOf(`/ip4/10.0.0.1/tcp/4001/p2p/${RELAY}/p2p-circuit/p2p/${RELAY}`, NODE)).toBeNull()
    expect(relayPeerOf(`/ip4/10.0.0.1/tcp/4001/p2p/${NODE}/p2p-circuit/p2p/${NODE}`, NODE)).toBeNull()
    expect(relayPeerOf(`/ip4/10.0.0.1/tcp/4001/p2p/${NODE}`, NODE)).toBeNull()
    expect(relayPeerOf(`/p2p-circuit/p2p/${NODE}`, NODE)).toBeNull()
    expect(relayPeerOf('not an address', NODE)).toBeNull()
    expect(isRelayed(`/p2p/${RELAY}/p2p-circuit/p2p/${NODE}`)).toBe(true)
    expect(isRelayed(`/ip4/10.0.0.1/tcp/4001/p2p/${NODE}`)).toBe(false)
  })
})
