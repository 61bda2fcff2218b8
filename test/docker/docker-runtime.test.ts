/**
 * DockerRuntime against the real engine, with the locally built
 * rgrid-test/busybox image (no registry is reachable from test machines).
 * Without an engine these tests skip with the reason, except under CI=true,
 * where a missing engine is a failure: CI must not pass by skipping them.
 */
import { describe, it, expect, beforeAll, beforeEach, afterEach, type TestContext } from 'vitest'
import { mkdtemp, rm, readFile, writeFile, realpath } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import Dockerode from 'dockerode'
import { jobSpecSchema, type JobSpecInput } from '../../protocol/schemas.js'
import { LIMITS } from '../../protocol/limits.js'
import { leftContainers, prepareDocker } from '../helpers/docker.js'
import { silentLogger } from '../../common/log.js'
import { DockerRuntime, DockerUnavailableError } from '../../node/runtime/docker.js'
import type { RunOutcome } from '../../node/runtime/types.js'

const IMAGE = 'rgrid-test/busybox:latest'
/** Scopes the leftover-container check to this run's containers. */
const RUN_LABEL = { 'rgrid.test-run': randomUUID() }

const docker = new Dockerode()
const runtime = new DockerRuntime({ docker, defaultImage: IMAGE, killGraceMs: 500, labels: RUN_LABEL, logger: silentLogger })
let unavailable: string | null = null
let workDir: string

beforeAll(async () => {
  unavailable = await prepareDocker(docker)
}, 180_000)

beforeEach(async () => { workDir = await realpath(await mkdtemp(join(tmpdir(), 'rgrid-docker-'))) })

afterEach(async () => {
  await rm(workDir, { recursive: true, force: true })
  if (unavailable !== null) return
  expect(await leftContainers(docker, RUN_LABEL)).toEqual([])
})

function needDocker (ctx: TestContext): void {
  if (unavailable !== null) ctx.skip(`Docker engine unreachable: ${unavailable}`)
}

async function run (input: JobSpecInput, opts: { signal?: AbortSignal, onStarted?: (t: number) => void, jobId?: string } = {}): Promise<RunOutcome> {
  return await runtime.run({
    jobId: opts.jobId ?? randomUUID(),
    attempt: 2,
    spec: jobSpecSchema.parse(input),
    workDir,
    signal: opts.signal ?? new AbortController().signal,
    onStarted: opts.onStarted
  })
}

