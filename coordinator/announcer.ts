/**
 * Publishes job announcements on gossip, batched, and re-announces jobs
 * nobody has claimed, with exponential backoff.
 *
 * Gossip may lose an announcement (a mesh still forming, a slow peer), so
 * correctness never rests on one: unclaimed jobs are re-announced until
 * claimed or cancelled, and nodes also pull open jobs over their session.
 * Batching matters for speed: a signed gossip message costs about as much
 * CPU for one job as for 256 (see docs/design.md).
 */
import type { AnnouncedJob, Announcement } from '../protocol/schemas.js'
import { LIMITS } from '../protocol/limits.js'
import type { Store, OpenJob } from './store/types.js'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/log.js'
import { errorMessage } from '../common/errors.js'

export interface AnnouncerOptions {
  store: Store
  clock: Clock
  log: Logger
  /** Sends one encoded announcement on the announce topic. */
  publish: (announcement: Announcement) => Promise<void>
  /** First re-announcement after this long unclaimed, in ms; doubles each time. @default 1000 */
  reannounceMs?: number
  /** Longest gap between re-announcements, in ms. @default 30000 */
  maxReannounceMs?: number
  /** How often the re-announce loop looks for unclaimed jobs, in ms. @default 500 */
  scanMs?: number
  /**
   * Whether some node has a free slot. Re-announcing to a mesh that is full
   * only burns CPU: nodes pull open jobs when a slot frees up.
   * @default () => true
   */
  hasFreeSlots?: () => boolean
  /**
   * Whether this coordinator runs the re-announce loop now: with several
   * coordinators on one database only the leader does. @default () => true
   */
  isLeader?: () => boolean
  /** Called for every open job the scan sees, so indexes can adopt jobs announced before a restart. */
  onOpen?: (job: AnnouncedJob, now: number) => void
  /** Longest wait before publishing taken notices with no new jobs to carry them, in ms. @default 25 */
  takenFlushMs?: number
  /**
   * Whether every node's slots are taken, by this coordinator's own count of
   * its awards. New jobs are then held back instead of gossiped: every node
   * would decode and verify an announcement none of them can bid on, while
   * the jobs reach nodes anyway, oldest first, with result acks (session
   * 1.1), pulls and the welcome. Held jobs are announced as soon as a slot
   * frees. @default () => false (announce at once)
   */
  meshFull?: () => boolean
  /** While jobs are held back, how often to check for a free slot, in ms. @default 50 */
  releaseCheckMs?: number
  /** Most jobs held back; beyond it new jobs are announced whatever the load. @default 100000 */
  maxHeld?: number
  /**
   * Awards what it can of a batch about to be announced to nodes waiting on
   * standby (session 1.2) and returns the rest, which is announced (or held
   * back) as usual. A job placed this way is never gossiped, so its award
   * sends no taken notice. @default none (announce everything)
   */
  place?: (jobs: AnnouncedJob[]) => Promise<AnnouncedJob[]>
}

interface Announced { at: number, gapMs: number, rounds: number }

/** The requirements part of a job, as nodes see it in announcements. */
export function toAnnounced (job: OpenJob): AnnouncedJob {
  const { spec } = job
  return {
    jobId: job.jobId,
    attempt: job.attempt,
    ...(spec.image != null ? { image: spec.image } : {}),
    resources: { cpus: spec.resources.cpus, memoryMb: spec.resources.memoryMb, diskMb: spec.resources.diskMb },
    labels: spec.labels,
    timeoutSeconds: spec.timeoutSeconds,
    ...(spec.network ? { network: true } : {})
  }
}

export class Announcer {
  private queue: AnnouncedJob[] = []
  /** `jobId/attempt` of what `queue` holds. */
  private readonly queued = new Set<string>()
  private taken: Array<{ jobId: string, attempt: number }> = []
  private flushScheduled = false
  private takenTimer: NodeJS.Timeout | null = null
  private readonly announced = new Map<string, Announced>()
  /** Jobs not announced because every slot was taken, oldest first (see {@link AnnouncerOptions.meshFull}). */
  private readonly held = new Map<string, AnnouncedJob>()
  private releaseTimer: NodeJS.Timeout | null = null
  /** `jobId/attempt` of jobs being placed on standby nodes right now. */
  private readonly placing = new Set<string>()
  /** Jobs awarded while a scan reads the store: its (older) read must not bring them back. */
  private awardedDuringScan: Set<string> | null = null
  private timer: NodeJS.Timeout | null = null
  private scanning = false
  private readonly reannounceMs: number
  private readonly maxReannounceMs: number
  readonly stats = { messages: 0, jobs: 0, reannounced: 0, failures: 0, heldBack: 0, awardedUnannounced: 0, placed: 0 }

