/**
 * The whole path with the Docker runtime: a node process running real
 * containers from the locally built test image. Skips without an engine,
 * except under CI=true, where that is a failure.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import Dockerode from 'dockerode'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { submit, waitForAll, waitForJob, TERMINAL } from '../helpers/http.js'

const IMAGE = 'rgrid-test/busybox:latest'
const BUILD_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), '..', 'images', 'build.sh')
const docker = new Dockerode()
let unavailable: string | null = null
let mesh: LocalMesh | null = null
let dataDir = ''

beforeAll(async () => {
  try {
    await docker.ping()
  } catch (err) {
    unavailable = (err as Error).message
    if (process.env.CI === 'true') throw new Error(`CI=true but no Docker engine answers: ${unavailable}`)
    console.warn(`[docker mesh test skipped] ${unavailable}`)
    return
  }
  execFileSync('bash', [BUILD_SCRIPT], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 120_000 })
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-docker-mesh-'))
  mesh = new LocalMesh({
    dataDir, nodes: 1, slots: 3, runtime: 'docker', nodeArgs: () => ['--docker-default-image', IMAGE, '--memory-mb', '2048'],
    // The restart test needs the node back before the coordinator gives up on it.
    coordinatorArgs: ['--silent-node-ms', '20000']
  })
  await mesh.start()
  await mesh.waitForNodes(1)
}, 180_000)

afterAll(async () => {
  await mesh?.stop()
  if (dataDir !== '') rmSync(dataDir, { recursive: true, force: true })
})

describe('docker runtime end to end', () => {
  it('runs containers and ends timeouts, memory kills and missing images as failed with a reason', async (ctx) => {
    if (unavailable != null || mesh == null) { ctx.skip(`Docker engine unreachable: ${unavailable}`); return }
    const specs = [
      { command: ['sh', '-c', 'echo hello-from-container; echo to-stderr >&2'] },
      { command: ['sh', '-c', 'cat /sys/class/net/*/operstate | wc -l'] },
      { command: ['sleep', '60'], timeoutSeconds: 1 },
      { command: ['sh', '-c', 'x=$(head -c 64000000 /dev/zero | tr "\\0" x); echo ${#x}'], resources: { cpus: 1, memoryMb: 16 } },
      { image: 'rgrid-test/does-not-exist:latest', command: ['true'] }
    ]
    const ids: string[] = []
    for (const spec of specs) ids.push((await submit(mesh.httpUrl, spec)).body.id)
    const [ok, net, timeout, oom, missing] = await waitForAll(mesh.httpUrl, ids, 120_000)
    expect(ok?.state).toBe('succeeded')
    expect(ok?.result?.stdout).toBe('hello-from-container\n')
    expect(ok?.result?.stderr).toBe('to-stderr\n')
    // No network: only the loopback interface exists.
    expect(net?.result?.stdout.trim()).toBe('1')
    expect(timeout?.state).toBe('failed')
    expect(timeout?.result?.error?.code).toBe('timeout')
    expect(oom?.state).toBe('failed')
    expect(oom?.result?.error?.code).toBe('oom-killed')
    expect(missing?.state).toBe('failed')
    expect(missing?.result?.error?.code).toBe('image-missing')
    const left = await docker.listContainers({ all: true, filters: { label: [`rgrid.node=${mesh.nodePeerIds[0]}`] } })
    expect(left).toEqual([])
  })

  it('a node killed with SIGKILL and restarted adopts its running container: the job ends once with all its output', async (ctx) => {
    if (unavailable != null || mesh == null) { ctx.skip(`Docker engine unreachable: ${unavailable}`); return }
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', 'echo before; sleep 4; echo after'] })
    const running = await waitForJob(mesh.httpUrl, body.id, j => j.state === 'running', 30_000)
    const node = mesh.nodePeerIds[0]!
    expect(running.attempts[0]!.node).toBe(node)
    const restarted = await mesh.restart('node-0')
    expect(restarted.lines[0]).toBe(node)
    const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state), 60_000)
    expect(job.state).toBe('succeeded')
    // The same attempt, not a rerun: the container outlived its node and was followed again.
    expect(job.attempts.map(a => a.state)).toEqual(['succeeded'])
    expect(job.result?.stdout).toBe('before\nafter\n')
    expect(readFileSync(restarted.logFile, 'utf8')).toMatch(/adopting a container left by an earlier run/)
    const left = await docker.listContainers({ all: true, filters: { label: [`rgrid.node=${node}`] } })
    expect(left).toEqual([])
  })

  it('a cancel travels to the node and kills the container', async (ctx) => {
    if (unavailable != null || mesh == null) { ctx.skip(`Docker engine unreachable: ${unavailable}`); return }
    const { body } = await submit(mesh.httpUrl, { command: ['sleep', '300'] })
    await waitForJob(mesh.httpUrl, body.id, j => j.state === 'running', 30_000)
    const containers = async (): Promise<number> => (await docker.listContainers({ all: true, filters: { label: [`rgrid.job=${body.id}`] } })).length
    expect(await containers()).toBe(1)
    const res = await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/cancel`, { method: 'POST' })
    expect(res.status).toBe(200)
    const deadline = Date.now() + 15_000
    while (await containers() > 0) {
      if (Date.now() > deadline) throw new Error('the cancelled job\'s container is still there after 15 s')
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    const job = await waitForJob(mesh.httpUrl, body.id, () => true)
    expect(job.state).toBe('cancelled')
    expect(job.attempts.map(a => a.state)).toEqual(['cancelled'])
  })

  it('a container reads an uploaded input from /work and its two outputs come back as artifacts', async (ctx) => {
    if (unavailable != null || mesh == null) { ctx.skip(`Docker engine unreachable: ${unavailable}`); return }
    const data = 'line one\nline two\nline three\n'
    const sha256 = createHash('sha256').update(data).digest('hex')
    const grant = await (await fetch(`${mesh.httpUrl}/v1/uploads`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sha256, size: data.length }) })).json() as { object: string, url: string | null }
    if (grant.url != null) expect((await fetch(grant.url, { method: 'PUT', body: data })).status).toBe(200)
    const { body } = await submit(mesh.httpUrl, {
      command: ['sh', '-c', 'mkdir -p results && wc -l < in/data.txt > results/lines.txt && head -n 1 in/data.txt > results/first.txt'],
      inputs: [{ path: 'in/data.txt', object: grant.object }],
      outputs: [{ path: 'results/*.txt' }]
    })
    const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state), 60_000)
    expect(job.state, JSON.stringify(job.result)).toBe('succeeded')
    const { artifacts } = await (await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/artifacts`)).json() as { artifacts: Array<{ path: string, url: string }> }
    expect(artifacts.map(a => a.path)).toEqual(['results/first.txt', 'results/lines.txt'])
    expect(await (await fetch(artifacts[0]!.url)).text()).toBe('line one\n')
    expect((await (await fetch(artifacts[1]!.url)).text()).trim()).toBe('3')
  })
})
