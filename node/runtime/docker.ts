/**
 * The production runtime: every attempt runs in its own throw-away container
 * with no network (unless the operator allows it and the job asks), CPU,
 * memory, process and disk limits, and only its work dir mounted.
 */
import Dockerode from 'dockerode'
import { chmod, lstat } from 'node:fs/promises'
import { isAbsolute, resolve } from 'node:path'
import { Writable, type Duplex } from 'node:stream'
import { outputPatternSchema, type JobError } from '../../protocol/schemas.js'
import { imageRefusal } from '../../protocol/matching.js'
import { createLogger, type Logger } from '../../common/log.js'
import { errorMessage } from '../../common/errors.js'
import { OutputCollector, outcomeOf } from './output.js'
import { DiskWatch } from './disk-watch.js'
import type { AdoptedAttempt, RunOutcome, RunRequest, Runtime, RuntimePolicy } from './types.js'

export interface DockerRuntimeOptions {
  /** The engine client. @default new Dockerode() (DOCKER_HOST, else /var/run/docker.sock) */
  docker?: Dockerode
  /** Image for jobs whose spec names none. @default 'busybox:latest' */
  defaultImage?: string
  /** Bound on pulling a missing image; not counted in the job's timeout. @default 300000 */
  pullTimeoutMs?: number
  /** Time between SIGTERM and SIGKILL when a job is stopped. @default 2000 */
  killGraceMs?: number
  /** Labels added to every container, e.g. `{ 'rgrid.node': peerId }`. @default {} */
  labels?: Record<string, string>
  /** Bound on each short engine call (create, start, kill, inspect, remove, ping). @default 30000 */
  apiTimeoutMs?: number
  /** How long to wait for the output stream to end after the container exited. @default 2000 */
  drainTimeoutMs?: number
  /**
   * The user jobs run as inside their container (uid:gid). Not root: a job
   * that escapes its container should not be root on the host.
   * @default '65534:65534' (nobody)
   */
  user?: string
  /**
   * Jobs that ask for network (`spec.network`) run on Docker's default
   * `bridge` network; without it they are refused. Jobs that do not ask
   * always run with `NetworkMode: 'none'`.
   * @default false
   */
  allowNetwork?: boolean
  /**
   * Image patterns (`*` wildcards) jobs may and may not use, checked before
   * every run, the default image included. A deny pattern wins; with an allow
   * list an image must match one of its patterns.
   * @default {} (any image)
   */
  images?: { allow?: string[], deny?: string[] }
  /** Most processes and threads a job's container may have at once (fork bombs). @default 256 */
  pidsLimit?: number
  /** Time between two measurements of a running job's work dir against `spec.resources.diskMb`, in ms. @default 1000 */
  diskPollMs?: number
  /** @default createLogger('runtime.docker') */
  logger?: Logger
}

/** Thrown by {@link DockerRuntime.start} when the engine does not answer. */
export class DockerUnavailableError extends Error {
  override readonly name = 'DockerUnavailableError'
}

/** An engine call did not answer within its bound. */
export class DockerTimeoutError extends Error {
  override readonly name = 'DockerTimeoutError'
  constructor (readonly operation: string, readonly ms: number) { super(`docker ${operation} did not answer within ${ms} ms`) }
}

/** What following a container to its end needs to know of its job. */
interface FollowedJob {
  jobId: string
  signal: AbortSignal
  /** Time left before the job is killed for its timeout. */
  timeoutMs: number
  timeoutSeconds: number
  memoryMb: number
  command: string
  /** Its work dir and the most it may hold, when known. */
  disk?: { dir: string, limitMb: number }
}

type StopReason = 'timeout' | 'cancelled' | 'disk-limit'

type Finish = (outcome: RunOutcome['outcome'], exitCode: number | null, error: JobError | null) => RunOutcome

/** Docker refuses memory limits below 6 MiB; the schema allows 4. */
const MIN_MEMORY_MB = 6

/** Largest /tmp (a tmpfs, counted in the job's memory); smaller when the job's disk limit is. */
const MAX_TMP_MB = 64

const MiB = 1024 * 1024

/**
 * Runs each attempt in a fresh container: `spec.command` as Cmd (no shell),
 * the work dir (and nothing else of the host) bind-mounted at `/work`,
 * `NetworkMode: 'none'` unless the job asks for network and the operator
 * allows it, CPU, memory (without swap), pid and disk limits, and the
 * operator's image policy checked before each run. The container is always
 * removed afterwards. Every engine call is bounded so a stuck daemon cannot
 * hang a job slot.
 */
