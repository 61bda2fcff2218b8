/**
 * `npm run bench`: the whole benchmark suite in one command, RGrid side by
 * side with Slurm and BullMQ on the same machine in the same run.
 *
 * Sections: the machine alone (spawning `true`, the Docker engine alone:
 * reference rates), throughput per runtime (10 nodes), latency on an idle mesh,
 * scale (10, 25, 50 nodes), recovery after a node's death, store awards/s,
 * and the peers. Writes bench/results/suite-<timestamp>.json and rewrites
 * docs/benchmarks.md.
 *
 * `--short` runs every section with small counts (about four minutes) into a
 * temporary directory and leaves docs alone: CI runs it so a broken benchmark
 * fails the build, while no timing is ever asserted.
 *
 * Usage: node dist/bench/suite.js [--short] [--only throughput,latency,scale,recovery,store,peers]
 *                                 [--results-dir DIR] [--no-docs]
 */
import { parseArgs } from 'node:util'
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execFileSync } from 'node:child_process'
import { ROOT, commit, machine, summary, type Machine, type Summary } from './measure.js'
import { runScalePoint, runThroughput, type Runtime, type ScalePoint, type ThroughputSection } from './mesh-bench.js'
import { dockerCeiling, spawnCeiling, type Ceilings } from './ceilings.js'
import { recoverySamples, RECOVERY_DEFAULTS } from './recovery.js'
import { benchPostgres, benchSqlite, type StoreBackendResult } from './store.js'
import { benchSlurm } from './peers/slurm.js'
import { benchBullmq } from './peers/bullmq.js'
import type { PeerResult } from './peers/types.js'
import { renderBenchmarks } from './report.js'
import { errorMessage } from '../common/errors.js'
import { SPAWN_HELPER_PATH } from '../node/runtime/spawn-helper.js'

export const SECTIONS = ['throughput', 'latency', 'scale', 'recovery', 'store', 'peers'] as const
type Section = typeof SECTIONS[number]

/** Counts per mode. Full: what the issue asks for; short: every code path, quickly. */
const COUNTS = {
  full: { nodes: 10, slots: 4, clients: 32, jobs: { sim: 10_000, process: 3_000, docker: 300 }, warmupJobs: { sim: 3_000, process: 1_000, docker: 20 }, scaleWarmupPerNode: 300, latencyJobs: 1_000, scale: [10, 25, 50], scaleJobs: 3_000, restSeconds: 10, kills: 20, storeJobs: 5_000, peerJobs: 1_000, peerLatencyJobs: 200, ceilingSpawns: 1_000, ceilingContainers: 64 },
  short: { nodes: 10, slots: 4, clients: 16, jobs: { sim: 300, process: 200, docker: 20 }, warmupJobs: { sim: 100, process: 50, docker: 0 }, scaleWarmupPerNode: 5, latencyJobs: 50, scale: [10, 25], scaleJobs: 200, restSeconds: 3, kills: 1, storeJobs: 300, peerJobs: 100, peerLatencyJobs: 20, ceilingSpawns: 100, ceilingContainers: 4 }
}

export interface SuiteResult {
  benchmark: 'suite'
  date: string
  commit: string
  machine: Machine
  mode: 'full' | 'short'
  counts: typeof COUNTS.full
  /** What the machine does at most with nothing of RGrid running (absent in files before 2026-12-07 16:00). */
  ceilings?: Ceilings
  throughput: ThroughputSection[]
  /** Sections that could not run here, with the reason (e.g. no Docker engine). */
  skipped: Record<string, string>
  scale: ScalePoint[]
  recovery: { kills: number, settings: string, msFromKillToRunningElsewhere: Summary } | null
  store: StoreBackendResult[]
  peers: PeerResult[]
  /** Wall time of each section, in seconds. */
  sectionSeconds: Record<string, number>
}

function dockerImage (): string | null {
  try {
    execFileSync('docker', ['image', 'inspect', 'rgrid-test/busybox:latest'], { stdio: 'ignore', timeout: 20_000 })
    return 'rgrid-test/busybox:latest'
  } catch (err) {
    process.stderr.write(`no Docker test image: ${errorMessage(err)}\n`)
    return null
  }
}

