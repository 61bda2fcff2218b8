/**
 * Spawns `true` N times, C in flight, and exits: one process of the spawn
 * ceiling (bench/ceilings.ts). Usage: node spawn-worker.js N C
 */
import { spawn } from 'node:child_process'
import { concurrently } from './concurrently.js'

const total = Number(process.argv[2])
const concurrency = Number(process.argv[3])
if (!Number.isInteger(total) || total < 1 || !Number.isInteger(concurrency) || concurrency < 1) {
  process.stderr.write('usage: spawn-worker.js SPAWNS CONCURRENCY\n')
  process.exit(2)
}

async function one (): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    // Same as the process runtime: its own process group, stdout and stderr piped.
    const child = spawn('true', [], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
    child.stdout.resume()
    child.stderr.resume()
    child.on('error', reject)
    child.on('exit', code => { code === 0 ? resolve() : reject(new Error(`true exited with ${code}`)) })
  })
}

await concurrently(total, concurrency, one)
