import { describe, it, expect } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PeerId } from '@libp2p/interface'
import { HeartbeatGuard } from '../../common/gossip-guard.js'
import type { HeartbeatTopicMessage } from '../../protocol/schemas.js'

const peer = async (): Promise<PeerId> => peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
const hb = (seq: number): HeartbeatTopicMessage => ({
  v: 1, type: 'node-heartbeat', seq, sentAt: 0, running: [],
  capacity: { slots: 1, freeSlots: 1, cpus: 1, memoryMb: 256, labels: {}, runtime: 'process', version: 't' }
})

describe('heartbeat topic rules', () => {
  it('rejects an author over its rate, and accepts it again once its bucket refills', async () => {
    const clock = { t: 0, now () { return this.t } }
    const guard = new HeartbeatGuard({ clock })
    const a = await peer()
    const verdicts = Array.from({ length: 12 }, (_, i) => guard.verdict(a, hb(i), a))
    expect(verdicts.slice(0, 10).every(v => v === 'accept')).toBe(true)
    expect(verdicts.slice(10)).toEqual(['reject', 'reject'])
    clock.t += 1_000
    expect(guard.verdict(a, hb(99), a)).toBe('accept')
  })

  it('drops, unrelayed, fresh identities one peer delivers beyond its budget; known authors pass', async () => {
    const clock = { t: 0, now () { return this.t } }
    const guard = new HeartbeatGuard({ clock, newAuthorsPerSecond: 1 }) // burst of 100 new authors
    const relay = await peer()
    const known = await peer()
    expect(guard.verdict(known, hb(0), relay)).toBe('accept')
    const fresh = await Promise.all(Array.from({ length: 105 }, async () => await peer()))
    const verdicts = fresh.map(f => guard.verdict(f, hb(0), relay))
    expect(verdicts.filter(v => v === 'accept')).toHaveLength(99) // the known author used one
    expect(verdicts.filter(v => v === 'ignore')).toHaveLength(6)
    expect(guard.stats.newAuthorsDropped).toBe(6)
    expect(guard.verdict(known, hb(1), relay)).toBe('accept')
    // Another delivering peer has its own budget.
    expect(guard.verdict(await peer(), hb(0), await peer())).toBe('accept')
  })

  it('rejects beacons from coordinators it does not trust, and denied authors', async () => {
    const coordinator = await peer()
    const other = await peer()
    const denied = new Set<string>()
    const guard = new HeartbeatGuard({ clock: { now: () => 0 }, denied, isCoordinator: p => p === coordinator.toString() })
    const beacon: HeartbeatTopicMessage = { v: 1, type: 'coordinator-beacon', seq: 0, sentAt: 0, addrs: [], denied: [] }
    expect(guard.verdict(coordinator, beacon, coordinator)).toBe('accept')
    expect(guard.verdict(other, beacon, other)).toBe('reject')
    denied.add(other.toString())
    expect(guard.verdict(other, hb(0), other)).toBe('reject')
  })

  it('on a topic for one type, rejects the other type and judges the right one by the usual rules', async () => {
    const guard = new HeartbeatGuard({ clock: { now: () => 0 } })
    const a = await peer()
    const beacon: HeartbeatTopicMessage = { v: 1, type: 'coordinator-beacon', seq: 0, sentAt: 0, addrs: [], denied: [] }
    expect(guard.only('coordinator-beacon')(a, hb(0), a)).toBe('reject')
    expect(guard.only('coordinator-beacon')(a, beacon, a)).toBe('accept')
    expect(guard.only('node-heartbeat')(a, beacon, a)).toBe('reject')
    expect(guard.only('node-heartbeat')(a, hb(1), a)).toBe('accept')
  })
})