export class DockerRuntime implements Runtime {
  readonly name = 'docker' as const
  readonly docker: Dockerode
  private readonly defaultImage: string
  private readonly pullTimeoutMs: number
  private readonly killGraceMs: number
  private readonly labels: Record<string, string>
  private readonly apiTimeoutMs: number
  private readonly drainTimeoutMs: number
  private readonly log: Logger
  private readonly user: string
  private readonly pidsLimit: number
  private readonly diskPollMs: number
  readonly policy: RuntimePolicy

  constructor (options: DockerRuntimeOptions = {}) {
    this.docker = options.docker ?? new Dockerode()
    this.defaultImage = options.defaultImage ?? 'busybox:latest'
    this.pullTimeoutMs = options.pullTimeoutMs ?? 300_000
    this.killGraceMs = options.killGraceMs ?? 2000
    this.labels = options.labels ?? {}
    this.apiTimeoutMs = options.apiTimeoutMs ?? 30_000
    this.drainTimeoutMs = options.drainTimeoutMs ?? 2000
    this.log = options.logger ?? createLogger('runtime.docker')
    this.user = options.user ?? '65534:65534'
    this.pidsLimit = options.pidsLimit ?? 256
    if (!Number.isInteger(this.pidsLimit) || this.pidsLimit < 1) throw new RangeError(`pidsLimit must be a positive integer, got ${this.pidsLimit}`)
    this.diskPollMs = options.diskPollMs ?? 1000
    const images = { ...(options.images?.allow != null ? { allow: [...options.images.allow] } : {}), ...(options.images?.deny != null ? { deny: [...options.images.deny] } : {}) }
    this.policy = { network: options.allowNetwork ?? false, ...(images.allow != null || images.deny != null ? { images } : {}) }
  }

  /** Why the operator's image policy refuses `image`, naming the rule, or null. */
  private imageRefusal (image: string): string | null {
    const refusal = imageRefusal(this.policy.images, image)
    if (refusal === null) return null
    // The shared wording names a deny pattern but not the allow-list's patterns.
    const allow = this.policy.images?.allow
    return refusal.endsWith('allow-list') && allow != null ? `${refusal} (${allow.join(', ') || 'empty'})` : refusal
  }

  /** Pings the engine. @throws DockerUnavailableError when it does not answer. */
  async start (signal?: AbortSignal): Promise<void> {
    // The typings omit ping's options, but dockerode honours abortSignal there.
    const ping = this.docker.ping.bind(this.docker) as unknown as (o: { abortSignal: AbortSignal }) => Promise<unknown>
    try {
      await this.call('ping', async s => await ping({ abortSignal: signal === undefined ? s : AbortSignal.any([s, signal]) }))
    } catch (err) {
      const modem = this.docker.modem as { socketPath?: string, host?: string }
      const where = modem.socketPath ?? modem.host ?? 'default address'
      throw new DockerUnavailableError(`Docker engine unreachable at ${where}: ${errorMessage(err)}`, { cause: err })
    }
  }

