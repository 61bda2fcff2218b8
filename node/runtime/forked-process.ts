/**
 * The `process` runtime as the node uses it: jobs are started by a small
 * host process (process-host.ts) instead of the node itself.
 *
 * Why: starting a process forks the parent, and fork costs grow with the
 * parent's memory. A libp2p node is ~130 MB; forking it took ~1.3 ms of the
 * node's own event loop per job, 44% of a node's CPU under load (profiled,
 * docs/design.md). The host is ~40 MB, forks in about half the time, and
 * does so off the node's event loop, which stays free for heartbeats and
 * sessions. Same semantics as ProcessRuntime, which the host runs.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { killOrphanedJob, lowerPriority } from './job-helpers.js'
import { fileURLToPath } from 'node:url'
import { join, dirname } from 'node:path'
import type { Logger } from '../../common/log.js'
import type { RunOutcome, RunRequest, Runtime } from './types.js'
import type { HostReply, HostRequest } from './host-protocol.js'

const HOST = join(dirname(fileURLToPath(import.meta.url)), 'process-host.js')

interface Pending {
  resolve: (outcome: RunOutcome) => void
  onStarted: ((at: number) => void) | undefined
  onOutput: RunRequest['onOutput']
  startedAt: number | null
  /** The job's process (and process group) id, to clean up if the host dies. */
  pid: number | null
}

export interface ForkedProcessRuntimeOptions {
  log: Logger
  /** How long start() waits for the host to say it is ready, in ms. @default 10000 */
  startTimeoutMs?: number
  /** V8 heap limit of the host, in MiB: it only starts processes. @default 64 */
  hostHeapMb?: number
  /**
   * How much lower than the node's own CPU priority the host runs: added to
   * the node's nice value, 19 at most. The host's forks (a few ms of CPU per
   * job) then yield to the node's heartbeats, lease renewals and sessions.
   * Jobs inherit the value, but each job is a new session, and where the
   * kernel groups sessions for scheduling (Linux autogroup) a job's nice
   * value ranks it only within its own session, not against the node.
   * 0 runs the host at the node's priority.
   * @default 10
   */
  jobNice?: number
}

export class ForkedProcessRuntime implements Runtime {
  readonly name = 'process' as const
  private host: ChildProcess | null = null
  private starting: Promise<ChildProcess> | null = null
  private nextId = 1
  private readonly pending = new Map<number, Pending>()
  private stopped = false
  readonly stats = { hostRestarts: 0 }

  constructor (private readonly options: ForkedProcessRuntimeOptions) {}

  async start (): Promise<void> {
    this.stopped = false
    await this.ensureHost()
  }

  private async ensureHost (): Promise<ChildProcess> {
    if (this.host != null && this.host.connected) return this.host
    this.starting ??= this.spawnHost().finally(() => { this.starting = null })
    return await this.starting
  }

  private async spawnHost (): Promise<ChildProcess> {
    const child = fork(HOST, [], {
      serialization: 'advanced',
      execArgv: [`--max-old-space-size=${this.options.hostHeapMb ?? 64}`],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc']
    })
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error('the process-runtime host did not start')) }, this.options.startTimeoutMs ?? 10_000)
      child.once('message', () => { clearTimeout(timer); resolve() })
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`the process-runtime host exited with ${code} while starting`)) })
    })
    lowerPriority(child.pid, this.options.jobNice ?? 10, this.options.log, 'the process-runtime host')
    child.on('message', (msg: unknown) => { this.onReply(msg as HostReply) })
    child.once('exit', (code, signal) => { this.onHostExit(child, code, signal) })
    this.host = child
    return child
  }

  private onReply (msg: HostReply): void {
    if (msg.type === 'ready') return
    const p = this.pending.get(msg.id)
    if (p == null) return
    if (msg.type === 'output') {
      p.onOutput?.(msg.stream, msg.data)
      return
    }
    if (msg.type === 'started') {
      p.startedAt = msg.at
      p.pid = msg.pid
      p.onStarted?.(msg.at)
      return
    }
    this.pending.delete(msg.id)
    if (msg.type === 'outcome') p.resolve(msg.outcome)
    else p.resolve(this.hostFailure(p.startedAt, `the process-runtime host failed: ${msg.message}`))
  }

  private hostFailure (startedAt: number | null, message: string): RunOutcome {
    return {
      outcome: 'failed', exitCode: null, stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false,
      startedAt, finishedAt: Date.now(), error: { code: 'node-error', message, retryable: true }
    }
  }

  private onHostExit (child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.host === child) this.host = null
    if (this.pending.size === 0 && this.stopped) return
    this.options.log.error('process-runtime host exited; its jobs failed (retryable)', { code, signal, jobs: this.pending.size })
    for (const [id, p] of this.pending) {
      this.pending.delete(id)
      // The host cannot stop its jobs any more; their process groups must not outlive it.
      if (p.pid != null) killOrphanedJob(p.pid, this.options.log)
      p.resolve(this.hostFailure(p.startedAt, `the process-runtime host exited (${signal ?? code}) while the job ran`))
    }
    if (!this.stopped) this.stats.hostRestarts++
  }

  async run (request: RunRequest): Promise<RunOutcome> {
    let host: ChildProcess
    try {
      host = await this.ensureHost()
    } catch (err) {
      return this.hostFailure(null, (err as Error).message)
    }
    const id = this.nextId++
    const outcome = new Promise<RunOutcome>(resolve => {
      this.pending.set(id, { resolve, onStarted: request.onStarted, onOutput: request.onOutput, startedAt: null, pid: null })
    })
    const cancel = (): void => { this.sendTo(host, { type: 'cancel', id }) }
    request.signal.addEventListener('abort', cancel, { once: true })
    this.sendTo(host, { type: 'run', id, jobId: request.jobId, attempt: request.attempt, spec: request.spec, workDir: request.workDir, live: request.onOutput != null })
    if (request.signal.aborted) cancel()
    try {
      return await outcome
    } finally {
      request.signal.removeEventListener('abort', cancel)
    }
  }

  private sendTo (host: ChildProcess, msg: HostRequest): void {
    if (!host.connected) return // its exit handler fails the pending jobs
    host.send(msg, (err) => {
      if (err != null) this.options.log.warn('could not reach the process-runtime host', { error: err.message })
    })
  }

  async stop (): Promise<void> {
    this.stopped = true
    const host = this.host
    this.host = null
    if (host == null || host.exitCode != null) return
    await new Promise<void>(resolve => {
      const timer = setTimeout(() => { host.kill('SIGKILL'); resolve() }, 5_000)
      host.once('exit', () => { clearTimeout(timer); resolve() })
      host.disconnect()
    })
  }
}
