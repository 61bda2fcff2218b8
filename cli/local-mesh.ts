/**
 * Starts a whole mesh on loopback as separate processes: one bootstrap
 * peer, one coordinator and N nodes, each its own program exactly as an
 * operator would run it. Used by `rgrid dev`, the integration tests and the
 * benchmarks.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream, readdirSync, readFileSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'

const DIST = dirname(dirname(fileURLToPath(import.meta.url)))

/** Paths of the compiled programs. */
export const BINS = {
  bootstrap: join(DIST, 'bootstrap', 'cli.js'),
  coordinator: join(DIST, 'coordinator', 'cli.js'),
  node: join(DIST, 'node', 'cli.js')
}

/** Live child pids of a process, from /proc (Linux). */
export function childPids (ppid: number): number[] {
  const out: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === ppid) out.push(Number(entry))
    } catch (err) {
      // A process that ended while we looked is not a child any more (ESRCH: it was mid-exit).
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'ENOENT' && code !== 'ESRCH') throw err
    }
  }
  return out
}

export interface LocalMeshOptions {
  /** Where identities, databases and logs go. */
  dataDir: string
  /** @default 3 */
  nodes?: number
  /** @default 'process' */
  runtime?: 'process' | 'docker' | 'sim'
  /** @default '127.0.0.1:0' */
  http?: string
  /** Slots per node. @default 4 */
  slots?: number
  /** Extra arguments per node index. */
  nodeArgs?: (index: number) => string[]
  /** Extra coordinator arguments. */
  coordinatorArgs?: string[]
  /** Coordinators to start; more than one needs a shared `db`. @default 1 */
  coordinators?: number
  /** Database URL for the coordinators (`postgres://…`); default: each its own SQLite file. */
  db?: string
  /** @default 'info' */
  logLevel?: string
  /** How long a program may take to print its address, in ms. @default 20000 */
  startTimeoutMs?: number
  /** How long stop() waits after SIGTERM before SIGKILL, in ms. @default 10000 */
  stopTimeoutMs?: number
  /**
   * Start coordinators with `--open` and nodes without a join token. By
   * default the mesh creates a join token and nodes join with it.
   * @default false
   */
  open?: boolean
  /**
   * Require API keys on the HTTP API (create them with {@link createApiKey}).
   * Off by default so tests and simulations can call the API without one;
   * the coordinators then run with `--no-api-keys`.
   * @default false
   */
  apiKeys?: boolean
}

export interface MeshProcess {
  name: string
  child: ChildProcess
  /** How it was started, so it can be started again. */
  bin: string
  args: string[]
  lineCount: number
  /** Lines the program printed on stdout at start. */
  lines: string[]
  logFile: string
}

export class LocalMesh {
  readonly processes: MeshProcess[] = []
  bootstrapAddr = ''
  coordinatorAddr = ''
  coordinatorPeerId = ''
  httpUrl = ''
  /** Every coordinator, in start order (the first is also in the fields above). */
  coordinators: Array<{ addr: string, peerId: string, httpUrl: string, process: MeshProcess }> = []
  nodePeerIds: string[] = []
  /** The token nodes joined with (empty for an open mesh). */
  joinToken = ''
  /** An admin API key, with `apiKeys` (empty otherwise); the mesh's own HTTP calls use it. */
  apiKey = ''

  constructor (readonly options: LocalMeshOptions) {}

  private async launch (name: string, bin: string, args: string[], lines: number): Promise<MeshProcess> {
    const logDir = join(this.options.dataDir, 'logs')
    await mkdir(logDir, { recursive: true })
    const logFile = join(logDir, `${name}.log`)
    const log = createWriteStream(logFile, { flags: 'a' })
    const child = spawn(process.execPath, [bin, ...args, '--log-level', this.options.logLevel ?? 'info'], { stdio: ['ignore', 'pipe', 'pipe'] })
    child.stderr.pipe(log)
    const proc: MeshProcess = { name, child, bin, args, lineCount: lines, lines: [], logFile }
    const existing = this.processes.findIndex(p => p.name === name)
    if (existing >= 0) this.processes[existing] = proc
    else this.processes.push(proc)
    const timeoutMs = this.options.startTimeoutMs ?? 20_000
    await new Promise<void>((resolve, reject) => {
      const rl = createInterface({ input: child.stdout })
      const timer = setTimeout(() => { reject(new Error(`${name} printed no address within ${timeoutMs} ms; see ${logFile}`)) }, timeoutMs)
      const onExit = (code: number | null): void => { clearTimeout(timer); reject(new Error(`${name} exited with ${code} before starting; see ${logFile}`)) }
      child.once('exit', onExit)
      rl.on('line', line => {
        proc.lines.push(line)
        if (proc.lines.length === lines) {
          clearTimeout(timer)
          child.off('exit', onExit)
          resolve()
        }
      })
    })
    return proc
  }

