/**
 * A spawner over rgrid-spawn (spawn-helper/rgrid-spawn.c), a small C program
 * that starts jobs with posix_spawn and keeps the tail of their output.
 *
 * Why: Node's child_process forks the whole calling process per job, 3-5 ms
 * of CPU each on the machines we measured; posix_spawn (vfork semantics)
 * costs a fraction of that. One helper serves the whole node, talking over
 * its stdin and stdout (wire format in the C source), so the node needs no
 * host process of its own for the process runtime.
 */
import { spawn as spawnChild, type ChildProcess } from 'node:child_process'
import { constants as osConstants, getPriority, setPriority } from 'node:os'
import { fileURLToPath } from 'node:url'
import { join, dirname } from 'node:path'
import type { Logger } from '../../common/log.js'
import { errorMessage } from '../../common/errors.js'
import {
  SpawnFailedError, SpawnerUnavailableError,
  type ProcessEnd, type SpawnedProcess, type SpawnRequest, type Spawner
} from './spawner.js'

/** Where `npm run build` puts the compiled helper. */
export const SPAWN_HELPER_PATH = join(dirname(fileURLToPath(import.meta.url)), 'spawn-helper', 'rgrid-spawn')

const REQ_RUN = 1
const REQ_CLOSE = 2
const REP_STARTED = 1
const REP_FAILED = 2
const REP_OUTPUT = 3
const REP_EXITED = 4
const REP_DONE = 5
/** Largest reply the helper sends: DONE with two 16 MiB tails, plus headers. */
const MAX_REPLY_BYTES = (32 << 20) + 64

const errnoNames = new Map(Object.entries(osConstants.errno).map(([name, n]) => [n, name]))
const signalNames = new Map(Object.entries(osConstants.signals).map(([name, n]) => [n, name as NodeJS.Signals]))

export interface SpawnHelperOptions {
  log: Logger
  /** The compiled helper. @default SPAWN_HELPER_PATH */
  path?: string
  /**
   * Nice levels added to the node's for the helper, which its jobs inherit,
   * 19 at most; see ForkedProcessRuntimeOptions.jobNice. @default 10
   */
  jobNice?: number
  /** How long stop() lets the helper stop its jobs before killing it, in ms. @default 5000 */
  stopTimeoutMs?: number
}

interface Entry {
  program: string
  request: SpawnRequest
  started: { resolve: (pid: number) => void, reject: (err: Error) => void } | null
  pid: number | null
  end: (e: ProcessEnd) => void
  exited: boolean
  done: () => void
  isDone: boolean
}

/** Starts jobs through one long-lived rgrid-spawn process; restarts it when it dies. */
export class SpawnHelper implements Spawner {
  readonly kind = 'helper' as const
  private child: ChildProcess | null = null
  private nextId = 1
  private readonly entries = new Map<number, Entry>()
  private pending: Buffer[] = []
  private pendingBytes = 0
  private stopped = false
  /** Helper processes that died under running jobs. */
  readonly stats = { restarts: 0 }

  constructor (private readonly options: SpawnHelperOptions) {}

  async start (): Promise<void> {
    this.stopped = false
    await this.ensureChild()
  }

  private async ensureChild (): Promise<ChildProcess> {
    if (this.child != null) return this.child
    const child = spawnChild(this.options.path ?? SPAWN_HELPER_PATH, [], { stdio: ['pipe', 'pipe', 'inherit'] })
    await new Promise<void>((resolve, reject) => {
      child.once('error', (err) => { reject(new SpawnerUnavailableError(`cannot start rgrid-spawn: ${err.message}`)) })
      child.once('spawn', resolve)
    })
    child.on('error', (err) => { this.options.log.warn('rgrid-spawn pipe error', { error: err.message }) })
    this.lowerPriority(child)
    this.pending = []
    this.pendingBytes = 0
    child.stdout?.on('data', (chunk: Buffer) => { this.onData(child, chunk) })
    child.stdin?.on('error', (err) => {
      // EPIPE when the helper died; its exit handler fails the jobs.
      this.options.log.debug('rgrid-spawn stdin error', { error: err.message })
    })
    child.once('exit', (code, signal) => { this.onExit(child, code, signal) })
    this.child = child
    return child
  }

