/**
 * A runtime that runs a job's command as a plain child process of the node.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { constants as osConstants } from 'node:os'
import type { JobError } from '../../protocol/schemas.js'
import { createLogger, type Logger } from '../../common/log.js'
import { errorMessage } from '../../common/errors.js'
import { OutputCollector, outcomeOf } from './output.js'
import type { RunOutcome, RunRequest, Runtime } from './types.js'

export interface ProcessRuntimeOptions {
  /** Time between SIGTERM and SIGKILL when a job is stopped. @default 2000 */
  killGraceMs?: number
  /** How long to wait for stdout/stderr to close after the job exited. @default 2000 */
  drainTimeoutMs?: number
  /** @default createLogger('runtime.process') */
  logger?: Logger
}

/** PATH given to jobs when the node itself has none. */
const FALLBACK_PATH = '/usr/local/bin:/usr/bin:/bin'

/**
 * Runs `spec.command` with `child_process.spawn` (no shell) in `workDir`.
 *
 * **For development and simulations only: there is no isolation.** The job
 * runs as the node's user with the node's file system and network, and
 * `spec.image` and `spec.resources` are ignored. Use the docker runtime for
 * untrusted work.
 *
 * The job gets its own process group (`detached: true`) so that a timeout or
 * cancel kills everything it started, not only its first process. Anything
 * still alive in the group when the first process exits is killed too, so a
 * job cannot leave processes behind on the node (a process that calls
 * `setsid` escapes this; again, no isolation).
 */
export class ProcessRuntime implements Runtime {
  readonly name = 'process' as const
  private readonly killGraceMs: number
  private readonly drainTimeoutMs: number
  private readonly log: Logger

  constructor (options: ProcessRuntimeOptions = {}) {
    this.killGraceMs = options.killGraceMs ?? 2000
    this.drainTimeoutMs = options.drainTimeoutMs ?? 2000
    this.log = options.logger ?? createLogger('runtime.process')
  }

  /** Nothing to check: spawning needs no daemon. */
  async start (): Promise<void> {}

  /** Nothing to release; running jobs are stopped through their signals. */
  async stop (): Promise<void> {}

  /** Runs one attempt. Never throws for the job's own failure. */
  async run (request: RunRequest): Promise<RunOutcome> {
    const { spec, workDir, signal } = request
    const stdout = new OutputCollector()
    const stderr = new OutputCollector()
    let startedAt: number | null = null
    const finish = (outcome: RunOutcome['outcome'], exitCode: number | null, error: JobError | null): RunOutcome =>
      outcomeOf(stdout, stderr, startedAt, outcome, exitCode, error)

    if (signal.aborted) return finish('cancelled', null, { code: 'cancelled', message: 'cancelled before start', retryable: false })

    const [program, ...args] = spec.command
    if (program === undefined) return finish('failed', null, { code: 'spawn-failed', message: 'empty command', retryable: false })
    // A minimal environment: the node's own variables (tokens, keys) must not
    // leak into jobs.
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? FALLBACK_PATH,
      HOME: workDir,
      LANG: 'C.UTF-8',
      ...spec.env,
      ...spec.secretEnv
    }