  constructor (private readonly options: AnnouncerOptions) {
    this.reannounceMs = options.reannounceMs ?? 1_000
    this.maxReannounceMs = options.maxReannounceMs ?? 30_000
  }

  start (): void {
    if (this.timer != null) return
    this.timer = setInterval(() => { void this.scan() }, this.options.scanMs ?? 500)
    this.timer.unref()
  }

  stop (): void {
    if (this.timer != null) clearInterval(this.timer)
    this.timer = null
    if (this.takenTimer != null) clearTimeout(this.takenTimer)
    this.takenTimer = null
    if (this.releaseTimer != null) clearInterval(this.releaseTimer)
    this.releaseTimer = null
  }

  /** Jobs held back right now because every slot was taken. */
  get heldCount (): number {
    return this.held.size
  }

  /** Announces a job soon, batched with others submitted in the same tick. */
  enqueue (job: AnnouncedJob): void {
    // Once per message: the scan may find a job open that is queued but not yet published.
    const key = `${job.jobId}/${job.attempt}`
    if (this.queued.has(key)) return
    this.queued.add(key)
    this.queue.push(job)
    this.scheduleFlush()
  }

  /** The attempt is settled (cancelled): stop re-announcing it. */
  forget (jobId: string): void {
    this.announced.delete(jobId)
    this.held.delete(jobId)
  }

  /**
   * The attempt was awarded: stop re-announcing it and tell the nodes, riding
   * on the next announcement, so they stop bidding on it.
   */
  awarded (jobId: string, attempt: number): void {
    this.awardedDuringScan?.add(jobId)
    const wasHeld = this.held.delete(jobId)
    const wasAnnounced = this.announced.delete(jobId)
    // Never gossiped: no node is bidding on it, so there is nothing to take back.
    if (!wasAnnounced && this.placing.has(`${jobId}/${attempt}`)) { this.stats.placed++; return }
    if (wasHeld && !wasAnnounced) { this.stats.awardedUnannounced++; return }
    this.taken.push({ jobId, attempt })
    if (this.taken.length >= LIMITS.announcementTaken) {
      this.scheduleFlush()
    } else if (this.takenTimer == null && !this.flushScheduled) {
      this.takenTimer = setTimeout(() => { this.takenTimer = null; this.scheduleFlush() }, this.options.takenFlushMs ?? 25)
      this.takenTimer.unref()
    }
  }

  private scheduleFlush (): void {
    if (this.flushScheduled) return
    this.flushScheduled = true
    setImmediate(() => { void this.flush() })
  }

  private async flush (): Promise<void> {
    this.flushScheduled = false
    if (this.takenTimer != null) { clearTimeout(this.takenTimer); this.takenTimer = null }
    let jobs = this.queue
    this.queue = []
    this.queued.clear()
    if (jobs.length > 0 && this.options.place != null) jobs = await this.placeFirst(jobs, this.options.place)
    if (jobs.length > 0 && this.held.size + jobs.length <= (this.options.maxHeld ?? 100_000) && this.options.meshFull?.() === true) {
      for (const j of jobs) {
        if (!this.held.has(j.jobId)) this.stats.heldBack++
        this.held.set(j.jobId, j)
      }
      jobs = []
      this.watchForFreeSlots()
    }
    let taken = this.taken
    this.taken = []
    const now = this.options.clock.now()
    let i = 0
    do {
      const batch = jobs.slice(i, i + LIMITS.announcementJobs)
      const takenBatch = taken.slice(0, LIMITS.announcementTaken)
      taken = taken.slice(LIMITS.announcementTaken)
      i += LIMITS.announcementJobs
      if (batch.length + takenBatch.length === 0) break
      for (const j of batch) {
        const prev = this.announced.get(j.jobId)
        this.announced.set(j.jobId, { at: now, gapMs: prev == null ? this.reannounceMs : Math.min(prev.gapMs * 2, this.maxReannounceMs), rounds: (prev?.rounds ?? 0) + 1 })
      }
      try {
        await this.options.publish({ v: 1, type: 'announce', sentAt: now, jobs: batch, taken: takenBatch })
        this.stats.messages++
        this.stats.jobs += batch.length
      } catch (err) {
        // The re-announce scan picks these jobs up again; nothing is lost.
        this.stats.failures++
        this.options.log.warn('announce publish failed', { jobs: batch.length, error: errorMessage(err) })
      }
    } while (i < jobs.length || taken.length > 0)
  }

