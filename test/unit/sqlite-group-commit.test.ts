/**
 * The SQLite store commits the writes of one event-loop turn together
 * (group commit). What callers rely on: a write's promise resolves only once
 * it is on disk (another connection sees it), and one write failing does not
 * undo the others of its turn.
 */
import { describe, it, expect, afterEach, afterAll } from 'vitest'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { SqliteStore } from '../../coordinator/store/sqlite.js'
import { jobSpecSchema } from '../../protocol/schemas.js'
import { uuidv7, newFencingToken } from '../../common/ids.js'
import { ConflictError, NotFoundError } from '../../common/errors.js'

const tmp = mkdtempSync(join(tmpdir(), 'rgrid-group-commit-'))
const opened: SqliteStore[] = []
let n = 0
afterEach(async () => { await Promise.all(opened.splice(0).map(async s => { await s.close() })) })
afterAll(() => { rmSync(tmp, { recursive: true, force: true }) })

const T0 = 1_700_000_000_000
const spec = jobSpecSchema.parse({ command: ['true'] })

async function open (): Promise<{ store: SqliteStore, path: string }> {
  const path = join(tmp, `g-${++n}.db`)
  const store = SqliteStore.open({ path })
  opened.push(store)
  await store.migrate()
  return { store, path }
}

/** Job states as another connection (another process would) sees them on disk. */
function onDisk (path: string): Record<string, string> {
  const db = new Database(path, { readonly: true })
  try {
    return Object.fromEntries((db.prepare('SELECT id, state FROM jobs').all() as Array<{ id: string, state: string }>).map(r => [r.id, r.state]))
  } finally { db.close() }
}

describe('SqliteStore group commit', () => {
  it('writes of one turn are on disk when their promises resolve, not before', async () => {
    const { store, path } = await open()
    const a = uuidv7(T0)
    const b = uuidv7(T0 + 1)
    await store.createJob({ id: a, spec, now: T0 })
    // Started in the same turn: an award and a new job.
    const award = store.award({ jobId: a, attempt: 1, node: 'n1', token: newFencingToken(), now: T0 + 1, leaseMs: 1000, detail: {} })
    const create = store.createJob({ id: b, spec, now: T0 + 1 })
    expect(onDisk(path)).toEqual({ [a]: 'announced' })
    await Promise.all([award, create])
    expect(onDisk(path)).toEqual({ [a]: 'claimed', [b]: 'announced' })
  })

  it('a write that fails leaves the others of its turn standing', async () => {
    const { store, path } = await open()
    const a = uuidv7(T0)
    const c = uuidv7(T0 + 2)
    await store.createJob({ id: a, spec, now: T0 })
    const results = await Promise.allSettled([
      store.award({ jobId: a, attempt: 1, node: 'n1', token: newFencingToken(), now: T0 + 1, leaseMs: 1000, detail: {} }),
      // Lost race: the same attempt again, in the same turn.
      store.award({ jobId: a, attempt: 1, node: 'n2', token: newFencingToken(), now: T0 + 1, leaseMs: 1000, detail: {} }),
      store.award({ jobId: uuidv7(T0 + 3), attempt: 1, node: 'n1', token: newFencingToken(), now: T0 + 1, leaseMs: 1000, detail: {} }),
      // A duplicate id: its whole batch is refused, savepoint and all.
      store.createJobs([{ id: c, spec, now: T0 + 2 }, { id: a, spec, now: T0 + 2 }]),
      store.createJob({ id: uuidv7(T0 + 4), spec, now: T0 + 4 })
    ])
    expect(results.map(r => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'rejected', 'fulfilled'])
    expect((results[1] as PromiseRejectedResult).reason).toBeInstanceOf(ConflictError)
    expect((results[2] as PromiseRejectedResult).reason).toBeInstanceOf(NotFoundError)
    expect((results[3] as PromiseRejectedResult).reason).toBeInstanceOf(ConflictError)
    const disk = onDisk(path)
    expect(disk[a]).toBe('claimed')
    expect(disk[c]).toBeUndefined()
    expect(Object.keys(disk)).toHaveLength(2)
    const job = await store.getJob(a)
    expect(job?.attempts.map(x => x.node)).toEqual(['n1'])
  })

  it('close() commits what the turn wrote', async () => {
    const { store, path } = await open()
    const a = uuidv7(T0)
    const create = store.createJob({ id: a, spec, now: T0 })
    await store.close()
    await create
    expect(onDisk(path)).toEqual({ [a]: 'announced' })
  })
})