  /**
   * Finds the containers an earlier run of this node (same `rgrid.node`
   * label) left behind when it crashed or was killed. Each one that carries
   * its attempt's fencing token is returned for the node to follow to its end
   * and report, running or already exited; the coordinator decides whether
   * that attempt is still the node's. Containers without a token (started by
   * an older version) cannot be reported and are removed.
   */
  async adopt (signal: AbortSignal): Promise<AdoptedAttempt[]> {
    const node = this.labels['rgrid.node']
    if (node == null) return []
    const left = await this.call('list', async abortSignal => await this.docker.listContainers({ all: true, filters: { label: [`rgrid.node=${node}`, 'rgrid.job'] }, abortSignal }))
    const adopted: AdoptedAttempt[] = []
    for (const c of left) {
      if (signal.aborted) break
      const labels = c.Labels
      const jobId = labels['rgrid.job'] ?? ''
      const attempt = Number(labels['rgrid.attempt'])
      const token = labels['rgrid.token']
      const timeoutSeconds = Number(labels['rgrid.timeout-seconds'])
      const container = this.docker.getContainer(c.Id)
      if (token == null || jobId === '' || !Number.isInteger(attempt) || !(timeoutSeconds > 0)) {
        this.log.warn('removing a container left by an earlier run of this node that cannot be reported', { container: c.Id.slice(0, 12), job: jobId })
        await this.remove(container, jobId)
        continue
      }
      let startedAt: number | null = null
      try {
        const info = await this.call('inspect', async abortSignal => await container.inspect({ abortSignal }))
        const t = Date.parse(info.State.StartedAt)
        // A container that was created but never started reports the zero time.
        startedAt = Number.isFinite(t) && t > 0 ? t : null
      } catch (err) {
        this.log.warn('cannot inspect a left-over container; following it anyway', { container: c.Id.slice(0, 12), error: errorMessage(err) })
      }
      const mount = c.Mounts.find(m => m.Destination === '/work')
      const memoryMb = Number(labels['rgrid.memory-mb'])
      const diskMb = Number(labels['rgrid.disk-mb'])
      adopted.push({
        jobId, attempt, token, startedAt,
        outputs: outputPatterns(labels['rgrid.outputs']),
        workDir: mount?.Source ?? null,
        resume: async (jobSignal) => await this.resume(container, {
          jobId, signal: jobSignal, timeoutSeconds, memoryMb: Number.isFinite(memoryMb) ? memoryMb : 0, command: labels['rgrid.command'] ?? '',
          ...(mount?.Source != null && diskMb > 0 ? { disk: { dir: mount.Source, limitMb: diskMb } } : {}),
          // What is left of its timeout, counted from when it really started.
          timeoutMs: startedAt == null ? 0 : startedAt + timeoutSeconds * 1000 - Date.now()
        }, startedAt)
      })
      this.log.info('adopting a container left by an earlier run of this node', { container: c.Id.slice(0, 12), jobId, attempt, state: c.State })
    }
    return adopted
  }

  /** Follows an adopted container: output from its first byte (the engine kept it), then its end. */
  private async resume (ctr: Dockerode.Container, job: FollowedJob, startedAt: number | null): Promise<RunOutcome> {
    const stdout = new OutputCollector()
    const stderr = new OutputCollector()
    const finish: Finish = (outcome, exitCode, error) => outcomeOf(stdout, stderr, startedAt, outcome, exitCode, error)
    let stream: NodeJS.ReadableStream | null = null
    try {
      if (startedAt == null) {
        // Never started: the earlier run died between create and start. Nothing ran, so another node may run it.
        return finish('failed', null, { code: 'node-error', message: 'the node restarted before the container started', retryable: true })
      }
      try {
        stream = await this.call('logs', async abortSignal => await ctr.logs({ follow: true, stdout: true, stderr: true, abortSignal }))
      } catch (err) {
        return finish('failed', null, { code: 'daemon-error', message: `docker logs failed: ${errorMessage(err)}`.slice(0, 4096), retryable: true })
      }
      const outputEnded = this.endOf(stream, job.jobId)
      this.docker.modem.demuxStream(stream, stdout.writable(), stderr.writable())
      return await this.follow(ctr, job, outputEnded, finish)
    } finally {
      if (stream !== null) (stream as unknown as Duplex).destroy()
      await this.remove(ctr, job.jobId)
    }
  }

  /** Nothing to release; running jobs are stopped through their signals. */
  async stop (): Promise<void> {}

