/**
 * The benchmark suite in short mode, run for real: every section produces
 * its figures and the report renders them. No timing is asserted; this test
 * fails only when the benchmark itself breaks (a section throws, a figure is
 * missing or not a number, a peer does not run where CI installed it).
 */
import { describe, it, expect, afterAll } from 'vitest'
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { renderSuite } from '../../dist/bench/report-suite.js'

const ROOT = join(import.meta.dirname, '..', '..')
const dir = mkdtempSync(join(tmpdir(), 'rgrid-bench-test-'))
afterAll(() => { rmSync(dir, { recursive: true, force: true }) })

function runSuite (args: string[]): Promise<{ code: number | null, stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'dist', 'bench', 'suite.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    child.on('error', reject)
    child.on('exit', code => { resolve({ code, stderr }) })
  })
}

const positive = (x: unknown): boolean => typeof x === 'number' && Number.isFinite(x) && x > 0
const finite = (x: unknown): boolean => typeof x === 'number' && Number.isFinite(x) && x >= 0

describe('npm run bench -- --short', () => {
  it('runs every section and writes figures for each', async () => {
    const { code, stderr } = await runSuite(['--short', '--results-dir', dir, '--no-docs'])
    expect(code, stderr.slice(-4000)).toBe(0)
    const files = readdirSync(dir).filter(n => n.startsWith('suite-'))
    expect(files).toHaveLength(1)
    const r = JSON.parse(readFileSync(join(dir, files[0]!), 'utf8'))
    expect(r.mode).toBe('short')
    // Under CI every peer and runtime is installed: nothing may be skipped there.
    if (process.env.CI === 'true') expect(r.skipped).toEqual({})
    // The machine's own ceilings, measured before the mesh runs.
    expect(positive(r.ceilings.process.perSecond)).toBe(true)
    // One worker per core, each spawning ceilingSpawns times.
    expect(r.ceilings.process.count).toBeGreaterThanOrEqual(r.counts.ceilingSpawns)
    expect(r.ceilings.process.count % r.counts.ceilingSpawns).toBe(0)
    if (r.skipped['ceiling docker'] == null) expect(positive(r.ceilings.docker.perSecond)).toBe(true)
    // CI builds rgrid-spawn: the mesh uses it, and the ceiling is measured both ways.
    if (process.env.CI === 'true') {
      expect(r.ceilings.process.method).toContain('rgrid-spawn')
      expect(positive(r.ceilings.processNode.perSecond)).toBe(true)
    }
    const runtimes = r.throughput.map((t: { runtime: string }) => t.runtime)
    expect(runtimes).toEqual(expect.arrayContaining(['sim', 'process', ...(r.skipped['throughput docker'] == null ? ['docker'] : [])]))
    for (const t of r.throughput) {
      expect(t.throughput.jobs, t.runtime).toBe(r.counts.jobs[t.runtime])
      expect(positive(t.throughput.jobsPerSecond), t.runtime).toBe(true)
      expect(positive(t.cpuMsPerJob.coordinator), t.runtime).toBe(true)
      expect(positive(t.cpuMsPerJob['node agents']), t.runtime).toBe(true)
      // Every award answers a bid (a counter-offer answers a lost one), comes with a result's ack or answers a standby.
      expect(t.auction.bidsPerJob + t.auction.nextShare + t.auction.standbyShare, t.runtime).toBeGreaterThanOrEqual(0.99)
      // Nodes write a delay window every 2 s: a run of a second or more sees at least one per node.
      expect(t.nodeEventLoopDelayMs.windows, t.runtime).toBeGreaterThanOrEqual(1)
      expect(finite(t.nodeEventLoopDelayMs.worstWindowP99), t.runtime).toBe(true)
    }
    // sim is measured a second time with batched submission.
    const batched = r.throughput.find((t: { runtime: string }) => t.runtime === 'sim').batched
    expect(batched.batch).toBe(100)
    expect(batched.throughput.jobs).toBe(r.counts.jobs.sim)
    expect(positive(batched.throughput.jobsPerSecond)).toBe(true)
    expect(positive(batched.cpuMsPerJob.coordinator)).toBe(true)
    const lat = r.throughput.find((t: { runtime: string }) => t.runtime === 'process').latencyMs
    expect(lat.jobs).toBe(r.counts.latencyJobs)
    for (const k of ['announceToAward', 'submitToRunning', 'submitToDone']) {
      expect(lat[k].n, k).toBe(r.counts.latencyJobs)
      expect(finite(lat[k].p99), k).toBe(true)
    }
    expect(r.scale.map((s: { nodes: number }) => s.nodes)).toEqual(r.counts.scale)
    for (const s of r.scale) {
      expect(positive(s.atRest.bytesPerSecond.p50), `bytes at ${s.nodes}`).toBe(true)
      expect(positive(s.atRest.rssMiB.p50), `rss at ${s.nodes}`).toBe(true)
      expect(s.atRest.rssMiB.n).toBe(s.nodes)
      expect(positive(s.newNodeEligibleMs)).toBe(true)
      expect(positive(s.throughput.jobsPerSecond)).toBe(true)
      expect(s.auction.bidsPerJob + s.auction.nextShare + s.auction.standbyShare).toBeGreaterThanOrEqual(0.99)
    }
    expect(r.recovery.msFromKillToRunningElsewhere.n).toBe(r.counts.kills)
    expect(r.store.map((b: { backend: string }) => b.backend)).toEqual(['sqlite', 'postgres'])
    for (const b of r.store) expect(positive(b.awardsPerSecond), b.backend).toBe(true)
    for (const p of r.peers) {
      if (p.skipped != null) continue
      expect(positive(p.throughput.jobsPerSecond), p.system).toBe(true)
      expect(Object.keys(p.latencyMs).length, p.system).toBeGreaterThan(0)
    }
    expect(r.peers.map((p: { system: string }) => p.system)).toEqual(['slurm', 'bullmq'])
    // The report renders short runs only on request; render this one as if it were full.
    writeFull(r)
    const md = renderSuite(join(dir, 'as-full')).join('\n')
    expect(md).toContain('### Throughput')
    expect(md).toContain('### Side by side')
    expect(md).toContain('The machine alone: ')
    expect(md).not.toContain('NaN')
  }, 600_000)
})

function writeFull (r: Record<string, unknown>): void {
  const out = join(dir, 'as-full')
  mkdirSync(out, { recursive: true })
  writeFileSync(join(out, 'suite-x.json'), JSON.stringify({ ...r, mode: 'full' }))
}