describe('DockerRuntime', { timeout: 60_000 }, () => {
  it('captures stdout and stderr separately and succeeds', async (ctx) => {
    needDocker(ctx)
    const started: number[] = []
    const res = await run({ command: ['sh', '-c', 'echo "out $GREETING"; echo err >&2; echo more'], env: { GREETING: 'hi' } }, { onStarted: t => started.push(t) })
    expect(res).toMatchObject({ outcome: 'succeeded', exitCode: 0, error: null, stdout: 'out hi\nmore\n', stderr: 'err\n', stdoutTruncated: false, stderrTruncated: false })
    expect(started).toHaveLength(1)
    expect(res.startedAt).toBe(started[0])
  })

  it('reports a nonzero exit code', async (ctx) => {
    needDocker(ctx)
    const res = await run({ command: ['sh', '-c', 'exit 3'] })
    expect(res.outcome).toBe('failed')
    expect(res.exitCode).toBe(3)
    expect(res.error).toMatchObject({ code: 'exit-nonzero', retryable: false })
  })

  it('kills the container on timeout', async (ctx) => {
    needDocker(ctx)
    const t0 = Date.now()
    const res = await run({ command: ['sleep', '30'], timeoutSeconds: 1 })
    const elapsed = Date.now() - t0
    expect(res.outcome).toBe('failed')
    expect(res.exitCode).toBeNull()
    expect(res.error).toMatchObject({ code: 'timeout', retryable: false })
    expect(elapsed).toBeGreaterThanOrEqual(1000)
    expect(elapsed).toBeLessThan(8000)
  })

  it('reports oom-killed when the job exceeds its memory limit', async (ctx) => {
    needDocker(ctx)
    // The shell itself (pid 1) holds 64 MB in a variable, so the OOM killer
    // picks it and the container exits 137 with State.OOMKilled.
    const hog = ['sh', '-c', 'x=$(head -c 64000000 /dev/zero | tr "\\0" x); echo ${#x}']
    const res = await run({ command: hog, resources: { cpus: 1, memoryMb: 16 } })
    expect(res.outcome).toBe('failed')
    expect(res.error).toMatchObject({ code: 'oom-killed', retryable: false })
    expect(res.error?.message).toContain('16 MiB')
    // Control: the same command fits in 512 MiB, so the limit caused the kill.
    const roomy = await run({ command: hog, resources: { cpus: 1, memoryMb: 512 } })
    expect(roomy).toMatchObject({ outcome: 'succeeded', stdout: '64000000\n' })
  })

  it('reports a missing image that cannot be pulled as image-missing', async (ctx) => {
    needDocker(ctx)
    let started = false
    const res = await run({ command: ['true'], image: 'rgrid-test/does-not-exist:latest' }, { onStarted: () => { started = true } })
    expect(res.outcome).toBe('failed')
    expect(res.error).toMatchObject({ code: 'image-missing', retryable: false })
    expect(res.error?.message).toContain('rgrid-test/does-not-exist:latest')
    expect(res.startedAt).toBeNull()
    expect(started).toBe(false)
  })

  it('reports a command missing from the image as spawn-failed', async (ctx) => {
    needDocker(ctx)
    const res = await run({ command: ['rgrid-no-such-program'] })
    expect(res.outcome).toBe('failed')
    expect(res.error).toMatchObject({ code: 'spawn-failed', retryable: false })
    expect(res.error?.message).toContain('rgrid-no-such-program')
  })

  it('cancels a running container when the signal aborts', async (ctx) => {
    needDocker(ctx)
    const ac = new AbortController()
    const t0 = Date.now()
    const res = await run({ command: ['sleep', '30'] }, { signal: ac.signal, onStarted: () => { ac.abort() } })
    expect(res.outcome).toBe('cancelled')
    expect(res.exitCode).toBeNull()
    expect(res.error?.code).toBe('cancelled')
    expect(res.startedAt).not.toBeNull()
    expect(Date.now() - t0).toBeLessThan(8000)
  })

  it('creates the container with labels, limits and no network', async (ctx) => {
    needDocker(ctx)
    const jobId = randomUUID()
    const ac = new AbortController()
    let inspected: Promise<Dockerode.ContainerInspectInfo> | undefined
    const res = await run({ command: ['sleep', '30'], resources: { cpus: 0.5, memoryMb: 64, diskMb: 16 } }, {
      jobId,
      signal: ac.signal,
      onStarted: () => {
        // Inspect while it runs, then stop it.
        inspected = docker.listContainers({ filters: { label: [`rgrid.job=${jobId}`] } })
          .then(async list => await docker.getContainer(list[0]?.Id ?? 'missing').inspect())
          .finally(() => { ac.abort() })
      }
    })
    expect(res.outcome).toBe('cancelled')
    const info = await inspected
    expect(info?.Config.Labels).toMatchObject({ 'rgrid.job': jobId, 'rgrid.attempt': '2', ...RUN_LABEL })
    expect(info?.Config.Cmd).toEqual(['sleep', '30'])
    expect(info?.Config.WorkingDir).toBe('/work')
    expect(info?.Config.Labels).toMatchObject({ 'rgrid.disk-mb': '16' })
    expect(info?.HostConfig).toMatchObject({
      NetworkMode: 'none', NanoCpus: 500_000_000, Memory: 64 * 1024 * 1024, MemorySwap: 64 * 1024 * 1024, PidsLimit: 256,
      // /tmp is bounded by the job's disk limit when that is below 64 MiB.
      Tmpfs: { '/tmp': 'rw,noexec,nosuid,size=16m' },
      Privileged: false, ReadonlyRootfs: true, CapDrop: ['ALL'], SecurityOpt: ['no-new-privileges']
    })
  })

  it('has no network interface but loopback', async (ctx) => {
    needDocker(ctx)
    const res = await run({ command: ['sh', '-c', 'ls /sys/class/net; wget -q -T 2 -O - http://1.1.1.1/ || echo wget-failed >&2'] })
    expect(res.stdout.trim().split(/\s+/)).toEqual(['lo'])
    expect(res.stderr).toContain('wget-failed')
  })

  it('mounts the work dir at /work as the working directory', async (ctx) => {
    needDocker(ctx)
    await writeFile(join(workDir, 'input.txt'), 'from-host\n')
    const res = await run({ command: ['sh', '-c', 'pwd; cat input.txt; echo from-job > /work/out.txt'] })
    expect(res).toMatchObject({ outcome: 'succeeded', stdout: '/work\nfrom-host\n' })
    expect(await readFile(join(workDir, 'out.txt'), 'utf8')).toBe('from-job\n')
  })

  it('runs the job unprivileged: not root, no capabilities, no new privileges, read-only root, only its work dir', async (ctx) => {
    needDocker(ctx)
    const res = await run({
      command: ['sh', '-c', [
        'id -u',
        'grep -E "^(CapPrm|CapEff|CapBnd|NoNewPrivs)" /proc/self/status',
        // The message tells the read-only root apart from a mere permission refusal (uid 65534 owns nothing there).
        'touch /x 2>&1 || true',
        'touch /etc/evil 2>&1 || true',
        'touch /tmp/ok && echo tmp-writable',
        'echo job > /work/mine && echo work-writable',
        'ls /var/run/docker.sock 2>/dev/null || echo no-docker-socket'
      ].join('; ')]
    })
    expect(res.outcome, res.stderr).toBe('succeeded')
    expect(res.stdout.split('\n').map(l => l.replace(/\s+/g, ' ').trim())).toEqual([
      '65534', 'CapPrm: 0000000000000000', 'CapEff: 0000000000000000', 'CapBnd: 0000000000000000', 'NoNewPrivs: 1', 'touch: /x: Read-only file system', 'touch: /etc/evil: Read-only file system', 'tmp-writable', 'work-writable', 'no-docker-socket', ''
    ])
  })

  it('keeps the tail of large output and drains it completely', async (ctx) => {
    needDocker(ctx)
    const res = await run({ command: ['sh', '-c', 'echo HEAD; head -c 300000 /dev/zero | tr "\\0" a; echo; echo TAIL-MARKER; echo err-tail >&2'] })
    expect(res.outcome).toBe('succeeded')
    expect(res.stdoutTruncated).toBe(true)
    expect(Buffer.byteLength(res.stdout)).toBe(LIMITS.outputBytes)
    expect(res.stdout.endsWith('a\nTAIL-MARKER\n')).toBe(true)
    expect(res.stderr).toBe('err-tail\n')
  })
})

