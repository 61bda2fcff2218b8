/**
 * Nodes behind NAT (issue 11), on the NAT lab (cli/nat-lab.ts): a public
 * namespace with the bootstrap peer (a relay) and the coordinator, and home
 * namespaces behind masquerading routers. Measures, for three kinds of node:
 *
 * - `public`: on the public side, dialable;
 * - `nat`: behind NAT; it dials out, so its session runs on the direct
 *   connection it opened to the coordinator, and it holds a relay slot;
 * - `relay`: behind NAT and a firewall that lets it reach only the bootstrap
 *   peer, so its session to the coordinator runs through the relay.
 *
 * join → first bid: a job waits for a node with the kind's label; a fresh
 * node is started and the time from spawning `rgrid-node join` to its bid
 * (the coordinator's bid record) is taken, `--joins` times per kind.
 * announce → award and submit → running: `--jobs` jobs one at a time per
 * kind on an idle mesh, as in the suite's latency section.
 *
 * HTTP calls run in a child inside the public namespace (the lab's
 * addresses exist only there). Needs root (namespaces, iptables).
 *
 * Writes bench/results/nat-<timestamp>.json and rewrites docs/benchmarks.md.
 * Usage: node dist/bench/nat.js [--joins 5] [--jobs 200]
 */
import { parseArgs } from 'node:util'
import { spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, mkdirSync, writeFileSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createNatLab, netnsUnavailable, startIn, type NatLab } from '../cli/nat-lab.js'
import { ROOT, commit, latency, machine, post, summary, type Summary } from './measure.js'
import { renderBenchmarks } from './report.js'

const DIST = join(ROOT, 'dist')
const BIN = { bootstrap: join(DIST, 'bootstrap', 'cli.js'), coordinator: join(DIST, 'coordinator', 'cli.js'), node: join(DIST, 'node', 'cli.js') }
const SELF = fileURLToPath(import.meta.url)
type Kind = 'public' | 'nat' | 'relay'
const KINDS: Kind[] = ['public', 'nat', 'relay']

export interface NatResult {
  benchmark: 'nat'
  date: string
  commit: string
  machine: ReturnType<typeof machine>
  config: { joins: number, jobs: number, relay: string }
  /** Spawn of `rgrid-node join` → the node's first bid, ms. */
  joinToFirstBidMs: Record<Kind, Summary>
  announceToAwardMs: Record<Kind, Summary>
  submitToRunningMs: Record<Kind, Summary>
  /** Sessions the `relay` node opened during its latency run (the relay's per-connection bounds reset it). */
  relaySessionsOpened: number
  /** Whether the `relay` node's connection to its coordinator ran through the relay, as its status file showed after the run. */
  relaySessionThroughRelay: boolean
}

const children: ChildProcess[] = []

/** Starts an RGrid program in a namespace (cli/nat-lab.ts), kept for the final clean-up. */
async function start (ns: string, argv: string[], lines: number): Promise<{ child: ChildProcess, lines: string[] }> {
  const r = await startIn(ns, argv, lines)
  children.push(r.child)
  return r
}

async function stopChild (child: ChildProcess): Promise<void> {
  if (child.exitCode != null || child.signalCode != null) return
  const exited = new Promise(resolve => child.once('exit', resolve))
  child.kill('SIGKILL')
  await exited
}

/** Runs this file in measuring mode inside the public namespace; returns what it printed. */
function measure (lab: NatLab, args: Record<string, string>): any {
  const r = spawnSync('ip', ['netns', 'exec', lab.pub.ns, process.execPath, SELF, '--measure', JSON.stringify(args)], { encoding: 'utf8', timeout: 600_000 })
  if (r.status !== 0) throw new Error(`measuring child failed (${r.status}): ${r.stderr}`)
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!)
}

/** Measuring mode, inside the public namespace. */
async function measuring (args: Record<string, string>): Promise<unknown> {
  const url = args.url!
  if (args.op === 'submit') return { id: await post(url, { command: ['true'], labels: { kind: args.kind } }) }
  if (args.op === 'first-bid') {
    const deadline = Date.now() + 60_000
    while (Date.now() < deadline) {
      const e = await (await fetch(`${url}/v1/jobs/${args.id!}/explain`)).json() as { bids: Array<{ at: number }> }
      if (e.bids.length > 0) return { at: Math.min(...e.bids.map(b => b.at)) }
      await new Promise(resolve => setTimeout(resolve, 5))
    }
    throw new Error(`no bid on ${args.id!} within 60 s`)
  }
  if (args.op === 'latency') return await latency(url, { command: ['true'], labels: { kind: args.kind } }, Number(args.n))
  throw new Error(`unknown op ${args.op}`)
}

function nodeArgs (token: string, bootstrap: string, dir: string, kind: Kind): string[] {
  return [BIN.node, 'join', token, bootstrap, '--listen', '/ip4/0.0.0.0/tcp/0', '--runtime', 'process', '--slots', '1', '--labels', `kind=${kind}`, '--data-dir', dir, '--log-level', 'warn']
}

