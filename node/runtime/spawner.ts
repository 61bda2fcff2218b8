/**
 * How the process runtime starts a job's program: the contract, and the
 * implementation over Node's own child_process. spawn-helper.ts has the
 * faster one over rgrid-spawn (posix_spawn).
 */
import { spawn } from 'node:child_process'
import type { OutputCollector } from './output.js'

/** What a spawner needs to start one job's program. */
export interface SpawnRequest {
  program: string
  args: string[]
  /** Working directory; must exist. */
  cwd: string
  /** The job's whole environment (nothing is inherited). */
  env: Record<string, string>
  /** Receive the kept tail of stdout and stderr; complete once `drain()` resolved. */
  stdout: OutputCollector
  stderr: OutputCollector
  /** Live output, chunk by chunk; when set, collectors are fed as chunks arrive. */
  onOutput?: ((stream: 'stdout' | 'stderr', chunk: Uint8Array) => void) | undefined
}

/** How a started program ended. */
export type ProcessEnd =
  | { kind: 'exit', code: number | null, signal: NodeJS.Signals | null }
  /** The spawner itself went away; the job's exit status is unknown. */
  | { kind: 'lost', message: string }

/** A started program: its own session and process group (pgid = pid). */
export interface SpawnedProcess {
  readonly pid: number
  /** Resolves when the program's first process exited; never rejects. */
  readonly ended: Promise<ProcessEnd>
  /**
   * Waits, at most `timeoutMs`, until stdout and stderr are closed, so the
   * collectors hold all output. Resolves false when it gave up, because a
   * process that left the job's group still holds them open.
   */
  drain: (timeoutMs: number) => Promise<boolean>
}

/** The program could not be started; the message names it. Not retryable. */
export class SpawnFailedError extends Error {
  override readonly name = 'SpawnFailedError'
  constructor (message: string, readonly code: string | undefined) { super(message) }
}

/** The spawner itself is not working (its helper died or cannot start). Retryable. */
export class SpawnerUnavailableError extends Error {
  override readonly name = 'SpawnerUnavailableError'
}

export interface Spawner {
  /** Which implementation, for logs and the node's status. */
  readonly kind: 'helper' | 'node'
  start: () => Promise<void>
  stop: () => Promise<void>
  /** Resolves once the program runs; rejects with SpawnFailedError or SpawnerUnavailableError. */
  spawn: (request: SpawnRequest) => Promise<SpawnedProcess>
}

/**
 * Starts programs with Node's `child_process.spawn`. Node forks the whole
 * calling process for each one, which is why the node runs this in a small
 * host process (forked-process.ts) when rgrid-spawn is not available.
 */
export class NodeSpawner implements Spawner {
  readonly kind = 'node' as const
  async start (): Promise<void> {}
  async stop (): Promise<void> {}

  async spawn (request: SpawnRequest): Promise<SpawnedProcess> {
    let child
    try {
      child = spawn(request.program, request.args, { cwd: request.cwd, env: request.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
    } catch (err) {
      // spawn throws synchronously for invalid arguments (e.g. a NUL byte).
      throw new SpawnFailedError((err as Error).message, (err as NodeJS.ErrnoException).code)
    }
    const { stdout, stderr, onOutput } = request
    child.stdout.on('data', (chunk: Buffer) => { stdout.push(chunk); onOutput?.('stdout', chunk) })
    child.stderr.on('data', (chunk: Buffer) => { stderr.push(chunk); onOutput?.('stderr', chunk) })
    const ended = new Promise<ProcessEnd>(resolve => {
      child.once('exit', (code, signal) => { resolve({ kind: 'exit', code, signal }) })
    })
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        // 'error' before 'spawn': the program never ran (ENOENT, EACCES, a missing cwd).
        child.stdout.destroy()
        child.stderr.destroy()
        reject(new SpawnFailedError(err.message, err.code))
      }
      child.once('error', onError)
      child.once('spawn', () => { child.off('error', onError); resolve() })
    })
    const pid = child.pid
    if (pid === undefined) throw new SpawnFailedError(`spawn ${request.program}: no pid`, undefined)
    const drain = async (timeoutMs: number): Promise<boolean> => {
      const open = [child.stdout, child.stderr].filter(s => !s.closed)
      if (open.length === 0) return true
      let timer: NodeJS.Timeout | undefined
      const closed = Promise.all(open.map(async s => { await new Promise<void>(resolve => { s.once('close', resolve) }) }))
      const timedOut = new Promise<'timeout'>(resolve => { timer = setTimeout(() => { resolve('timeout') }, timeoutMs) })
      const result = await Promise.race([closed, timedOut])
      clearTimeout(timer)
      if (result !== 'timeout') return true
      for (const s of open) s.destroy()
      return false
    }
    return { pid, ended, drain }
  }
}
