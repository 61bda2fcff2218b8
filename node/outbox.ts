/**
 * The node's outbox: results written to disk (better-sqlite3 in the data
 * dir) before they are reported, and deleted only once the coordinator has
 * settled them. A node that crashes or restarts, or a coordinator that is
 * away, never makes a node forget a result.
 *
 * WAL with synchronous=NORMAL: a committed result survives the process being
 * killed; after a power cut the last few may be lost (the coordinator then
 * reschedules those attempts, so the job still runs, once more).
 */
import Database from 'better-sqlite3'
import type { ResultRequest } from './reporter.js'

export interface OutboxEntry {
  report: ResultRequest
  coordinator: string | undefined
}

export class Outbox {
  private readonly db: Database.Database
  private readonly putStmt: Database.Statement<[string, string | null, string, number]>
  private readonly deleteStmt: Database.Statement<[string]>

  /** Opens (creating if needed) the outbox database at `path`. */
  constructor (path: string) {
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
  }

  put (report: ResultRequest, coordinator: string | undefined): void {
    this.putStmt.run(`${report.jobId}/${report.attempt}`, coordinator ?? null, JSON.stringify(report), Date.now())
  }

  delete (jobId: string, attempt: number): void {
    this.deleteStmt.run(`${jobId}/${attempt}`)
  }

  /** Everything not yet settled, oldest first. */
  all (): OutboxEntry[] {
    const rows = this.db.prepare<[], { coordinator: string | null, report: string }>('SELECT coordinator, report FROM outbox ORDER BY created_at').all()
    return rows.map(r => ({ report: JSON.parse(r.report) as ResultRequest, coordinator: r.coordinator ?? undefined }))
  }

  close (): void {
    this.db.close()
  }
}
