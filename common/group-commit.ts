/**
 * Group commit for a better-sqlite3 connection: every write made in one turn
 * of the event loop runs inside one `BEGIN IMMEDIATE` transaction, committed
 * at the turn's end (setImmediate). Under load one commit, one WAL append and
 * one lock round serve many writes. Used by the coordinator's SQLite store
 * and the node's outbox.
 *
 * Each write runs as a savepoint, so it stays atomic on its own: if it
 * throws, its statements are rolled back, the turn's other writes stand, and
 * its promise rejects at once. Its promise resolves only once the commit is on
 * disk. Should the commit itself fail (an I/O error), every write of the turn
 * is rolled back and every caller's promise rejects. The write lock is held
 * for the rest of the turn only; reads on the same connection see the turn's
 * writes a moment before they are committed.
 */
import type Database from 'better-sqlite3'

interface Group { waiters: Array<{ resolve: () => void, reject: (err: Error) => void }> }

export class GroupCommit {
  private group: Group | null = null
  /**
   * One savepoint wrapper for every write: `db.transaction(fn)` builds four
   * wrapper functions per call, which cost more than many of the writes.
   */
  private readonly savepoint: (fn: () => unknown) => unknown
  private readonly begin: Database.Statement
  private readonly commitStatement: Database.Statement

  constructor (private readonly db: Database.Database) {
    this.savepoint = db.transaction((fn: () => unknown) => fn())
    this.begin = db.prepare('BEGIN IMMEDIATE')
    this.commitStatement = db.prepare('COMMIT')
  }

  /** Runs `fn` as a savepoint in this turn's transaction; resolves with its value after the commit. */
  async run<T> (fn: () => T): Promise<T> {
    let group = this.group
    if (group == null) {
      this.begin.run()
      const opened: Group = { waiters: [] }
      this.group = group = opened
      setImmediate(() => { this.commit(opened) })
    }
    const value = this.savepoint(fn) as T
    await new Promise<void>((resolve, reject) => { group.waiters.push({ resolve, reject }) })
    return value
  }

  /** Commits the open turn now (before closing the connection). */
  flush (): void {
    if (this.group != null) this.commit(this.group)
  }

  private commit (group: Group): void {
    if (this.group !== group) return
    this.group = null
    try {
      this.commitStatement.run()
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err))
      if (this.db.inTransaction) {
        try {
          this.db.exec('ROLLBACK')
        } catch (rollbackErr) {
          // Nothing more to undo: SQLite ends a transaction whose commit failed this way by itself.
          e.message += ` (and the rollback failed: ${rollbackErr instanceof Error ? rollbackErr.message : String(rollbackErr)})`
        }
      }
      for (const w of group.waiters) w.reject(e)
      return
    }
    for (const w of group.waiters) w.resolve()
  }
}
