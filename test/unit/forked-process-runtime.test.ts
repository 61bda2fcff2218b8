/**
 * The process runtime as nodes run it: jobs started by a separate host
 * process. Same outcomes as ProcessRuntime, cancellation across the IPC
 * boundary, a crashed host fails its jobs as retryable and is replaced, and
 * jobs run at a lower CPU priority than the node.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { mkdtempSync, rmSync } from 'node:fs'
import { getPriority, tmpdir } from 'node:os'
import { join } from 'node:path'
import { ForkedProcessRuntime } from '../../dist/node/runtime/forked-process.js'
import { decodeJobSpec } from '../../protocol/codec.js'
import { silentLogger } from '../../common/log.js'

const runtime = new ForkedProcessRuntime({ log: silentLogger })
let dir: string

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rgrid-forked-'))
  await runtime.start()
})
afterAll(async () => {
  await runtime.stop()
  rmSync(dir, { recursive: true, force: true })
})

function request (command: string[], signal = new AbortController().signal, extra: Record<string, unknown> = {}) {
  let started: number | null = null
  return {
    req: { jobId: '01a21cc0-9387-7a8d-a0f6-41f6d3537b0d', attempt: 1, spec: decodeJobSpec({ command, ...extra }), workDir: dir, signal, onStarted: (at: number) => { started = at } },
    started: () => started
  }
}

describe('ForkedProcessRuntime', () => {
  it('runs a job in the host and returns its outcome and start time', async () => {
    const r = request(['sh', '-c', 'echo out; echo err >&2; exit 4'])
    const outcome = await runtime.run(r.req)
    expect(outcome).toMatchObject({ outcome: 'failed', exitCode: 4, stdout: 'out\n', stderr: 'err\n' })
    expect(outcome.error?.code).toBe('exit-nonzero')
    expect(r.started()).not.toBeNull()
    expect((await runtime.run(request(['true']).req)).outcome).toBe('succeeded')
  })

  it('runs jobs 10 nice levels below the node by default, or as set', async () => {
    // coreutils `nice` without arguments prints the niceness it runs at.
    const own = getPriority()
    expect((await runtime.run(request(['nice']).req)).stdout).toBe(`${Math.min(19, own + 10)}\n`)
    const same = new ForkedProcessRuntime({ log: silentLogger, jobNice: 0 })
    const lowest = new ForkedProcessRuntime({ log: silentLogger, jobNice: 40 })
    try {
      await same.start()
      await lowest.start()
      expect((await same.run(request(['nice']).req)).stdout).toBe(`${own}\n`)
      expect((await lowest.run(request(['nice']).req)).stdout).toBe('19\n')
    } finally {
      await same.stop()
      await lowest.stop()
    }
  })

  it('cancels a running job across the process boundary', async () => {
    const ac = new AbortController()
    const r = request(['sleep', '30'], ac.signal)
    const run = runtime.run(r.req)
    const deadline = Date.now() + 5_000
    while (r.started() == null && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
    ac.abort()
    const outcome = await run
    expect(outcome.outcome).toBe('cancelled')
  })

  it('fails the jobs of a crashed host as retryable and starts a new host', async () => {
    const r = request(['sleep', '30'])
    const run = runtime.run(r.req)
    const deadline = Date.now() + 5_000
    while (r.started() == null && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
    const host = (runtime as unknown as { host: { pid: number } }).host
    const pending = [...(runtime as unknown as { pending: Map<number, { pid: number }> }).pending.values()]
    const jobPid = pending[0]!.pid
    expect(jobPid).toBeGreaterThan(0)
    process.kill(host.pid, 'SIGKILL')
    const outcome = await run
    expect(outcome.outcome).toBe('failed')
    expect(outcome.error).toMatchObject({ code: 'node-error', retryable: true })
    // The job's processes did not outlive their host.
    const gone = Date.now() + 5_000
    let alive = true
    while (alive && Date.now() < gone) {
      try { process.kill(jobPid, 0); await new Promise(resolve => setTimeout(resolve, 20)) } catch { alive = false }
    }
    expect(alive).toBe(false)
    const next = await runtime.run(request(['echo', 'again']).req)
    expect(next.stdout).toBe('again\n')
    expect(runtime.stats.hostRestarts).toBe(1)
  })
})
