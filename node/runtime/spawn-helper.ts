/**
 * A spawner over rgrid-spawn (node/runtime/spawn-helper/), a small C program
 * that starts jobs with posix_spawn and keeps the tail of their output.
 *
 * Why: Node's child_process forks the whole calling process per job, 3-5 ms
 * of CPU each on the machines we measured; posix_spawn (vfork semantics)
 * costs a fraction of that. One helper serves the whole node, talking over
 * its stdin and stdout (wire format in rgrid-spawn.c's header comment), so the node needs no
 * host process of its own for the process runtime.
 */
import { spawn as spawnChild, type ChildProcess } from 'node:child_process'
import { constants as osConstants } from 'node:os'
import { fileURLToPath } from 'node:url'
import { join, dirname } from 'node:path'
import type { Logger } from '../../common/log.js'
import { errorMessage } from '../../common/errors.js'
import { killOrphanedJob, lowerPriority } from './job-helpers.js'
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
const REP_READY = 6
/** The wire format's version; the helper announces it in READY. */
const PROTOCOL_VERSION = 1
/** Largest reply the helper sends: DONE with two 16 MiB tails, plus headers. */
const MAX_REPLY_BYTES = (32 << 20) + 64
/** The helper's own limits (MAX_REQUEST, MAX_KEEP): past them it exits, taking every job with it. */
const MAX_REQUEST_BYTES = 8 << 20
const MAX_KEEP_BYTES = 16 << 20

/** Number → name, the first of aliases (SIGABRT, not SIGIOT; EAGAIN, not EWOULDBLOCK), as Node names them. */
function namesOf<T extends string> (table: Record<string, number>): Map<number, T> {
  const names = new Map<number, T>()
  for (const [name, n] of Object.entries(table)) if (!names.has(n)) names.set(n, name as T)
  return names
}
const errnoNames = namesOf<string>(osConstants.errno)
const signalNames = namesOf<NodeJS.Signals>(osConstants.signals)

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
  /** How long a new helper may take to say it is ready, in ms. @default 5000 */
  startTimeoutMs?: number
}

interface Entry {
  request: SpawnRequest
  started: { resolve: (pid: number) => void, reject: (err: Error) => void } | null
  pid: number | null
  end: (e: ProcessEnd) => void
  exited: boolean
  done: () => void
}

/** Starts jobs through one long-lived rgrid-spawn process; restarts it when it dies. */
export class SpawnHelper implements Spawner {
  readonly kind = 'helper' as const
  private child: ChildProcess | null = null
  private starting: Promise<ChildProcess> | null = null
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

  /** The running helper, or one being started: two jobs at once must not start two. */
  private async ensureChild (): Promise<ChildProcess> {
    if (this.child != null) return this.child
    this.starting ??= this.launch().finally(() => { this.starting = null })
    return await this.starting
  }