  private lowerPriority (child: ChildProcess): void {
    const by = this.options.jobNice ?? 10
    if (by === 0 || child.pid == null) return
    try {
      setPriority(child.pid, Math.min(19, getPriority() + by))
    } catch (err) {
      this.options.log.warn('cannot lower the priority of rgrid-spawn; jobs run at the node\'s priority', { error: errorMessage(err) })
    }
  }

  async spawn (request: SpawnRequest): Promise<SpawnedProcess> {
    if (this.stopped) throw new SpawnerUnavailableError('the process runtime is stopping')
    const strings = [request.cwd, request.program, ...request.args, ...Object.entries(request.env).map(([k, v]) => `${k}=${v}`)]
    // The wire format separates strings with NUL; Node's own spawn refuses them too.
    if (strings.some(s => s.includes('\0'))) {
      throw new SpawnFailedError(`spawn ${request.program}: arguments, environment and working directory must not contain NUL bytes`, 'ERR_INVALID_ARG_VALUE')
    }
    const child = await this.ensureChild()
    const id = this.nextId++
    const encoded = strings.map(s => Buffer.from(s + '\0', 'utf8'))
    const head = Buffer.alloc(4 + 1 + 17)
    const body = encoded.reduce((n, b) => n + b.length, 0)
    head.writeUInt32LE(1 + 17 + body, 0)
    head.writeUInt8(REQ_RUN, 4)
    head.writeUInt32LE(id, 5)
    head.writeUInt32LE(request.stdout.limit, 9)
    head.writeUInt8(request.onOutput != null ? 1 : 0, 13)
    head.writeUInt32LE(1 + request.args.length, 14)
    head.writeUInt32LE(Object.keys(request.env).length, 18)
    let end!: (e: ProcessEnd) => void
    let done!: () => void
    const ended = new Promise<ProcessEnd>(resolve => { end = resolve })
    const drained = new Promise<void>(resolve => { done = resolve })
    const started = new Promise<number>((resolve, reject) => {
      this.entries.set(id, { program: request.program, request, started: { resolve, reject }, pid: null, end, exited: false, done, isDone: false })
    })
    child.stdin?.write(Buffer.concat([head, ...encoded]))
    const pid = await started
    return { pid, ended, drain: async (timeoutMs) => await this.drain(id, drained, timeoutMs) }
  }

  private async drain (id: number, drained: Promise<void>, timeoutMs: number): Promise<boolean> {
    const entry = this.entries.get(id)
    if (entry == null || entry.isDone) return true
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<'timeout'>(resolve => { timer = setTimeout(() => { resolve('timeout') }, timeoutMs) })
    const result = await Promise.race([drained, timedOut])
    clearTimeout(timer)
    if (result !== 'timeout') return true
    // Take what the helper has and stop waiting; its DONE reply follows at once.
    const req = Buffer.alloc(9)
    req.writeUInt32LE(5, 0)
    req.writeUInt8(REQ_CLOSE, 4)
    req.writeUInt32LE(id, 5)
    this.child?.stdin?.write(req)
    await drained
    return false
  }

  private onData (child: ChildProcess, chunk: Buffer): void {
    if (child !== this.child) return
    this.pending.push(chunk)
    this.pendingBytes += chunk.length
    while (this.pendingBytes >= 4) {
      let buf = this.pending[0] as Buffer
      if (buf.length < 4) { buf = this.flatten() }
      const len = buf.readUInt32LE(0)
      if (len > MAX_REPLY_BYTES || len < 5) {
        this.options.log.error('rgrid-spawn sent a malformed reply; restarting it', { bytes: len })
        child.kill('SIGKILL')
        return
      }
      if (this.pendingBytes < 4 + len) return
      if (buf.length < 4 + len) buf = this.flatten()
      const frame = buf.subarray(4, 4 + len)
      if (buf.length === 4 + len) this.pending.shift()
      else this.pending[0] = buf.subarray(4 + len)
      this.pendingBytes -= 4 + len
      this.onReply(frame)
    }
  }

