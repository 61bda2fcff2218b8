/**
 * A node cut off the mesh mid-run and healed, over real processes: the
 * node's connection gater refuses every connection and its open ones are
 * aborted (SIGUSR2, `--fault-partition-signal`). Its attempts must be
 * declared lost and run elsewhere; what it finished while cut off is refused
 * as stale when it comes back; it then takes new work again.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { getJob, submit, waitForAll } from '../helpers/http.js'
import { expectExactlyOnce, jobEvents } from '../helpers/exactly-once.js'

const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-partition-'))
const mesh = new LocalMesh({
  dataDir, nodes: 3, slots: 2, runtime: 'process',
  nodeArgs: i => i === 0 ? ['--fault-partition-signal', '--labels', 'pin=cut'] : []
})

afterAll(async () => {
  await mesh.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

async function nodes (): Promise<Array<{ peerId: string, session: boolean, running: number }>> {
  return (await (await fetch(`${mesh.httpUrl}/v1/nodes`)).json() as { nodes: Array<{ peerId: string, session: boolean, running: number }> }).nodes
}

async function until (what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

describe('network partition', () => {
  it('a node cut off mid-run and healed: 100 jobs each end exactly once, stale results refused', async () => {
    await mesh.start()
    await mesh.waitForNodes(3)
    const victim = mesh.nodePeerIds[0]!
    const proc = mesh.processes.find(p => p.name === 'node-0')!
    const ids: string[] = []
    // Every tenth job is long and pinned to the victim, so the cut is sure to catch one running.
    for (let i = 0; i < 100; i++) {
      const long = i % 10 === 0
      ids.push((await submit(mesh.httpUrl, { command: ['sh', '-c', `sleep ${long ? 2 : 0.3}; echo job-${i}`], ...(long ? { labels: { pin: 'cut' } } : {}) })).body.id)
    }
    await until('a long job has just started on the victim', 30_000, async () => {
      for (let i = 0; i < 100; i += 10) {
        const a = (await getJob(mesh.httpUrl, ids[i]!)).attempts.at(-1)
        if (a?.state === 'running' && a.startedAt != null && Date.now() - a.startedAt < 1000) return true
      }
      return false
    })
    proc.child.kill('SIGUSR2')
    await until('the coordinator sees the session drop', 10_000, async () => (await nodes()).find(n => n.peerId === victim)?.session !== true)
    // Keep it cut off until the coordinator has given its attempts to others.
    await until('the victim declared lost', 30_000, async () => {
      for (const id of ids) {
        const job = await getJob(mesh.httpUrl, id)
        if (job.attempts.some(a => a.node === victim && a.state === 'lost')) return true
      }
      return false
    })
    proc.child.kill('SIGUSR2')
    await mesh.waitForNodes(3, 30_000)
    const jobs = await waitForAll(mesh.httpUrl, ids, 120_000)
    const summary = await expectExactlyOnce(mesh.httpUrl, jobs, i => `job-${i}\n`)
    console.info(`[partition] ${summary.replaced} attempts replaced, ${summary.staleReports} stale reports refused; reasons: ${JSON.stringify([...summary.reasons])}`)
    expect(summary.replaced).toBeGreaterThan(0)
    for (const reason of summary.reasons.keys()) expect(reason).toMatch(/did not answer a direct check|lease expired|does not hold attempt/)
    // What the victim finished while cut off came back with replaced tokens and was refused.
    expect(summary.staleReports).toBeGreaterThan(0)
    for (const job of jobs) {
      for (const a of job.attempts) if (a.node === victim && a.state !== 'succeeded') expect(a.state).toBe('lost')
    }
    // Healed: it takes work again.
    const after: string[] = []
    for (let i = 0; i < 4; i++) after.push((await submit(mesh.httpUrl, { command: ['echo', `after-${i}`], labels: { pin: 'cut' } })).body.id)
    const done = await waitForAll(mesh.httpUrl, after, 30_000)
    for (const job of done) {
      expect(job.state).toBe('succeeded')
      expect(job.attempts.at(-1)!.node).toBe(victim)
    }
  })

  it('a job cancelled while its node is cut off: the node\'s late result is refused and the job stays cancelled', async () => {
    await mesh.waitForNodes(3)
    const victim = mesh.nodePeerIds[0]!
    const proc = mesh.processes.find(p => p.name === 'node-0')!
    const marker = join(dataDir, `finished-${Date.now()}`)
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', `sleep 1; echo late; touch ${marker}`], labels: { pin: 'cut' } })
    await until('the job runs on the victim', 30_000, async () => (await getJob(mesh.httpUrl, body.id)).state === 'running')
    proc.child.kill('SIGUSR2')
    await until('the coordinator sees the session drop', 10_000, async () => (await nodes()).find(n => n.peerId === victim)?.session !== true)
    // The cancel cannot reach the node: the job is cancelled in the store, the node runs on.
    const res = await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/cancel`, { method: 'POST' })
    expect(res.status).toBe(200)
    await until('the job finishes on the cut-off node', 30_000, async () => existsSync(marker))
    proc.child.kill('SIGUSR2')
    await mesh.waitForNodes(3, 30_000)
    await until('the late report is refused', 30_000, async () => (await jobEvents(mesh.httpUrl, body.id)).some(e => e.type === 'stale-report' && e.actor === victim))
    const job = await getJob(mesh.httpUrl, body.id)
    expect(job.state).toBe('cancelled')
    expect(job.result).toBeNull()
    expect(job.attempts.map(a => a.state)).toEqual(['cancelled'])
    const reasons = (await jobEvents(mesh.httpUrl, body.id)).filter(e => e.type === 'stale-report').map(e => String(e.detail.reason))
    expect(reasons.join(' ')).toMatch(/cancelled/)
  })
})
