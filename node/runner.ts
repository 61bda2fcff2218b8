/**
 * Runs awarded attempts on the node's runtime and hands each outcome to the
 * reporter. Knows which attempts are running and can stop one (cancel,
 * revoke) or all of them (shutdown).
 */
import type { Artifact, Award, CoordinatorFrame, NodeFrame } from '../protocol/schemas.js'
import type { Logger } from '../common/log.js'
import { errorMessage } from '../common/errors.js'
import { imageRefusal } from '../protocol/matching.js'
import type { AdoptedAttempt, Runtime, RunOutcome } from './runtime/types.js'
import type { Reporter } from './reporter.js'
import { TransferError, type NodeTransfers, type TransferLimits } from './transfers.js'
import type { LogShipper } from './log-shipper.js'
import { secretMasker } from '../common/mask.js'

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

/** What is reported: the runtime's outcome and the outputs delivered. */
type Reported = RunOutcome & { artifacts?: Artifact[] }

/** Runs one attempt; `useDir` names its work dir, removed once it is over. */
type AttemptBody = (entry: Entry, useDir: (dir: string) => void) => Promise<Reported>

export interface RunnerOptions {
  runtime: Runtime
  log: Logger
  reporter: Reporter
  /** Creates and returns the attempt's work dir. */
  workDir: (jobId: string, attempt: number) => Promise<string>
  /** Removes a work dir once the attempt has ended. */
  cleanup: (dir: string) => Promise<void>
  /** Called when an attempt takes a slot (before it runs). @default nothing */
  onTaken?: () => void
  /** Called after an attempt has ended and its slot is free. */
  onFinished: () => void
  /** Called with each attempt's outcome as it is handed to the reporter (for `rgrid-node status`). */
  onResult?: (r: { jobId: string, attempt: number, outcome: string, exitCode: number | null, errorCode: string | null, finishedAt: number }) => void
  /** Ships live output lines while attempts run. @default none (no live logs) */
  logs?: LogShipper
  /** Fetches inputs and uploads outputs; jobs with either fail without it. */
  transfers?: NodeTransfers
  /**
   * Asks the coordinator (preferably `coordinator`) for upload URLs; fenced
   * by the token, so it answers `stale` to a replaced attempt.
   */
  requestUploads?: (request: OutputsRequest, coordinator?: string) => Promise<CoordinatorFrame>
}

/** An `outputs` frame without its request id. */
export type OutputsRequest = Omit<Extract<NodeFrame, { type: 'outputs' }>, 'rid'>

/** Used when the award does not say (an older coordinator). */
const DEFAULT_LIMITS: TransferLimits = { maxFileBytes: 256 * 1024 * 1024, maxJobBytes: 1024 * 1024 * 1024 }

