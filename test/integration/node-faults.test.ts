/**
 * Faults on nodes, with real processes: a node killed with SIGKILL, and a
 * node paused with SIGSTOP that comes back after its attempt was replaced.
 * Every job must end exactly once, and a stale result must be refused.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { submit, waitForJob, waitForAll, TERMINAL, getJob } from '../helpers/http.js'
import { expectExactlyOnce } from '../helpers/exactly-once.js'

let mesh: LocalMesh
let dataDir: string

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-faults-'))
  mesh = new LocalMesh({
    dataDir, nodes: 4, slots: 1, runtime: 'process',
    // Default lease (15 s): a dead or paused node is caught by its silence well before that.
    // Nodes 0 and 1 carry pin=a, nodes 2 and 3 pin=b: jobs can be steered to a pair.
    nodeArgs: i => ['--renew-ms', '1000', '--labels', i < 2 ? 'pin=a' : 'pin=b']
  })
  await mesh.start()
  await mesh.waitForNodes(4)
}, 120_000)

afterAll(async () => {
  for (const p of mesh?.processes ?? []) if (p.child.exitCode == null) p.child.kill('SIGCONT')
  await mesh?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

async function events (id: string): Promise<Array<{ type: string, attempt: number | null, actor: string, detail: Record<string, unknown> }>> {
  return (await (await fetch(`${mesh.httpUrl}/v1/jobs/${id}/events`)).json() as { events: any[] }).events
}

/**
 * Submits 100 jobs, every tenth of them long (2 s) so a fault can be sure to
 * hit one, and returns their ids with the node running a long one and its
 * process once that has started.
 */
