/**
 * A node never forgets a result: the coordinator is killed while a job runs,
 * the job finishes into the node's outbox, the node is killed too, then both
 * restart (same data dirs) and the result is recorded, once.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { mkdtempSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { submit, waitForJob, TERMINAL } from '../helpers/http.js'

const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-outbox-'))
const mesh = new LocalMesh({ dataDir, nodes: 1, slots: 1, runtime: 'process', coordinatorArgs: ['--lease-ms', '30000'] })

afterAll(async () => {
  await mesh.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

function outboxRows (): number {
  const path = join(dataDir, 'node-0', 'outbox.db')
  if (!existsSync(path)) return 0
  const db = new Database(path, { fileMustExist: true })
  try {
    return (db.prepare('SELECT COUNT(*) AS n FROM outbox').get() as { n: number }).n
  } finally {
    db.close()
  }
}

describe('node outbox', () => {
  it('delivers a result across a coordinator crash and a node crash', async () => {
    await mesh.start()
    await mesh.waitForNodes(1)
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', 'sleep 1; echo kept'] })
    await waitForJob(mesh.httpUrl, body.id, j => j.state === 'running')
    // The coordinator goes away while the job runs; the result has nowhere to go but the outbox.
    mesh.processes.find(p => p.name === 'coordinator')!.child.kill('SIGKILL')
    const deadline = Date.now() + 20_000
    while (outboxRows() === 0) {
      if (Date.now() > deadline) {
        const { readFileSync, readdirSync } = await import('node:fs')
        console.log(readdirSync(join(dataDir, 'node-0')), readFileSync(join(dataDir, 'logs', 'node-0.log'), 'utf8').split('\n').slice(-15).join('\n'))
        throw new Error('the result never reached the node\'s outbox')
      }
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    await mesh.restart('node-0')
    // The restarted node still has it on disk (it could not deliver it: no coordinator).
    expect(outboxRows()).toBe(1)
    await mesh.restart('coordinator')
    const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state), 60_000)
    expect(job.state).toBe('succeeded')
    expect(job.result?.stdout).toBe('kept\n')
    expect(job.attempts).toHaveLength(1)
    const settled = Date.now() + 10_000
    while (outboxRows() > 0 && Date.now() < settled) await new Promise(resolve => setTimeout(resolve, 100))
    expect(outboxRows()).toBe(0)
  })
})