/** The attempt is no longer ours (the coordinator said so while we delivered it): do not report it. */
class AttemptRevoked extends Error { override readonly name = 'AttemptRevoked' }

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
    const { runtime, reporter } = this.options
    const limits = { maxFileBytes: award.maxFileBytes ?? DEFAULT_LIMITS.maxFileBytes, maxJobBytes: award.maxJobBytes ?? DEFAULT_LIMITS.maxJobBytes }
    this.track(award, null, stopSignal, coordinator, async (entry, useDir) => {
      // Defence in depth: the coordinator matched the job against our capacity
      // (built from the runtime's policy), so this only trips when it erred.
      // Retryable: another node may allow it. The runtime checks again.
      const refused = policyRefusal(runtime, award)
      if (refused != null) return failure(entry, refused.code, refused.message, true)
      const needsDir = runtime.usesWorkDir !== false || award.inputs.length > 0 || award.spec.outputs.length > 0
      const dir = needsDir ? await this.options.workDir(award.jobId, award.attempt) : ''
      if (needsDir) useDir(dir)
      if (award.inputs.length > 0) {
        try {
          if (this.options.transfers == null) throw new TransferError('node-error', 'this node cannot fetch inputs', true)
          await this.options.transfers.stageInputs(award.inputs, dir, limits, entry.controller.signal)
        } catch (err) {
          if (entry.controller.signal.aborted) return { ...failure(entry, 'cancelled', 'cancelled while fetching inputs', false), outcome: 'cancelled' }
          return transferFailure(entry, err)
        }
      }
      const mask = secretMasker(award.spec.secretEnv)
      const live = this.options.logs?.open(award, coordinator, mask)
      const ran = await runtime.run({
        jobId: award.jobId,
        attempt: award.attempt,
        token: award.token,
        spec: award.spec,
        workDir: dir,
        signal: entry.controller.signal,
        ...(live != null ? { onOutput: (stream: 'stdout' | 'stderr', chunk: Uint8Array) => { live.write(stream, chunk) } } : {}),
        onStarted: (startedAt) => {
          entry.startedAt = startedAt
          reporter.started({ type: 'started', jobId: award.jobId, attempt: award.attempt, token: award.token, startedAt }, coordinator)
        }
      })
      // Secrets never leave the node in output (the job may print its own env).
      const outcome = {
        ...ran,
        stdout: ran.stdoutTruncated ? mask.cutHead(ran.stdout) : mask(ran.stdout),
        stderr: ran.stderrTruncated ? mask.cutHead(ran.stderr) : mask(ran.stderr)
      }
      // Live lines first: once the result is recorded, lines from this attempt are refused.
      await live?.close()
      return await this.deliver(award, award.spec.outputs.map(o => o.path), limits, dir, entry, outcome, coordinator)
    })
  }

  /** Uploads the declared outputs that exist, whatever the exit status (logs of a failure are outputs too). */
  private async deliver (ref: { jobId: string, attempt: number, token: string }, patterns: string[], limits: TransferLimits, dir: string,
    entry: Entry, outcome: RunOutcome, coordinator: string | undefined): Promise<Reported> {
    if (patterns.length === 0 || outcome.outcome === 'cancelled' || entry.stopReason != null) return outcome
    const { transfers, requestUploads } = this.options
    try {
      if (transfers == null || requestUploads == null) throw new TransferError('node-error', 'this node cannot upload outputs', true)
      const found = await transfers.collectOutputs(dir, patterns, limits)
      if (found.length === 0) return { ...outcome, artifacts: [] }
      const artifacts = found.map(({ path, size, sha256, contentType }) => ({ path, size, sha256, contentType }))
      const reply = await requestUploads({ type: 'outputs', jobId: ref.jobId, attempt: ref.attempt, token: ref.token, files: artifacts }, coordinator)
      if (reply.type === 'stale') throw new AttemptRevoked(reply.reason)
      if (reply.type === 'error') throw new TransferError(reply.code === 'too-large' ? 'output-too-large' : 'output-upload-failed', reply.message, reply.code !== 'too-large')
      if (reply.type !== 'uploads') throw new TransferError('output-upload-failed', `expected upload URLs, got ${reply.type}`, true)
      const urls = new Map(reply.files.map(f => [f.path, f.url]))
      await transfers.upload(found.map(f => ({ ...f, url: urls.get(f.path) ?? '' })), entry.controller.signal)
      return { ...outcome, artifacts }
    } catch (err) {
      if (err instanceof AttemptRevoked) throw err
      return { ...transferFailure(entry, err), stdout: outcome.stdout, stderr: outcome.stderr, exitCode: outcome.exitCode, startedAt: outcome.startedAt }
    }
  }

  /**
   * Takes back a job an earlier run of this node started (see
   * `Runtime.adopt`): it holds a slot and is reported like any other
   * attempt, unless the coordinator revokes it.
   */
  adopt (adopted: AdoptedAttempt, stopSignal: AbortSignal): void {
    this.track(adopted, adopted.startedAt, stopSignal, undefined, async (entry, useDir) => {
      if (adopted.workDir != null) useDir(adopted.workDir)
      const outcome = await adopted.resume(entry.controller.signal)
      if (adopted.workDir == null) return outcome
      return await this.deliver(adopted, adopted.outputs, adopted.limits ?? DEFAULT_LIMITS, adopted.workDir, entry, outcome, undefined)
    })
  }

  private track (ref: { jobId: string, attempt: number, token: string }, startedAt: number | null, stopSignal: AbortSignal, coordinator: string | undefined,
    body: AttemptBody): void {
    const key = `${ref.jobId}/${ref.attempt}`
    if (this.entries.has(key)) return
    const controller = new AbortController()
    const entry: Entry = {
      jobId: ref.jobId, attempt: ref.attempt, token: ref.token, awardedAt: Date.now(), startedAt,
      controller, stopReason: null, done: Promise.resolve()
    }
    this.entries.set(key, entry)
    this.options.onTaken?.()
    const onStop = (): void => { this.stop(entry, 'shutdown') }
    stopSignal.addEventListener('abort', onStop, { once: true })
    entry.done = this.execute(entry, coordinator, body).finally(() => {
      stopSignal.removeEventListener('abort', onStop)
      this.entries.delete(key)
      this.options.onFinished()
    })
  }

  private async execute (entry: Entry, coordinator: string | undefined, body: AttemptBody): Promise<void> {
    const { reporter, log } = this.options
    const { jobId, attempt, token } = entry
    let outcome: Reported
    let dir: string | null = null
    try {
      outcome = await body(entry, d => { dir = d })
    } catch (err) {
      if (err instanceof AttemptRevoked) {
        log.warn('attempt replaced while its outputs were delivered; result not reported', { jobId, attempt, reason: err.message })
        entry.stopReason = 'revoked'
      }
      // Runtimes return outcomes for job failures; a throw is a node-side fault, so another node may do better.
      log.error('runtime failed', { jobId, error: errorMessage(err) })
      outcome = {
        outcome: 'failed', exitCode: null, stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false,
        startedAt: entry.startedAt, finishedAt: Date.now(),
        error: { code: 'node-error', message: `the node could not run the job: ${errorMessage(err)}`, retryable: true }
      }
    } finally {
      if (dir != null) {
        const d = dir
        await this.options.cleanup(d).catch((err: unknown) => { log.warn('work dir cleanup failed', { dir: d, error: errorMessage(err) }) })
      }
    }
    if (entry.stopReason === 'revoked') {
      log.info('attempt revoked; result not reported', { jobId, attempt })
      return
    }
    if (entry.stopReason === 'shutdown' && outcome.outcome === 'cancelled') {
      outcome = { ...outcome, outcome: 'failed', error: { code: 'node-shutdown', message: 'the node shut down before the job finished', retryable: true } }
    }
    this.options.onResult?.({ jobId, attempt, outcome: outcome.outcome, exitCode: outcome.exitCode, errorCode: outcome.error?.code ?? null, finishedAt: outcome.finishedAt })
    await reporter.result({ type: 'result', jobId, attempt, token, ...outcome, artifacts: outcome.artifacts ?? [] }, coordinator)
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

/** Why the runtime's policy refuses the award (network, image), or null. */
function policyRefusal (runtime: Runtime, award: Award): { code: string, message: string } | null {
  if (award.spec.network && runtime.policy?.network !== true) {
    return { code: 'network-not-allowed', message: 'the job needs network access, which this node does not allow (--allow-network)' }
  }
  const refused = award.spec.image != null ? imageRefusal(runtime.policy?.images, award.spec.image) : null
  return refused != null ? { code: 'image-not-allowed', message: refused } : null
}

function failure (entry: Entry, code: string, message: string, retryable: boolean): RunOutcome {
  return {
    outcome: 'failed', exitCode: null, stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false,
    startedAt: entry.startedAt, finishedAt: Date.now(), error: { code, message, retryable }
  }
}

function transferFailure (entry: Entry, err: unknown): RunOutcome {
  if (err instanceof TransferError) return failure(entry, err.code, err.message, err.retryable)
  return failure(entry, 'node-error', `the node could not move the job's files: ${errorMessage(err)}`, true)
}