async function main (): Promise<void> {
  const { values } = parseArgs({ options: { joins: { type: 'string' }, jobs: { type: 'string' }, measure: { type: 'string' }, 'results-dir': { type: 'string' }, 'no-docs': { type: 'boolean' } } })
  if (values.measure != null) {
    process.stdout.write(JSON.stringify(await measuring(JSON.parse(values.measure) as Record<string, string>)) + '\n')
    return
  }
  const why = netnsUnavailable()
  if (why != null) throw new Error(`the NAT benchmark needs network namespaces: ${why}`)
  const joins = Number(values.joins ?? 5)
  const jobs = Number(values.jobs ?? 200)
  const lab = createNatLab(3)
  const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-nat-bench-'))
  let result: NatResult | null = null
  try {
    const keyFile = join(dataDir, 'network.key')
    const coordinatorDir = join(dataDir, 'coordinator')
    spawnSync(process.execPath, [BIN.coordinator, 'network-key', '--network-key-file', keyFile, '--data-dir', coordinatorDir], { stdio: 'ignore' })
    const bs = await start(lab.pub.ns, [BIN.bootstrap, '--listen', `/ip4/${lab.pub.addr}/tcp/4001`, '--data-dir', join(dataDir, 'bootstrap'), '--network-key-file', keyFile, '--log-level', 'warn'], 1)
    const co = await start(lab.pub.ns, [BIN.coordinator, '--listen', `/ip4/${lab.pub.addr}/tcp/4002`, '--http', `${lab.pub.addr}:8080`, '--bootstrap', bs.lines[0]!, '--data-dir', coordinatorDir, '--no-api-keys', '--log-level', 'warn'], 2)
    const url = co.lines[1]!
    const token = spawnSync(process.execPath, [BIN.coordinator, 'token', 'create', '--data-dir', coordinatorDir, '--addr', co.lines[0]!], { encoding: 'utf8' }).stdout.trim()
    // Home 2 reaches only the bootstrap peer: its sessions go through the relay.
    lab.blockPort(2, 4002)
    const nsOf: Record<Kind, string> = { public: lab.pub.ns, nat: lab.homes[0]!.ns, relay: lab.homes[2]!.ns }

    const joinMs: Record<Kind, number[]> = { public: [], nat: [], relay: [] }
    for (let i = 0; i < joins; i++) {
      for (const kind of KINDS) {
        const { id } = measure(lab, { op: 'submit', url, kind }) as { id: string }
        const spawnedAt = Date.now()
        const n = await start(nsOf[kind], nodeArgs(token, bs.lines[0]!, join(dataDir, `join-${kind}-${i}`), kind), 1)
        const { at } = measure(lab, { op: 'first-bid', url, id }) as { at: number }
        joinMs[kind].push(at - spawnedAt)
        await stopChild(n.child)
      }
    }

    const a2a: Partial<Record<Kind, Summary>> = {}
    const s2r: Partial<Record<Kind, Summary>> = {}
    let relaySessionsOpened = 0
    let relaySessionThroughRelay = false
    for (const kind of KINDS) {
      const dir = join(dataDir, `latency-${kind}`)
      const n = await start(nsOf[kind], nodeArgs(token, bs.lines[0]!, dir, kind), 1)
      const run = measure(lab, { op: 'latency', url, kind, n: String(jobs) }) as { announceToAward: number[], submitToRunning: number[] }
      a2a[kind] = summary(run.announceToAward)
      s2r[kind] = summary(run.submitToRunning)
      if (kind === 'relay') {
        // The node rewrites its status file every 2 s: wait for one written after the run.
        const ranUntil = Date.now()
        for (let waited = 0; ; waited += 100) {
          const status = JSON.parse(readFileSync(join(dir, 'status.json'), 'utf8')) as { updatedAt: number, stats: { sessionsOpened: number }, coordinators: string[], connections: string[] }
          if (status.updatedAt > ranUntil) {
            relaySessionsOpened = status.stats.sessionsOpened
            relaySessionThroughRelay = status.coordinators.length > 0 && status.connections.some(a => a.includes('/p2p-circuit/p2p/' + status.coordinators[0]!))
            break
          }
          if (waited > 10_000) throw new Error('the relay node stopped writing its status file')
          await new Promise(resolve => setTimeout(resolve, 100))
        }
      }
      await stopChild(n.child)
    }
    result = {
      benchmark: 'nat', date: new Date().toISOString(), commit: commit(), machine: machine(),
      config: { joins, jobs, relay: 'bootstrap peer, default bounds (4 MiB and 2 min per relayed connection)' },
      joinToFirstBidMs: { public: summary(joinMs.public), nat: summary(joinMs.nat), relay: summary(joinMs.relay) },
      announceToAwardMs: a2a as Record<Kind, Summary>,
      submitToRunningMs: s2r as Record<Kind, Summary>,
      relaySessionsOpened,
      relaySessionThroughRelay
    }
  } finally {
    await Promise.all(children.map(stopChild))
    lab.destroy()
    rmSync(dataDir, { recursive: true, force: true })
  }
  const resultsDir = values['results-dir'] ?? join(ROOT, 'bench', 'results')
  mkdirSync(resultsDir, { recursive: true })
  const out = join(resultsDir, `nat-${result.date.replace(/[:.]/g, '-')}.json`)
  writeFileSync(out, JSON.stringify(result, null, 2) + '\n')
  if (values['no-docs'] !== true) writeFileSync(join(ROOT, 'docs', 'benchmarks.md'), renderBenchmarks(join(ROOT, 'bench', 'results')))
  process.stdout.write(`${JSON.stringify(result)}\nwritten to ${out}\n`)
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
