import { describe, it, expect, beforeEach, afterEach, beforeAll, afterAll } from 'vitest'
import { mkdtemp, rm, realpath, readFile, mkdir, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import { jobSpecSchema, type JobSpecInput } from '../../protocol/schemas.js'
import { LIMITS } from '../../protocol/limits.js'
import { silentLogger } from '../../common/log.js'
import { ProcessRuntime } from '../../node/runtime/process.js'
import { NodeSpawner, SpawnFailedError, type Spawner } from '../../node/runtime/spawner.js'
import { SpawnHelper } from '../../node/runtime/spawn-helper.js'
import { OutputCollector } from '../../node/runtime/output.js'
import { eventually, isAlive } from '../helpers/processes.js'
import type { RunOutcome } from '../../node/runtime/types.js'

let workDir: string
beforeEach(async () => { workDir = await realpath(await mkdtemp(join(tmpdir(), 'rgrid-proc-'))) })
afterEach(async () => { await rm(workDir, { recursive: true, force: true }) })

/** `npm run build` compiles it; CI must have it, elsewhere a machine without a C compiler skips its half. */
const HELPER = join(import.meta.dirname, '..', '..', 'dist', 'node', 'runtime', 'spawn-helper', 'rgrid-spawn')
const haveHelper = existsSync(HELPER)
if (!haveHelper && process.env.CI === 'true') throw new Error(`${HELPER} is missing: CI must build rgrid-spawn (needs cc)`)
const spawners: Array<[string, () => Spawner]> = [
  ['Node\'s child_process', () => new NodeSpawner()],
  ...(haveHelper ? [['rgrid-spawn', () => new SpawnHelper({ log: silentLogger, path: HELPER, jobNice: 0 })] as [string, () => Spawner]] : [])
]

let runtime: ProcessRuntime

interface RunOpts { signal?: AbortSignal, onStarted?: (t: number) => void, onOutput?: (stream: 'stdout' | 'stderr', chunk: Uint8Array) => void, rt?: ProcessRuntime }
async function run (input: JobSpecInput, opts: RunOpts = {}): Promise<RunOutcome> {
  return await (opts.rt ?? runtime).run({
    jobId: randomUUID(),
    attempt: 1,
    spec: jobSpecSchema.parse(input),
    workDir,
    signal: opts.signal ?? new AbortController().signal,
    onStarted: opts.onStarted,
    ...(opts.onOutput != null ? { onOutput: opts.onOutput } : {})
  })
}

describe.each(spawners)('ProcessRuntime over %s', (_kind, makeSpawner) => {
  beforeAll(async () => {
    runtime = new ProcessRuntime({ killGraceMs: 300, logger: silentLogger, spawner: makeSpawner() })
    await runtime.start()
  })
  afterAll(async () => { await runtime.stop() })

  it('runs a command to success and reports when it started', async () => {
    const started: number[] = []
    const before = Date.now()
    const res = await run({ command: ['sh', '-c', 'echo hello'] }, { onStarted: t => started.push(t) })
    expect(res).toMatchObject({ outcome: 'succeeded', exitCode: 0, error: null, stdout: 'hello\n', stderr: '', stdoutTruncated: false })
    expect(started).toHaveLength(1)
    expect(res.startedAt).toBe(started[0])
    expect(res.startedAt).toBeGreaterThanOrEqual(before)
    expect(res.finishedAt).toBeGreaterThanOrEqual(res.startedAt ?? Infinity)
  })

  it('captures stdout and stderr separately', async () => {
    const res = await run({ command: ['sh', '-c', 'echo to-out; echo to-err >&2; echo more-out'] })
    expect(res.outcome).toBe('succeeded')
    expect(res.stdout).toBe('to-out\nmore-out\n')
    expect(res.stderr).toBe('to-err\n')
  })

  it('reports a nonzero exit as a non-retryable failure with the code', async () => {
    const res = await run({ command: ['sh', '-c', 'echo boom >&2; exit 3'] })
    expect(res.outcome).toBe('failed')
    expect(res.exitCode).toBe(3)
    expect(res.error).toMatchObject({ code: 'exit-nonzero', retryable: false })
    expect(res.stderr).toBe('boom\n')
  })

  it('kills the whole process group on timeout', async () => {
    const t0 = Date.now()
    // Prints its own pid and the background sleep's pid, then blocks.
    const res = await run({ command: ['sh', '-c', 'sleep 30 & echo $$ $!; sleep 30'], timeoutSeconds: 1 })
    const elapsed = Date.now() - t0
    expect(res.outcome).toBe('failed')
    expect(res.exitCode).toBeNull()
    expect(res.error).toMatchObject({ code: 'timeout', retryable: false })
    expect(elapsed).toBeGreaterThanOrEqual(900)
    expect(elapsed).toBeLessThan(5000)
    const pids = res.stdout.trim().split(/\s+/).map(Number)
    expect(pids).toHaveLength(2)
    for (const pid of pids) {
      expect(Number.isInteger(pid) && pid > 0).toBe(true)
      await eventually(() => !isAlive(pid), `pid ${pid} to die`)
    }
  })

  it('escalates to SIGKILL when the job ignores SIGTERM', async () => {
    const rt = new ProcessRuntime({ killGraceMs: 400, logger: silentLogger, spawner: makeSpawner() })
    await rt.start()
    const t0 = Date.now()
    // An ignored signal stays ignored across exec, so sleep ignores TERM too.
    const res = await run({ command: ['sh', '-c', 'trap "" TERM; sleep 30'], timeoutSeconds: 1 }, { rt })
    const elapsed = Date.now() - t0
    await rt.stop()
    expect(res.error?.code).toBe('timeout')
    expect(elapsed).toBeGreaterThanOrEqual(1300)
    expect(elapsed).toBeLessThan(5000)
  })

  it('cancels a running job when the signal aborts', async () => {
    const ac = new AbortController()
    const t0 = Date.now()
    const res = await run({ command: ['sh', '-c', 'echo $$; sleep 30'] }, { signal: ac.signal, onStarted: () => { ac.abort() } })
    expect(res.outcome).toBe('cancelled')
    expect(res.exitCode).toBeNull()
    expect(res.error?.code).toBe('cancelled')
    expect(res.startedAt).not.toBeNull()
    expect(Date.now() - t0).toBeLessThan(5000)
  })

  it('does not start a job whose signal is already aborted', async () => {
    const ac = new AbortController()
    ac.abort()
    let started = false
    const res = await run({ command: ['sh', '-c', 'echo ran > ran.txt'] }, { signal: ac.signal, onStarted: () => { started = true } })
    expect(res.outcome).toBe('cancelled')
    expect(res.startedAt).toBeNull()
    expect(started).toBe(false)
    expect(existsSync(join(workDir, 'ran.txt'))).toBe(false)
  })

  it('reports a missing program as spawn-failed, naming it', async () => {
    let started = false
    const res = await run({ command: ['rgrid-no-such-program-xyz', 'arg'] }, { onStarted: () => { started = true } })
    expect(res.outcome).toBe('failed')
    expect(res.exitCode).toBeNull()
    expect(res.startedAt).toBeNull()
    expect(res.error).toMatchObject({ code: 'spawn-failed', retryable: false })
    expect(res.error?.message).toContain('rgrid-no-such-program-xyz')
    expect(started).toBe(false)
  })

  it('caps output at LIMITS.outputBytes and keeps the tail', async () => {
    const res = await run({ command: ['sh', '-c', 'echo HEAD-MARKER; head -c 200000 /dev/zero | tr "\\0" a; echo; echo TAIL-MARKER'] })
    expect(res.outcome).toBe('succeeded')
    expect(res.stdoutTruncated).toBe(true)
    expect(res.stderrTruncated).toBe(false)
    expect(Buffer.byteLength(res.stdout)).toBe(LIMITS.outputBytes)
    expect(res.stdout.endsWith('a\nTAIL-MARKER\n')).toBe(true)
    expect(res.stdout).not.toContain('HEAD-MARKER')
  })

  it('passes spec.env over a minimal environment without the node\'s own variables', async () => {
    process.env.RGRID_TEST_SECRET = 'must-not-leak'
    try {
      const res = await run({ command: ['sh', '-c', 'printf "%s|%s|%s|%s" "$GREETING" "$HOME" "$RGRID_TEST_SECRET" "$LANG"'], env: { GREETING: 'hi there' } })
      expect(res.stdout).toBe(`hi there|${workDir}||C.UTF-8`)
    } finally {
      delete process.env.RGRID_TEST_SECRET
    }
  })

  it('runs in the work dir', async () => {
    const res = await run({ command: ['sh', '-c', 'pwd; echo written > out.txt'] })
    expect(res.stdout).toBe(`${workDir}\n`)
    expect(await readFile(join(workDir, 'out.txt'), 'utf8')).toBe('written\n')
  })

  it('finds the program on the job\'s PATH, not the node\'s', async () => {
    await mkdir(join(workDir, 'bin'))
    await writeFile(join(workDir, 'bin', 'rgrid-test-prog'), '#!/bin/sh\necho "found $1"\n', { mode: 0o755 })
    const res = await run({ command: ['rgrid-test-prog', 'it'], env: { PATH: `${workDir}/bin:/usr/bin:/bin` } })
    expect(res).toMatchObject({ outcome: 'succeeded', stdout: 'found it\n' })
    const without = await run({ command: ['rgrid-test-prog'] })
    expect(without.error).toMatchObject({ code: 'spawn-failed', retryable: false })
    expect(without.error?.message).toContain('ENOENT')
  })

  it('runs a script without a #! line with /bin/sh, as execvp does', async () => {
    await mkdir(join(workDir, 'bin'))
    await writeFile(join(workDir, 'bin', 'no-shebang'), 'echo "plain $1 $0"\n', { mode: 0o755 })
    const viaPath = await run({ command: ['no-shebang', 'script'], env: { PATH: `${workDir}/bin:/usr/bin:/bin` } })
    expect(viaPath).toMatchObject({ outcome: 'succeeded', stdout: `plain script ${workDir}/bin/no-shebang\n` })
    const relative = await run({ command: ['./bin/no-shebang', 'relative'] })
    expect(relative).toMatchObject({ outcome: 'succeeded', stdout: 'plain relative ./bin/no-shebang\n' })
  })

  it('reports a missing work dir as spawn-failed', async () => {
    await rm(workDir, { recursive: true, force: true })
    const res = await run({ command: ['true'] })
    expect(res.outcome).toBe('failed')
    expect(res.error).toMatchObject({ code: 'spawn-failed', retryable: false })
    expect(res.startedAt).toBeNull()
  })

  it('reports a job killed by a signal it did not get from us as 128 + signal', async () => {
    const res = await run({ command: ['sh', '-c', 'echo dying; kill -KILL $$'] })
    expect(res).toMatchObject({ outcome: 'failed', exitCode: 137, stdout: 'dying\n' })
    expect(res.error).toMatchObject({ code: 'exit-nonzero', retryable: false })
    expect(res.error?.message).toContain('SIGKILL')
    // Named as Node names it, not by an alias of the same number (SIGIOT).
    const aborted = await run({ command: ['sh', '-c', 'kill -ABRT $$'] })
    expect(aborted).toMatchObject({ outcome: 'failed', exitCode: 134 })
    expect(aborted.error?.message).toContain('SIGABRT')
  })

  it('stops waiting for output held open by a process that left the job\'s group', async () => {
    const rt = new ProcessRuntime({ drainTimeoutMs: 300, logger: silentLogger, spawner: makeSpawner() })
    await rt.start()
    const t0 = Date.now()
    // setsid puts the sleep in a session of its own, out of reach of the group kill; it keeps stdout open.
    // The job waits until the escapee has its own session, so the group kill cannot catch it first.
    const res = await run({ command: ['sh', '-c', 'echo before; setsid sh -c \'echo $$ > escaped.pid; exec sleep 5\' & while [ ! -s escaped.pid ]; do sleep 0.01; done'] }, { rt })
    const elapsed = Date.now() - t0
    const escaped = Number(await readFile(join(workDir, 'escaped.pid'), 'utf8'))
    process.kill(escaped, 'SIGKILL')
    await rt.stop()
    expect(res).toMatchObject({ outcome: 'succeeded', stdout: 'before\n' })
    expect(elapsed).toBeGreaterThanOrEqual(250)
    expect(elapsed).toBeLessThan(3000)
  })

  it('passes output on as it is produced when asked, and keeps it too', async () => {
    const chunks: string[] = []
    let firstAt = 0
    const res = await run({ command: ['sh', '-c', 'echo one; echo two >&2; sleep 0.3; echo three'] }, {
      onOutput: (stream, chunk) => { firstAt ||= Date.now(); chunks.push(`${stream}:${Buffer.from(chunk).toString()}`) }
    })
    expect(res).toMatchObject({ outcome: 'succeeded', stdout: 'one\nthree\n', stderr: 'two\n' })
    expect(chunks.filter(c => c.startsWith('stdout:')).map(c => c.slice(7)).join('')).toBe('one\nthree\n')
    expect(chunks).toContain('stderr:two\n')
    // The first chunk came while the job was still sleeping, not with its end.
    expect(res.finishedAt - firstAt).toBeGreaterThanOrEqual(200)
  })

  it('keeps the output of many jobs at once apart', async () => {
    const results = await Promise.all(Array.from({ length: 40 }, async (_, i) =>
      await run({ command: ['sh', '-c', `echo out-${i}; echo err-${i} >&2; exit ${i % 3}`] })))
    results.forEach((res, i) => {
      expect(res.stdout).toBe(`out-${i}\n`)
      expect(res.stderr).toBe(`err-${i}\n`)
      expect(res.exitCode).toBe(i % 3)
    })
  })

  it('refuses a NUL byte in an argument without starting anything', async () => {
    const spawner = makeSpawner()
    await spawner.start()
    try {
      await expect(spawner.spawn({ program: 'echo', args: ['a\0b'], cwd: workDir, env: { PATH: '/usr/bin:/bin' }, stdout: new OutputCollector(), stderr: new OutputCollector() }))
        .rejects.toBeInstanceOf(SpawnFailedError)
    } finally {
      await spawner.stop()
    }
  })
})

describe('OutputCollector', () => {
  it('keeps everything below the limit', () => {
    const c = new OutputCollector(8)
    c.push('abc')
    c.push(Buffer.from('def'))
    expect(c.result()).toEqual({ text: 'abcdef', truncated: false, totalBytes: 6 })
  })

  it('keeps exactly the last bytes across wrap-arounds and oversized chunks', () => {
    const c = new OutputCollector(8)
    let all = ''
    for (const piece of ['hello', ' ', 'wor', 'ld', '0123456789abcdef', 'xyz', 'Q']) {
      c.push(piece)
      all += piece
      expect(c.bytes().toString()).toBe(all.slice(-8))
    }
    expect(c.truncated).toBe(true)
    expect(c.result().totalBytes).toBe(all.length)
  })

  it('does not start with a broken character when the cut splits one', () => {
    const c = new OutputCollector(4)
    c.push('ab€cd') // € is 3 bytes; the last 4 bytes start inside it
    expect(c.result().text).toBe('cd')
  })

  it('keeps the tail of a long stream of chunks', () => {
    const c = new OutputCollector(1024)
    const chunk = Buffer.alloc(4096, 'x')
    for (let i = 0; i < 1000; i++) c.push(chunk)
    c.push('END')
    const { text, truncated, totalBytes } = c.result()
    expect(truncated).toBe(true)
    expect(totalBytes).toBe(4096 * 1000 + 3)
    expect(text).toHaveLength(1024)
    expect(text.endsWith('xEND')).toBe(true)
  })
})