  /** Runs one attempt in a new container. Never throws for the job's own failure. */
  async run (request: RunRequest): Promise<RunOutcome> {
    const { jobId, attempt, spec, workDir, signal } = request
    const stdout = new OutputCollector()
    const stderr = new OutputCollector()
    let startedAt: number | null = null
    const finish = (outcome: RunOutcome['outcome'], exitCode: number | null, error: JobError | null): RunOutcome =>
      outcomeOf(stdout, stderr, startedAt, outcome, exitCode, error)
    const cancelled = (message: string): RunOutcome => finish('cancelled', null, { code: 'cancelled', message, retryable: false })
    const daemonError = (step: string, err: unknown): RunOutcome =>
      finish('failed', null, { code: 'daemon-error', message: `docker ${step} failed: ${errorMessage(err)}`.slice(0, 4096), retryable: true })

    if (signal.aborted) return cancelled('cancelled before start')
    // Defence in depth: the node advertises its policy and coordinators match
    // against it, so these only trip when one of them is wrong or lying.
    // Retryable: another node may allow what this one refuses.
    if (spec.network && !this.policy.network) {
      return finish('failed', null, { code: 'network-not-allowed', message: 'the job needs network access, which this node does not allow (--allow-network)', retryable: true })
    }
    const image = spec.image ?? this.defaultImage
    const refusal = this.imageRefusal(image)
    if (refusal !== null) return finish('failed', null, { code: 'image-not-allowed', message: refusal.slice(0, 4096), retryable: true })
    // The mount source must be the job's own directory, not a link to somewhere else of the node's.
    const workDirProblem = await checkWorkDir(workDir)
    if (workDirProblem !== null) return finish('failed', null, { code: 'node-error', message: workDirProblem, retryable: true })
    const imageProblem = await this.ensureImage(image, signal)
    if (imageProblem === 'cancelled') return cancelled('cancelled while pulling the image')
    if (imageProblem !== null) return finish('failed', null, imageProblem)
    if (signal.aborted) return cancelled('cancelled before start')

    // The job runs as an unprivileged user: let it write its work dir (and nothing else of ours).
    await chmod(workDir, 0o777)
    const memoryBytes = Math.max(spec.resources.memoryMb, MIN_MEMORY_MB) * 1024 * 1024
    let container: Dockerode.Container | null = null
    let stream: NodeJS.ReadWriteStream | null = null
    try {
      try {
        container = await this.call('create', async abortSignal => await this.docker.createContainer({
          Image: image,
          Cmd: spec.command,
          // Secret variables too: the schema keeps the two sets disjoint.
          Env: [...Object.entries(spec.env), ...Object.entries(spec.secretEnv)].map(([k, v]) => `${k}=${v}`),
          WorkingDir: '/work',
          Tty: false,
          AttachStdin: false,
          AttachStdout: true,
          AttachStderr: true,
          // Ours last: a configured label must not hide which job a container is.
          // The token and limits ride along so a restarted node can adopt the container (see adopt()).
          Labels: {
            ...this.labels,
            'rgrid.job': jobId,
            'rgrid.attempt': String(attempt),
            ...(request.token != null ? { 'rgrid.token': request.token } : {}),
            'rgrid.timeout-seconds': String(spec.timeoutSeconds),
            'rgrid.memory-mb': String(spec.resources.memoryMb),
            'rgrid.disk-mb': String(spec.resources.diskMb),
            'rgrid.command': (spec.command[0] ?? '').slice(0, 256),
            'rgrid.outputs': JSON.stringify(spec.outputs.map(o => o.path))
          },
          // Not root, and nothing to gain from setuid binaries: see docs/design.md, Runtimes.
          User: this.user,
          HostConfig: {
            // Docker's default bridge only for a job that asked on a node that allows it (checked above).
            NetworkMode: spec.network && this.policy.network ? 'bridge' : 'none',
            ReadonlyRootfs: true,
            CapDrop: ['ALL'],
            SecurityOpt: ['no-new-privileges'],
            // Spelled out so a daemon default cannot loosen them.
            Privileged: false,
            IpcMode: 'private',
            // A writable /tmp that lives and dies with the container, bounded
            // by the job's disk limit too (the work dir is watched instead, see supervise()).
            Tmpfs: { '/tmp': `rw,noexec,nosuid,size=${Math.min(MAX_TMP_MB, spec.resources.diskMb)}m` },
            NanoCpus: Math.round(spec.resources.cpus * 1e9),
            Memory: memoryBytes,
            // Equal to Memory: no swap, so the limit is a real limit.
            MemorySwap: memoryBytes,
            PidsLimit: this.pidsLimit,
            // We remove it ourselves after reading State.OOMKilled.
            AutoRemove: false,
            // The only thing of the host the job sees: its own work dir, exactly
            // (it lives in the node's data dir, next to the node's identity key).
            Mounts: [{ Type: 'bind', Source: workDir, Target: '/work', ReadOnly: false }]
          },
          abortSignal
        }))
        const created = container
        // Attach before start so not one byte of output is missed.
        stream = await this.call('attach', async abortSignal => await created.attach({ stream: true, stdout: true, stderr: true, abortSignal }))
      } catch (err) {
        return daemonError('create', err)
      }
      const outputEnded = this.endOf(stream, jobId)
      this.docker.modem.demuxStream(stream, tee(stdout.writable(), 'stdout', request.onOutput), tee(stderr.writable(), 'stderr', request.onOutput))

      if (signal.aborted) return cancelled('cancelled before start')
      const ctr = container
      try {
        await this.call('start', async abortSignal => await ctr.start({ abortSignal }))
      } catch (err) {
        // 400 on start means the runtime could not exec the command (not found,
        // not executable): the job's fault, and a retry would fail the same way.
        if (statusCode(err) === 400) {
          return finish('failed', null, { code: 'spawn-failed', message: `cannot start "${spec.command[0] ?? ''}" in ${image}: ${errorMessage(err)}`.slice(0, 4096), retryable: false })
        }
        return daemonError('start', err)
      }
      startedAt = Date.now()
      try {
        request.onStarted?.(startedAt)
      } catch (err) {
        this.log.warn('onStarted callback threw', { jobId, err: errorMessage(err) })
      }

      const job: FollowedJob = {
        jobId, signal, timeoutMs: spec.timeoutSeconds * 1000, timeoutSeconds: spec.timeoutSeconds, memoryMb: spec.resources.memoryMb, command: spec.command[0] ?? '',
        disk: { dir: workDir, limitMb: spec.resources.diskMb }
      }
      return await this.follow(ctr, job, outputEnded, finish)
    } finally {
      // The attach stream is a raw socket; end it even if the engine did not.
      if (stream !== null) (stream as unknown as Duplex).destroy()
      if (container !== null) await this.remove(container, jobId)
    }
  }

