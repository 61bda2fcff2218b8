/**
 * rgrid-spawn as a process: what happens when it dies under running jobs, when
 * the node stops it, when it is missing, and when it is sent garbage. The
 * outcomes it shares with Node's spawner are in process-runtime.test.ts.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, realpath, rm } from 'node:fs/promises'
import { getPriority, tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import { jobSpecSchema, type JobSpecInput } from '../../protocol/schemas.js'
import { silentLogger } from '../../common/log.js'
import { ProcessRuntime } from '../../node/runtime/process.js'
import { SpawnHelper } from '../../node/runtime/spawn-helper.js'
import { SpawnerUnavailableError } from '../../node/runtime/spawner.js'
import type { RunOutcome } from '../../node/runtime/types.js'
import { eventually, isAlive } from '../helpers/processes.js'

const HELPER = join(import.meta.dirname, '..', '..', 'dist', 'node', 'runtime', 'spawn-helper', 'rgrid-spawn')
const haveHelper = existsSync(HELPER)
if (!haveHelper && process.env.CI === 'true') throw new Error(`${HELPER} is missing: CI must build rgrid-spawn (needs cc)`)

let workDir: string
beforeEach(async () => { workDir = await realpath(await mkdtemp(join(tmpdir(), 'rgrid-spawn-'))) })
afterEach(async () => { await rm(workDir, { recursive: true, force: true }) })

function start (rt: ProcessRuntime, input: JobSpecInput): { outcome: Promise<RunOutcome>, pid: () => number | undefined } {
  let pid: number | undefined
  const outcome = rt.run({
    jobId: randomUUID(),
    attempt: 1,
    spec: jobSpecSchema.parse(input),
    workDir,
    signal: new AbortController().signal,
    onStarted: (_at, info) => { pid = info?.pid }
  })
  return { outcome, pid: () => pid }
}

function helperPid (spawner: SpawnHelper): number {
  const pid = (spawner as unknown as { child: { pid: number } | null }).child?.pid
  if (pid === undefined) throw new Error('no helper process')
  return pid
}

describe.skipIf(!haveHelper)('rgrid-spawn', () => {
  it('fails the jobs of a helper that died as retryable, kills their groups and starts a new helper', async () => {
    const spawner = new SpawnHelper({ log: silentLogger, path: HELPER })
    const rt = new ProcessRuntime({ logger: silentLogger, spawner })
    await rt.start()
    try {
      const job = start(rt, { command: ['sleep', '30'] })
      await eventually(() => job.pid() !== undefined, 'the job to start')
      const jobPid = job.pid() as number
      process.kill(helperPid(spawner), 'SIGKILL')
      const outcome = await job.outcome
      expect(outcome.outcome).toBe('failed')
      expect(outcome.error).toMatchObject({ code: 'node-error', retryable: true })
      expect(outcome.error?.message).toContain('rgrid-spawn exited')
      await eventually(() => !isAlive(jobPid), 'the orphaned job to be killed')
      expect(spawner.stats.restarts).toBe(1)
      const next = await start(rt, { command: ['sh', '-c', 'echo again'] }).outcome
      expect(next).toMatchObject({ outcome: 'succeeded', stdout: 'again\n' })
    } finally {
      await rt.stop()
    }
  })

  it('stops its running jobs, keeping their output, and exits when the node stops it', async () => {
    const spawner = new SpawnHelper({ log: silentLogger, path: HELPER })
    const rt = new ProcessRuntime({ logger: silentLogger, spawner })
    await rt.start()
    const job = start(rt, { command: ['sh', '-c', 'echo before; trap "echo got-term; exit 3" TERM; echo ready > ready; sleep 30 & wait'] })
    await eventually(() => existsSync(join(workDir, 'ready')), 'the job to set its trap')
    const pid = helperPid(spawner)
    const t0 = Date.now()
    await rt.stop()
    expect(Date.now() - t0).toBeLessThan(4000)
    expect(isAlive(pid)).toBe(false)
    expect(isAlive(job.pid() as number)).toBe(false)
    const outcome = await job.outcome
    // The helper's SIGTERM ended it (the node's own shutdown cancels jobs before this): not the job's
    // failure, so worth another attempt; what it printed, before and after the signal, is kept.
    expect(outcome).toMatchObject({ outcome: 'failed', stdout: 'before\ngot-term\n' })
    expect(outcome.error).toMatchObject({ code: 'node-error', retryable: true })
    // A stopped runtime starts nothing, and says the error is worth retrying elsewhere.
    const after = await start(rt, { command: ['true'] }).outcome
    expect(after.error).toMatchObject({ code: 'node-error', retryable: true })
  })

  it('runs jobs 10 nice levels below the node by default', async () => {
    const rt = new ProcessRuntime({ logger: silentLogger, spawner: new SpawnHelper({ log: silentLogger, path: HELPER }) })
    await rt.start()
    try {
      const res = await start(rt, { command: ['nice'] }).outcome
      expect(res.stdout).toBe(`${Math.min(19, getPriority() + 10)}\n`)
    } finally {
      await rt.stop()
    }
  })

  it('starts one helper for jobs started together, and finds the program without changing its own PATH', async () => {
    const spawner = new SpawnHelper({ log: silentLogger, path: HELPER })
    const rt = new ProcessRuntime({ logger: silentLogger, spawner })
    try {
      // No start(): the first jobs start the helper, all in the same turn.
      const jobs = Array.from({ length: 5 }, (_, i) => start(rt, { command: ['sh', '-c', `echo ${i}`] }).outcome)
      const outcomes = await Promise.all(jobs)
      outcomes.forEach((o, i) => { expect(o).toMatchObject({ outcome: 'succeeded', stdout: `${i}\n` }) })
      const helpers = readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').trim().split(/\s+/)
        .filter(pid => pid !== '' && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('rgrid-spawn'))
      expect(helpers).toHaveLength(1)
      // Each job brings its own PATH; the helper must not keep a copy of every one (glibc's setenv does).
      const rss = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${helperPid(spawner)}/status`, 'utf8'))?.[1])
      const before = rss()
      for (let round = 0; round < 20; round++) {
        await Promise.all(Array.from({ length: 40 }, async (_, i) => {
          const res = await start(rt, { command: ['true'], env: { PATH: `/${'p'.repeat(8_000)}${round}-${i}:/usr/bin:/bin` } }).outcome
          expect(res.outcome).toBe('succeeded')
        }))
      }
      // 800 PATHs of 8 kB would be 6.4 MB.
      expect(rss() - before).toBeLessThan(2048)
    } finally {
      await rt.stop()
    }
  })

  it('refuses a binary that does not speak its protocol', async () => {
    const spawner = new SpawnHelper({ log: silentLogger, path: '/bin/false', startTimeoutMs: 2000 })
    await expect(spawner.start()).rejects.toThrow(/exited \(1\) while starting/)
    const silent = new SpawnHelper({ log: silentLogger, path: '/bin/cat', startTimeoutMs: 300 })
    await expect(silent.start()).rejects.toThrow(/did not say it was ready/)
  })

  it('says so when the helper is missing, and jobs fail as retryable', async () => {
    const spawner = new SpawnHelper({ log: silentLogger, path: join(workDir, 'no-such-helper') })
    await expect(spawner.start()).rejects.toBeInstanceOf(SpawnerUnavailableError)
    const rt = new ProcessRuntime({ logger: silentLogger, spawner })
    const res = await start(rt, { command: ['true'] }).outcome
    expect(res.outcome).toBe('failed')
    expect(res.error).toMatchObject({ code: 'node-error', retryable: true })
    expect(res.error?.message).toContain('no-such-helper')
  })

  it('exits 2 with a message on a malformed request, and 0 when its stdin closes', async () => {
    const run = async (input: Buffer): Promise<{ code: number | null, stderr: string }> => {
      const child = spawn(HELPER, [], { stdio: ['pipe', 'pipe', 'pipe'] })
      let stderr = ''
      child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
      child.stdout.resume()
      child.stdin.end(input)
      const code = await new Promise<number | null>(resolve => child.once('exit', resolve))
      return { code, stderr }
    }
    const frame = (payload: Buffer): Buffer => Buffer.concat([Buffer.from(Uint32Array.of(payload.length).buffer), payload])
    expect(await run(Buffer.alloc(0))).toEqual({ code: 0, stderr: '' })
    const unknown = await run(frame(Buffer.from([9, 0, 0, 0, 0])))
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toContain('unknown request type 9')
    // A RUN whose strings do not fill its payload: one string promised, none sent.
    const run1 = Buffer.alloc(18)
    run1[0] = 1
    run1.writeUInt32LE(1, 10)
    const bad = await run(frame(run1))
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('malformed RUN strings')
    const huge = await run(Buffer.from(Uint32Array.of(0xffffffff).buffer))
    expect(huge.code).toBe(2)
    expect(huge.stderr).toContain('request of 4294967295 bytes')
  })
})
