/**
 * The node's links to its coordinators: which peer ids it trusts, where they
 * are (from their beacons), and one session to each. Several coordinators
 * may share one database; the node talks to whichever answers.
 */
import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { CoordinatorFrame } from '../protocol/schemas.js'
import type { RGridHost } from '../common/p2p.js'
import type { Logger } from '../common/log.js'
import { errorMessage } from '../common/errors.js'
import { SessionClient } from './session-client.js'

interface Link {
  peerId: PeerId
  addrs: Multiaddr[]
  session: SessionClient | null
  connecting: boolean
}

export interface CoordinatorLinksOptions {
  host: RGridHost
  log: Logger
  /** Peer ids to trust. Empty: trust the first beacon heard (and report it via onTrust). */
  trusted: string[]
  onTrust?: (peerId: string) => void
  /** A session opened: say hello on it. Throwing closes it. */
  onOpen: (session: SessionClient, coordinator: string) => Promise<void>
  onPush: (frame: CoordinatorFrame, coordinator: string) => void
  /** Coordinator multiaddrs known up front (from a join token), with /p2p/ ids. @default [] */
  knownAddrs?: string[]
  /** Fault injection: delay added to every session request, in ms. @default () => 0 */
  linkDelayMs?: () => number
  /** Stop signal for dials. */
  signal: AbortSignal
  /** @default 10000 */
  dialTimeoutMs?: number
}

export class CoordinatorLinks {
  private readonly links = new Map<string, Link>()
  private stopped = false

  constructor (private readonly options: CoordinatorLinksOptions) {
    for (const id of options.trusted) this.links.set(id, { peerId: peerIdFromString(id), addrs: [], session: null, connecting: false })
    // Addresses a join token names: dial them without waiting for a beacon.
    for (const a of options.knownAddrs ?? []) {
      try {
        const ma = multiaddr(a)
        const id = ma.getComponents().findLast(c => c.name === 'p2p')?.value
        const link = id != null ? this.links.get(id) : undefined
        if (link != null) link.addrs.push(ma)
      } catch (err) {
        options.log.warn('ignoring a malformed coordinator address', { addr: a, error: (err as Error).message })
      }
    }
  }

  /** Whether announcements and awards from this peer are to be believed. */
  isTrusted (peerId: PeerId | string): boolean {
    return this.links.has(peerId.toString())
  }

  get anyKnown (): boolean {
    return this.links.size > 0
  }

  onBeacon (from: PeerId, addrs: string[]): void {
    let link = this.links.get(from.toString())
    if (link == null) {
      if (this.options.trusted.length > 0 || this.links.size > 0) return
      // Trust on first use; join tokens (issue 9) replace this with pinned identities.
      link = { peerId: from, addrs: [], session: null, connecting: false }
      this.links.set(from.toString(), link)
      this.options.log.warn('trusting the first coordinator heard (no --coordinator given)', { coordinator: from.toString() })
      this.options.onTrust?.(from.toString())
    }
    link.addrs = addrs.flatMap(a => { try { return [multiaddr(a)] } catch { return [] } })
    if (link.session == null && !link.connecting) void this.connect(link)
  }

  /** An open session, preferring the given coordinator's. */
  session (prefer?: string): SessionClient | null {
    return this.pick(prefer)?.session ?? null
  }

  /** An open session and whose it is, preferring the given coordinator's. */
  pick (prefer?: string): { coordinator: string, session: SessionClient } | null {
    if (prefer != null) {
      const s = this.links.get(prefer)?.session
      if (s?.isOpen === true) return { coordinator: prefer, session: s }
    }
    for (const [id, link] of this.links) {
      if (link.session?.isOpen === true) return { coordinator: id, session: link.session }
    }
    return null
  }

  /** Direct addresses of the coordinators we know, with /p2p/: relays to try when the bootstrap peers have no slot. */
  relayCandidates (): string[] {
    const out: string[] = []
    for (const [id, link] of this.links) {
      for (const a of link.addrs) {
        const text = a.toString()
        if (text.includes('/p2p-circuit')) continue
        out.push(text.includes('/p2p/') ? text : `${text}/p2p/${id}`)
      }
    }
    return out
  }

  openSessions (): Array<{ coordinator: string, session: SessionClient }> {
    const out: Array<{ coordinator: string, session: SessionClient }> = []
    for (const [id, link] of this.links) if (link.session?.isOpen === true) out.push({ coordinator: id, session: link.session })
    return out
  }

  /** Re-dials coordinators whose session is down and whose address we know. */
  reconnect (): void {
    for (const link of this.links.values()) {
      if (link.session == null && !link.connecting && link.addrs.length > 0) void this.connect(link)
    }
  }

  private async connect (link: Link): Promise<void> {
    if (this.stopped) return
    link.connecting = true
    const { host, log } = this.options
    const id = link.peerId.toString()
    let session: SessionClient | null = null
    try {
      await host.peerStore.merge(link.peerId, { multiaddrs: link.addrs })
      session = new SessionClient({
        host, coordinator: link.peerId, log: log.child('session'),
        onPush: frame => { this.options.onPush(frame, id) },
        onClose: () => { if (link.session === session) link.session = null },
        ...(this.options.linkDelayMs != null ? { linkDelayMs: this.options.linkDelayMs } : {})
      })
      await session.open(AbortSignal.any([this.options.signal, AbortSignal.timeout(this.options.dialTimeoutMs ?? 10_000)]))
      link.session = session
      await this.options.onOpen(session, id)
      log.info('session open', { coordinator: id })
    } catch (err) {
      log.warn('could not open a session to the coordinator', { coordinator: id, error: errorMessage(err) })
      if (session != null) {
        if (link.session === session) link.session = null
        await session.close().catch((e: unknown) => { log.debug('closing a failed session', { error: errorMessage(e) }) })
      }
    } finally {
      link.connecting = false
    }
  }

  async closeAll (): Promise<void> {
    this.stopped = true
    await Promise.all([...this.links.values()].map(async link => {
      const s = link.session
      link.session = null
      await s?.close()
    }))
  }
}
