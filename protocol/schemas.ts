/**
 * One schema per message. The HTTP boundary and the mesh decoders both use
 * these, so a job spec means the same thing wherever it enters.
 *
 * Objects are strict: an unknown field is an error, because a typo such as
 * `timeoutSecond` silently ignored would be worse than a clear 400.
 */
import { z } from 'zod'
import { LIMITS } from './limits.js'

const shortText = z.string().min(1).max(256)
const peerIdText = z.string().min(16).max(128).regex(/^[1-9A-HJ-NP-Za-km-z]+$/, 'must be a base58 peer id')
const jobId = z.string().regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'must be a job id (UUID)')
const attemptNumber = z.number().int().min(1).max(1000)
const fencingToken = z.string().regex(/^[0-9a-f]{32}$/, 'must be a 32-hex-digit fencing token')
const epochMs = z.number().int().min(0).max(8.64e15)
const requestId = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)

const labelKey = z.string().min(1).max(63).regex(/^[A-Za-z0-9][A-Za-z0-9._/-]*$/, 'must be a label key (letters, digits, . _ / -)')
const labelValue = z.string().max(63)
export const labelsSchema = z.record(labelKey, labelValue).refine(l => Object.keys(l).length <= LIMITS.labels, `at most ${LIMITS.labels} labels`)

/** NUL cannot be passed in argv or env (and PostgreSQL cannot store it). */
const argText = z.string().max(LIMITS.argChars).refine(t => !t.includes('\u0000'), 'must not contain NUL characters')

const envKey = z.string().min(1).max(256).regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name')

/**
 * A path inside the job's work dir: relative, `/`-separated, without empty,
 * `.` or `..` segments, so it cannot name anything outside the work dir
 * (symlinks are the node's to check when it touches the file).
 */
const pathChecks = (label: string) => z.string().min(1).max(LIMITS.pathChars)
  .refine(p => !p.includes('\u0000'), 'must not contain NUL characters')
  .refine(p => !p.startsWith('/'), `${label} must be relative to the work dir, not absolute`)
  .refine(p => !p.includes('\\'), `${label} must use / as the separator`)
  .refine(p => p.split('/').every(seg => seg !== '' && seg !== '.' && seg !== '..'), `${label} must stay inside the work dir (no "..", "." or empty segments)`)
export const workPathSchema = pathChecks('path')
/** An output pattern: a work-dir path where `*`, `?` and `**` match as in a shell glob. */
export const outputPatternSchema = pathChecks('pattern')

export const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'must be a sha256 as 64 lower-case hex digits')
/** A stored input, named by its content: `sha256:<hex>` (from `POST /v1/uploads`). */
export const objectIdSchema = z.string().regex(/^sha256:[0-9a-f]{64}$/, 'must be an object id from POST /v1/uploads (sha256:<64 hex digits>)')
const httpUrl = z.string().max(LIMITS.urlChars).refine(u => {
  try { const p = new URL(u).protocol; return p === 'http:' || p === 'https:' } catch { return false }
}, 'must be an http or https URL')

/** A file placed in the work dir before the command starts: from a URL, or an uploaded object. */
export const jobInputSchema = z.strictObject({
  path: workPathSchema,
  url: httpUrl.optional(),
  object: objectIdSchema.optional(),
  /** Checked after download; a mismatch fails the attempt (retryable). Implied by `object`. */
  sha256: sha256Hex.optional()
}).refine(i => (i.url == null) !== (i.object == null), 'an input needs exactly one of url and object')
  .refine(i => i.object == null || i.sha256 == null || i.object === `sha256:${i.sha256}`, 'sha256 contradicts the object id')
export type JobInput = z.output<typeof jobInputSchema>

/** Files uploaded after the command exits, if they exist. */
export const jobOutputSchema = z.strictObject({ path: outputPatternSchema })

/** `POST /v1/uploads`: the content a submitter is about to upload. */
export const uploadRequestSchema = z.strictObject({
  sha256: sha256Hex,
  size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
})

/** Resources a job needs; a node bids only if it has them free. */
export const resourcesSchema = z.strictObject({
  /** CPU cores, fractions allowed. */
  cpus: z.number().positive().max(256).default(1),
  /** Memory limit in MiB; the container is killed beyond it. */
  memoryMb: z.number().int().min(4).max(1024 * 1024).default(256),
  /** Disk the job may fill (work dir plus /tmp), in MiB; the attempt fails beyond it. */
  diskMb: z.number().int().min(1).max(1024 * 1024).default(1024)
})