  private async launch (): Promise<ChildProcess> {
    const child = spawnChild(this.options.path ?? SPAWN_HELPER_PATH, [], { stdio: ['pipe', 'pipe', 'inherit'] })
    child.stdin?.on('error', (err) => {
      // EPIPE when the helper died; its close handler fails the jobs.
      this.options.log.debug('rgrid-spawn stdin error', { error: err.message })
    })
    this.pending = []
    this.pendingBytes = 0
    // Ready when the helper says so in its own protocol: a binary that starts
    // but is not rgrid-spawn (or not this version) must not take jobs.
    let ready!: () => void
    const readyOrNot = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new SpawnerUnavailableError('rgrid-spawn did not say it was ready')) }, this.options.startTimeoutMs ?? 5000)
      ready = () => { clearTimeout(timer); resolve() }
      child.once('error', (err) => { clearTimeout(timer); reject(new SpawnerUnavailableError(`cannot start rgrid-spawn: ${err.message}`)) })
      child.once('exit', (code, signal) => { clearTimeout(timer); reject(new SpawnerUnavailableError(`rgrid-spawn exited (${signal ?? code}) while starting`)) })
    })
    this.readyWaiter = { child, ready }
    child.stdout?.on('data', (chunk: Buffer) => { this.onData(child, chunk) })
    try {
      await readyOrNot
    } catch (err) {
      this.readyWaiter = null
      child.kill('SIGKILL')
      throw err
    }
    child.on('error', (err) => { this.options.log.warn('rgrid-spawn process error', { error: err.message }) })
    // 'close', not 'exit': replies still in the pipe when the helper exits are read first.
    child.once('close', (code, signal) => { this.onClose(child, code, signal) })
    lowerPriority(child.pid, this.options.jobNice ?? 10, this.options.log, 'rgrid-spawn')
    this.child = child
    return child
  }

  /** The helper being started, until its READY arrives. */
  private readyWaiter: { child: ChildProcess, ready: () => void } | null = null

  async spawn (request: SpawnRequest): Promise<SpawnedProcess> {
    if (this.stopped) throw new SpawnerUnavailableError('the process runtime is stopping')
    const strings = [request.cwd, request.program, ...request.args, ...Object.entries(request.env).map(([k, v]) => `${k}=${v}`)]
    // The wire format separates strings with NUL; Node's own spawn refuses them too.
    if (strings.some(s => s.includes('\0'))) {
      throw new SpawnFailedError(`spawn ${request.program}: arguments, environment and working directory must not contain NUL bytes`, 'ERR_INVALID_ARG_VALUE')
    }
    const encoded = strings.map(s => Buffer.from(s + '\0', 'utf8'))
    const head = Buffer.alloc(4 + 1 + 17)
    const body = encoded.reduce((n, b) => n + b.length, 0)
    if (1 + 17 + body > MAX_REQUEST_BYTES) {
      throw new SpawnFailedError(`spawn ${request.program}: command, environment and working directory take ${body} bytes, more than rgrid-spawn's ${MAX_REQUEST_BYTES}`, 'E2BIG')
    }
    // The helper keeps one tail length for both streams.
    if (request.stdout.limit !== request.stderr.limit || request.stdout.limit > MAX_KEEP_BYTES) {
      throw new RangeError(`rgrid-spawn keeps at most ${MAX_KEEP_BYTES} bytes, the same for stdout and stderr; got ${request.stdout.limit} and ${request.stderr.limit}`)
    }
    const child = await this.ensureChild()
    const id = this.nextId
    // Ids are u32 on the wire; after 2^32 jobs they start over (none can still be running).
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1
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
      this.entries.set(id, { request, started: { resolve, reject }, pid: null, end, exited: false, done })
    })
    child.stdin?.write(Buffer.concat([head, ...encoded]))
    const pid = await started
    return { pid, ended, drain: async (timeoutMs) => await this.drain(id, drained, timeoutMs) }
  }

  private async drain (id: number, drained: Promise<void>, timeoutMs: number): Promise<boolean> {
    // An entry leaves the map once its output is complete.
    if (!this.entries.has(id)) return true
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
    // The helper answers a CLOSE at once; one that does not is wedged, and the job must not hang on it.
    const answered = await Promise.race([drained.then(() => true), new Promise<false>(resolve => { timer = setTimeout(() => { resolve(false) }, timeoutMs) })])
    clearTimeout(timer)
    if (!answered) {
      this.options.log.warn('rgrid-spawn did not answer a CLOSE; giving up on the job\'s output', { id })
      this.entries.delete(id)
    }
    return false
  }

  private onData (child: ChildProcess, chunk: Buffer): void {
    if (child !== this.child && child !== this.readyWaiter?.child) return
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
    if (type === REP_READY) {
      const version = frame.length >= 9 ? frame.readUInt32LE(5) : -1
      const waiter = this.readyWaiter
      this.readyWaiter = null
      if (version !== PROTOCOL_VERSION) {
        this.options.log.error('rgrid-spawn speaks another protocol version; rebuild it (npm run build)', { version, expected: PROTOCOL_VERSION })
        waiter?.child.kill('SIGKILL')
        return
      }
      waiter?.ready()
      return
    }
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
        entry.started?.reject(new SpawnFailedError(`spawn ${entry.request.program} ${code}`, code))
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
        // A job ended by stop() (the helper's SIGTERM) did not fail on its own: another attempt may succeed.
        if (this.stopped) entry.end({ kind: 'lost', message: 'the process runtime stopped while the job ran' })
        else entry.end({ kind: 'exit', code: code < 0 ? null : code, signal: signum === 0 ? null : signalNames.get(signum) ?? null })
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
        entry.done()
        return
      }
      default:
        this.options.log.error('rgrid-spawn sent an unknown reply; restarting it', { type })
        this.child?.kill('SIGKILL')
    }
  }

  private onClose (child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
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
      if (entry.pid != null && !entry.exited) killOrphanedJob(entry.pid, this.options.log)
      if (!entry.exited) entry.end({ kind: 'lost', message })
      entry.done()
    }
  }

  /** Closes the helper's stdin: it stops its jobs (TERM, then KILL after 2 s) and exits. */
  async stop (): Promise<void> {
    this.stopped = true
    // A helper still starting becomes the one to stop.
    await this.starting?.catch((err: unknown) => { this.options.log.debug('rgrid-spawn did not start before stop()', { error: errorMessage(err) }) })
    const child = this.child
    if (child == null || child.exitCode != null || child.signalCode != null) return
    await new Promise<void>(resolve => {
      const timer = setTimeout(() => { child.kill('SIGKILL'); resolve() }, this.options.stopTimeoutMs ?? 5000)
      child.once('exit', () => { clearTimeout(timer); resolve() })
      child.stdin?.end()
    })
  }
}