  /** Idempotent: a second call waits for the first start instead of launching a second mesh. */
  async start (): Promise<void> {
    this.starting ??= this.launchAll()
    await this.starting
  }

  private starting: Promise<void> | null = null

  private async launchAll (): Promise<void> {
    const dir = this.options.dataDir
    const count = this.options.coordinators ?? 1
    // A private network: the key comes from the first coordinator's store before anything listens.
    const keyFile = join(dir, 'network.key')
    if (this.options.open !== true) {
      await mkdir(dir, { recursive: true })
      await this.coordinatorCommand(['network-key', '--network-key-file', keyFile, ...this.storeArgs()])
    }
    const bs = await this.launch('bootstrap', BINS.bootstrap, ['--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', join(dir, 'bootstrap'), ...(this.options.open !== true ? ['--network-key-file', keyFile] : [])], 1)
    this.bootstrapAddr = bs.lines[0] ?? ''
    if (count > 1 && this.options.db == null) throw new Error('several coordinators need a shared database (db)')
    for (let i = 0; i < count; i++) {
      const name = this.coordinatorName(i)
      const co = await this.launch(name, BINS.coordinator, [
        '--listen', '/ip4/127.0.0.1/tcp/0', '--http', i === 0 ? (this.options.http ?? '127.0.0.1:0') : '127.0.0.1:0', '--bootstrap', this.bootstrapAddr,
        '--data-dir', join(dir, name), ...(this.options.db != null ? ['--db', this.options.db] : []),
        ...(this.options.open === true ? ['--open'] : this.options.apiKeys === true ? [] : ['--no-api-keys']), ...(this.options.coordinatorArgs ?? [])
      ], 2)
      const addr = co.lines[0] ?? ''
      this.coordinators.push({ addr, peerId: addr.split('/p2p/')[1] ?? '', httpUrl: co.lines[1] ?? '', process: co })
    }
    const first = this.coordinators[0]!
    this.coordinatorAddr = first.addr
    this.coordinatorPeerId = first.peerId
    this.httpUrl = first.httpUrl
    if (this.options.open !== true) this.joinToken = await this.createToken()
    if (this.options.apiKeys === true && this.options.open !== true) this.apiKey = await this.createApiKey('local-mesh', true)
    const n = this.options.nodes ?? 3
    const nodes = await Promise.all(Array.from({ length: n }, async (_, i) => await this.launchNode(i)))
    this.nodePeerIds = nodes.map(p => p.lines[0] ?? '')
  }

  private async launchNode (i: number, joinToken = this.joinToken): Promise<MeshProcess> {
    return await this.launch(`node-${i}`, BINS.node, [
      'join', ...(joinToken !== '' ? [joinToken] : []), this.bootstrapAddr,
      ...(joinToken === '' ? this.coordinators.flatMap(c => ['--coordinator', c.peerId]) : []), '--listen', '/ip4/127.0.0.1/tcp/0',
      '--runtime', this.options.runtime ?? 'process', '--slots', String(this.options.slots ?? 4),
      '--data-dir', join(this.options.dataDir, `node-${i}`), ...(this.options.nodeArgs?.(i) ?? [])
    ], 1)
  }

  /** Starts `count` more nodes (named after the existing ones), joining with `joinToken`; returns their peer ids. */
  async addNodes (count: number, joinToken = this.joinToken): Promise<string[]> {
    const first = this.nodePeerIds.length
    const added = await Promise.all(Array.from({ length: count }, async (_, k) => await this.launchNode(first + k, joinToken)))
    const ids = added.map(p => p.lines[0] ?? '')
    this.nodePeerIds.push(...ids)
    return ids
  }

  /**
   * Creates a join token naming every coordinator, as an operator would
   * (`rgrid-coordinator token create` against the first one's store).
   */
  async createToken (extraArgs: string[] = []): Promise<string> {
    return await this.coordinatorCommand(['token', 'create', ...this.storeArgs(), ...this.coordinators.flatMap(c => ['--addr', c.addr]), ...extraArgs])
  }