/**
 * The job spec a submitter sends to `POST /v1/jobs`.
 */
export const jobSpecSchema = z.strictObject({
  /** Container image; the docker runtime uses its configured default when absent. */
  image: z.string().min(1).max(512).regex(/^[^\s]+$/, 'must not contain whitespace').optional(),
  /** argv of the job, executed without a shell. */
  command: z.array(argText).min(1).max(LIMITS.commandArgs)
    .refine(c => (c[0] ?? '').length > 0, 'command[0] must be a non-empty program name'),
  env: z.record(envKey, argText)
    .refine(e => Object.keys(e).length <= LIMITS.envVars, `at most ${LIMITS.envVars} variables`).default({}),
  /**
   * Secret environment variables: stored encrypted at rest, sent only to the
   * node that won the attempt, never shown in listings, and masked in logs.
   */
  secretEnv: z.record(envKey, argText)
    .refine(e => Object.keys(e).length <= LIMITS.envVars, `at most ${LIMITS.envVars} variables`).default({}),
  /** Outbound network access; a node runs such a job only if its operator allows it. */
  network: z.boolean().default(false),
  resources: resourcesSchema.default({ cpus: 1, memoryMb: 256, diskMb: 1024 }),
  /** Wall-clock limit of one attempt, in seconds. Image pulls do not count. */
  timeoutSeconds: z.number().int().min(1).max(7 * 24 * 3600).default(3600),
  /** Labels a node must carry (all of them, equal values) to run the job. */
  labels: labelsSchema.default({}),
  /** Attempts before the job ends failed. */
  maxAttempts: z.number().int().min(1).max(10).default(3),
  /** Files placed under the work dir before the command starts. */
  inputs: z.array(jobInputSchema).max(LIMITS.inputFiles)
    .refine(list => new Set(list.map(i => i.path)).size === list.length, 'two inputs have the same path').default([]),
  /** Groups jobs submitted together (`rgrid run --batch`); not used for placement. */
  batch: z.string().min(1).max(64).regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'must be letters, digits, . _ -').optional(),
  /** Files (glob patterns) uploaded after the command exits; those that do not exist are skipped. */
  outputs: z.array(jobOutputSchema).max(LIMITS.outputFiles).default([])
}).refine(s => Object.keys(s.secretEnv).every(k => !Object.hasOwn(s.env, k)), { message: 'a variable is both in env and secretEnv', path: ['secretEnv'] })
export type JobSpec = z.output<typeof jobSpecSchema>
export type JobSpecInput = z.input<typeof jobSpecSchema>

/** What a node needs to decide whether to bid: requirements, not the command. */
export const announcedJobSchema = z.strictObject({
  jobId,
  attempt: attemptNumber,
  image: z.string().min(1).max(512).optional(),
  resources: z.strictObject({ cpus: z.number().positive().max(256), memoryMb: z.number().int().min(4).max(1024 * 1024), diskMb: z.number().int().min(1).max(1024 * 1024).optional() }),
  labels: labelsSchema,
  timeoutSeconds: z.number().int().min(1).max(7 * 24 * 3600),
  /** The job wants outbound network access. */
  network: z.boolean().optional()
})
export type AnnouncedJob = z.output<typeof announcedJobSchema>

/**
 * Gossip: a batch of jobs open for bids, published by a coordinator, plus
 * attempts awarded since the last batch, so nodes stop bidding on them.
 */
export const announcementSchema = z.strictObject({
  v: z.literal(1),
  type: z.literal('announce'),
  sentAt: epochMs,
  jobs: z.array(announcedJobSchema).max(LIMITS.announcementJobs),
  taken: z.array(z.strictObject({ jobId, attempt: attemptNumber })).max(LIMITS.announcementTaken).default([])
}).refine(a => a.jobs.length + a.taken.length > 0, { message: 'an announcement carries at least one job or taken attempt', path: ['jobs'] })
export type Announcement = z.output<typeof announcementSchema>

const runtimeName = z.enum(['docker', 'process', 'sim'])