  /** Hands what it can of a batch to nodes on standby; on failure the whole batch is announced. */
  private async placeFirst (jobs: AnnouncedJob[], place: (jobs: AnnouncedJob[]) => Promise<AnnouncedJob[]>): Promise<AnnouncedJob[]> {
    const keys = jobs.map(j => `${j.jobId}/${j.attempt}`)
    for (const k of keys) this.placing.add(k)
    try {
      return await place(jobs)
    } catch (err) {
      this.stats.failures++
      this.options.log.warn('placing jobs on standby nodes failed; announcing them', { jobs: jobs.length, error: errorMessage(err) })
      return jobs
    } finally {
      for (const k of keys) this.placing.delete(k)
    }
  }

  /** While jobs are held back, announces them (oldest first, a message's worth at a time) once a slot is free. */
  private watchForFreeSlots (): void {
    if (this.releaseTimer != null) return
    this.releaseTimer = setInterval(() => {
      if (this.held.size === 0) {
        if (this.releaseTimer != null) clearInterval(this.releaseTimer)
        this.releaseTimer = null
        return
      }
      if (this.options.meshFull?.() === true) return
      let released = 0
      for (const [id, job] of this.held) {
        this.held.delete(id)
        this.enqueue(job)
        if (++released >= LIMITS.announcementJobs) break
      }
    }, this.options.releaseCheckMs ?? 50)
    this.releaseTimer.unref()
  }

  /** Re-announces open jobs whose backoff has elapsed; adopts ones we never announced (e.g. after a restart). */
  private async scan (): Promise<void> {
    if (this.scanning) return
    this.scanning = true
    try {
      if (this.options.isLeader?.() === false || this.options.hasFreeSlots?.() === false) return
      const now = this.options.clock.now()
      this.awardedDuringScan = new Set()
      const open = await this.options.store.openJobs(4 * LIMITS.announcementJobs, now)
      const awardedMeanwhile = this.awardedDuringScan
      this.awardedDuringScan = null
      const openIds = new Set<string>()
      for (const job of open) {
        openIds.add(job.jobId)
        // Awarded while the store was read: no longer open, whatever the read says. Held jobs wait their turn already.
        if (awardedMeanwhile.has(job.jobId) || this.held.has(job.jobId)) continue
        const announced = toAnnounced(job)
        this.options.onOpen?.(announced, now)
        const seen = this.announced.get(job.jobId)
        if (seen != null && now - seen.at < seen.gapMs) continue
        if (seen != null) {
          this.stats.reannounced++
          await this.options.store.appendEvent({
            jobId: job.jobId, at: now, type: 'announced', actor: 'coordinator', attempt: job.attempt,
            detail: { round: seen.rounds + 1, reason: `no award ${Math.round((now - seen.at) / 1000)}s after the last announcement` }
          })
        }
        this.enqueue(announced)
      }
      // Jobs claimed or cancelled elsewhere (another coordinator, a restart) drop out.
      if (open.length < 4 * LIMITS.announcementJobs) {
        // Only what was announced before the read: a job announced while the store was read is open, just not in it.
        for (const [id, a] of this.announced) if (!openIds.has(id) && a.at < now) this.announced.delete(id)
      }
    } catch (err) {
      this.stats.failures++
      this.options.log.warn('re-announce scan failed', { error: errorMessage(err) })
    } finally {
      this.scanning = false
    }
  }
}