  /** Creates an API key on the first coordinator's store (`rgrid-coordinator key create`); resolves the key. */
  async createApiKey (name: string, admin = false): Promise<string> {
    return await this.coordinatorCommand(['key', 'create', '--name', name, ...(admin ? ['--admin'] : []), ...this.storeArgs()])
  }

  /** Process (and data dir) name of coordinator `i`. */
  private coordinatorName (i: number): string {
    return (this.options.coordinators ?? 1) === 1 ? 'coordinator' : `coordinator-${i}`
  }

  /** `--data-dir` and `--db` naming the first coordinator's store, for its store subcommands. */
  private storeArgs (): string[] {
    return ['--data-dir', join(this.options.dataDir, this.coordinatorName(0)), ...(this.options.db != null ? ['--db', this.options.db] : [])]
  }

  /** Runs `rgrid-coordinator ARGS…` (a subcommand against a store); resolves its stdout. */
  async coordinatorCommand (args: string[]): Promise<string> {
    return await new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [BINS.coordinator, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      let err = ''
      child.stdout.on('data', (c: Buffer) => { out += c.toString() })
      child.stderr.on('data', (c: Buffer) => { err += c.toString() })
      child.on('exit', code => { if (code === 0) resolve(out.trim()); else reject(new Error(`rgrid-coordinator ${args[0] ?? ''} ${args[1] ?? ''} failed (${code}): ${err.trim()}`)) })
    })
  }

  /**
   * Starts a process again with the same arguments (and so the same data
   * dir and identity), killing it first if it still runs. A coordinator gets
   * a new HTTP port: the URL fields are updated.
   */
  async restart (name: string): Promise<MeshProcess> {
    const old = this.processes.find(p => p.name === name)
    if (old == null) throw new Error(`no process ${name}`)
    if (old.child.exitCode == null && old.child.signalCode == null) {
      const exited = new Promise<void>(resolve => { old.child.once('exit', () => { resolve() }) })
      old.child.kill('SIGKILL')
      await exited
    }
    const proc = await this.launch(name, old.bin, old.args, old.lineCount)
    const c = this.coordinators.findIndex(x => x.process === old)
    if (c >= 0) {
      const addr = proc.lines[0] ?? ''
      this.coordinators[c] = { addr, peerId: addr.split('/p2p/')[1] ?? '', httpUrl: proc.lines[1] ?? '', process: proc }
      if (c === 0) { this.coordinatorAddr = addr; this.httpUrl = proc.lines[1] ?? '' }
    }
    return proc
  }

  /** Polls `GET /v1/nodes` until `count` nodes have an open session (to the given coordinator). */
  async waitForNodes (count: number, timeoutMs = 30_000, httpUrl = this.httpUrl): Promise<void> {
    const deadline = Date.now() + timeoutMs
    let seen = 0
    while (Date.now() < deadline) {
      try {
        const res = await fetch(`${httpUrl}/v1/nodes`, this.apiKey !== '' ? { headers: { authorization: `Bearer ${this.apiKey}` } } : {})
        const body = await res.json() as { nodes: Array<{ session: boolean }> }
        seen = body.nodes.filter(n => n.session).length
        if (seen >= count) return
      } catch (err) {
        // The coordinator may still be starting; keep polling until the deadline.
        seen = -1
        if (Date.now() + 200 >= deadline) throw err
      }
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    throw new Error(`only ${seen} of ${count} nodes connected within ${timeoutMs} ms`)
  }

  /** SIGTERM everything (nodes first, so they drain), then SIGKILL stragglers. */
  async stop (): Promise<void> {
    this.starting = null
    const order = [...this.processes].reverse()
    for (const p of order) {
      if (p.child.exitCode == null && p.child.signalCode == null) p.child.kill('SIGTERM')
    }
    const timeoutMs = this.options.stopTimeoutMs ?? 10_000
    await Promise.all(order.map(async p => {
      if (p.child.exitCode != null || p.child.signalCode != null) return
      await new Promise<void>(resolve => {
        const timer = setTimeout(() => { p.child.kill('SIGKILL'); resolve() }, timeoutMs)
        p.child.once('exit', () => { clearTimeout(timer); resolve() })
      })
    }))
  }
}
