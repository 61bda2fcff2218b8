/**
 * Scenario files for `rgrid sim`: errors name the line and the reason, the
 * shipped examples parse, and the generated workload depends on the seed
 * alone.
 */
import { describe, it, expect } from 'vitest'
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { loadTraceFiles, parseScenario, ScenarioError } from '../../cli/sim/scenario.js'
import { generateWorkload } from '../../cli/sim/workload.js'

const BASE = `name: t
duration: 10s
mesh:
  nodes:
    - count: 2
workload:
  arrival: { poisson: 5 }
`

function errorOf (text: string): ScenarioError {
  try {
    parseScenario(text, 's.yaml')
  } catch (err) {
    expect(err).toBeInstanceOf(ScenarioError)
    return err as ScenarioError
  }
  throw new Error('expected a ScenarioError')
}

describe('scenario files', () => {
  it('rejects an unknown key, naming its line', () => {
    const e = errorOf(BASE + 'colour: blue\n')
    expect(e.line).toBe(8)
    expect(e.message).toMatch(/^s\.yaml:8: .*colour/)
  })

  it('rejects a negative rate and a nested unknown key with their lines', () => {
    expect(errorOf(BASE.replace('poisson: 5', 'poisson: -5')).line).toBe(7)
    const nested = errorOf(BASE.replace('    - count: 2', '    - count: 2\n      slotz: 3'))
    expect(nested.line).toBe(6)
    expect(nested.message).toContain('slotz')
  })

  it('rejects events after the end and events naming nodes that do not exist', () => {
    const late = errorOf(BASE + 'events:\n  - { at: 20s, kill: node-0 }\n')
    expect(late.line).toBe(9)
    expect(late.reason).toContain('after the end of the scenario (10s)')
    const ghost = errorOf(BASE + 'events:\n  - { at: 2s, kill: node-7 }\n')
    expect(ghost.reason).toContain('node-7 does not exist (the mesh has node-0 to node-1)')
    // Added nodes count.
    expect(() => parseScenario(BASE + 'events:\n  - { at: 1s, addNodes: 6 }\n  - { at: 2s, kill: node-7 }\n')).not.toThrow()
  })

  it('rejects broken YAML and bad durations', () => {
    expect(errorOf('name: [unclosed\n').reason).toMatch(/not valid YAML/)
    expect(errorOf(BASE.replace('duration: 10s', 'duration: ten seconds')).reason).toMatch(/duration like 500ms/)
  })

  it('parses every shipped example', () => {
    const dir = join(import.meta.dirname, '..', '..', 'bench', 'scenarios')
    const files = readdirSync(dir).filter(f => f.endsWith('.yaml'))
    expect(files.sort()).toEqual(['churn.yaml', 'partition.yaml', 'steady.yaml'])
    for (const f of files) expect(parseScenario(readFileSync(join(dir, f), 'utf8'), f).name).toBe(f.replace('.yaml', ''))
  })
})

describe('workload generation', () => {
  it('is the same for the same seed and differs for another', () => {
    const s = parseScenario(BASE + 'seed: 4\n')
    const a = generateWorkload(s)
    const b = generateWorkload(s)
    expect(a).toEqual(b)
    expect(a.length).toBeGreaterThan(20)
    expect(generateWorkload(s, 5)).not.toEqual(a)
    for (const j of a) expect(j.atMs).toBeLessThanOrEqual(10_000)
  })

  it('follows the arrival process and the failure rate', () => {
    const fixed = generateWorkload(parseScenario(BASE.replace('poisson: 5', 'fixed: 10') + 'seed: 1\n'))
    expect(fixed).toHaveLength(100)
    expect(fixed[1]!.atMs - fixed[0]!.atMs).toBe(100)
    const bursts = generateWorkload(parseScenario(BASE.replace('{ poisson: 5 }', '{ bursts: { every: 5s, size: 7 } }')))
    // Arrivals fall in [0, duration): a burst at the end instant is not part of the run.
    expect(bursts.map(j => j.atMs)).toEqual([...Array(7).fill(0), ...Array(7).fill(5000)])
    const failing = generateWorkload(parseScenario(BASE.replace('poisson: 5', 'fixed: 100') + '  failRate: 0.5\n'))
    const share = failing.filter(j => j.exitCode === 1).length / failing.length
    expect(share).toBeGreaterThan(0.4)
    expect(share).toBeLessThan(0.6)
  })
})

describe('trace files', () => {
  const withTrace = BASE.replace('{ poisson: 5 }', '{ traceFile: jobs.csv }')
  it('inlines a CSV trace, and the workload follows it exactly', async () => {
    const s = await loadTraceFiles(parseScenario(withTrace), 's.yaml', async p => { expect(p).toBe('jobs.csv'); return 'at,duration,exitCode\n0s,1s,0\n1500ms,200ms,3\n2s,,\n' })
    const jobs = generateWorkload(s)
    expect(jobs.map(j => [j.atMs, j.exitCode])).toEqual([[0, 0], [1500, 3], [2000, 0]])
    expect(jobs.slice(0, 2).map(j => j.durationMs)).toEqual([1000, 200])
  })

  it('names the line of a bad row, a missing header and a job after the end', async () => {
    const err = async (csv: string): Promise<ScenarioError> => await loadTraceFiles(parseScenario(withTrace), 's.yaml', async () => csv).then(() => { throw new Error('expected an error') }, (e: unknown) => e as ScenarioError)
    expect((await err('at,duration\n1s,2s\nsoon,1s\n')).message).toMatch(/^jobs\.csv:3: soon,1s: .*duration/)
    expect((await err('1s,2s\n')).message).toMatch(/^jobs\.csv:1: .*header/)
    expect((await err('at,duration\n11s,1s\n')).message).toMatch(/^jobs\.csv:2: 11s is after the end/)
  })
})
