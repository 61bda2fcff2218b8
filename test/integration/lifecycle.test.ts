/**
 * Process lifecycle: `rgrid dev` starts and stops a whole mesh, and a node
 * told to stop drains its running job before leaving.
 */
import { describe, it, expect } from 'vitest'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { LocalMesh, childPids } from '../../dist/cli/local-mesh.js'
import { submit, waitForJob } from '../helpers/http.js'

const RGRID = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'cli', 'rgrid.js')

function alive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch { return false }
}

async function until (what: string, check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

describe('process lifecycle', () => {
  it('rgrid dev starts bootstrap, coordinator and nodes as processes, runs a job, and stops them all on Ctrl-C', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-dev-'))
    const dev = spawn(process.execPath, [RGRID, 'dev', '--nodes', '2', '--http', '127.0.0.1:0', '--data-dir', dataDir], { stdio: ['ignore', 'pipe', 'pipe'] })
    try {
      let apiKey = ''
      let url = ''
      const lines = createInterface({ input: dev.stdout })
      lines.on('line', line => {
        const m = /^coordinator HTTP API: (\S+)/.exec(line)
        if (m != null) url = m[1]!
        const k = /^API key \(admin[^)]*\): (rgk_\S+)/.exec(line)
        if (k != null) apiKey = k[1]!
      })
      await until('the dev mesh URL and its API key', () => url !== '' && apiKey !== '', 60_000)
      const children = childPids(dev.pid!)
      expect(children).toHaveLength(4) // bootstrap, coordinator, two nodes
      // rgrid dev requires API keys, as a real coordinator does.
      expect((await submit(url, { command: ['echo', 'no key'] })).status).toBe(401)
      const { body } = await submit(url, { command: ['echo', 'dev-ok'] }, apiKey)
      const job = await waitForJob(url, body.id, j => j.state === 'succeeded', 30_000, apiKey)
      expect(job.result?.stdout).toBe('dev-ok\n')

      dev.kill('SIGINT')
      const code = await new Promise<number | null>(resolve => dev.once('exit', c => { resolve(c) }))
      expect(code).toBe(0)
      for (const pid of children) expect(alive(pid), `child ${pid} still running`).toBe(false)
    } finally {
      if (dev.exitCode == null) dev.kill('SIGKILL')
      rmSync(dataDir, { recursive: true, force: true })
    }
  })

  it('a node told to stop finishes its running job, reports it, then exits', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-drain-'))
    const mesh = new LocalMesh({ dataDir, nodes: 1, slots: 1, runtime: 'process' })
    try {
      await mesh.start()
      await mesh.waitForNodes(1)
      const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', 'sleep 1.5; echo drained'] })
      await waitForJob(mesh.httpUrl, body.id, j => j.state === 'running')
      const node = mesh.processes.find(p => p.name === 'node-0')!
      node.child.kill('SIGTERM')
      const code = await new Promise<number | null>(resolve => node.child.once('exit', c => { resolve(c) }))
      expect(code).toBe(0)
      // The result was reported before the node left.
      const job = await waitForJob(mesh.httpUrl, body.id, j => j.state !== 'running', 5_000)
      expect(job.state).toBe('succeeded')
      expect(job.result?.stdout).toBe('drained\n')
    } finally {
      await mesh.stop()
      rmSync(dataDir, { recursive: true, force: true })
    }
  })
})

describe('graceful drain', () => {
  it('a node whose drain times out hands its job back without using up an attempt; another node finishes it', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-release-'))
    const mesh = new LocalMesh({ dataDir, nodes: 2, slots: 1, runtime: 'process', nodeArgs: () => ['--drain-timeout-ms', '500'] })
    try {
      await mesh.start()
      await mesh.waitForNodes(2)
      // One attempt only: if the hand-back counted, the job would end failed.
      const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', 'sleep 2; echo finished'], maxAttempts: 1 })
      const running = await waitForJob(mesh.httpUrl, body.id, j => j.state === 'running')
      const first = running.attempts[0]!.node
      const node = mesh.processes.find(p => p.name === `node-${mesh.nodePeerIds.indexOf(first)}`)!
      node.child.kill('SIGTERM')
      const code = await new Promise<number | null>(resolve => node.child.once('exit', c => { resolve(c) }))
      expect(code).toBe(0)
      const job = await waitForJob(mesh.httpUrl, body.id, j => j.state === 'succeeded' || j.state === 'failed', 30_000)
      expect(job.state).toBe('succeeded')
      expect(job.result?.stdout).toBe('finished\n')
      expect(job.attempts.map(a => a.state)).toEqual(['released', 'succeeded'])
      expect(job.attempts[1]!.node).not.toBe(first)
      const { events } = await (await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/events`)).json() as { events: Array<{ type: string, detail: Record<string, unknown> }> }
      expect(events.find(e => e.type === 'rescheduled')?.detail.attemptState).toBe('released')
    } finally {
      await mesh.stop()
      rmSync(dataDir, { recursive: true, force: true })
    }
  })
})
