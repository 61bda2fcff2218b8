/**
 * The simulation runtime (`rgrid-node join … --runtime sim`): "runs" a job by
 * waiting its given duration and ending with its given exit code, so
 * hundreds of jobs per second can be studied on one machine. Everything
 * around it (bidding, awards, leases, rescheduling, reports) is the real
 * code. A job's command is `["sim", DURATION_MS, EXIT_CODE]`; anything else
 * fails as `spawn-failed`.
 */
import type { RunOutcome, RunRequest, Runtime } from './types.js'

export class SimRuntime implements Runtime {
  readonly name = 'sim' as const
  readonly usesWorkDir = false

  async start (): Promise<void> {}
  async stop (): Promise<void> {}

  async run (request: RunRequest): Promise<RunOutcome> {
    const [program, durationText, exitText] = request.spec.command
    const durationMs = Number(durationText)
    const exitCode = Number(exitText ?? 0)
    const base = { stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false }
    if (program !== 'sim' || !Number.isFinite(durationMs) || durationMs < 0 || !Number.isInteger(exitCode) || exitCode < 0 || exitCode > 255) {
      return { ...base, outcome: 'failed', exitCode: null, startedAt: null, finishedAt: Date.now(), error: { code: 'spawn-failed', message: 'the sim runtime runs ["sim", DURATION_MS, EXIT_CODE] only', retryable: false } }
    }
    if (request.signal.aborted) return { ...base, outcome: 'cancelled', exitCode: null, startedAt: null, finishedAt: Date.now(), error: { code: 'cancelled', message: 'cancelled before start', retryable: false } }
    const startedAt = Date.now()
    request.onStarted?.(startedAt)
    const limitMs = request.spec.timeoutSeconds * 1000
    const stop = await new Promise<'done' | 'cancelled' | 'timeout'>(resolve => {
      const done = setTimeout(() => { cleanup(); resolve('done') }, Math.min(durationMs, limitMs + 1))
      const timeout = durationMs > limitMs ? setTimeout(() => { cleanup(); resolve('timeout') }, limitMs) : null
      const onAbort = (): void => { cleanup(); resolve('cancelled') }
      const cleanup = (): void => { clearTimeout(done); if (timeout != null) clearTimeout(timeout); request.signal.removeEventListener('abort', onAbort) }
      request.signal.addEventListener('abort', onAbort, { once: true })
    })
    const finishedAt = Date.now()
    if (stop === 'cancelled') return { ...base, outcome: 'cancelled', exitCode: null, startedAt, finishedAt, error: { code: 'cancelled', message: 'job was cancelled', retryable: false } }
    if (stop === 'timeout') return { ...base, outcome: 'failed', exitCode: null, startedAt, finishedAt, error: { code: 'timeout', message: `job exceeded its timeout of ${request.spec.timeoutSeconds}s and was killed`, retryable: false } }
    if (exitCode === 0) return { ...base, outcome: 'succeeded', exitCode: 0, startedAt, finishedAt, error: null, stdout: `sim ${durationMs} ms\n` }
    return { ...base, outcome: 'failed', exitCode, startedAt, finishedAt, error: { code: 'exit-nonzero', message: `"sim" exited with code ${exitCode}`, retryable: false } }
  }
}
