/**
 * What a node's runtime does: run one attempt of a job to completion and
 * describe how it ended. Runtimes never throw for a job's own failure; they
 * return an outcome with a typed error saying whether a retry could help.
 */
import type { JobSpec, JobError, NodeCapacity } from '../../protocol/schemas.js'

/**
 * What the node's operator lets jobs do, as the runtime enforces it. The node
 * advertises it in its capacity so coordinators only award jobs it allows.
 */
export interface RuntimePolicy {
  /** Jobs that ask for it (`spec.network`) get outbound network access. */
  network: boolean
  /** Image patterns (`*` wildcards) allowed and denied; see `imageRefusal` in protocol/matching.ts. */
  images?: NonNullable<NodeCapacity['images']>
}

export type RuntimeName = 'docker' | 'process' | 'sim'

export interface RunRequest {
  jobId: string
  attempt: number
  spec: JobSpec
  /** Per-attempt scratch directory, created by the caller, mounted/cwd for the job. */
  workDir: string
  /** Aborting stops the job (cancel or node shutdown); the outcome is `cancelled`. */
  signal: AbortSignal
  /**
   * The attempt's fencing token. Runtimes whose jobs can outlive the node
   * (containers) keep it with the job so a restarted node can adopt and
   * report it.
   */
  token?: string
  /**
   * Receives the job's output as it is produced (for live logs). Must not
   * throw or block: the runtime calls it on its own data path.
   */
  onOutput?: (stream: 'stdout' | 'stderr', chunk: Uint8Array) => void
  /** Called once the job's process or container has actually started. */
  onStarted?: (startedAt: number, info?: { pid?: number }) => void
}

export interface RunOutcome {
  outcome: 'succeeded' | 'failed' | 'cancelled'
  /** Process exit code; null when it never ran or was killed by a signal we sent. */
  exitCode: number | null
  stdout: string
  stderr: string
  stdoutTruncated: boolean
  stderrTruncated: boolean
  startedAt: number | null
  finishedAt: number
  /**
   * Why it did not succeed. Codes: `exit-nonzero`, `timeout`, `oom-killed`,
   * `disk-limit`, `image-missing`, `image-not-allowed`, `network-not-allowed`,
   * `spawn-failed`, `daemon-error`, `cancelled`.
   */
  error: JobError | null
}

/** A job an earlier run of this node started that is still there after a restart. */
export interface AdoptedAttempt {
  jobId: string
  attempt: number
  token: string
  /** When it really started, or null if it never did. */
  startedAt: number | null
  /** Its work dir, to remove once it is over. */
  workDir: string | null
  /** Its output patterns, uploaded once it ends. */
  outputs: string[]
  /** File limits from its award, when known. */
  limits?: { maxFileBytes: number, maxJobBytes: number }
  /** Follows it to its end, enforcing what is left of its timeout; aborting stops it. */
  resume: (signal: AbortSignal) => Promise<RunOutcome>
}

export interface Runtime {
  readonly name: RuntimeName
  /**
   * What it lets jobs do beyond the defaults. Runtimes without one run no job
   * that asks for network, and have no image policy.
   */
  readonly policy?: RuntimePolicy
  /**
   * Whether a job needs a work directory even when it has no inputs or
   * outputs. Only the sim runtime, which touches no files, says no: creating
   * and removing a directory per job was a measurable share of a sim node's
   * CPU (docs/performance.md).
   * @default true
   */
  readonly usesWorkDir?: boolean
  /** Checks the runtime is usable (e.g. the Docker daemon answers). Idempotent. */
  start: (signal?: AbortSignal) => Promise<void>
  /** Idempotent. Does not stop running jobs: abort their signals for that. */
  stop: () => Promise<void>
  run: (request: RunRequest) => Promise<RunOutcome>
  /**
   * Jobs an earlier run of this node left running (or finished but
   * unreported) that this runtime can follow again. Runtimes whose jobs die
   * with the node do not implement it.
   */
  adopt?: (signal: AbortSignal) => Promise<AdoptedAttempt[]>
}
