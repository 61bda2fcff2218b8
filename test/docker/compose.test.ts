/**
 * The docker-compose deployment with the host-network override: PostgreSQL
 * (the local stand-in image where no registry is reachable), bootstrap,
 * coordinator and 5 nodes from the rgrid image built here. 100 jobs; one
 * node killed with `docker kill` mid-run; every job still ends exactly once;
 * `down -v` leaves no container or volume behind. The nodes use the sim
 * runtime (no Docker socket needed). Skips without Docker or docker-compose,
 * except under CI=true.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { execFileSync, spawnSync } from 'node:child_process'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { submit, waitForAll, getJob, bearer } from '../helpers/http.js'
import { expectExactlyOnce } from '../helpers/exactly-once.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const PROJECT = `rgridtest${process.pid}`
const URL = 'http://127.0.0.1:18080'
let apiKey = ''
const ENV = { ...process.env, RGRID_IMAGE: 'rgrid:local', RGRID_POSTGRES_IMAGE: 'rgrid-test/postgres:17', RGRID_RUNTIME: 'sim' }
let unavailable: string | null = null
let up = false
/** Volumes before the deployment: anonymous ones carry no project label, so compare counts. */
let volumesBefore = 0
const allVolumes = (): string[] => spawnSync('docker', ['volume', 'ls', '-q'], { encoding: 'utf8' }).stdout.trim().split('\n').filter(v => v !== '')

function compose (...args: string[]): string {
  const r = spawnSync('docker-compose', ['-p', PROJECT, '-f', 'docker-compose.yml', '-f', 'docker-compose.host.yml', ...args], { cwd: ROOT, env: ENV, encoding: 'utf8', timeout: 300_000 })
  if (r.status !== 0) throw new Error(`docker-compose ${args.join(' ')} failed (${r.status}): ${r.stderr.slice(-2000)}`)
  return r.stdout
}

beforeAll(async () => {
  for (const [cmd, args] of [['docker', ['info']], ['docker-compose', ['version']]] as const) {
    const r = spawnSync(cmd, [...args], { encoding: 'utf8' })
    if (r.status !== 0 || r.error != null) { unavailable = `${cmd} unavailable: ${r.error?.message ?? r.stderr.slice(0, 200)}`; break }
  }
  if (unavailable != null) {
    if (process.env.CI === 'true') throw new Error(`CI=true but ${unavailable}`)
    return
  }
  // The images, built here from local files (test/images/*.sh) and this checkout.
  for (const script of ['build-node-base.sh', 'build-postgres.sh']) execFileSync('bash', [join(ROOT, 'test', 'images', script)], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 })
  execFileSync('docker', ['build', '-q', '--build-arg', 'BASE=rgrid-test/node:24', '-t', 'rgrid:local', '.'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 })
  volumesBefore = allVolumes().length
  compose('up', '-d', '--scale', 'node=5', 'postgres', 'bootstrap', 'coordinator', 'node')
  up = true
  const deadline = Date.now() + 120_000
  for (;;) {
    try {
      // The coordinator writes an admin API key into its data volume at start (--admin-key-file).
      if (apiKey === '') apiKey = compose('exec', '-T', 'coordinator', 'cat', '/data/coordinator/admin.key').trim()
      const { nodes } = await (await fetch(`${URL}/v1/nodes`, { headers: bearer(apiKey) })).json() as { nodes: Array<{ session: boolean }> }
      if (nodes.filter(n => n.session).length >= 5) break
    } catch (err) {
      // The coordinator may still be starting.
      if (Date.now() > deadline) throw err
    }
    if (Date.now() > deadline) throw new Error('5 nodes did not connect within 120 s')
    await new Promise(resolve => setTimeout(resolve, 500))
  }
}, 900_000)

afterAll(() => {
  if (up) compose('down', '-v')
})

describe('docker-compose deployment', () => {
  it('runs 100 jobs on 5 nodes, survives a docker kill of one, and leaves nothing behind', async (ctx) => {
    if (unavailable != null) { ctx.skip(unavailable); return }
    const ids: string[] = []
    expect(apiKey).toMatch(/^rgk_/)
    expect((await submit(URL, { command: ['sim', '1', '0'] })).status).toBe(401)
    for (let i = 0; i < 100; i++) ids.push((await submit(URL, { command: ['sim', i % 10 === 0 ? '2000' : '200', '0'], maxAttempts: 3 }, apiKey)).body.id)
    // Kill the node running a long job that has just started.
    let victim: string | null = null
    const deadline = Date.now() + 60_000
    while (victim == null && Date.now() < deadline) {
      for (let i = 0; i < 100 && victim == null; i += 10) {
        const a = (await getJob(URL, ids[i]!, apiKey)).attempts.at(-1)
        if (a?.state === 'running' && a.startedAt != null && Date.now() - a.startedAt < 1000) victim = a.node
      }
      if (victim == null) await new Promise(resolve => setTimeout(resolve, 50))
    }
    expect(victim).not.toBeNull()
    const containers = compose('ps', '-q', 'node').trim().split('\n')
    let killed = false
    for (const c of containers) {
      const logs = spawnSync('docker', ['logs', c], { encoding: 'utf8' })
      if (`${logs.stdout}${logs.stderr}`.includes(victim!)) { execFileSync('docker', ['kill', c]); killed = true; break }
    }
    expect(killed).toBe(true)
    const jobs = await waitForAll(URL, ids, 180_000, apiKey)
    const summary = await expectExactlyOnce(URL, jobs, i => `sim ${i % 10 === 0 ? 2000 : 200} ms\n`, apiKey)
    expect(summary.replaced).toBeGreaterThan(0)
    compose('down', '-v')
    up = false
    const left = spawnSync('docker', ['ps', '-a', '-q', '--filter', `label=com.docker.compose.project=${PROJECT}`], { encoding: 'utf8' }).stdout.trim()
    const volumes = spawnSync('docker', ['volume', 'ls', '-q', '--filter', `label=com.docker.compose.project=${PROJECT}`], { encoding: 'utf8' }).stdout.trim()
    expect(left).toBe('')
    expect(volumes).toBe('')
    // Each node's own anonymous /data volume went too.
    expect(allVolumes()).toHaveLength(volumesBefore)
  })
})