    let child: ChildProcess
    try {
      child = spawn(program, args, { cwd: workDir, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
    } catch (err) {
      // spawn throws synchronously for invalid arguments (e.g. a NUL byte).
      return finish('failed', null, { code: 'spawn-failed', message: `cannot start "${program}": ${errorMessage(err)}`, retryable: false })
    }
    const live = request.onOutput
    child.stdout?.on('data', (chunk: Buffer) => { stdout.push(chunk); live?.('stdout', chunk) })
    child.stderr?.on('data', (chunk: Buffer) => { stderr.push(chunk); live?.('stderr', chunk) })

    let stopReason: 'timeout' | 'cancelled' | null = null
    let graceTimer: NodeJS.Timeout | undefined
    let timeoutTimer: NodeJS.Timeout | undefined
    const killGroup = (sig: NodeJS.Signals): void => {
      if (child.pid === undefined) return
      try {
        // Negative pid: the whole process group the job leads.
        process.kill(-child.pid, sig)
      } catch (err) {
        // ESRCH: the group is already gone, which is what we wanted.
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') this.log.warn('killing job process group failed', { jobId: request.jobId, pid: child.pid, err: errorMessage(err) })
      }
    }
    const stopJob = (reason: 'timeout' | 'cancelled'): void => {
      if (stopReason !== null) return
      stopReason = reason
      killGroup('SIGTERM')
      graceTimer = setTimeout(() => { killGroup('SIGKILL') }, this.killGraceMs)
    }
    const onAbort = (): void => { stopJob('cancelled') }

    type Ended = { kind: 'exit', code: number | null, signal: NodeJS.Signals | null } | { kind: 'error', err: Error }
    const ended = await new Promise<Ended>((resolve) => {
      child.once('error', (err) => { resolve({ kind: 'error', err }) })
      child.once('exit', (code, sig) => { resolve({ kind: 'exit', code, signal: sig }) })
      child.once('spawn', () => {
        startedAt = Date.now()
        timeoutTimer = setTimeout(() => { stopJob('timeout') }, spec.timeoutSeconds * 1000)
        signal.addEventListener('abort', onAbort, { once: true })
        // The signal may have been aborted between our check and the spawn.
        if (signal.aborted) onAbort()
        try {
          request.onStarted?.(startedAt, child.pid != null ? { pid: child.pid } : {})
        } catch (err) {
          // A throwing callback must not take the job (or the node) down.
          this.log.warn('onStarted callback threw', { jobId: request.jobId, err: errorMessage(err) })
        }
      })
    })
    clearTimeout(timeoutTimer)
    clearTimeout(graceTimer)
    signal.removeEventListener('abort', onAbort)

    if (ended.kind === 'error') {
      // 'error' before 'spawn' means the program never ran (ENOENT, EACCES,
      // missing cwd); Node's message names the program.
      child.stdout?.destroy()
      child.stderr?.destroy()
      return finish('failed', null, { code: 'spawn-failed', message: `cannot start "${program}": ${ended.err.message}`, retryable: false })
    }

    // The job is its first process; whatever it left running in its group
    // would otherwise outlive it on the node (and hold our pipes open).
    killGroup('SIGKILL')
    await this.drain(child)

    if (stopReason === 'cancelled') return finish('cancelled', null, { code: 'cancelled', message: 'job was cancelled', retryable: false })
    if (stopReason === 'timeout') {
      return finish('failed', null, { code: 'timeout', message: `job exceeded its timeout of ${spec.timeoutSeconds}s and was killed`, retryable: false })
    }
    if (ended.code === 0) return finish('succeeded', 0, null)
    if (ended.code !== null) {
      return finish('failed', ended.code, { code: 'exit-nonzero', message: `"${program}" exited with code ${ended.code}`, retryable: false })
    }
    // Killed by a signal we did not send (crash, OOM killer): report it the
    // way shells do, 128 + signal number.
    const signum = ended.signal === null ? 0 : osConstants.signals[ended.signal] ?? 0
    return finish('failed', 128 + signum, { code: 'exit-nonzero', message: `"${program}" was killed by ${ended.signal ?? 'a signal'}`, retryable: false })
  }

  /**
   * Waits, bounded, until stdout and stderr are closed so the captured output
   * is complete; gives up and destroys them if a process that escaped the
   * group still holds them open.
   */
  private async drain (child: ChildProcess): Promise<void> {
    const streams = [child.stdout, child.stderr].filter(s => s !== null && !s.closed)
    if (streams.length === 0) return
    let timer: NodeJS.Timeout | undefined
    const closed = Promise.all(streams.map(async s => await new Promise<void>(resolve => { s?.once('close', resolve) })))
    const timedOut = new Promise<'timeout'>(resolve => { timer = setTimeout(() => { resolve('timeout') }, this.drainTimeoutMs) })
    const result = await Promise.race([closed, timedOut])
    clearTimeout(timer)
    if (result === 'timeout') {
      this.log.warn('job output still open after exit; dropping the rest', { pid: child.pid })
      for (const s of streams) s?.destroy()
    }
  }
}
