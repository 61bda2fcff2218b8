/**
 * Leadership for background loops. Several coordinators may share one
 * database; exactly one at a time runs the loops that must not run twice
 * (re-announcement, rescheduling, provisioning). It holds a named lease in
 * the store, renewed well before it expires; when the holder dies, another
 * coordinator takes over once the lease runs out.
 */
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/log.js'
import { errorMessage } from '../common/errors.js'

export interface LeaseStore {
  tryAcquireLease: (input: { name: string, holder: string, ttlMs: number, now: number }) => Promise<boolean>
  releaseLease: (input: { name: string, holder: string }) => Promise<void>
}

export interface LeaderOptions {
  store: LeaseStore
  clock: Clock
  log: Logger
  /** This coordinator's identity in the lease table (its peer id). */
  holder: string
  /** @default 'background-loops' */
  name?: string
  /** Lease length; another coordinator takes over this long after we die. @default 5000 */
  ttlMs?: number
  /** How often to renew or try to acquire; well under ttlMs. @default ttlMs / 3 */
  renewMs?: number
  /** Called when this coordinator becomes leader or stops being one. */
  onChange?: (leader: boolean) => void
}

export class Leader {
  private timer: NodeJS.Timeout | null = null
  private leader = false
  private ticking = false
  readonly stats = { acquired: 0, lost: 0, failures: 0 }

  constructor (private readonly options: LeaderOptions) {}

  get isLeader (): boolean {
    return this.leader
  }

  start (): void {
    if (this.timer != null) return
    const ttlMs = this.options.ttlMs ?? 5_000
    this.timer = setInterval(() => { void this.tick() }, this.options.renewMs ?? Math.floor(ttlMs / 3))
    this.timer.unref()
    void this.tick()
  }

  private async tick (): Promise<void> {
    if (this.ticking) return
    this.ticking = true
    const ttlMs = this.options.ttlMs ?? 5_000
    try {
      const held = await this.options.store.tryAcquireLease({ name: this.name, holder: this.options.holder, ttlMs, now: this.options.clock.now() })
      this.set(held)
    } catch (err) {
      // Cannot confirm the lease: act as if lost, so two leaders never overlap.
      this.stats.failures++
      this.options.log.warn('leader lease check failed', { error: errorMessage(err) })
      this.set(false)
    } finally {
      this.ticking = false
    }
  }

  private get name (): string {
    return this.options.name ?? 'background-loops'
  }

  private set (leader: boolean): void {
    if (leader === this.leader) return
    this.leader = leader
    if (leader) this.stats.acquired++
    else this.stats.lost++
    this.options.log.info(leader ? 'became leader for background loops' : 'no longer leader for background loops', { holder: this.options.holder })
    this.options.onChange?.(leader)
  }

  async stop (): Promise<void> {
    if (this.timer != null) clearInterval(this.timer)
    this.timer = null
    if (this.leader) {
      this.set(false)
      try {
        await this.options.store.releaseLease({ name: this.name, holder: this.options.holder })
      } catch (err) {
        this.options.log.warn('could not release the leader lease; it will expire', { error: errorMessage(err) })
      }
    }
  }
}