/** Capacity a node advertises. */
export const nodeCapacitySchema = z.strictObject({
  slots: z.number().int().min(0).max(1024),
  freeSlots: z.number().int().min(0).max(1024),
  cpus: z.number().positive().max(1024),
  memoryMb: z.number().int().min(1).max(64 * 1024 * 1024),
  labels: labelsSchema,
  runtime: runtimeName,
  version: shortText,
  /** The operator lets jobs that ask for it reach the network (`--allow-network`). */
  network: z.boolean().optional(),
  /** Image patterns (`*` wildcards) the operator allows or denies; a job's image must pass both. */
  images: z.strictObject({
    allow: z.array(z.string().min(1).max(512)).max(64).optional(),
    deny: z.array(z.string().min(1).max(512)).max(64).optional()
  }).optional()
})
export type NodeCapacity = z.output<typeof nodeCapacitySchema>

const runningRef = z.strictObject({ jobId, attempt: attemptNumber })

/** Gossip: a node's liveness and load, every heartbeat interval. */
export const nodeHeartbeatSchema = z.strictObject({
  v: z.literal(1),
  type: z.literal('node-heartbeat'),
  seq: z.number().int().min(0),
  sentAt: epochMs,
  capacity: nodeCapacitySchema,
  running: z.array(runningRef).max(LIMITS.heartbeatRunning)
})
export type NodeHeartbeat = z.output<typeof nodeHeartbeatSchema>

/** Gossip: a coordinator's presence and where to open a session to it. */
export const coordinatorBeaconSchema = z.strictObject({
  v: z.literal(1),
  type: z.literal('coordinator-beacon'),
  seq: z.number().int().min(0),
  sentAt: epochMs,
  addrs: z.array(z.string().min(1).max(512)).max(32),
  /** Peers whose join token was revoked, newest first: every peer refuses them. */
  denied: z.array(peerIdText).max(LIMITS.beaconDenied).default([])
})
export type CoordinatorBeacon = z.output<typeof coordinatorBeaconSchema>

export const heartbeatTopicSchema = z.discriminatedUnion('type', [nodeHeartbeatSchema, coordinatorBeaconSchema])
export type HeartbeatTopicMessage = z.output<typeof heartbeatTopicSchema>

// ---- session stream: node -> coordinator requests ----

export const helloSchema = z.strictObject({
  type: z.literal('hello'), rid: requestId,
  capacity: nodeCapacitySchema,
  running: z.array(z.strictObject({ jobId, attempt: attemptNumber, token: fencingToken })).max(LIMITS.heartbeatRunning),
  /** The join token's id and secret; required unless the coordinator runs with --open. */
  join: z.strictObject({ id: z.string().regex(/^[A-Za-z0-9_-]{8,64}$/), secret: z.string().min(1).max(128) }).optional(),
  /** The multiaddrs the node listens on, for the coordinator's dial-back (can it be reached, or only dial out?). */
  listenAddrs: z.array(z.string().min(1).max(256)).max(16).optional()
})

/** A node's offer to run one announced attempt. */
export const bidSchema = z.strictObject({
  type: z.literal('bid'), rid: requestId,
  jobId, attempt: attemptNumber,
  /** Free slots at the time of the bid, this one still counted as free. */
  freeSlots: z.number().int().min(0).max(1024),
  slots: z.number().int().min(1).max(1024)
})
export type Bid = z.output<typeof bidSchema>

export const startedSchema = z.strictObject({
  type: z.literal('started'), rid: requestId,
  jobId, attempt: attemptNumber, token: fencingToken, startedAt: epochMs
})

const jobErrorSchema = z.strictObject({
  code: shortText,
  message: z.string().max(4096),
  retryable: z.boolean()
})
export type JobError = z.output<typeof jobErrorSchema>

/** An output file an attempt uploaded. */
export const artifactSchema = z.strictObject({
  path: workPathSchema,
  size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  sha256: sha256Hex,
  contentType: z.string().min(1).max(256)
})
export type Artifact = z.output<typeof artifactSchema>

/** The outcome of one attempt, reported by the node that holds it. */
export const resultSchema = z.strictObject({
  type: z.literal('result'), rid: requestId,
  jobId, attempt: attemptNumber, token: fencingToken,
  outcome: z.enum(['succeeded', 'failed', 'cancelled']),
  exitCode: z.number().int().min(-1).max(1024).nullable(),
  stdout: z.string().max(LIMITS.outputBytes * 4),
  stderr: z.string().max(LIMITS.outputBytes * 4),
  stdoutTruncated: z.boolean(),
  stderrTruncated: z.boolean(),
  startedAt: epochMs.nullable(),
  finishedAt: epochMs,
  error: jobErrorSchema.nullable(),
  /** Output files uploaded through URLs from `outputs`. */
  artifacts: z.array(artifactSchema).max(LIMITS.outputFiles).default([]),
  /**
   * Session 1.1: the slot this attempt held is free once the result is
   * settled; award the node its next attempt in the `ack` (as `next`), if
   * one is waiting that it can run. Saves a bid round trip per job under load.
   */
  wantNext: z.boolean().optional()
})
export type ResultReport = z.output<typeof resultSchema>


