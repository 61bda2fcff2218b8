/**
 * What this machine does for the work behind each throughput figure with
 * nothing of RGrid running: the reference a runtime's jobs/s is read against.
 * A reference rate, not a proven maximum: other set-ups of the same work give
 * somewhat different figures (docs/performance.md, change 12).
 *
 * - `process`: Node processes spawning `true` and waiting for it to exit, one
 *   per core, each with 4 spawns in flight, through the spawner the process
 *   runtime uses (rgrid-spawn when it was built, else Node's child_process in
 *   a host process, see node/runtime/). Every `process` job pays for one such
 *   spawn. Ten Node-spawning processes, as many as the mesh's process hosts,
 *   did 151–166 spawns/s where two did 168–175.
 * - `docker`: the engine alone through dockerode, create → start → wait →
 *   remove of a container running `true` in the cached test image, 8 at a
 *   time, with no network: every Docker job pays for at least these calls.
 *
 * Measured in the same suite run, right before the mesh runs, because this
 * virtual machine's speed changes from day to day (see docs/performance.md).
 */
import { spawn } from 'node:child_process'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import Docker from 'dockerode'
import { concurrently } from './concurrently.js'

/** One ceiling: how many per second, and how it was measured. */
export interface Ceiling {
  perSecond: number
  count: number
  seconds: number
  method: string
}

export interface Ceilings {
  /** Through the spawner the mesh's process runtime uses. */
  process: Ceiling
  /** Through Node's child_process, when the mesh used rgrid-spawn: what the helper is measured against. */
  processNode?: Ceiling
  docker: Ceiling | null
}

const WORKER = fileURLToPath(new URL('./spawn-worker.js', import.meta.url))

/** Runs `processes` spawn workers at once; the ceiling is their summed spawns over the wall time of the slowest. */
export async function spawnCeiling (o: { processes?: number, concurrency?: number, spawnsPerProcess: number, spawner: 'node' | 'helper', signal?: AbortSignal }): Promise<Ceiling> {
  const processes = o.processes ?? availableParallelism()
  const concurrency = o.concurrency ?? 4
  const t0 = performance.now()
  await Promise.all(Array.from({ length: processes }, async () => { await runWorker(o.spawnsPerProcess, concurrency, o.spawner, o.signal) }))
  const seconds = (performance.now() - t0) / 1000
  const count = processes * o.spawnsPerProcess
  return {
    perSecond: count / seconds, count, seconds,
    method: `${processes} Node processes (one per core), each spawning \`true\` ${o.spawnsPerProcess} times ${o.spawner === 'helper' ? 'through rgrid-spawn' : 'with child_process'}, ${concurrency} in flight, waiting for each exit`
  }
}

async function runWorker (spawns: number, concurrency: number, spawner: 'node' | 'helper', signal: AbortSignal | undefined): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, [WORKER, String(spawns), String(concurrency), spawner], { stdio: ['ignore', 'ignore', 'pipe'], signal })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    child.on('error', reject)
    child.on('exit', code => { code === 0 ? resolve() : reject(new Error(`spawn worker exited with ${code}: ${stderr.slice(-2000)}`)) })
  })
}

/** create → start → wait → remove, `concurrency` at a time. Throws when there is no engine or no image. */
export async function dockerCeiling (o: { image: string, containers: number, concurrency?: number, signal?: AbortSignal }): Promise<Ceiling> {
  const docker = new Docker()
  const concurrency = o.concurrency ?? 8
  const abortSignal = o.signal
  const one = async (): Promise<void> => {
    const c = await docker.createContainer({ Image: o.image, Cmd: ['true'], HostConfig: { NetworkMode: 'none', AutoRemove: false }, abortSignal })
    try {
      await c.start({ abortSignal })
      const res = await c.wait({ abortSignal }) as { StatusCode?: number }
      if (res.StatusCode !== 0) throw new Error(`\`true\` exited with ${String(res.StatusCode)} in ${o.image}`)
    } finally {
      await c.remove({ force: true, v: true })
    }
  }
  // One first, outside the clock: the engine's first container pays for loading the image's layers.
  await one()
  const t0 = performance.now()
  await concurrently(o.containers, concurrency, one)
  const seconds = (performance.now() - t0) / 1000
  return {
    perSecond: o.containers / seconds, count: o.containers, seconds,
    method: `dockerode create → start → wait → remove of \`true\` in ${o.image}, ${concurrency} at a time, network none`
  }
}
