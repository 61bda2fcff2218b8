/**
 * Who may take part: nodes holding a valid join token. At first contact a
 * node's peer id is bound to the token it presented; revoking the token
 * (`rgrid-coordinator token revoke`, from any process sharing the store)
 * denies every peer bound to it. The store is read for revocations every
 * `checkMs`, and newly denied peers are handed to `onDenied`, which cuts
 * them off (sessions, connections, gossip) and reschedules their work.
 */
import { secretSha256 } from '../common/join-token.js'
import { errorMessage } from '../common/errors.js'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/log.js'
import type { Store } from './store/types.js'

export interface AdmissionOptions {
  store: Store
  clock: Clock
  log: Logger
  /** Admit only nodes with a valid join token (false: `--open`). @default true */
  requireJoinToken?: boolean
  /** How often revocations are read from the store, in ms: one node heartbeat interval. @default 1000 */
  checkMs?: number
  /** Peers just denied, with the token whose revocation denied them. */
  onDenied?: (peers: Array<{ peerId: string, tokenId: string }>) => void
}

/** Why a hello was refused. */
export interface Refusal { code: 'join-refused' | 'internal', message: string }

export class Admission {
  /** Peers admitted since this coordinator started, with the token each presented last. */
  private readonly admitted = new Map<string, string | null>()
  /** Denied peers, newest revocation last, with the revoked token. */
  private readonly denied = new Map<string, string>()
  private timer: NodeJS.Timeout | null = null
  private checking = false
  readonly stats = { refused: 0, denied: 0, checkFailures: 0 }

  constructor (private readonly options: AdmissionOptions) {}

  get open (): boolean { return this.options.requireJoinToken === false }

  /** Whether the peer's gossip and sessions count. */
  isAdmitted (peerId: string): boolean {
    if (this.denied.has(peerId)) return false
    return this.open || this.admitted.has(peerId)
  }

  isDenied (peerId: string): boolean { return this.denied.has(peerId) }

  /** Denied peer ids, most recently revoked first, at most `max`. */
  deniedPeers (max: number): string[] {
    return [...this.denied.keys()].reverse().slice(0, max)
  }

  /** Checks a hello's join token and binds the peer to it; null when the node may proceed. */
  async admit (peerId: string, join: { id: string, secret: string } | undefined): Promise<Refusal | null> {
    const refused = await this.check(peerId, join)
    if (refused != null) { this.stats.refused++; return refused }
    this.admitted.set(peerId, join?.id ?? null)
    return null
  }

  private async check (peerId: string, join: { id: string, secret: string } | undefined): Promise<Refusal | null> {
    const denier = this.denied.get(peerId)
    if (denier != null) return { code: 'join-refused', message: `this peer was cut off when join token ${denier} was revoked; a revoked machine must get a new token and a new identity (delete its peer.key)` }
    if (this.open) return null
    if (join == null) return { code: 'join-refused', message: 'this coordinator admits only nodes with a join token (rgrid-coordinator token create); the hello had none' }
    const { store, clock } = this.options
    try {
      switch (await store.checkJoinToken({ id: join.id, secretSha256: secretSha256(join.secret), now: clock.now() })) {
        case 'ok': break
        case 'unknown': return { code: 'join-refused', message: `join token ${join.id} is not known to this coordinator` }
        case 'wrong-secret': return { code: 'join-refused', message: `the secret of join token ${join.id} is wrong` }
        case 'expired': return { code: 'join-refused', message: `join token ${join.id} has expired; ask for a new one` }
        case 'revoked': return { code: 'join-refused', message: `join token ${join.id} was revoked` }
      }
      const bound = await store.bindPeer({ peerId, tokenId: join.id, now: clock.now() })
      if (bound !== join.id) {
        // The first binding stands; a peer moving to another valid token is let in,
        // but stays answerable for the first: revoking either cuts it off.
        this.options.log.info('peer joined with another token than the one it is bound to', { peerId, boundTo: bound, presented: join.id })
      }
      return null
    } catch (err) {
      this.options.log.warn('cannot check a join token', { error: errorMessage(err) })
      return { code: 'internal', message: 'the coordinator cannot check join tokens right now; retry later' }
    }
  }

  /** Reads revocations now; resolves the peers newly denied. */
  async refresh (): Promise<Array<{ peerId: string, tokenId: string }>> {
    if (this.open || this.checking) return []
    this.checking = true
    try {
      const fresh: Array<{ peerId: string, tokenId: string }> = []
      const deny = (peerId: string, tokenId: string): void => {
        if (this.denied.has(peerId)) return
        this.denied.set(peerId, tokenId)
        this.admitted.delete(peerId)
        fresh.push({ peerId, tokenId })
      }
      // Peers bound (at first contact) to a revoked token…
      for (const r of await this.options.store.revokedPeers()) deny(r.peerId, r.tokenId)
      // …and peers admitted here with a token revoked since, whatever they were bound to first.
      const revoked = new Set((await this.options.store.listJoinTokens()).filter(t => t.revokedAt != null).map(t => t.id))
      for (const [peerId, tokenId] of [...this.admitted]) if (tokenId != null && revoked.has(tokenId)) deny(peerId, tokenId)
      if (fresh.length > 0) {
        this.stats.denied += fresh.length
        this.options.log.warn('join token revoked: cutting its nodes off', { peers: fresh.map(f => f.peerId) })
        this.options.onDenied?.(fresh)
      }
      return fresh
    } catch (err) {
      this.stats.checkFailures++
      this.options.log.warn('cannot read revoked join tokens', { error: errorMessage(err) })
      return []
    } finally {
      this.checking = false
    }
  }

  start (): void {
    if (this.timer != null || this.open) return
    void this.refresh()
    this.timer = setInterval(() => { void this.refresh() }, this.options.checkMs ?? 1_000)
    this.timer.unref()
  }

  stop (): void {
    if (this.timer != null) clearInterval(this.timer)
    this.timer = null
  }
}
