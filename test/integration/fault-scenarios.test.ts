/**
 * Fault scenarios with 100 jobs each, over real processes: the only
 * coordinator (embedded SQLite store) killed with SIGKILL mid-run and started
 * again from its data dir; every node ignoring half of the gossip it
 * receives. Every acknowledged job must end exactly once with its own output.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { submit, waitForAll } from '../helpers/http.js'
import { expectExactlyOnce } from '../helpers/exactly-once.js'

const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-coord-restart-'))
const mesh = new LocalMesh({ dataDir, nodes: 3, slots: 2, runtime: 'process' })

afterAll(async () => {
  await mesh.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

describe('coordinator restart', () => {
  it('kill -9 of the coordinator mid-run, then a restart: 100 jobs each end exactly once', async () => {
    await mesh.start()
    await mesh.waitForNodes(3)
    const ids: string[] = []
    for (let i = 0; i < 100; i++) ids.push((await submit(mesh.httpUrl, { command: ['sh', '-c', `sleep 0.2; echo job-${i}`] })).body.id)
    // Kill it while work is in flight: some jobs done, some running, some waiting.
    const deadline = Date.now() + 30_000
    for (;;) {
      const stats = await (await fetch(`${mesh.httpUrl}/v1/stats`)).json() as { jobs: Record<string, number> }
      if ((stats.jobs.succeeded ?? 0) >= 20) break
      if (Date.now() > deadline) throw new Error('the run never got going')
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    await mesh.restart('coordinator')
    await mesh.waitForNodes(3)
    const jobs = await waitForAll(mesh.httpUrl, ids, 120_000)
    const summary = await expectExactlyOnce(mesh.httpUrl, jobs, i => `job-${i}\n`)
    console.info(`[coordinator-restart] ${summary.replaced} attempts replaced, ${summary.staleReports} stale reports; reasons: ${JSON.stringify([...summary.reasons])}`)
  })
})

describe('lossy gossip', () => {
  it('every node ignoring half of its gossip: 100 jobs still each end exactly once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rgrid-lossy-'))
    const lossy = new LocalMesh({ dataDir: dir, nodes: 3, slots: 2, runtime: 'process', nodeArgs: () => ['--fault-drop-gossip', '0.5'] })
    try {
      await lossy.start()
      await lossy.waitForNodes(3)
      const ids: string[] = []
      for (let i = 0; i < 100; i++) ids.push((await submit(lossy.httpUrl, { command: ['sh', '-c', `echo job-${i}`] })).body.id)
      const jobs = await waitForAll(lossy.httpUrl, ids, 120_000)
      const summary = await expectExactlyOnce(lossy.httpUrl, jobs, i => `job-${i}\n`)
      // Lost gossip may delay work but must not cost attempts: leases are renewed over the session too.
      expect(summary.replaced).toBe(0)
    } finally {
      await lossy.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
