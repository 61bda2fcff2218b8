/**
 * The whole path with the Docker runtime: a node process running real
 * containers from the locally built test image. Skips without an engine,
 * except under CI=true, where that is a failure.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import Dockerode from 'dockerode'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { submit, waitForAll } from '../helpers/http.js'

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
  mesh = new LocalMesh({ dataDir, nodes: 1, slots: 3, runtime: 'docker', nodeArgs: () => ['--docker-default-image', IMAGE, '--memory-mb', '2048'] })
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
})
