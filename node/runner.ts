/**
 * Runs awarded attempts on the node's runtime and hands each outcome to the
 * reporter. Knows which attempts are running and can stop one (cancel,
 * revoke) or all of them (shutdown).
 */
import type { Award } from '../protocol/schemas.js'
import type { Logger } from '../common/log.js'
import { errorMessage } from '../common/errors.js'
import type { Runtime, RunOutcome } from './runtime/types.js'
import type { Reporter } from './reporter.js'

export interface RunningAttempt {
  jobId: string
  attempt: number
  token: string
  awardedAt: number
  startedAt: number | null
}

type StopReason = 'cancelled' | 'revoked' | 'shutdown'

interface Entry extends RunningAttempt {
  controller: AbortController
  stopReason: StopReason | null
  done: Promise<void>
}

export interface RunnerOptions {
  runtime: Runtime
  log: Logger
  reporter: Reporter
  /** Creates and returns the attempt's work dir. */
  workDir: (jobId: string, attempt: number) => Promise<string>
  /** Removes a work dir once the attempt has ended. */
  cleanup: (dir: string) => Promise<void>
  /** Called after an attempt has ended and its slot is free. */
  onFinished: () => void
}

export class Runner {
  private readonly entries = new Map<string, Entry>()

  constructor (private readonly options: RunnerOptions) {}

  get size (): number {
    return this.entries.size
  }

  has (jobId: string, attempt: number): boolean {
    return this.entries.has(`${jobId}/${attempt}`)
  }

  refs (): Array<{ jobId: string, attempt: number, token: string }> {
    return [...this.entries.values()].map(e => ({ jobId: e.jobId, attempt: e.attempt, token: e.token }))
  }

  list (): RunningAttempt[] {
    return [...this.entries.values()].map(({ jobId, attempt, token, awardedAt, startedAt }) => ({ jobId, attempt, token, awardedAt, startedAt }))
  }

  /** Runs an awarded attempt; `coordinator` (who awarded it) receives its reports while it answers. */
  run (award: Award, stopSignal: AbortSignal, coordinator?: string): void {
    const key = `${award.jobId}/${award.attempt}`
    if (this.entries.has(key)) return
    const controller = new AbortController()
    const entry: Entry = {
      jobId: award.jobId, attempt: award.attempt, token: award.token, awardedAt: Date.now(), startedAt: null,
      controller, stopReason: null, done: Promise.resolve()
    }
    this.entries.set(key, entry)
    const onStop = (): void => { this.stop(entry, 'shutdown') }
    stopSignal.addEventListener('abort', onStop, { once: true })
    entry.done = this.execute(award, entry, coordinator).finally(() => {
      stopSignal.removeEventListener('abort', onStop)
      this.entries.delete(key)
      this.options.onFinished()
    })
  }

  private async execute (award: Award, entry: Entry, coordinator?: string): Promise<void> {
    const { runtime, reporter, log } = this.options
    let dir: string | null = null
    let outcome: RunOutcome
    try {
      dir = await this.options.workDir(award.jobId, award.attempt)
      outcome = await runtime.run({
        jobId: award.jobId,
        attempt: award.attempt,
        spec: award.spec,
        workDir: dir,
        signal: entry.controller.signal,
        onStarted: (startedAt) => {
          entry.startedAt = startedAt
          reporter.started({ type: 'started', jobId: award.jobId, attempt: award.attempt, token: award.token, startedAt }, coordinator)
        }
      })
    } catch (err) {
      // Runtimes return outcomes for job failures; a throw is a node-side fault, so another node may do better.
      log.error('runtime failed', { jobId: award.jobId, error: errorMessage(err) })
      outcome = {
        outcome: 'failed', exitCode: null, stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false,
        startedAt: entry.startedAt, finishedAt: Date.now(),
        error: { code: 'node-error', message: `the node could not run the job: ${errorMessage(err)}`, retryable: true }
      }
    } finally {
      if (dir != null) {
        await this.options.cleanup(dir).catch((err: unknown) => { log.warn('work dir cleanup failed', { dir, error: errorMessage(err) }) })
      }
    }
    if (entry.stopReason === 'revoked') {
      log.info('attempt revoked; result not reported', { jobId: award.jobId, attempt: award.attempt })
      return
    }
    if (entry.stopReason === 'shutdown' && outcome.outcome === 'cancelled') {
      outcome = { ...outcome, outcome: 'failed', error: { code: 'node-shutdown', message: 'the node shut down before the job finished', retryable: true } }
    }
    await reporter.result({ type: 'result', jobId: award.jobId, attempt: award.attempt, token: award.token, ...outcome }, coordinator)
  }

  private stop (entry: Entry, reason: StopReason): void {
    if (entry.stopReason != null) return
    entry.stopReason = reason
    entry.controller.abort(new Error(reason))
  }

  /** Stops an attempt the coordinator cancelled; the token must match. */
  cancel (jobId: string, attempt: number, token: string, reason: string): void {
    const entry = this.entries.get(`${jobId}/${attempt}`)
    if (entry == null || entry.token !== token) return
    this.options.log.info('cancelling attempt', { jobId, attempt, reason })
    this.stop(entry, 'cancelled')
  }

  /** Stops an attempt that is no longer ours; its result would be refused. */
  revoke (jobId: string, attempt: number, reason: string): void {
    const entry = this.entries.get(`${jobId}/${attempt}`)
    if (entry == null) return
    this.options.log.warn('attempt revoked', { jobId, attempt, reason })
    this.stop(entry, 'revoked')
  }

  stopAll (reason: string): void {
    this.options.log.info('stopping all attempts', { reason, count: this.entries.size })
    for (const e of this.entries.values()) this.stop(e, 'shutdown')
  }

  /** Waits for running attempts to end; true if all did within the timeout. */
  async drain (timeoutMs: number): Promise<boolean> {
    if (this.entries.size === 0) return true
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<false>(resolve => { timer = setTimeout(() => { resolve(false) }, timeoutMs) })
    const all = Promise.all([...this.entries.values()].map(async e => { await e.done })).then(() => true as const)
    const ok = await Promise.race([all, timeout])
    clearTimeout(timer)
    return ok && this.entries.size === 0
  }
}
