/**
 * What a job can and cannot do, tried from inside its container: each test
 * runs a job that attempts what a restriction forbids and asserts on how it
 * failed, with a control showing the test would notice if the restriction
 * were missing. Uses DockerRuntime directly with the locally built
 * rgrid-test/busybox image. The user, capabilities, read-only root and
 * docker socket are covered in docker-runtime.test.ts.
 */
import { describe, it, expect, beforeAll, beforeEach, afterEach, type TestContext } from 'vitest'
import { mkdir, mkdtemp, rm, writeFile, realpath } from 'node:fs/promises'
import { createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import Dockerode from 'dockerode'
import { jobSpecSchema, type JobSpecInput } from '../../protocol/schemas.js'
import { IDENTITY_FILE } from '../../common/identity.js'
import { leftContainers, prepareDocker } from '../helpers/docker.js'
import { silentLogger } from '../../common/log.js'
import { DockerRuntime, type DockerRuntimeOptions } from '../../node/runtime/docker.js'
import type { RunOutcome } from '../../node/runtime/types.js'

const IMAGE = 'rgrid-test/busybox:latest'
const RUN_LABEL = { 'rgrid.test-run': randomUUID() }
const SECRET = `node-identity-${randomUUID()}`

const docker = new Dockerode()
const runtimeWith = (options: DockerRuntimeOptions = {}): DockerRuntime =>
  new DockerRuntime({ docker, defaultImage: IMAGE, killGraceMs: 500, labels: RUN_LABEL, logger: silentLogger, diskPollMs: 200, ...options })
const runtime = runtimeWith()
let unavailable: string | null = null
/** Laid out as a node's: DATA_DIR/peer.key next to DATA_DIR/work/JOB-ATTEMPT (see NodeAgent's workDir). */
let dataDir: string
let workDir: string

beforeAll(async () => {
  unavailable = await prepareDocker(docker)
}, 180_000)

beforeEach(async () => {
  dataDir = await realpath(await mkdtemp(join(tmpdir(), 'rgrid-node-data-')))
  await writeFile(join(dataDir, IDENTITY_FILE), SECRET + '\n', { mode: 0o644 })
  workDir = join(dataDir, 'work', `job-${randomUUID()}-1`)
  await mkdir(workDir, { recursive: true })
})

afterEach(async () => {
  await rm(dataDir, { recursive: true, force: true })
  if (unavailable !== null) return
  expect(await leftContainers(docker, RUN_LABEL)).toEqual([])
})

function needDocker (ctx: TestContext): void {
  if (unavailable !== null) ctx.skip(`Docker engine unreachable: ${unavailable}`)
}

async function run (input: JobSpecInput, opts: { rt?: DockerRuntime, signal?: AbortSignal, onStarted?: (t: number) => void, jobId?: string } = {}): Promise<RunOutcome> {
  return await (opts.rt ?? runtime).run({
    jobId: opts.jobId ?? randomUUID(),
    attempt: 1,
    spec: jobSpecSchema.parse(input),
    workDir,
    signal: opts.signal ?? new AbortController().signal,
    ...(opts.onStarted != null ? { onStarted: opts.onStarted } : {})
  })
}

/** A TCP server on all host addresses that greets and counts who connects. */
async function listen (): Promise<{ server: Server, port: number, connections: Socket[] }> {
  const connections: Socket[] = []
  const server = createServer(socket => {
    connections.push(socket)
    socket.end('hello-from-host\n')
  })
  await new Promise<void>(resolve => server.listen(0, '0.0.0.0', resolve))
  const address = server.address()
  if (address == null || typeof address === 'string') throw new Error('no port')
  return { server, port: address.port, connections }
}

/**
 * The host's address on Docker's default bridge (its gateway), as containers on it see the host. Some engines
 * (a freshly started Debian docker.io 20.10) list the bridge's subnet without a gateway; Docker then gives the
 * bridge the subnet's first address, which is what containers reach the host at.
 */
async function bridgeGateway (): Promise<string> {
  const info = await docker.getNetwork('bridge').inspect() as { IPAM?: { Config?: Array<{ Gateway?: string, Subnet?: string }> } }
  const config = info.IPAM?.Config ?? []
  const gateway = config.find(c => c.Gateway != null)?.Gateway
  if (gateway != null) return gateway
  const subnet = config.map(c => c.Subnet).find(s => s != null && /^\d+\.\d+\.\d+\.\d+\/\d+$/.test(s))
  if (subnet == null) throw new Error(`the bridge network lists neither a gateway nor an IPv4 subnet: ${JSON.stringify(config)}`)
  const [a, b, c, d] = subnet.split('/')[0]!.split('.').map(Number) as [number, number, number, number]
  const first = ((a << 24) | (b << 16) | (c << 8) | d) + 1
  return [first >>> 24, (first >>> 16) & 255, (first >>> 8) & 255, first & 255].join('.')
}

describe('container security', { timeout: 60_000 }, () => {
  describe('network', () => {
    it('a job without network cannot reach a server on the host; with network on a node that allows it, it can', async (ctx) => {
      needDocker(ctx)
      const { server, port, connections } = await listen()
      try {
        const gateway = await bridgeGateway()
        const dial = ['sh', '-c', `nc -w 3 ${gateway} ${port} </dev/null && echo reached || echo unreachable`]
        const open = runtimeWith({ allowNetwork: true })

        // Network allowed by the node but not asked for: still none.
        const isolated = await run({ command: dial }, { rt: open })
        expect(isolated.stdout).toBe('unreachable\n')
        expect(isolated.stderr).toMatch(/can't connect|unreachable/i)
        expect(connections).toHaveLength(0)

        // Control: the same dial from a job that asked, on a node that allows it, gets through.
        const networked = await run({ command: dial, network: true }, { rt: open })
        expect(networked, networked.stderr).toMatchObject({ outcome: 'succeeded', stdout: 'hello-from-host\nreached\n' })
        expect(connections).toHaveLength(1)
      } finally {
        server.close()
      }
    })

    it('refuses a network job on a node that does not allow network, without running it', async (ctx) => {
      needDocker(ctx)
      let started = false
      const res = await run({ command: ['sh', '-c', 'echo ran'], network: true }, { onStarted: () => { started = true } })
      expect(res).toMatchObject({ outcome: 'failed', exitCode: null, stdout: '', startedAt: null })
      // Another node may allow it.
      expect(res.error).toMatchObject({ code: 'network-not-allowed', retryable: true })
      expect(started).toBe(false)
      expect(runtime.policy.network).toBe(false)
    })
  })

  describe('file system', () => {
    it('the root is read-only while /work is writable', async (ctx) => {
      needDocker(ctx)
      const res = await run({ command: ['sh', '-c', 'touch /x; echo in-work > /work/ok && cat /work/ok'] })
      expect(res.stderr).toContain('touch: /x: Read-only file system')
      expect(res.stdout).toBe('in-work\n')
    })

    it('cannot read the node data dir (its identity key) by any path, nor find the docker socket', async (ctx) => {
      needDocker(ctx)
      // Control: a file in the job's own dir is readable, so a cat that finds its file prints it.
      await writeFile(join(workDir, 'own.txt'), 'own-file\n')
      const attempts = [
        'cat /work/own.txt',
        `cat /work/../${IDENTITY_FILE}`,
        `cat /work/../../${IDENTITY_FILE}`,
        `cat ${join(dataDir, IDENTITY_FILE)}`,
        `cat ${join(workDir, '..', '..', IDENTITY_FILE)}`,
        `ls ${dataDir}`,
        'ls /var/run/docker.sock /run/docker.sock',
        // Anywhere at all: a mount of the data dir or the socket under another name would show here.
        `find / -path /proc -prune -o -path /sys -prune -o \\( -name ${IDENTITY_FILE} -o -name docker.sock \\) -print`
      ]
      const res = await run({ command: ['sh', '-c', attempts.map(a => `${a}; echo "rc=$?"`).join('; ')] })
      expect(res.stdout).not.toContain(SECRET)
      expect(res.stdout.split('\n').filter(l => l.startsWith('rc='))).toEqual(['rc=0', 'rc=1', 'rc=1', 'rc=1', 'rc=1', 'rc=1', 'rc=1', 'rc=0'])
      expect(res.stdout).toContain('own-file\n')
      // find printed nothing: its rc=0 line follows ls's directly.
      expect(res.stdout).toMatch(/rc=1\nrc=0\n$/)
      expect(res.stderr).toContain(`cat: can't open '/work/../${IDENTITY_FILE}': No such file or directory`)
      expect(res.stderr).toContain(`cat: can't open '${join(dataDir, IDENTITY_FILE)}': No such file or directory`)
      expect(res.stderr).toContain('/var/run/docker.sock: No such file or directory')
    })

    it('mounts nothing of the node but the job\'s own work dir, and shares no host namespace', async (ctx) => {
      needDocker(ctx)
      const jobId = randomUUID()
      const ac = new AbortController()
      let inspected: Promise<Dockerode.ContainerInspectInfo> | undefined
      await run({ command: ['sleep', '30'] }, {
        jobId,
        signal: ac.signal,
        onStarted: () => {
          inspected = docker.listContainers({ filters: { label: [`rgrid.job=${jobId}`] } })
            .then(async list => await docker.getContainer(list[0]?.Id ?? 'missing').inspect())
            .finally(() => { ac.abort() })
        }
      })
      const info = await inspected
      if (info == null) throw new Error('not inspected')
      // Exactly the work dir, not its parent (the data dir with the identity key).
      expect(info.Mounts.map(m => ({ Type: m.Type, Source: m.Source, Destination: m.Destination }))).toEqual([{ Type: 'bind', Source: workDir, Destination: '/work' }])
      expect(info.HostConfig.Binds ?? []).toEqual([])
      expect(info.HostConfig.Mounts?.map(m => m.Source)).toEqual([workDir])
      expect(info.Mounts.some(m => m.Source === dataDir || (m.Source ?? '').includes('docker.sock'))).toBe(false)
      expect(info.HostConfig.Privileged).toBe(false)
      expect(info.HostConfig.PidMode ?? '').not.toBe('host')
      expect(info.HostConfig.IpcMode).not.toBe('host')
      expect(info.HostConfig.NetworkMode).toBe('none')
      expect(info.HostConfig.UsernsMode ?? '').not.toBe('host')
      expect(info.HostConfig.Devices ?? []).toEqual([])
    })

    it('refuses a work dir that is a link (Docker would mount its target)', async (ctx) => {
      needDocker(ctx)
      const { symlink } = await import('node:fs/promises')
      const link = join(dataDir, 'work', 'linked-1')
      await symlink(dataDir, link)
      const res = await runtime.run({ jobId: randomUUID(), attempt: 1, spec: jobSpecSchema.parse({ command: ['cat', `/work/${IDENTITY_FILE}`] }), workDir: link, signal: new AbortController().signal })
      expect(res.stdout).not.toContain(SECRET)
      expect(res.error).toMatchObject({ code: 'node-error', retryable: true })
      expect(res.startedAt).toBeNull()
    })
  })

  describe('limits', () => {
    it('bounds a fork bomb by the pids limit, and the job ends within its timeout', async (ctx) => {
      needDocker(ctx)
      const bomb = ['sh', '-c', 'for i in $(seq 64); do sleep 30 & done; echo all-started']
      const t0 = Date.now()
      const res = await run({ command: bomb, timeoutSeconds: 20 }, { rt: runtimeWith({ pidsLimit: 32 }) })
      expect(Date.now() - t0).toBeLessThan(15_000)
      expect(res.stderr).toMatch(/can't fork: Resource temporarily unavailable/)
      expect(res.stdout).not.toContain('all-started')
      expect(res).toMatchObject({ outcome: 'failed', exitCode: 2 })
      // Control: the default limit (256) lets the same 64 processes start.
      const roomy = await run({ command: bomb, timeoutSeconds: 20 })
      expect(roomy, roomy.stderr).toMatchObject({ outcome: 'succeeded', stdout: 'all-started\n' })
    })

    it('kills a job that writes more than its disk limit to /work', async (ctx) => {
      needDocker(ctx)
      const t0 = Date.now()
      const res = await run({ command: ['sh', '-c', 'head -c 20971520 /dev/zero > /work/big && echo written; sleep 30'], resources: { cpus: 1, memoryMb: 64, diskMb: 5 }, timeoutSeconds: 25 })
      expect(Date.now() - t0).toBeLessThan(15_000)
      expect(res).toMatchObject({ outcome: 'failed', exitCode: null })
      expect(res.error).toMatchObject({ code: 'disk-limit', retryable: false })
      // A walk may catch the file while it is still being written: more than 5 MiB, at most 20.
      const written = Number(/^job wrote (\d+\.\d) MiB to its work dir, over its disk limit of 5 MiB, and was killed$/.exec(res.error?.message ?? '')?.[1])
      expect(written).toBeGreaterThan(5)
      expect(written).toBeLessThanOrEqual(20)
    })

    it('fails a job that exceeded its disk limit even when it exits before a measurement', async (ctx) => {
      needDocker(ctx)
      const res = await run({ command: ['sh', '-c', 'head -c 20971520 /dev/zero > /work/big'], resources: { cpus: 1, memoryMb: 64, diskMb: 5 } },
        { rt: runtimeWith({ diskPollMs: 60_000 }) })
      expect(res.error).toMatchObject({ code: 'disk-limit', retryable: false, message: 'job wrote 20.0 MiB to its work dir, over its disk limit of 5 MiB' })
      expect(res.exitCode).toBe(0)
      // Control: within a larger limit the same job succeeds.
      const roomy = await run({ command: ['sh', '-c', 'head -c 20971520 /dev/zero > /work/big'], resources: { cpus: 1, memoryMb: 64, diskMb: 50 } })
      expect(roomy).toMatchObject({ outcome: 'succeeded', error: null })
    })

    it('bounds /tmp by the disk limit', async (ctx) => {
      needDocker(ctx)
      const fill = ['sh', '-c', 'head -c 10485760 /dev/zero > /tmp/big; echo "rc=$?"; wc -c < /tmp/big']
      const res = await run({ command: fill, resources: { cpus: 1, memoryMb: 64, diskMb: 5 } })
      // busybox head reports the ENOSPC of its stdout as an I/O error.
      expect(res.stderr).toContain('head: standard output: I/O error')
      expect(res.stdout).toBe(`rc=1\n${5 * 1024 * 1024}\n`)
      // Control: 10 MiB fit in the default /tmp (64 MiB).
      const roomy = await run({ command: fill, resources: { cpus: 1, memoryMb: 64 } })
      expect(roomy.stdout).toBe('rc=0\n10485760\n')
    })
  })

  describe('image policy', () => {
    it('refuses a denied image (the default one too) without running it', async (ctx) => {
      needDocker(ctx)
      let started = false
      const denied = runtimeWith({ images: { deny: ['rgrid-test/*'] } })
      const res = await run({ command: ['sh', '-c', 'echo ran'] }, { rt: denied, onStarted: () => { started = true } })
      expect(res).toMatchObject({ outcome: 'failed', stdout: '', startedAt: null })
      expect(res.error).toMatchObject({ code: 'image-not-allowed', retryable: true })
      expect(res.error?.message).toContain(IMAGE)
      expect(res.error?.message).toContain('rgrid-test/*')
      expect(started).toBe(false)
      expect(denied.policy.images).toEqual({ deny: ['rgrid-test/*'] })
    })

    it('runs only images on the allow list, naming it when it refuses', async (ctx) => {
      needDocker(ctx)
      const res = await run({ command: ['sh', '-c', 'echo ran'], image: IMAGE }, { rt: runtimeWith({ images: { allow: ['docker.io/library/*', 'ghcr.io/me/*'] } }) })
      expect(res.error).toMatchObject({ code: 'image-not-allowed', retryable: true })
      expect(res.error?.message).toContain(IMAGE)
      expect(res.error?.message).toContain('docker.io/library/*, ghcr.io/me/*')
      // Control: an allow list that matches runs it.
      const ok = await run({ command: ['sh', '-c', 'echo ran'], image: IMAGE }, { rt: runtimeWith({ images: { allow: ['rgrid-test/busybox:*'], deny: ['rgrid-test/python*'] } }) })
      expect(ok).toMatchObject({ outcome: 'succeeded', stdout: 'ran\n' })
    })
  })

  describe('environment', () => {
    it('passes secretEnv to the job along with env, and keeps it out of the labels', async (ctx) => {
      needDocker(ctx)
      const secret = `s3cr3t-${randomUUID()}`
      const jobId = randomUUID()
      let labels: Promise<Record<string, string>> | undefined
      const res = await run({ command: ['sh', '-c', 'sleep 1; echo "$PLAIN $API_TOKEN"'], env: { PLAIN: 'plain-value' }, secretEnv: { API_TOKEN: secret } }, {
        jobId,
        onStarted: () => { labels = docker.listContainers({ all: true, filters: { label: [`rgrid.job=${jobId}`] } }).then(list => list[0]?.Labels ?? {}) }
      })
      expect(res).toMatchObject({ outcome: 'succeeded', stdout: `plain-value ${secret}\n` })
      expect(JSON.stringify(await labels)).not.toContain(secret)
    })
  })
})
