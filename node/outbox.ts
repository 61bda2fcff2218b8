/**
 * The node's outbox: results written to disk (better-sqlite3 in the data
 * dir) before they are reported, and deleted only once the coordinator has
 * settled them. A node that crashes or restarts, or a coordinator that is
 * away, never makes a node forget a result.
 *
 * WAL with synchronous=NORMAL: a committed result survives the process being
 * killed; after a power cut the last few may be lost (the coordinator then
 * reschedules those attempts, so the job still runs, once more).
 *
 * Deletes are batched (one transaction per `deleteDelayMs` or 64 keys): a
 * settled result still on disk after a crash is only delivered once more,
 * and the coordinator acknowledges a repeated result without changing
 * anything. Puts made in the same turn of the event loop share one
 * transaction (group commit), and resolve only once it committed.
 */
import Database from 'better-sqlite3'
import type { ResultRequest } from './reporter.js'
import type { Logger } from '../common/log.js'
import { errorMessage } from '../common/errors.js'
import { GroupCommit } from '../common/group-commit.js'

export interface OutboxOptions {
  log?: Logger
  /** Longest wait before settled results are deleted, in ms. @default 100 */
  deleteDelayMs?: number
}

export interface OutboxEntry {
  report: ResultRequest
  coordinator: string | undefined
}

export class Outbox {
  private readonly db: Database.Database
  private readonly putStmt: Database.Statement<[string, string | null, string, number]>
  private readonly deleteStmt: Database.Statement<[string]>
  private readonly deleteMany: (keys: string[]) => void
  /** Puts go through here: one transaction per turn of the event loop (common/group-commit.ts). */
  private readonly writes: GroupCommit
  private readonly pendingDeletes = new Set<string>()
  private deleteTimer: NodeJS.Timeout | null = null
  readonly stats = { deleteFailures: 0 }

  /** Opens (creating if needed) the outbox database at `path`. */
  constructor (path: string, private readonly options: OutboxOptions = {}) {
    this.db = new Database(path)
    this.db.exec('PRAGMA journal_mode = WAL')
    this.db.exec('PRAGMA synchronous = NORMAL')
    this.db.exec(`CREATE TABLE IF NOT EXISTS outbox (
      key TEXT PRIMARY KEY,
      coordinator TEXT,
      report TEXT NOT NULL,
      created_at INTEGER NOT NULL
    ) STRICT`)
    this.putStmt = this.db.prepare('INSERT OR REPLACE INTO outbox (key, coordinator, report, created_at) VALUES (?, ?, ?, ?)')
    this.deleteStmt = this.db.prepare('DELETE FROM outbox WHERE key = ?')
    this.deleteMany = this.db.transaction((keys: string[]) => { for (const k of keys) this.deleteStmt.run(k) })
    this.writes = new GroupCommit(this.db)
  }

  /**
   * Writes the result, in one transaction with the others put in this turn
   * of the event loop; resolves once it is on disk (rejects if it is not).
   */
  async put (report: ResultRequest, coordinator: string | undefined): Promise<void> {
    const key = `${report.jobId}/${report.attempt}`
    this.pendingDeletes.delete(key)
    await this.writes.run(() => this.putStmt.run(key, coordinator ?? null, JSON.stringify(report), Date.now()))
  }

  /** The result was settled: removed with the next batch of deletes. */
  delete (jobId: string, attempt: number): void {
    this.pendingDeletes.add(`${jobId}/${attempt}`)
    if (this.pendingDeletes.size >= 64) this.flushDeletes()
    else if (this.deleteTimer == null) {
      this.deleteTimer = setTimeout(() => { this.flushDeletes() }, this.options.deleteDelayMs ?? 100)
      this.deleteTimer.unref()
    }
  }

  /** Deletes what was settled, in one transaction; on failure the keys stay queued for the next try. */
  flushDeletes (): void {
    if (this.deleteTimer != null) { clearTimeout(this.deleteTimer); this.deleteTimer = null }
    if (this.pendingDeletes.size === 0) return
    const keys = [...this.pendingDeletes]
    try {
      this.deleteMany(keys)
      for (const k of keys) this.pendingDeletes.delete(k)
    } catch (err) {
      this.stats.deleteFailures++
      this.options.log?.warn('could not delete settled results from the outbox; will retry', { count: keys.length, error: errorMessage(err) })
      this.deleteTimer = setTimeout(() => { this.flushDeletes() }, 1_000)
      this.deleteTimer.unref()
    }
  }

  /** Everything not yet settled, oldest first. */
  all (): OutboxEntry[] {
    this.flushDeletes()
    const rows = this.db.prepare<[], { coordinator: string | null, report: string }>('SELECT coordinator, report FROM outbox ORDER BY created_at').all()
    return rows.map(r => ({ report: JSON.parse(r.report) as ResultRequest, coordinator: r.coordinator ?? undefined }))
  }

  close (): void {
    this.flushDeletes()
    this.writes.flush()
    this.db.close()
  }
}