  /**
   * Follows a started container to its end (timeout, cancel, exit) and says
   * how it ended. Shared by fresh runs and adopted containers.
   */
  private async follow (ctr: Dockerode.Container, job: FollowedJob, outputEnded: Promise<void>, finish: Finish): Promise<RunOutcome> {
    const { jobId } = job
    const ended = await this.supervise(ctr, job)
    await this.bounded(outputEnded, this.drainTimeoutMs, () => {
      this.log.warn('container output did not end after exit; using what arrived', { jobId })
    })
    if (ended.stopReason === 'cancelled') return finish('cancelled', null, { code: 'cancelled', message: 'job was cancelled', retryable: false })
    if (ended.stopReason === 'timeout') {
      return finish('failed', null, { code: 'timeout', message: `job exceeded its timeout of ${job.timeoutSeconds}s and was killed`, retryable: false })
    }
    if (ended.stopReason === 'disk-limit' || ended.diskBytes != null) {
      // Killed for it while running, or found over it once it had exited (between two walks).
      const killed = ended.stopReason === 'disk-limit'
      return finish('failed', killed ? null : ended.statusCode, {
        code: 'disk-limit',
        message: `job wrote ${formatMiB(ended.diskBytes ?? 0)} to its work dir, over its disk limit of ${job.disk?.limitMb ?? 0} MiB${killed ? ', and was killed' : ''}`,
        retryable: false
      })
    }
    if (ended.statusCode === null) {
      return finish('failed', null, { code: 'daemon-error', message: `docker wait failed: ${errorMessage(ended.error)}`.slice(0, 4096), retryable: true })
    }
    const oomKilled = await this.wasOomKilled(ctr, jobId)
    if (oomKilled) {
      // OOMKilled is set when any process in the container was killed for
      // memory, even if the main process then exited 0: its output is not
      // trustworthy, so the attempt fails.
      return finish('failed', ended.statusCode, {
        code: 'oom-killed',
        message: `job exceeded its memory limit of ${job.memoryMb} MiB and was killed`,
        retryable: false
      })
    }
    if (ended.statusCode === 0) return finish('succeeded', 0, null)
    return finish('failed', ended.statusCode, { code: 'exit-nonzero', message: `"${job.command}" exited with code ${ended.statusCode}`, retryable: false })
  }

