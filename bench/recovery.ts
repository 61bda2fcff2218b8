/**
 * Recovery benchmark: time from a node's death (SIGKILL) to its job running
 * on another node, over many kills. A mesh of processes on loopback; each
 * round pins a long job to a victim node by label, kills the node once the
 * job runs, measures until the next attempt has started elsewhere, then
 * restarts the victim (same identity) for the next round.
 *
 * Writes bench/results/recovery-<timestamp>.json.
 * Usage: node dist/bench/recovery.js [--kills 20]
 */
import { parseArgs } from 'node:util'
import { mkdtempSync, rmSync, mkdirSync, writeFileSync } from 'node:fs'
import { tmpdir, cpus } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { LocalMesh } from '../cli/local-mesh.js'
import { ROOT, commit } from './measure.js'
import { percentile } from '../common/percentile.js'


interface JobJson { id: string, state: string, attempts: Array<{ number: number, node: string, state: string, startedAt: number | null }> }

async function job (url: string, id: string): Promise<JobJson> {
  return await (await fetch(`${url}/v1/jobs/${id}`)).json() as JobJson
}

async function until (url: string, id: string, ok: (j: JobJson) => boolean, timeoutMs: number): Promise<JobJson> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const j = await job(url, id)
    if (ok(j)) return j
    if (Date.now() > deadline) throw new Error(`job ${id} did not get there in ${timeoutMs} ms: ${JSON.stringify(j)}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

/** The detector settings the samples were taken with (the defaults). */
export const RECOVERY_DEFAULTS = 'heartbeat 1 s, silence 3 s, probe grace 1.5 s, scan 0.5 s, lease 15 s'

/** Kills `kills` nodes one after another; resolves each kill's ms until its job ran elsewhere. */
export async function recoverySamples (kills: number, log: (line: string) => void = line => { process.stderr.write(line + '\n') }): Promise<number[]> {
  const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-recovery-'))
  // Whichever node runs the round's job is killed; the other two take over.
  const mesh = new LocalMesh({ dataDir, nodes: 3, slots: 1, runtime: 'process', logLevel: 'warn', nodeArgs: () => ['--labels', 'pool=x'] })
  const samples: number[] = []
  try {
    await mesh.start()
    await mesh.waitForNodes(3)
    for (let k = 0; k < kills; k++) {
      const res = await fetch(`${mesh.httpUrl}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ command: ['sleep', '60'], labels: { pool: 'x' }, maxAttempts: 10 }) })
      const { id } = await res.json() as { id: string }
      const running = await until(mesh.httpUrl, id, j => j.state === 'running', 30_000)
      const victim = running.attempts[0]!.node
      const name = `node-${mesh.nodePeerIds.indexOf(victim)}`
      const proc = mesh.processes.find(p => p.name === name)!
      const killedAt = Date.now()
      proc.child.kill('SIGKILL')
      const moved = await until(mesh.httpUrl, id, j => j.attempts.length >= 2 && j.attempts[1]!.startedAt != null, 120_000)
      samples.push(moved.attempts[1]!.startedAt! - killedAt)
      log(`kill ${k + 1}/${kills}: running elsewhere after ${samples.at(-1)} ms`)
      await fetch(`${mesh.httpUrl}/v1/jobs/${id}/cancel`, { method: 'POST' })
      await mesh.restart(name)
      await mesh.waitForNodes(3)
    }
  } finally {
    await mesh.stop()
    rmSync(dataDir, { recursive: true, force: true })
  }
  return samples
}

async function main (): Promise<void> {
  const { values } = parseArgs({ options: { kills: { type: 'string' } } })
  const kills = Number(values.kills ?? 20)
  const samples = await recoverySamples(kills)
  const s = [...samples].sort((a, b) => a - b)
  const pct = (p: number): number => percentile(s, p)
  const result = {
    benchmark: 'recovery', date: new Date().toISOString(), commit: commit(), machine: { cpus: cpus().length, node: process.version },
    config: { kills, nodes: 3, defaults: RECOVERY_DEFAULTS },
    msFromKillToRunningElsewhere: { n: s.length, p50: pct(50), p95: pct(95), max: s.at(-1), samples }
  }
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true })
  const file = join(ROOT, 'bench', 'results', `recovery-${result.date.replace(/[:.]/g, '-')}.json`)
  writeFileSync(file, JSON.stringify(result, null, 2) + '\n')
  process.stdout.write(`${JSON.stringify(result.msFromKillToRunningElsewhere)}\nwritten to ${file}\n`)
}

// Run only as a script, so the suite can import recoverySamples.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  })
}
