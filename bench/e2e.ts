/**
 * End-to-end benchmark of the spine: a real mesh of processes on loopback
 * (bootstrap, coordinator, N nodes, `process` runtime) measured through the
 * HTTP API.
 *
 * - latency: jobs submitted one at a time on an idle mesh; announce→award is
 *   the award time minus the submission time (the announcement goes out in
 *   the same tick), submit→running is the node's start time minus it.
 * - throughput: N trivial jobs (`true`) submitted by 32 concurrent clients;
 *   jobs/s from the first submission until the last result is recorded.
 *
 * Writes bench/results/e2e-<timestamp>.json and rewrites docs/benchmarks.md.
 * Usage: node dist/bench/e2e.js [--nodes 5] [--slots 4] [--latency-jobs 500] [--throughput-jobs 3000]
 */
import { parseArgs } from 'node:util'
import { mkdtempSync, rmSync, mkdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalMesh } from '../cli/local-mesh.js'
import { renderBenchmarks } from './report.js'
import { ROOT, commit, cpuDelta, cpuSeconds, latency, machine, summary, throughput } from './measure.js'

const SPEC = { command: ['true'] }

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      nodes: { type: 'string' }, slots: { type: 'string' }, 'latency-jobs': { type: 'string' }, 'throughput-jobs': { type: 'string' }, clients: { type: 'string' }
    }
  })
  const nodes = Number(values.nodes ?? 5)
  const slots = Number(values.slots ?? 4)
  const latencyJobs = Number(values['latency-jobs'] ?? 500)
  const throughputJobs = Number(values['throughput-jobs'] ?? 3000)
  const clients = Number(values.clients ?? 32)
  const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-bench-'))
  const mesh = new LocalMesh({ dataDir, nodes, slots, runtime: 'process', logLevel: 'warn' })
  try {
    await mesh.start()
    await mesh.waitForNodes(nodes)
    // Warm up: the first jobs pay for JIT and connection set-up.
    await latency(mesh.httpUrl, SPEC, 20)
    process.stderr.write(`latency: ${latencyJobs} jobs one at a time on ${nodes} nodes…\n`)
    const lat = await latency(mesh.httpUrl, SPEC, latencyJobs)
    process.stderr.write(`throughput: ${throughputJobs} jobs, ${clients} clients…\n`)
    const cpuBefore = cpuSeconds(mesh)
    const selfBefore = process.cpuUsage()
    const tp = await throughput(mesh.httpUrl, SPEC, throughputJobs, clients)
    const self = process.cpuUsage(selfBefore)
    const cpuAfter = cpuSeconds(mesh)
    cpuAfter['bench-client'] = (self.user + self.system) / 1e6
    const cpuDuringThroughput = cpuDelta(cpuBefore, cpuAfter)
    process.stderr.write(`CPU seconds during throughput: ${JSON.stringify(cpuDuringThroughput)}\n`)
    const stats = await (await fetch(`${mesh.httpUrl}/v1/stats`)).json()
    const result = {
      benchmark: 'e2e',
      date: new Date().toISOString(),
      commit: commit(),
      machine: machine(),
      config: { nodes, slots, runtime: 'process', latencyJobs, throughputJobs, clients },
      latencyMs: { announceToAward: summary(lat.announceToAward), submitToRunning: summary(lat.submitToRunning), submitToDone: summary(lat.submitToDone) },
      throughput: tp,
      cpuSecondsDuringThroughput: cpuDuringThroughput,
      coordinatorStats: stats
    }
    const resultsDir = join(ROOT, 'bench', 'results')
    mkdirSync(resultsDir, { recursive: true })
    const file = join(resultsDir, `e2e-${result.date.replace(/[:.]/g, '-')}.json`)
    writeFileSync(file, JSON.stringify(result, null, 2) + '\n')
    writeFileSync(join(ROOT, 'docs', 'benchmarks.md'), renderBenchmarks(resultsDir))
    process.stdout.write(JSON.stringify({ latencyMs: result.latencyMs, throughput: tp }, null, 2) + `\nwritten to ${file} and docs/benchmarks.md\n`)
  } finally {
    await mesh.stop()
    rmSync(dataDir, { recursive: true, force: true })
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
