/**
 * Spawns `true` N times, C in flight, and exits: one process of the spawn
 * ceiling (bench/ceilings.ts). Usage: node spawn-worker.js N C [node|helper]
 * `node`: Node's child_process, as a node's process host does without
 * rgrid-spawn; `helper`: rgrid-spawn, as the process runtime does with it.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { concurrently } from './concurrently.js'
import { NodeSpawner, type Spawner } from '../node/runtime/spawner.js'
import { SpawnHelper } from '../node/runtime/spawn-helper.js'
import { OutputCollector } from '../node/runtime/output.js'
import { createLogger } from '../common/log.js'

const total = Number(process.argv[2])
const concurrency = Number(process.argv[3])
const kind = process.argv[4] ?? 'node'
if (!Number.isInteger(total) || total < 1 || !Number.isInteger(concurrency) || concurrency < 1 || (kind !== 'node' && kind !== 'helper')) {
  process.stderr.write('usage: spawn-worker.js SPAWNS CONCURRENCY [node|helper]\n')
  process.exit(2)
}

// Same as the process runtime: the spawner it uses, its own process group,
// stdout and stderr captured, a work dir as cwd, a small environment.
const spawner: Spawner = kind === 'helper' ? new SpawnHelper({ log: createLogger('spawn-worker'), jobNice: 0 }) : new NodeSpawner()
const cwd = mkdtempSync(join(tmpdir(), 'rgrid-spawn-ceiling-'))
const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: cwd, LANG: 'C.UTF-8' }

async function one (): Promise<void> {
  const child = await spawner.spawn({ program: 'true', args: [], cwd, env, stdout: new OutputCollector(), stderr: new OutputCollector() })
  const end = await child.ended
  await child.drain(2000)
  if (end.kind !== 'exit' || end.code !== 0) throw new Error(`true ended with ${JSON.stringify(end)}`)
}

await spawner.start()
try {
  await concurrently(total, concurrency, one)
} finally {
  await spawner.stop()
  rmSync(cwd, { recursive: true, force: true })
}