  private flatten (): Buffer {
    const all = Buffer.concat(this.pending)
    this.pending = [all]
    return all
  }

  private onReply (frame: Buffer): void {
    const type = frame[0]
    const id = frame.readUInt32LE(1)
    const entry = this.entries.get(id)
    if (entry == null) return
    switch (type) {
      case REP_STARTED: {
        entry.pid = frame.readInt32LE(5)
        entry.started?.resolve(entry.pid)
        entry.started = null
        return
      }
      case REP_FAILED: {
        const errno = frame.readInt32LE(5)
        const code = errnoNames.get(errno) ?? `errno ${errno}`
        this.entries.delete(id)
        // The same words as Node's own spawn error, so logs read alike.
        entry.started?.reject(new SpawnFailedError(`spawn ${entry.program} ${code}`, code))
        return
      }
      case REP_OUTPUT: {
        const stream = frame[5] === 1 ? 'stdout' : 'stderr'
        // A copy, so a small chunk does not keep a whole read buffer alive.
        const data = Buffer.from(frame.subarray(6))
        entry.request[stream].push(data)
        entry.request.onOutput?.(stream, data)
        return
      }
      case REP_EXITED: {
        const code = frame.readInt32LE(5)
        const signum = frame.readInt32LE(9)
        entry.exited = true
        entry.end({ kind: 'exit', code: code < 0 ? null : code, signal: signum === 0 ? null : signalNames.get(signum) ?? null })
        return
      }
      case REP_DONE: {
        const outTotal = Number(frame.readBigUInt64LE(5))
        const errTotal = Number(frame.readBigUInt64LE(13))
        const outLen = frame.readUInt32LE(21)
        const out = frame.subarray(25, 25 + outLen)
        const errLen = frame.readUInt32LE(25 + outLen)
        const err = frame.subarray(29 + outLen, 29 + outLen + errLen)
        if (entry.request.onOutput == null) {
          entry.request.stdout.restore(out, outTotal)
          entry.request.stderr.restore(err, errTotal)
        }
        this.entries.delete(id)
        entry.isDone = true
        entry.done()
        return
      }
      default:
        this.options.log.error('rgrid-spawn sent an unknown reply; restarting it', { type })
        this.child?.kill('SIGKILL')
    }
  }

  private onExit (child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child === child) this.child = null
    if (this.entries.size === 0) return
    if (!this.stopped) this.stats.restarts++
    this.options.log.error('rgrid-spawn exited under running jobs; they failed (retryable)', { code, signal, jobs: this.entries.size })
    const message = `rgrid-spawn exited (${signal ?? code}) while the job ran`
    for (const [id, entry] of this.entries) {
      this.entries.delete(id)
      if (entry.started != null) {
        entry.started.reject(new SpawnerUnavailableError(message))
        continue
      }
      // Nobody can reap or stop these any more; their groups must not outlive the helper.
      if (entry.pid != null && !entry.exited) {
        try {
          process.kill(-entry.pid, 'SIGKILL')
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ESRCH') this.options.log.warn('could not kill an orphaned job', { pid: entry.pid, error: errorMessage(err) })
        }
      }
      if (!entry.exited) entry.end({ kind: 'lost', message })
      entry.isDone = true
      entry.done()
    }
  }

  /** Closes the helper's stdin: it stops its jobs (TERM, then KILL after 2 s) and exits. */
  async stop (): Promise<void> {
    this.stopped = true
    const child = this.child
    if (child == null || child.exitCode != null || child.signalCode != null) return
    await new Promise<void>(resolve => {
      const timer = setTimeout(() => { child.kill('SIGKILL'); resolve() }, this.options.stopTimeoutMs ?? 5000)
      child.once('exit', () => { clearTimeout(timer); resolve() })
      child.stdin?.end()
    })
  }
}