/**
 * Live output of a running attempt, in order. Fenced like a result: lines
 * from an attempt that is not current are refused (`stale`), and the node
 * stops that attempt.
 */
export const logSchema = z.strictObject({
  type: z.literal('log'), rid: requestId,
  jobId, attempt: attemptNumber, token: fencingToken,
  lines: z.array(z.strictObject({
    stream: z.enum(['stdout', 'stderr']),
    at: epochMs,
    text: z.string().max(LIMITS.logLineChars)
  })).min(1).max(LIMITS.logBatchLines)
})

/**
 * Asks for upload URLs for an attempt's output files. Fenced like a result:
 * only the current attempt's holder gets URLs.
 */
export const outputsSchema = z.strictObject({
  type: z.literal('outputs'), rid: requestId,
  jobId, attempt: attemptNumber, token: fencingToken,
  files: z.array(artifactSchema).min(1).max(LIMITS.outputFiles)
})

export const pullSchema = z.strictObject({
  type: z.literal('pull'), rid: requestId,
  max: z.number().int().min(1).max(LIMITS.pullJobs)
})

/**
 * Sent every few seconds on the session: keeps the stream alive and renews
 * the leases of the listed attempts directly, whatever gossip does.
 */
/**
 * Session 1.2, a standing bid: the node has a slot free and no job to bid
 * on. The coordinator keeps the request and answers it with an `award` of
 * a new job that fits (instead of announcing it), or with an empty `open`
 * after `waitMs` or a `withdraw`. One per slot offered.
 */
export const standbySchema = z.strictObject({
  type: z.literal('standby'), rid: requestId,
  waitMs: z.number().int().min(100).max(LIMITS.standbyWaitMs)
})

/** Session 1.2: end every standing bid of this node (each is answered, `award` if it already won). Acked. */
export const withdrawSchema = z.strictObject({ type: z.literal('withdraw'), rid: requestId })

export const renewSchema = z.strictObject({
  type: z.literal('renew'), rid: requestId,
  capacity: nodeCapacitySchema,
  running: z.array(z.strictObject({ jobId, attempt: attemptNumber, token: fencingToken })).max(LIMITS.heartbeatRunning)
})

/**
 * The node's addresses changed (it took a relay slot, lost one, or a relayed
 * connection was upgraded to a direct one): the coordinator checks again how
 * it can be reached and answers with `ack`, then a `reachability` push.
 */
export const addrsSchema = z.strictObject({
  type: z.literal('addrs'), rid: requestId,
  listenAddrs: z.array(z.string().min(1).max(256)).max(16),
  /** Peers that reached the node over a relay and now have a direct connection (DCUtR). */
  upgradedPeers: z.number().int().min(0).max(100_000).default(0)
})

export const nodeFrameSchema = z.discriminatedUnion('type', [helloSchema, bidSchema, startedSchema, resultSchema, pullSchema, renewSchema, outputsSchema, logSchema, addrsSchema, standbySchema, withdrawSchema])
export type NodeFrame = z.output<typeof nodeFrameSchema>

// ---- session stream: coordinator -> node ----

export const welcomeSchema = z.strictObject({
  type: z.literal('welcome'), rid: requestId,
  /** Announced jobs this node could run, so a late joiner never misses work. */
  open: z.array(announcedJobSchema).max(LIMITS.pullJobs),
  /** Attempts from `hello.running` that are no longer this node's: stop them. */
  revoked: z.array(runningRef).max(LIMITS.heartbeatRunning)
})

/** Where the node fetches one input: a presigned GET for objects, the spec's URL otherwise. */
export const inputSourceSchema = z.strictObject({
  path: workPathSchema,
  url: httpUrl,
  sha256: sha256Hex.nullable(),
  /** Known for stored objects; the download is cut off beyond it. */
  size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullable()
})
export type InputSource = z.output<typeof inputSourceSchema>