  /**
   * Waits for the container to exit while enforcing the timeout, the disk
   * limit and the abort signal. Bounded: if the container survives SIGKILL
   * for `apiTimeoutMs`, the wait is abandoned (the forced remove in `run`
   * still cleans up). `diskBytes` is set when the work dir went over the
   * job's disk limit, seen while it ran or in a last walk once it exited.
   */
  private async supervise (container: Dockerode.Container, job: FollowedJob): Promise<{ stopReason: StopReason | null, statusCode: number | null, error: unknown, diskBytes: number | null }> {
    const { signal, jobId } = job
    const waitAbort = new AbortController()
    let stopReason: StopReason | null = null
    let diskBytes: number | null = null
    const timers: NodeJS.Timeout[] = []
    const killHard = (): void => {
      void this.kill(container, 'SIGKILL', jobId)
      timers.push(setTimeout(() => { waitAbort.abort(new DockerTimeoutError('wait after SIGKILL', this.apiTimeoutMs)) }, this.apiTimeoutMs))
    }
    const stopJob = (reason: StopReason): void => {
      if (stopReason !== null) return
      stopReason = reason
      // A job filling the disk gets no grace: every second it writes more.
      if (reason === 'disk-limit') { killHard(); return }
      void this.kill(container, 'SIGTERM', jobId)
      timers.push(setTimeout(killHard, this.killGraceMs))
    }
    const onAbort = (): void => { stopJob('cancelled') }
    timers.push(setTimeout(() => { stopJob('timeout') }, Math.max(0, job.timeoutMs)))
    signal.addEventListener('abort', onAbort, { once: true })
    if (signal.aborted) onAbort()
    const watch = job.disk == null
      ? null
      : new DiskWatch(job.disk.dir, job.disk.limitMb * MiB, bytes => {
        diskBytes = bytes
        this.log.warn('job went over its disk limit; killing it', { jobId, bytes, limitMb: job.disk?.limitMb })
        stopJob('disk-limit')
      }, { intervalMs: this.diskPollMs }).start()
    let statusCode: number | null = null
    let error: unknown = null
    try {
      // After start, so the default condition ('not-running') cannot resolve
      // early; if the job already exited it returns its status at once.
      const res = await container.wait({ abortSignal: waitAbort.signal }) as { StatusCode?: number }
      if (typeof res.StatusCode === 'number') statusCode = res.StatusCode
      else error = new Error('wait returned no StatusCode')
    } catch (err) {
      error = err
    } finally {
      for (const t of timers) clearTimeout(t)
      signal.removeEventListener('abort', onAbort)
      watch?.stop()
    }
    // What it wrote between the last walk and its exit counts too (its outputs are uploaded next).
    if (watch !== null && diskBytes === null && stopReason === null) {
      try {
        const usage = await watch.check()
        if (watch.over(usage)) diskBytes = usage.bytes
      } catch (err) {
        this.log.warn('cannot measure the work dir after the job', { jobId, error: errorMessage(err) })
      }
    }
    return { stopReason, statusCode, error, diskBytes }
  }

  /**
   * Makes sure `image` is present, pulling it if not. Returns null when it is,
   * 'cancelled' when the signal aborted the pull, or the error to report.
   */
  private async ensureImage (image: string, signal: AbortSignal): Promise<JobError | 'cancelled' | null> {
    const present = async (): Promise<boolean> => {
      try {
        await this.call('image inspect', async () => await this.docker.getImage(image).inspect())
        return true
      } catch (err) {
        if (statusCode(err) === 404) return false
        throw err
      }
    }
    try {
      if (await present()) return null
    } catch (err) {
      return { code: 'daemon-error', message: `docker image inspect ${image} failed: ${errorMessage(err)}`.slice(0, 4096), retryable: true }
    }
    const pullSignal = AbortSignal.any([signal, AbortSignal.timeout(this.pullTimeoutMs)])
    try {
      this.log.info('pulling image', { image })
      const stream = await this.docker.pull(image, { abortSignal: pullSignal })
      const events = await new Promise<Array<{ error?: string }>>((resolve, reject) => {
        // followProgress resolves on 'close' too, so an aborted pull also
        // lands here; the presence check below tells the two apart.
        pullSignal.addEventListener('abort', () => { reject(pullSignal.reason) }, { once: true })
        this.docker.modem.followProgress(stream, (err: Error | null, out: Array<{ error?: string }>) => { if (err !== null) reject(err); else resolve(out) })
      })
      // The engine reports registry errors inside the progress stream.
      const failed = events.find(e => typeof e.error === 'string')
      if (failed !== undefined) throw new Error(failed.error)
      if (!await present()) throw new Error('pull finished but the image is still absent')
      return null
    } catch (err) {
      if (signal.aborted) return 'cancelled'
      const why = pullSignal.aborted ? `pull timed out after ${this.pullTimeoutMs} ms` : errorMessage(err)
      return { code: 'image-missing', message: `image "${image}" is not available locally and could not be pulled: ${why}`.slice(0, 4096), retryable: false }
    }
  }