describe('DockerRuntime.start', () => {
  it('throws DockerUnavailableError naming the address when the engine does not answer', async () => {
    const rt = new DockerRuntime({ docker: new Dockerode({ socketPath: '/nonexistent/docker.sock' }), logger: silentLogger })
    await expect(rt.start()).rejects.toThrow(DockerUnavailableError)
    await expect(rt.start()).rejects.toThrow('/nonexistent/docker.sock')
  })
})

describe('DockerRuntime.adopt', () => {
  /** A container as a crashed earlier run of `node` would have left it. */
  const leave = async (node: string, cmd: string[], labels: Record<string, string> = {}, start = true): Promise<string> => {
    const c = await docker.createContainer({
      Image: IMAGE, Cmd: cmd,
      Labels: { ...RUN_LABEL, 'rgrid.node': node, 'rgrid.job': `job-${randomUUID()}`, 'rgrid.attempt': '2', 'rgrid.token': `tok-${randomUUID()}`, 'rgrid.timeout-seconds': '60', 'rgrid.memory-mb': '64', 'rgrid.command': cmd[0]!, ...labels },
      HostConfig: { NetworkMode: 'none', Mounts: [{ Type: 'bind', Source: workDir, Target: '/work' }] }
    })
    if (start) await c.start()
    return c.id
  }
  const exists = async (id: string): Promise<boolean> => (await docker.listContainers({ all: true, filters: { id: [id] } })).length > 0
  const rtFor = (node: string): DockerRuntime => new DockerRuntime({ docker, defaultImage: IMAGE, killGraceMs: 500, labels: { ...RUN_LABEL, 'rgrid.node': node }, logger: silentLogger })

  it('follows a still-running container to its end with all its output, then removes it', async (ctx) => {
    needDocker(ctx)
    const node = `test-node-${randomUUID()}`
    const other = `test-node-${randomUUID()}`
    const mine = await leave(node, ['sh', '-c', 'echo before-restart; sleep 1; echo after-restart; echo err >&2'])
    const theirs = await leave(other, ['sleep', '300'])
    try {
      const adopted = await rtFor(node).adopt(AbortSignal.timeout(30_000))
      expect(adopted).toHaveLength(1)
      const [a] = adopted
      const labels = (await docker.getContainer(mine).inspect()).Config.Labels
      expect(a).toMatchObject({ jobId: labels['rgrid.job'], attempt: 2, token: labels['rgrid.token'], workDir })
      expect(a!.startedAt).toBeGreaterThan(Date.now() - 30_000)
      const res = await a!.resume(new AbortController().signal)
      expect(res.outcome).toBe('succeeded')
      expect(res.stdout).toBe('before-restart\nafter-restart\n')
      expect(res.stderr).toBe('err\n')
      expect(await exists(mine)).toBe(false)
      // Another node's container is none of this node's business.
      expect(await exists(theirs)).toBe(true)
    } finally {
      await docker.getContainer(theirs).remove({ force: true })
      if (await exists(mine)) await docker.getContainer(mine).remove({ force: true })
    }
  })

  it('reports a container that exited while the node was down, with its exit code', async (ctx) => {
    needDocker(ctx)
    const node = `test-node-${randomUUID()}`
    const id = await leave(node, ['sh', '-c', 'echo done-while-away; exit 3'])
    await docker.getContainer(id).wait()
    const [a] = await rtFor(node).adopt(AbortSignal.timeout(30_000))
    const res = await a!.resume(new AbortController().signal)
    expect(res).toMatchObject({ outcome: 'failed', exitCode: 3, stdout: 'done-while-away\n' })
    expect(res.error?.code).toBe('exit-nonzero')
    expect(await exists(id)).toBe(false)
  })

  it('keeps the timeout counted from the real start, and stops the container when told', async (ctx) => {
    needDocker(ctx)
    const node = `test-node-${randomUUID()}`
    const late = await leave(node, ['sleep', '300'], { 'rgrid.timeout-seconds': '1' })
    // Past its 1 s timeout by the time it is adopted.
    await new Promise(resolve => setTimeout(resolve, 1200))
    const running = await leave(node, ['sleep', '300'])
    const adopted = await rtFor(node).adopt(AbortSignal.timeout(30_000))
    const byId = new Map(await Promise.all(adopted.map(async a => [a.jobId, a] as const)))
    const lateLabels = (await docker.getContainer(late).inspect()).Config.Labels
    const runningLabels = (await docker.getContainer(running).inspect()).Config.Labels
    const stop = new AbortController()
    const [timedOut, cancelled] = await Promise.all([
      byId.get(lateLabels['rgrid.job']!)!.resume(new AbortController().signal),
      (async () => { const p = byId.get(runningLabels['rgrid.job']!)!.resume(stop.signal); stop.abort(new Error('revoked')); return await p })()
    ])
    expect(timedOut.error?.code).toBe('timeout')
    expect(cancelled.outcome).toBe('cancelled')
    expect(await exists(late)).toBe(false)
    expect(await exists(running)).toBe(false)
  })

  it('removes left-over containers that carry no token (they cannot be reported) and returns those never started as retryable', async (ctx) => {
    needDocker(ctx)
    const node = `test-node-${randomUUID()}`
    const tokenless = await docker.createContainer({
      Image: IMAGE, Cmd: ['sleep', '300'], Labels: { ...RUN_LABEL, 'rgrid.node': node, 'rgrid.job': 'left-over', 'rgrid.attempt': '1' }, HostConfig: { NetworkMode: 'none' }
    })
    await tokenless.start()
    const created = await leave(node, ['true'], {}, false)
    const adopted = await rtFor(node).adopt(AbortSignal.timeout(30_000))
    expect(await exists(tokenless.id)).toBe(false)
    expect(adopted).toHaveLength(1)
    expect(adopted[0]!.startedAt).toBeNull()
    const res = await adopted[0]!.resume(new AbortController().signal)
    expect(res.outcome).toBe('failed')
    expect(res.error).toMatchObject({ code: 'node-error', retryable: true })
    expect(await exists(created)).toBe(false)
  })
})
