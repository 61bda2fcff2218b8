/**
 * The coordinator's view of the nodes: capacity and load from gossip
 * heartbeats and session frames, last-seen times, and whether a session is
 * open. Persisted to the store at a bounded rate so a busy mesh does not
 * turn every heartbeat into a write.
 */
import type { NodeCapacity } from '../protocol/schemas.js'
import type { Store, NodeRecord } from './store/types.js'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/log.js'
import { errorMessage } from '../common/errors.js'
import type { Reachability } from './dial-back.js'

export interface MemberView {
  peerId: string
  capacity: NodeCapacity
  firstSeenAt: number
  lastSeenAt: number
  /** Where the last sign of life came from. */
  lastSource: 'heartbeat' | 'session'
  sessionOpen: boolean
  running: number
  /** From the dial-back at the node's last hello. */
  reachability: Reachability
  /** The listen addresses the dial-back could connect to. */
  dialable: string[]
  /** The relayed addresses the dial-back reached the node through. */
  relayedAddrs: string[]
  /** Peers whose relayed connection to the node was upgraded to a direct one (DCUtR), as the node last said. */
  upgradedPeers: number
}

export interface MembershipOptions {
  store: Store
  clock: Clock
  log: Logger
  /** Write a node's last-seen time to the store at most this often, in ms. @default 5000 */
  persistEveryMs?: number
}

export class Membership {
  private readonly members = new Map<string, MemberView & { persistedAt: number }>()
  readonly stats = { persistFailures: 0 }

  constructor (private readonly options: MembershipOptions) {}

  /** Records a sign of life with the node's current capacity. */
  seen (peerId: string, capacity: NodeCapacity, source: 'heartbeat' | 'session', running: number): void {
    const now = this.options.clock.now()
    const prev = this.members.get(peerId)
    const changed = prev == null || prev.capacity.slots !== capacity.slots || prev.capacity.cpus !== capacity.cpus ||
      prev.capacity.memoryMb !== capacity.memoryMb || JSON.stringify(prev.capacity.labels) !== JSON.stringify(capacity.labels)
    const view = {
      peerId,
      capacity,
      firstSeenAt: prev?.firstSeenAt ?? now,
      lastSeenAt: now,
      lastSource: source,
      sessionOpen: prev?.sessionOpen ?? false,
      running,
      reachability: prev?.reachability ?? 'unknown' as Reachability,
      dialable: prev?.dialable ?? [],
      relayedAddrs: prev?.relayedAddrs ?? [],
      upgradedPeers: prev?.upgradedPeers ?? 0,
      persistedAt: prev?.persistedAt ?? 0
    }
    this.members.set(peerId, view)
    const persistEveryMs = this.options.persistEveryMs ?? 5_000
    if (changed || now - view.persistedAt >= persistEveryMs) {
      view.persistedAt = now
      this.options.store.upsertNode({ peerId, capacity, now }).catch((err: unknown) => {
        this.stats.persistFailures++
        this.options.log.warn('could not persist node', { peerId, error: errorMessage(err) })
      })
    }
  }

  setReachability (peerId: string, reachability: Reachability, dialable: string[], relayed: string[] = []): void {
    const m = this.members.get(peerId)
    if (m != null) { m.reachability = reachability; m.dialable = dialable; m.relayedAddrs = relayed }
  }

  setUpgradedPeers (peerId: string, upgradedPeers: number): void {
    const m = this.members.get(peerId)
    if (m != null) m.upgradedPeers = upgradedPeers
  }

  setSession (peerId: string, open: boolean): void {
    const m = this.members.get(peerId)
    if (m != null) m.sessionOpen = open
  }

  /** Whether a node heard from within `freshMs` reported a free slot. */
  anyFreeSlots (freshMs: number): boolean {
    const now = this.options.clock.now()
    for (const m of this.members.values()) {
      if (now - m.lastSeenAt <= freshMs && m.capacity.freeSlots > 0) return true
    }
    return false
  }

  /**
   * Whether some live node has a slot free. For a node with a session to
   * this coordinator, `held` (the attempts this coordinator awarded it and
   * has not seen end) is counted against its slots: that count is exact,
   * where the freeSlots of its last heartbeat may be a second old. Other
   * nodes count as their heartbeats say. No node known: true, so jobs are
   * announced to nodes still joining.
   */
  anyFreeSlot (freshMs: number, held: (peerId: string) => number): boolean {
    const now = this.options.clock.now()
    let known = false
    for (const m of this.members.values()) {
      if (now - m.lastSeenAt > freshMs) continue
      known = true
      if (m.sessionOpen ? m.capacity.slots - held(m.peerId) > 0 : m.capacity.freeSlots > 0) return true
    }
    return !known
  }

  /**
   * Nodes not heard from (no heartbeat, no session frame) for `silentMs`:
   * the store says which attempts they hold, and those get a direct check.
   */
  silentHolders (silentMs: number): Array<{ peerId: string, silentForMs: number }> {
    const now = this.options.clock.now()
    const out: Array<{ peerId: string, silentForMs: number }> = []
    for (const m of this.members.values()) {
      // Beyond ten minutes the node is long declared lost; stop asking the store about it.
      if (now - m.lastSeenAt >= silentMs && now - m.lastSeenAt < 600_000) out.push({ peerId: m.peerId, silentForMs: now - m.lastSeenAt })
    }
    return out
  }

  get (peerId: string): MemberView | undefined {
    return this.members.get(peerId)
  }

  /** Nodes heard from since this coordinator started (no store read). */
  listCached (): MemberView[] {
    return [...this.members.values()].map(({ persistedAt: _p, ...view }) => view)
  }

  /** Live view merged with nodes known only from the store (seen before a restart). */
  async list (): Promise<MemberView[]> {
    const stored: NodeRecord[] = await this.options.store.listNodes()
    const out = new Map<string, MemberView>()
    for (const n of stored) {
      out.set(n.peerId, { peerId: n.peerId, capacity: n.capacity, firstSeenAt: n.firstSeenAt, lastSeenAt: n.lastSeenAt, lastSource: 'heartbeat', sessionOpen: false, running: 0, reachability: 'unknown', dialable: [], relayedAddrs: [], upgradedPeers: 0 })
    }
    for (const m of this.members.values()) {
      const { persistedAt: _p, ...view } = m
      out.set(m.peerId, view)
    }
    return [...out.values()].sort((a, b) => a.peerId.localeCompare(b.peerId))
  }
}