  private async wasOomKilled (container: Dockerode.Container, jobId: string): Promise<boolean> {
    try {
      const info = await this.call('inspect', async abortSignal => await container.inspect({ abortSignal }))
      return info.State.OOMKilled
    } catch (err) {
      this.log.warn('cannot inspect exited container; assuming no OOM kill', { jobId, err: errorMessage(err) })
      return false
    }
  }

  private async kill (container: Dockerode.Container, sig: 'SIGTERM' | 'SIGKILL', jobId: string): Promise<void> {
    try {
      await this.call('kill', async abortSignal => await container.kill({ signal: sig, abortSignal }))
    } catch (err) {
      // 409: not running any more, which is the goal.
      if (statusCode(err) !== 409 && statusCode(err) !== 404) this.log.warn('container kill failed', { jobId, sig, err: errorMessage(err) })
    }
  }

  private async remove (container: Dockerode.Container, jobId: string): Promise<void> {
    try {
      await this.call('remove', async abortSignal => await container.remove({ force: true, v: true, abortSignal }))
    } catch (err) {
      if (statusCode(err) !== 404) this.log.error('container removal failed; it is labelled rgrid.job for cleanup', { jobId, container: container.id, err: errorMessage(err) })
    }
  }

  /** Resolves when the attach stream ends, closes or fails. */
  private async endOf (stream: NodeJS.ReadableStream, jobId: string): Promise<void> {
    await new Promise<void>(resolve => {
      stream.once('end', () => { resolve() })
      stream.once('close', () => { resolve() })
      stream.once('error', (err: Error) => {
        this.log.warn('container output stream failed', { jobId, err: errorMessage(err) })
        resolve()
      })
    })
  }

  /** Waits for `p` at most `ms`; calls `onTimeout` if it did not settle. */
  private async bounded (p: Promise<void>, ms: number, onTimeout: () => void): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<boolean>(resolve => { timer = setTimeout(() => { resolve(true) }, ms) })
    const isLate = await Promise.race([p.then(() => false), late])
    clearTimeout(timer)
    if (isLate) onTimeout()
  }

  /**
   * One engine call bounded by `apiTimeoutMs`: the request is aborted through
   * its signal, and the race covers calls whose typings ignore the signal.
   */
  private async call<T>(operation: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const controller = new AbortController()
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        const err = new DockerTimeoutError(operation, this.apiTimeoutMs)
        controller.abort(err)
        reject(err)
      }, this.apiTimeoutMs)
    })
    try {
      return await Promise.race([fn(controller.signal), timeout])
    } finally {
      clearTimeout(timer)
    }
  }
}

/** Bytes as MiB for messages, e.g. "20.0 MiB". */
function formatMiB (bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`
}

/**
 * Why `dir` cannot be bind-mounted as a job's work dir, or null. Docker
 * follows links in a mount source, so a work dir replaced by a link (to the
 * node's data dir, its identity key, the docker socket) would expose it.
 */
async function checkWorkDir (dir: string): Promise<string | null> {
  if (!isAbsolute(dir) || resolve(dir) !== dir) return `work dir ${JSON.stringify(dir)} is not an absolute, normalised path`
  try {
    const st = await lstat(dir)
    if (!st.isDirectory()) return `work dir ${dir} is not a directory (a link or a file)`
  } catch (err) {
    return `work dir ${dir} is not usable: ${errorMessage(err)}`
  }
  return null
}

/** The HTTP status of a dockerode error, if it has one. */
function statusCode (err: unknown): number | undefined {
  const code = (err as { statusCode?: unknown } | null)?.statusCode
  return typeof code === 'number' ? code : undefined
}

/** The output patterns kept in a container's label; none when absent or unreadable. */
function outputPatterns (label: string | undefined): string[] {
  if (label == null) return []
  try {
    const parsed: unknown = JSON.parse(label)
    return Array.isArray(parsed) ? parsed.filter((p): p is string => outputPatternSchema.safeParse(p).success) : []
  } catch {
    // We write this label ourselves; an unreadable one can only mean no outputs we could trust.
    return []
  }
}

/** `out`, also handing every chunk to `live` (live logs) when there is one. */
function tee (out: Writable, stream: 'stdout' | 'stderr', live: ((stream: 'stdout' | 'stderr', chunk: Uint8Array) => void) | undefined): Writable {
  if (live == null) return out
  return new Writable({
    write (chunk: Buffer, _enc, done) {
      live(stream, chunk)
      out.write(chunk, done)
    },
    final (done) { out.end(done) }
  })
}