async function hundredJobs (prefix: string): Promise<{ ids: string[], victim: string, proc: typeof mesh.processes[number] }> {
  const live = mesh.processes.filter(p => p.name.startsWith('node-') && p.child.exitCode == null && p.child.signalCode == null)
  const ids: string[] = []
  for (let i = 0; i < 100; i++) ids.push((await submit(mesh.httpUrl, { command: ['sh', '-c', `sleep ${i % 10 === 0 ? 2 : 0.1}; echo ${prefix}-${i}`] })).body.id)
  const deadline = Date.now() + 30_000
  for (;;) {
    for (let i = 0; i < 100; i += 10) {
      const job = await getJob(mesh.httpUrl, ids[i]!)
      const a = job.attempts.at(-1)
      // Just started: most of its 2 s are still ahead, so the fault lands while it runs.
      if (job.state === 'running' && a?.startedAt != null && Date.now() - a.startedAt < 1000) {
        const proc = live.find(p => p.name === `node-${mesh.nodePeerIds.indexOf(a.node)}`)
        if (proc != null) return { ids, victim: a.node, proc }
      }
    }
    if (Date.now() > deadline) throw new Error('no long job started on a live node')
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

describe('node faults', () => {
  it('reschedules the attempt of a node killed with SIGKILL; the job ends exactly once', async () => {
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', 'sleep 1; echo survived'], labels: { pin: 'b' } })
    const running = await waitForJob(mesh.httpUrl, body.id, j => j.state === 'running')
    const victim = running.attempts[0]!.node
    const proc = mesh.processes.find(p => p.name === `node-${mesh.nodePeerIds.indexOf(victim)}`)!
    proc.child.kill('SIGKILL')
    const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state), 60_000)
    expect(job.state).toBe('succeeded')
    expect(job.result?.stdout).toBe('survived\n')
    expect(job.attempts.map(a => a.state)).toEqual(['lost', 'succeeded'])
    expect(job.attempts[1]!.node).not.toBe(victim)
    const ev = await events(body.id)
    const resched = ev.filter(e => e.type === 'rescheduled')
    expect(resched).toHaveLength(1)
    // Found by its silence (heartbeats stopped) and a failed direct check, not by waiting out the lease.
    expect(String(resched[0]!.detail.reason)).toMatch(/silent .*did not answer a direct check/)
    expect(ev.filter(e => e.type === 'finished')).toHaveLength(1)
  })

  it('refuses the result of a paused node whose attempt was replaced (SIGSTOP, then SIGCONT)', async () => {
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', 'sleep 2; echo done'], labels: { pin: 'a' } })
    const running = await waitForJob(mesh.httpUrl, body.id, j => j.state === 'running')
    const paused = running.attempts[0]!.node
    const proc = mesh.processes.find(p => p.name === `node-${mesh.nodePeerIds.indexOf(paused)}`)!
    proc.child.kill('SIGSTOP')
    let resumed = false
    try {
      // The lease runs out, the direct check gets no answer, attempt 2 runs on the other pin=a node.
      const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state), 60_000)
      expect(job.state).toBe('succeeded')
      expect(job.attempts).toHaveLength(2)
      expect(job.attempts[0]).toMatchObject({ node: paused, state: 'lost' })
      expect(job.attempts[1]!.node).not.toBe(paused)
      proc.child.kill('SIGCONT')
      resumed = true
      // The paused node's job finished meanwhile; its report carries the old token and is refused.
      const deadline = Date.now() + 20_000
      let stale: Array<{ type: string, actor: string }> = []
      while (stale.length === 0 && Date.now() < deadline) {
        stale = (await events(body.id)).filter(e => e.type === 'stale-report' && e.actor === paused)
        if (stale.length === 0) await new Promise(resolve => setTimeout(resolve, 200))
      }
      expect(stale.length).toBeGreaterThan(0)
      const after = await waitForJob(mesh.httpUrl, body.id, () => true)
      expect(after.result?.stdout).toBe('done\n')
      expect(after.attempts.map(a => a.state)).toEqual(['lost', 'succeeded'])
      expect((await events(body.id)).filter(e => e.type === 'finished')).toHaveLength(1)
    } finally {
      if (!resumed) proc.child.kill('SIGCONT')
    }
  })

  it('100 jobs with a node killed midway: every job ends once, and every reschedule has a reason', async () => {
    await mesh.waitForNodes(3)
    const { ids, proc } = await hundredJobs('job')
    proc.child.kill('SIGKILL')
    const jobs = await waitForAll(mesh.httpUrl, ids, 120_000)
    const summary = await expectExactlyOnce(mesh.httpUrl, jobs, i => `job-${i}\n`)
    expect(summary.replaced).toBeGreaterThan(0)
    for (const reason of summary.reasons.keys()) expect(reason).toMatch(/did not answer a direct check|does not hold attempt/)
  })

  it('still runs new work on the surviving nodes', async () => {
    const ids: string[] = []
    for (let i = 0; i < 6; i++) ids.push((await submit(mesh.httpUrl, { command: ['echo', `after-${i}`] })).body.id)
    const jobs = await waitForAll(mesh.httpUrl, ids, 60_000)
    expect(jobs.map(j => j.result?.stdout)).toEqual(Array.from({ length: 6 }, (_, i) => `after-${i}\n`))
  })

  it('100 jobs with a node paused past its lease, then resumed: every job ends once, its late results refused', async () => {
    // Two of the four nodes were killed above; pause one of the other two.
    await mesh.waitForNodes(2)
    const { ids, victim, proc } = await hundredJobs('paused')
    proc.child.kill('SIGSTOP')
    try {
      // Paused until the coordinator has given one of its attempts to another node.
      const lostBy = Date.now() + 30_000
      let replaced = false
      while (!replaced) {
        if (Date.now() > lostBy) throw new Error('the paused node was never declared lost')
        for (const id of ids) {
          const job = await getJob(mesh.httpUrl, id)
          if (job.attempts.some(a => a.node === victim && a.state === 'lost')) { replaced = true; break }
        }
        if (!replaced) await new Promise(resolve => setTimeout(resolve, 100))
      }
    } finally {
      proc.child.kill('SIGCONT')
    }
    const jobs = await waitForAll(mesh.httpUrl, ids, 120_000)
    // The resumed node reports what it held; give its reports time to arrive before checking they were refused.
    const staleBy = Date.now() + 20_000
    let summary = await expectExactlyOnce(mesh.httpUrl, jobs, i => `paused-${i}\n`)
    while (summary.staleReports === 0 && Date.now() < staleBy) {
      await new Promise(resolve => setTimeout(resolve, 200))
      summary = await expectExactlyOnce(mesh.httpUrl, await Promise.all(ids.map(async id => await getJob(mesh.httpUrl, id))), i => `paused-${i}\n`)
    }
    console.info(`[sigstop] ${summary.replaced} attempts replaced, ${summary.staleReports} stale reports refused; reasons: ${JSON.stringify([...summary.reasons])}`)
    expect(summary.replaced).toBeGreaterThan(0)
    expect(summary.staleReports).toBeGreaterThan(0)
    for (const reason of summary.reasons.keys()) expect(reason).toMatch(/did not answer a direct check|lease expired/)
  })
})
