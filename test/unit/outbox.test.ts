import { describe, it, expect, afterEach } from 'vitest'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { Outbox } from '../../node/outbox.js'
import type { ResultRequest } from '../../node/reporter.js'
import { until } from '../helpers/rogue.js'

const dirs: string[] = []
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }) })

function path (): string {
  const d = mkdtempSync(join(tmpdir(), 'rgrid-outbox-unit-'))
  dirs.push(d)
  return join(d, 'outbox.db')
}

const report = (i: number): ResultRequest => ({
  type: 'result', jobId: `01890000-0000-7000-8000-${String(i).padStart(12, '0')}`, attempt: 1, token: 'a'.repeat(32), outcome: 'succeeded', exitCode: 0,
  stdout: `out ${i}`, stderr: '', stdoutTruncated: false, stderrTruncated: false, startedAt: 1, finishedAt: 2, error: null, artifacts: []
})

/** Rows on disk, read through a second connection (what a restart would find). */
function rows (p: string): number {
  const db = new Database(p, { readonly: true })
  try { return (db.prepare('SELECT COUNT(*) AS n FROM outbox').get() as { n: number }).n } finally { db.close() }
}

describe('Outbox', () => {
  it('puts are on disk once they resolve; deletes go in one batch a moment later', async () => {
    const p = path()
    const o = new Outbox(p, { deleteDelayMs: 30 })
    await Promise.all(Array.from({ length: 5 }, async (_, i) => { await o.put(report(i), 'coord') }))
    expect(rows(p)).toBe(5)
    for (let i = 0; i < 4; i++) o.delete(report(i).jobId, 1)
    // Not yet: a crash now would deliver these four once more, which the coordinator acknowledges as repeats.
    expect(rows(p)).toBe(5)
    await until('the batched delete', () => rows(p) === 1 ? true : undefined, 2_000, 5)
    expect(o.all().map(e => e.report.stdout)).toEqual(['out 4'])
    o.close()
  })

  it('64 settled results are deleted without waiting', async () => {
    const p = path()
    const o = new Outbox(p, { deleteDelayMs: 60_000 })
    await Promise.all(Array.from({ length: 64 }, async (_, i) => { await o.put(report(i), undefined) }))
    for (let i = 0; i < 64; i++) o.delete(report(i).jobId, 1)
    expect(rows(p)).toBe(0)
    o.close()
  })

  it('all() and close() see pending deletes through; a put after a queued delete of its key keeps the row', async () => {
    const p = path()
    const o = new Outbox(p, { deleteDelayMs: 60_000 })
    await Promise.all([o.put(report(1), undefined), o.put(report(2), undefined)])
    o.delete(report(1).jobId, 1)
    o.delete(report(2).jobId, 1)
    await o.put(report(2), undefined)
    expect(o.all().map(e => e.report.stdout)).toEqual(['out 2'])
    o.delete(report(2).jobId, 1)
    o.close()
    expect(rows(p)).toBe(0)
  })

  it('puts of one turn share a transaction and resolve once on disk; close() commits what is still open', async () => {
    const p = path()
    const o = new Outbox(p)
    const done = [o.put(report(1), undefined), o.put(report(2), 'c')]
    expect(rows(p)).toBe(0)
    await Promise.all(done)
    expect(rows(p)).toBe(2)
    const late = o.put(report(3), undefined)
    o.close()
    await late
    expect(rows(p)).toBe(3)
  })
})
