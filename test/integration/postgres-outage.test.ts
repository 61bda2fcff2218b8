/**
 * A PostgreSQL outage mid-run: the coordinator stays up, answers 503 while
 * its database is away, loses no submission it acknowledged, and resumes by
 * itself when the database comes back. Then a restart of PostgreSQL in the
 * middle of 100 jobs: each ends exactly once.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js'
import { submit, waitForAll } from '../helpers/http.js'
import { expectExactlyOnce } from '../helpers/exactly-once.js'

const OUTAGE_MS = 10_000
let pg: TestPostgres
let mesh: LocalMesh
let dataDir: string

beforeAll(async () => {
  pg = await startTestPostgres()
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-outage-'))
  mesh = new LocalMesh({ dataDir, nodes: 2, slots: 2, runtime: 'process', db: await pg.createDatabase() })
  await mesh.start()
  await mesh.waitForNodes(2)
}, 120_000)

afterAll(async () => {
  await mesh?.stop()
  await pg?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

describe('PostgreSQL outage', () => {
  it('answers 503 while the database is away and finishes every acknowledged job afterwards', async (ctx) => {
    if (pg.outage == null) { ctx.skip('RGRID_TEST_DATABASE_URL names a server this test cannot stop'); return }
    const acknowledged: string[] = []
    for (let i = 0; i < 20; i++) {
      const { status, body } = await submit(mesh.httpUrl, { command: ['sh', '-c', `sleep 0.3; echo before-${i}`] })
      expect(status).toBe(201)
      acknowledged.push(body.id)
    }
    await pg.outage.stopServer()
    const outageStarted = Date.now()
    // While it is down: a clear 503, never a crash or a hang.
    let unavailable = 0
    let accepted = 0
    const took: number[] = []
    while (Date.now() - outageStarted < OUTAGE_MS) {
      const t0 = Date.now()
      const res = await fetch(`${mesh.httpUrl}/v1/jobs`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ command: ['echo', 'during'] }), signal: AbortSignal.timeout(15_000)
      })
      const body = await res.json() as { id?: string, error?: { code: string } }
      took.push(Date.now() - t0)
      if (res.status === 503) {
        unavailable++
        expect(body.error?.code).toBe('store-unavailable')
        expect(res.headers.get('retry-after')).not.toBeNull()
      } else {
        // Only possible in the instant before the pool noticed; then it must be a real acknowledgement.
        expect(res.status).toBe(201)
        accepted++
        acknowledged.push(body.id!)
      }
      const health = await fetch(`${mesh.httpUrl}/healthz`)
      expect(health.status).toBe(200)
      await new Promise(resolve => setTimeout(resolve, 250))
    }
    expect(unavailable).toBeGreaterThan(0)
    console.info(`[outage] submissions during the outage took ${took.join(', ')} ms`)
    // Failing means failing promptly: a request hanging on a dead database is an outage of the API too.
    expect(Math.max(...took)).toBeLessThan(5_000)
    await pg.outage.startServer()
    // Resumes by itself: new submissions go through again (the pool reconnects).
    const deadline = Date.now() + 30_000
    let after: string | null = null
    while (after == null) {
      const { status, body } = await submit(mesh.httpUrl, { command: ['echo', 'after'] })
      if (status === 201) after = body.id
      else if (Date.now() > deadline) throw new Error(`still ${status} 30 s after the database came back`)
      else await new Promise(resolve => setTimeout(resolve, 200))
    }
    acknowledged.push(after)
    console.info(`[outage] database back; first 201 after ${Date.now() - outageStarted - OUTAGE_MS} ms`)
    const jobs = await waitForAll(mesh.httpUrl, acknowledged, 90_000)
    console.info(`[outage] all ${acknowledged.length} acknowledged jobs done ${Date.now() - outageStarted - OUTAGE_MS} ms after the outage ended (${unavailable} requests got 503)`)
    for (const job of jobs) {
      expect(job.state, `job ${job.id}`).toBe('succeeded')
      expect(job.result).not.toBeNull()
    }
    expect(jobs.slice(0, 20).map(j => j.result?.stdout)).toEqual(Array.from({ length: 20 }, (_, i) => `before-${i}\n`))
    expect(mesh.processes.every(p => p.child.exitCode === null && p.child.signalCode === null)).toBe(true)
    expect(accepted + unavailable).toBeGreaterThan(0)
  })

  it('PostgreSQL restarted in the middle of 100 jobs: each ends exactly once', async (ctx) => {
    if (pg.outage == null) { ctx.skip('RGRID_TEST_DATABASE_URL names a server this test cannot restart'); return }
    const succeeded = async (): Promise<number> => {
      const res = await fetch(`${mesh.httpUrl}/v1/stats`)
      return res.status === 200 ? ((await res.json() as { jobs: Record<string, number> }).jobs.succeeded ?? 0) : 0
    }
    const before = await succeeded()
    const ids: string[] = []
    for (let i = 0; i < 100; i++) ids.push((await submit(mesh.httpUrl, { command: ['sh', '-c', `sleep 0.2; echo run-${i}`] })).body.id)
    const deadline = Date.now() + 30_000
    for (;;) {
      // Restart it with work in flight: some jobs done, some running, some waiting.
      if (await succeeded() - before >= 20) break
      if (Date.now() > deadline) throw new Error('the run never got going')
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    const t0 = Date.now()
    await pg.outage.stopServer()
    // Down for 2 s while jobs keep finishing on the nodes: their results must wait, not vanish.
    while (Date.now() - t0 < 2_000) {
      const res = await fetch(`${mesh.httpUrl}/v1/jobs/${ids[0]!}`)
      expect(res.status).toBe(503)
      await new Promise(resolve => setTimeout(resolve, 200))
    }
    await pg.outage.startServer()
    console.info(`[pg-restart] database restarted after ${Date.now() - t0} ms`)
    const jobs = await waitForAll(mesh.httpUrl, ids, 120_000)
    const summary = await expectExactlyOnce(mesh.httpUrl, jobs, i => `run-${i}\n`)
    console.info(`[pg-restart] ${summary.replaced} attempts replaced, ${summary.staleReports} stale reports; reasons: ${JSON.stringify([...summary.reasons])}`)
    expect(mesh.processes.every(p => p.child.exitCode === null && p.child.signalCode === null)).toBe(true)
  })
})
