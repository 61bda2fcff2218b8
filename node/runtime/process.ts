/**
 * A runtime that runs a job's command as a plain child process of the node.
 */
import { constants as osConstants } from 'node:os'
import type { JobError } from '../../protocol/schemas.js'
import { createLogger, type Logger } from '../../common/log.js'
import { errorMessage } from '../../common/errors.js'
import { OutputCollector, outcomeOf } from './output.js'
import { NodeSpawner, SpawnFailedError, type SpawnedProcess, type Spawner } from './spawner.js'
import type { RunOutcome, RunRequest, Runtime } from './types.js'

export interface ProcessRuntimeOptions {
  /** Time between SIGTERM and SIGKILL when a job is stopped. @default 2000 */
  killGraceMs?: number
  /** How long to wait for stdout/stderr to close after the job exited. @default 2000 */
  drainTimeoutMs?: number
  /**
   * What starts the programs: rgrid-spawn (spawn-helper.ts) or Node's own
   * child_process. @default new NodeSpawner()
   */
  spawner?: Spawner
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
  /** Starts the programs; `kind` says which implementation. */
  readonly spawner: Spawner

  constructor (options: ProcessRuntimeOptions = {}) {
    this.killGraceMs = options.killGraceMs ?? 2000
    this.drainTimeoutMs = options.drainTimeoutMs ?? 2000
    this.spawner = options.spawner ?? new NodeSpawner()
    this.log = options.logger ?? createLogger('runtime.process')
  }

  /** Starts the spawner (rgrid-spawn's process); Node's own needs nothing. */
  async start (): Promise<void> {
    await this.spawner.start()
  }

  /** Stops the spawner; running jobs are stopped through their signals first. */
  async stop (): Promise<void> {
    await this.spawner.stop()
  }

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
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? FALLBACK_PATH,
      HOME: workDir,
      LANG: 'C.UTF-8',
      ...spec.env,
      ...spec.secretEnv
    }

    let child: SpawnedProcess
    try {
      child = await this.spawner.spawn({ program, args, cwd: workDir, env, stdout, stderr, onOutput: request.onOutput })
    } catch (err) {
      if (err instanceof SpawnFailedError) {
        return finish('failed', null, { code: 'spawn-failed', message: `cannot start "${program}": ${err.message}`, retryable: false })
      }
      // The spawner itself is broken (its helper died): another attempt, here or elsewhere, can work.
      return finish('failed', null, { code: 'node-error', message: `cannot start "${program}": ${errorMessage(err)}`, retryable: true })
    }

    let stopReason: 'timeout' | 'cancelled' | null = null
    let graceTimer: NodeJS.Timeout | undefined
    const killGroup = (sig: NodeJS.Signals): void => {
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

    startedAt = Date.now()
    const timeoutTimer = setTimeout(() => { stopJob('timeout') }, spec.timeoutSeconds * 1000)
    signal.addEventListener('abort', onAbort, { once: true })
    // The signal may have been aborted while the program was being started.
    if (signal.aborted) onAbort()
    try {
      request.onStarted?.(startedAt, { pid: child.pid })
    } catch (err) {
      // A throwing callback must not take the job (or the node) down.
      this.log.warn('onStarted callback threw', { jobId: request.jobId, err: errorMessage(err) })
    }
    const ended = await child.ended
    clearTimeout(timeoutTimer)
    clearTimeout(graceTimer)
    signal.removeEventListener('abort', onAbort)

    // The job is its first process; whatever it left running in its group
    // would otherwise outlive it on the node (and hold our pipes open).
    killGroup('SIGKILL')
    if (!await child.drain(this.drainTimeoutMs)) {
      this.log.warn('job output still open after exit; dropping the rest', { jobId: request.jobId, pid: child.pid })
    }
    if (ended.kind === 'lost') {
      return finish('failed', null, { code: 'node-error', message: ended.message, retryable: true })
    }

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
}
