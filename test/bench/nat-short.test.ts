/**
 * The NAT benchmark (bench/nat.ts) with small counts, run for real on the
 * NAT lab: it must produce every figure for every kind of node. No timing
 * is asserted; this fails only when the benchmark breaks.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { netnsUnavailable } from '../../dist/cli/nat-lab.js'

const ROOT = join(import.meta.dirname, '..', '..')
const dir = mkdtempSync(join(tmpdir(), 'rgrid-nat-bench-test-'))
afterAll(() => { rmSync(dir, { recursive: true, force: true }) })

const unavailable = netnsUnavailable()
if (unavailable != null) {
  if (process.env.CI === 'true') throw new Error(`CI=true but the NAT benchmark cannot build namespaces: ${unavailable}`)
  console.warn(`\n*** NAT benchmark test SKIPPED: ${unavailable} ***\n`)
}

describe.skipIf(unavailable != null)('node dist/bench/nat.js (short)', () => {
  it('measures join → first bid and idle latencies for public, NATed and relay-only nodes', async () => {
    const { code, stderr } = await new Promise<{ code: number | null, stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [join(ROOT, 'dist', 'bench', 'nat.js'), '--joins', '1', '--jobs', '10', '--results-dir', dir, '--no-docs'], { stdio: ['ignore', 'ignore', 'pipe'] })
      let err = ''
      child.stderr.on('data', (d: Buffer) => { err += d.toString() })
      child.on('error', reject)
      child.on('exit', c => { resolve({ code: c, stderr: err }) })
    })
    expect(code, stderr.slice(-4000)).toBe(0)
    const files = readdirSync(dir).filter(n => n.startsWith('nat-'))
    expect(files).toHaveLength(1)
    const r = JSON.parse(readFileSync(join(dir, files[0]!), 'utf8'))
    for (const kind of ['public', 'nat', 'relay']) {
      expect(r.joinToFirstBidMs[kind].n).toBe(1)
      expect(r.joinToFirstBidMs[kind].p50).toBeGreaterThan(0)
      for (const figure of ['announceToAwardMs', 'submitToRunningMs']) {
        expect(r[figure][kind].n).toBe(10)
        expect(Number.isFinite(r[figure][kind].p99)).toBe(true)
      }
    }
    expect(r.relaySessionsOpened).toBeGreaterThanOrEqual(1)
    // The relay-only node's session really ran through the relay.
    expect(r.relaySessionThroughRelay).toBe(true)
  }, 240_000)
})