async function main (): Promise<void> {
  const { values } = parseArgs({ options: { short: { type: 'boolean' }, only: { type: 'string' }, 'results-dir': { type: 'string' }, 'no-docs': { type: 'boolean' } } })
  const mode = values.short === true ? 'short' : 'full'
  const c = COUNTS[mode]
  const only = new Set<Section>((values.only?.split(',') ?? SECTIONS) as Section[])
  for (const s of only) if (!SECTIONS.includes(s)) throw new Error(`--only: unknown section ${s}; sections are ${SECTIONS.join(', ')}`)
  // Short runs prove the bench works; they must not pile rows into the docs.
  const resultsDir = values['results-dir'] ?? (mode === 'short' ? mkdtempSync(join(tmpdir(), 'rgrid-bench-short-')) : join(ROOT, 'bench', 'results'))
  const writeDocs = values['no-docs'] !== true && mode === 'full'
  const log = (line: string): void => { process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`) }
  const result: SuiteResult = {
    benchmark: 'suite', date: new Date().toISOString(), commit: commit(), machine: machine(), mode, counts: c,
    throughput: [], skipped: {}, scale: [], recovery: null, store: [], peers: [], sectionSeconds: {}
  }
  const timed = async (name: string, f: () => Promise<void>): Promise<void> => {
    const t0 = performance.now()
    await f()
    result.sectionSeconds[name] = Number(((performance.now() - t0) / 1000).toFixed(1))
  }
  const image = dockerImage()
  const runtimes: Runtime[] = ['sim', 'process', 'docker']
  if (only.has('throughput')) {
    await timed('ceilings', async () => {
      const helper = existsSync(SPAWN_HELPER_PATH)
      log(`ceilings: spawning \`true\` ${helper ? 'through rgrid-spawn and with child_process' : 'with child_process (rgrid-spawn is not built)'}, then the Docker engine alone`)
      const spawns = await spawnCeiling({ spawnsPerProcess: c.ceilingSpawns, spawner: helper ? 'helper' : 'node' })
      const nodeSpawns = helper ? await spawnCeiling({ spawnsPerProcess: c.ceilingSpawns, spawner: 'node' }) : undefined
      let docker: Ceilings['docker'] = null
      if (image == null) result.skipped['ceiling docker'] = 'no Docker engine or no rgrid-test/busybox image (test/images/build.sh builds it)'
      else docker = await dockerCeiling({ image, containers: c.ceilingContainers })
      result.ceilings = { process: spawns, ...(nodeSpawns != null ? { processNode: nodeSpawns } : {}), docker }
    })
  }
  if (only.has('throughput') || only.has('latency')) {
    for (const runtime of runtimes) {
      if (!only.has('throughput') && runtime !== 'process') continue
      if (runtime === 'docker' && image == null) { result.skipped['throughput docker'] = 'no Docker engine or no rgrid-test/busybox image (test/images/build.sh builds it)'; continue }
      await timed(`throughput ${runtime}`, async () => {
        result.throughput.push(await runThroughput(runtime, {
          nodes: c.nodes, slots: c.slots, clients: c.clients, image: image ?? '', log,
          jobs: only.has('throughput') ? c.jobs[runtime] : 100,
          warmupJobs: c.warmupJobs[runtime],
          // Latency is measured on the process runtime, as the targets are for process jobs.
          latencyJobs: runtime === 'process' && only.has('latency') ? c.latencyJobs : 0,
          // Batched submission too, for sim: what the rest of the path does once HTTP is not per job.
          ...(runtime === 'sim' && only.has('throughput') ? { batch: 100 } : {})
        }))
      })
    }
  }
  if (only.has('scale')) {
    for (const nodes of c.scale) {
      await timed(`scale ${nodes}`, async () => { result.scale.push(await runScalePoint(nodes, { jobs: c.scaleJobs, clients: c.clients, restSeconds: c.restSeconds, warmupJobs: c.scaleWarmupPerNode * nodes, log })) })
    }
  }
  if (only.has('recovery')) {
    await timed('recovery', async () => {
      const samples = await recoverySamples(c.kills, log)
      result.recovery = { kills: c.kills, settings: RECOVERY_DEFAULTS, msFromKillToRunningElsewhere: summary(samples) }
    })
  }
  if (only.has('store')) {
    await timed('store', async () => {
      const config = { jobs: c.storeJobs, nodes: 8, slots: 4 }
      log(`store: ${config.jobs} awards on SQLite, then PostgreSQL`)
      result.store.push(await benchSqlite(config))
      result.store.push(await benchPostgres(config))
    })
  }
  if (only.has('peers')) {
    const peerOptions = { jobs: c.peerJobs, latencyJobs: c.peerLatencyJobs, log }
    await timed('slurm', async () => { result.peers.push(await benchSlurm({ ...peerOptions, workDir: mkdtempSync(join(tmpdir(), 'rgrid-bench-slurm-')) })) })
    await timed('bullmq', async () => { result.peers.push(await benchBullmq({ ...peerOptions, workDir: mkdtempSync(join(tmpdir(), 'rgrid-bench-bullmq-')) })) })
    for (const p of result.peers) if (p.skipped != null) result.skipped[p.system] = p.skipped
  }
  mkdirSync(resultsDir, { recursive: true })
  const file = join(resultsDir, `suite-${result.date.replace(/[:.]/g, '-')}.json`)
  writeFileSync(file, JSON.stringify(result, null, 2) + '\n')
  if (writeDocs) writeFileSync(join(ROOT, 'docs', 'benchmarks.md'), renderBenchmarks(resultsDir))
  process.stdout.write(`${file}\n`)
  log(`done: ${file}${writeDocs ? ' and docs/benchmarks.md' : ''}`)
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
