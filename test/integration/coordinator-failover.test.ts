/**
 * Two coordinators on one PostgreSQL, three nodes, 500 jobs; one coordinator
 * is killed with SIGKILL midway. Every job must end exactly once: one result,
 * one `finished` event, the job's own output.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js'
import { getJob, waitForAll } from '../helpers/http.js'

const JOBS = 500
let pg: TestPostgres
let mesh: LocalMesh
let dataDir: string

beforeAll(async () => {
  pg = await startTestPostgres()
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-failover-'))
  mesh = new LocalMesh({ dataDir, nodes: 3, slots: 2, runtime: 'process', coordinators: 2, db: await pg.createDatabase() })
  await mesh.start()
  for (const c of mesh.coordinators) await mesh.waitForNodes(3, 30_000, c.httpUrl)
}, 120_000)

afterAll(async () => {
  await mesh?.stop()
  await pg?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

async function post (url: string, i: number): Promise<string | null> {
  try {
    const res = await fetch(`${url}/v1/jobs`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ command: ['sh', '-c', `echo job-${i}; sleep 0.05`] }), signal: AbortSignal.timeout(10_000)
    })
    if (res.status !== 201) return null
    return (await res.json() as { id: string }).id
  } catch {
    // Connection refused or reset: that coordinator is gone, the submission was not acknowledged.
    return null
  }
}

describe('several coordinators on one database', () => {
  it('survives kill -9 of one coordinator midway: every acknowledged job ends exactly once', async () => {
    const [a, b] = mesh.coordinators
    const ids = new Map<number, string>()
    let killed = false
    let next = 0
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < JOBS) {
        const i = next++
        if (i === JOBS / 2 && !killed) {
          killed = true
          a!.process.child.kill('SIGKILL')
        }
        // Alternate between coordinators; after the kill, what A refuses goes to B.
        let id = i % 2 === 0 && !killed ? await post(a!.httpUrl, i) : null
        id ??= await post(b!.httpUrl, i)
        if (id == null) throw new Error(`job ${i} was refused by both coordinators`)
        ids.set(i, id)
      }
    }))
    expect(killed).toBe(true)
    expect(ids.size).toBe(JOBS)
    const order = [...ids.keys()].sort((x, y) => x - y)
    const jobs = await waitForAll(b!.httpUrl, order.map(i => ids.get(i)!), 100_000)
    let rescheduled = 0
    for (const [k, job] of jobs.entries()) {
      const i = order[k]!
      expect(job.state, `job ${i}`).toBe('succeeded')
      expect(job.result?.stdout).toBe(`job-${i}\n`)
      const done = job.attempts.filter(x => x.state === 'succeeded')
      expect(done).toHaveLength(1)
      if (job.attempts.length > 1) rescheduled++
    }
    // Exactly one finished event per job, checked on a sample large enough to include the kill window.
    for (const i of order.slice(JOBS / 2 - 50, JOBS / 2 + 50)) {
      const { events } = await (await fetch(`${b!.httpUrl}/v1/jobs/${ids.get(i)}/events`)).json() as { events: Array<{ type: string }> }
      expect(events.filter(e => e.type === 'finished'), `finished events of job ${i}`).toHaveLength(1)
    }
    const stats = await (await fetch(`${b!.httpUrl}/v1/stats`)).json() as { leader: { isLeader: boolean } }
    expect(stats.leader.isLeader).toBe(true)
    console.info(`[failover] ${rescheduled} jobs needed a second attempt after the kill`)
    expect((await getJob(b!.httpUrl, ids.get(0)!)).state).toBe('succeeded')
  }, 180_000)
})