/** What an award grants, as the reply to a bid or a standby (`award`) or with a result's `ack` (`next`). */
const awardFields = {
  jobId, attempt: attemptNumber, token: fencingToken,
  spec: jobSpecSchema,
  inputs: z.array(inputSourceSchema).max(LIMITS.inputFiles).default([]),
  /** Largest single input or output file, and largest total per attempt, the coordinator accepts, in bytes. */
  maxFileBytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  maxJobBytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional()
}

export const awardSchema = z.strictObject({ type: z.literal('award'), rid: requestId, ...awardFields })
export type Award = z.output<typeof awardSchema>

/** An award without its frame: the `next` of an `ack`. */
export const nextAwardSchema = z.strictObject(awardFields)
export type NextAward = z.output<typeof nextAwardSchema>

export const refuseReason = z.enum(['taken', 'not-open', 'cancelled', 'unknown-job', 'requirements', 'overloaded'])
export const refuseSchema = z.strictObject({
  type: z.literal('refuse'), rid: requestId,
  jobId, attempt: attemptNumber,
  reason: refuseReason
})

export const ackSchema = z.strictObject({
  type: z.literal('ack'), rid: requestId,
  /** Session 1.1, only in reply to a `result` with `wantNext`: the node's next attempt, awarded. */
  next: nextAwardSchema.optional()
})

/** The report carried a fencing token that is no longer current: stop that attempt. */
export const staleSchema = z.strictObject({
  type: z.literal('stale'), rid: requestId,
  jobId, attempt: attemptNumber,
  reason: z.string().max(512)
})

/** Reply to `renew`: attempts the node listed that are no longer its own. */
export const renewedSchema = z.strictObject({
  type: z.literal('renewed'), rid: requestId,
  revoked: z.array(runningRef).max(LIMITS.heartbeatRunning)
})

/** Reply to `outputs`: where to PUT each file (presigned, short-lived). */
export const uploadsSchema = z.strictObject({
  type: z.literal('uploads'), rid: requestId,
  files: z.array(z.strictObject({ path: workPathSchema, url: httpUrl })).max(LIMITS.outputFiles)
})

export const openJobsSchema = z.strictObject({
  type: z.literal('open'), rid: requestId,
  jobs: z.array(announcedJobSchema).max(LIMITS.pullJobs)
})

export const errorFrameSchema = z.strictObject({
  type: z.literal('error'), rid: requestId.nullable(),
  code: shortText,
  message: z.string().max(4096)
})

/** Pushed by the coordinator without a request: stop this attempt. */
export const cancelSchema = z.strictObject({
  type: z.literal('cancel'),
  jobId, attempt: attemptNumber, token: fencingToken,
  reason: z.string().max(512)
})

/** Pushed by the coordinator before it gives back the node's server: stop bidding, finish what runs. */
export const drainSchema = z.strictObject({ type: z.literal('drain'), reason: z.string().max(512) })

/** Pushed by the coordinator when a lease ran out: renew now if you are alive. */
export const probeSchema = z.strictObject({ type: z.literal('probe') })

/**
 * Pushed by the coordinator after its dial-back: whether it could connect to
 * any of the node's listen addresses (`public`), only through a relay slot
 * the node holds (`relayed`), or not at all: the node takes part only over
 * connections it opened (`outbound-only`, e.g. behind NAT, before it holds
 * a relay slot).
 */
export const reachabilitySchema = z.strictObject({
  type: z.literal('reachability'),
  reachability: z.enum(['public', 'relayed', 'outbound-only', 'unknown']),
  dialable: z.array(z.string().max(256)).max(16),
  /** Relayed addresses the coordinator connected to the node through. */
  relayed: z.array(z.string().max(256)).max(16).default([])
})

/**
 * Pushed to a node whose session runs through a relay: gossip does not run
 * on relayed (limited) connections, so the announcement's jobs come this
 * way instead, as soon as they are published.
 */
export const offerSchema = z.strictObject({
  type: z.literal('offer'),
  jobs: z.array(announcedJobSchema).min(1).max(LIMITS.announcementJobs)
})

export const coordinatorFrameSchema = z.discriminatedUnion('type', [
  welcomeSchema, awardSchema, refuseSchema, ackSchema, staleSchema, renewedSchema, openJobsSchema, errorFrameSchema, cancelSchema, probeSchema, uploadsSchema, drainSchema, reachabilitySchema, offerSchema
])
export type CoordinatorFrame = z.output<typeof coordinatorFrameSchema>
