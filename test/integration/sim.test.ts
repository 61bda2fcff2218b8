/**
 * The example scenarios in short form, run for real (processes on loopback,
 * the sim runtime, real signals for the faults): every job ends, no result
 * is duplicated, and the faults happened and were handled.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseScenario } from '../../dist/cli/sim/scenario.js'
import { runScenario } from '../../dist/cli/sim/run.js'

const out = mkdtempSync(join(tmpdir(), 'rgrid-sim-'))
afterAll(() => { rmSync(out, { recursive: true, force: true }) })

const example = (name: string): string => readFileSync(join(import.meta.dirname, '..', '..', 'bench', 'scenarios', `${name}.yaml`), 'utf8')

/** The example with a shorter run, keeping its mesh, workload shape and faults (scaled in time). */
function short (name: string, replace: Array<[RegExp, string]>): ReturnType<typeof parseScenario> {
  let text = example(name)
  for (const [from, to] of replace) text = text.replace(from, to)
  return parseScenario(text, `${name}.yaml`)
}

async function run (name: string, s: ReturnType<typeof parseScenario>): Promise<Record<string, any>> {
  const dir = join(out, name)
  const summary = await runScenario(s, { outDir: dir, log: () => {} })
  for (const f of ['summary.json', 'jobs.csv', 'jobs.json', 'faults.json', 'events.json', 'states.svg', 'wait-cdf.svg', 'utilisation.svg', 'report.html']) expect(existsSync(join(dir, f)), f).toBe(true)
  expect(JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8'))).toEqual(summary)
  return summary
}

describe('rgrid sim', () => {
  it('steady: every job ends, none twice', async () => {
    const s = short('steady', [[/duration: 30s/, 'duration: 5s'], [/count: 10/, 'count: 4'], [/poisson: 40/, 'poisson: 20']])
    const r = await run('steady', s)
    expect(r.jobs).toBeGreaterThan(50)
    expect(r.lost).toBe(0)
    expect(r.duplicates).toBe(0)
    expect(r.succeeded + r.failed).toBe(r.jobs)
    expect(r.failed).toBeGreaterThanOrEqual(0)
    expect(r.gossipBytesPerNode.mean).toBeGreaterThan(0)
    // The coordinator's event log of every job, and when each was announced.
    const events = JSON.parse(readFileSync(join(out, 'steady', 'events.json'), 'utf8')) as Array<{ job: number, type: string }>
    expect(new Set(events.filter(e => e.type === 'finished').map(e => e.job)).size).toBe(r.jobs)
    const jobs = JSON.parse(readFileSync(join(out, 'steady', 'jobs.json'), 'utf8')) as Array<{ submittedAt: number, announcedAt: number | null }>
    for (const j of jobs) expect(j.announcedAt).toBeGreaterThanOrEqual(j.submittedAt)
    const csv = readFileSync(join(out, 'steady', 'jobs.csv'), 'utf8').trim().split('\n')
    expect(csv).toHaveLength(r.jobs + 1)
  })

  it('churn: killed, paused and restarted nodes and new ones; jobs rescheduled, none lost or duplicated', async () => {
    const s = short('churn', [
      [/duration: 40s/, 'duration: 12s'], [/poisson: 20/, 'poisson: 10'],
      [/at: 5s, kill/, 'at: 2s, kill'], [/at: 10s, pause/, 'at: 3s, pause'], [/at: 18s, resume/, 'at: 9s, resume'],
      [/at: 20s, restart/, 'at: 8s, restart'], [/at: 25s, addNodes/, 'at: 10s, addNodes'], [/at: 30s, kill: node-9/, 'at: 11s, kill: node-9']
    ])
    const r = await run('churn', s)
    expect(r.faults).toBe(6)
    expect(r.nodes).toBe(12)
    expect(r.lost).toBe(0)
    expect(r.duplicates).toBe(0)
    expect(r.succeeded).toBe(r.jobs)
    const faults = JSON.parse(readFileSync(join(out, 'churn', 'faults.json'), 'utf8')) as Array<{ event: string }>
    expect(faults.map(f => f.event)).toEqual(['kill', 'pause', 'restart', 'resume', 'add-nodes', 'kill'])
  }, 180_000)

  it('partition: cut-off nodes healed, lossy gossip; every job ends once', async () => {
    const s = short('partition', [[/duration: 40s/, 'duration: 12s'], [/size: 60/, 'size: 30'], [/at: 8s, cut/, 'at: 2s, cut'], [/at: 9s, cut/, 'at: 3s, cut'], [/at: 20s, heal/, 'at: 8s, heal'], [/at: 22s, heal/, 'at: 9s, heal'],
      [/at: 12s, slow/, 'at: 4s, slow'], [/at: 15s, dropGossip/, 'at: 5s, dropGossip'], [/at: 30s, slow/, 'at: 10s, slow']])
    const r = await run('partition', s)
    expect(r.faults).toBe(7)
    const faults = JSON.parse(readFileSync(join(out, 'partition', 'faults.json'), 'utf8')) as Array<{ event: string, target: string }>
    expect(faults.map(f => f.event)).toEqual(['cut', 'cut', 'slow 300ms', 'drop 50% gossip', 'heal', 'heal', 'slow 0ms'])
    // The slowed node read its control file: its log says so.
    expect(readFileSync(join(out, 'partition', 'mesh', 'logs', 'node-3.log'), 'utf8')).toMatch(/fault injection changed.*"delayMs":300/)
    expect(r.lost).toBe(0)
    expect(r.duplicates).toBe(0)
    expect(r.succeeded).toBe(r.jobs)
  })
})
