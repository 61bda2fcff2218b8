import { describe, it, expect, afterEach } from 'vitest'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { submitBatch, type BatchOptions } from '../../cli/batch.js'
import type { Client } from '../../cli/client.js'

const dirs: string[] = []
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }) })

function files (n: number): { dir: string, script: string } {
  const dir = mkdtempSync(join(tmpdir(), 'rgrid-batch-unit-'))
  dirs.push(dir)
  for (let i = 0; i < n; i++) writeFileSync(join(dir, `f${String(i).padStart(3, '0')}.csv`), `${i}\n`)
  const script = join(dir, 'count.sh')
  writeFileSync(script, 'wc -l "$1"\n')
  return { dir, script }
}

/** A client that stores nothing: uploads answer an object id, submissions are recorded (or refused from `failAt`). */
function fakeClient (failAt = Infinity): { client: Client, requests: unknown[][], uploads: () => number } {
  const requests: unknown[][] = []
  let uploads = 0
  const client = {
    upload: async () => { uploads++; return `obj-${uploads}` },
    submit: async () => { throw new Error('one request per job is not used for batches') },
    submitMany: async (specs: unknown[]) => {
      if (requests.length >= failAt) throw new Error('429: too many unfinished jobs')
      requests.push(specs)
      return specs.map((_, i) => ({ id: `job-${i}` }))
    }
  } as unknown as Client
  return { client, requests, uploads: () => uploads }
}

const options = (dir: string, script: string): BatchOptions =>
  ({ pattern: join(dir, '*.csv'), parallel: 8, script, args: [], env: {}, labels: {}, outputs: [], outputDir: dir })

describe('rgrid run --batch submission', () => {
  it('sends the specs 100 per request, each once, all with the batch id', async () => {
    const { dir, script } = files(250)
    const { client, requests } = fakeClient()
    const n = await submitBatch(client, options(dir, script), 'b-test', () => {})
    expect(n).toBe(250)
    expect(requests.map(r => r.length)).toEqual([100, 100, 50])
    const specs = requests.flat() as Array<{ batch: string, inputs: Array<{ path: string }> }>
    expect(new Set(specs.map(s => s.batch))).toEqual(new Set(['b-test']))
    // Each file's job exactly once.
    const perFile = specs.map(s => s.inputs.map(i => i.path).find(p => p.startsWith('inputs/'))).sort()
    expect(perFile).toEqual(Array.from({ length: 250 }, (_, i) => `inputs/f${String(i).padStart(3, '0')}.csv`))
  })

  it('a refused request ends the submission with its error, and stops uploading for the rest', async () => {
    const { dir, script } = files(600)
    const { client, requests, uploads } = fakeClient(1)
    await expect(submitBatch(client, options(dir, script), 'b-test', () => {})).rejects.toThrow(/429/)
    expect(requests).toHaveLength(1)
    // Two uploads per job (script and input); far fewer than for all 600 jobs.
    expect(uploads()).toBeLessThan(2 * 600)
  })
})
