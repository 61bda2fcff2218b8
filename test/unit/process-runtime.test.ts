import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { mkdtemp, rm, realpath, readFile } from 'node:fs/promises'
import { existsSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import { jobSpecSchema, type JobSpecInput } from '../../protocol/schemas.js'
import { LIMITS } from '../../protocol/limits.js'
import { silentLogger } from '../../common/log.js'
import { ProcessRuntime } from '../../node/runtime/process.js'
import { OutputCollector } from '../../node/runtime/output.js'
import type { RunOutcome } from '../../node/runtime/types.js'

let workDir: string
beforeEach(async () => { workDir = await realpath(await mkdtemp(join(tmpdir(), 'rgrid-proc-'))) })
afterEach(async () => { await rm(workDir, { recursive: true, force: true }) })

const runtime = new ProcessRuntime({ killGraceMs: 300, logger: silentLogger })

async function run (input: JobSpecInput, opts: { signal?: AbortSignal, onStarted?: (t: number) => void, rt?: ProcessRuntime } = {}): Promise<RunOutcome> {
  return await (opts.rt ?? runtime).run({
    jobId: randomUUID(),
    attempt: 1,
    spec: jobSpecSchema.parse(input),
    workDir,
    signal: opts.signal ?? new AbortController().signal,
    onStarted: opts.onStarted
  })
}

/** A pid counts as gone once it no longer exists or is a zombie nobody reaped yet. */
function isAlive (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

async function eventually (check: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

describe('ProcessRuntime', () => {
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
    const rt = new ProcessRuntime({ killGraceMs: 400, logger: silentLogger })
    const t0 = Date.now()
    // An ignored signal stays ignored across exec, so sleep ignores TERM too.
    const res = await run({ command: ['sh', '-c', 'trap "" TERM; sleep 30'], timeoutSeconds: 1 }, { rt })
    const elapsed = Date.now() - t0
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
