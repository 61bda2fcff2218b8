/**
 * HTTP API v1 for submitters. Errors are `{"error":{"code","message"}}`;
 * thrown errors are mapped to status codes in one place, {@link toHttpError}.
 */
import { Hono, type Context } from 'hono'
import { streamSSE } from 'hono/streaming'
import { decodeJobSpec, DecodeError } from '../protocol/codec.js'
import { LIMITS } from '../protocol/limits.js'
import { ConflictError, InputMissingError, NotFoundError, StaleAttemptError, TooLargeError, ValidationError } from '../common/errors.js'
import { uploadRequestSchema } from '../protocol/schemas.js'
import { ObjectStoreUnavailableError } from './objects/types.js'
import { openApiDocument } from './openapi.js'
import { DASHBOARD_JS, jobPage, overviewPage } from './dashboard.js'
import { METRICS_CONTENT_TYPE } from '../common/metrics.js'
import type { Logger } from '../common/log.js'
import type { CoordinatorApi } from './coordinator.js'
import { QuotaExceededError, StoreUnavailableError, type JobRecord, type JobState, type JobSummary } from './store/types.js'
import { ApiKeyAuth, ForbiddenError, OPEN_PRINCIPAL, UnauthorizedError, type Principal } from './api-keys.js'
import { RateLimiter } from '../common/rate-limit.js'
import { systemClock, type Clock } from '../common/clock.js'
import { redactSpec } from './secrets.js'
import { BodyAbortedError, BodyTooLargeError, readBody } from './http-body.js'

/** A key sent more requests than its rate allows (HTTP 429). */
export class RateLimitedError extends Error {
  override readonly name = 'RateLimitedError'
  constructor (readonly retryAfterSeconds: number, limit: number, message?: string) {
    super(message ?? `more than ${limit} requests per second with this API key; retry in ${retryAfterSeconds} s`)
  }
}

const JOB_STATES: ReadonlySet<string> = new Set(['announced', 'claimed', 'running', 'succeeded', 'failed', 'cancelled'])
const TERMINAL_STATES: ReadonlySet<string> = new Set(['succeeded', 'failed', 'cancelled'])
/** Most jobs in one `POST /v1/jobs/batch`. */
export const MAX_BATCH_JOBS = 1000
/** As `Request.text()` decodes: bad bytes become U+FFFD, a leading BOM is dropped. */
const utf8 = new TextDecoder()

/** Largest batch body: room for many ordinary specs; each spec still has the single-job limit. */
const MAX_BATCH_BODY_BYTES = 8 * 1024 * 1024
const JOB_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

type Status = 400 | 401 | 403 | 404 | 409 | 413 | 415 | 429 | 500 | 503

/** Maps an error to its HTTP status, code and message. */
export function toHttpError (err: unknown): { status: Status, code: string, message: string } {
  if (err instanceof DecodeError) return { status: 400, code: 'invalid-request', message: err.message }
  if (err instanceof ValidationError) return { status: 400, code: 'invalid-request', message: err.message }
  if (err instanceof NotFoundError) return { status: 404, code: 'not-found', message: err.message }
  if (err instanceof ConflictError) return { status: 409, code: 'conflict', message: err.message }
  if (err instanceof StaleAttemptError) return { status: 409, code: 'stale-attempt', message: err.message }
  if (err instanceof TooLargeError) return { status: 413, code: 'too-large', message: err.message }
  if (err instanceof BodyTooLargeError) return { status: 413, code: 'too-large', message: err.message }
  if (err instanceof BodyAbortedError) return { status: 400, code: 'aborted', message: err.message }
  if (err instanceof UnauthorizedError) return { status: 401, code: 'unauthorized', message: err.message }
  if (err instanceof ForbiddenError) return { status: 403, code: 'forbidden', message: err.message }
  if (err instanceof RateLimitedError) return { status: 429, code: 'rate-limited', message: err.message }
  if (err instanceof QuotaExceededError) return { status: 429, code: 'too-many-jobs', message: err.message }
  if (err instanceof InputMissingError) return { status: 400, code: 'input-missing', message: err.message }
  if (err instanceof ObjectStoreUnavailableError) return { status: 503, code: 'objects-unavailable', message: 'the coordinator cannot reach its object store right now; retry shortly' }
  if (err instanceof StoreUnavailableError) return { status: 503, code: 'store-unavailable', message: 'the coordinator cannot reach its database right now; retry shortly' }
  return { status: 500, code: 'internal', message: 'internal error; see the coordinator log' }
}

function jobJson (job: JobRecord): Record<string, unknown> {
  return {
    id: job.id,
    state: job.state,
    owner: job.owner,
    // Secret values never leave the coordinator, whatever the store holds.
    spec: redactSpec(job.spec),
    createdAt: job.createdAt,
    updatedAt: job.updatedAt,
    attempts: job.attempts.map(a => ({
      number: a.number, node: a.node, state: a.state, awardedAt: a.awardedAt, startedAt: a.startedAt, finishedAt: a.finishedAt
    })),
    result: job.result
  }
}

function summaryJson (job: JobSummary): Record<string, unknown> {
  return { id: job.id, state: job.state, owner: job.owner, attempt: job.attempt, spec: redactSpec(job.spec), createdAt: job.createdAt, updatedAt: job.updatedAt }
}

export interface HttpAppOptions {
  api: CoordinatorApi
  log: Logger
  /** Largest request body, in bytes. @default 2 * LIMITS.jobSpecBytes */
  maxBodyBytes?: number
  /** Serves `/objects/*` (the embedded object store's signed URLs). @default none */
  objects?: { handle: (request: Request) => Promise<Response> }
  /**
   * Checks API keys. Without it the API is open: every caller acts as an
   * admin and jobs have no owner (`--open`, or `--no-api-keys`).
   * @default none (open)
   */
  auth?: ApiKeyAuth
  /** Live log streams one non-admin API key may hold open at once. @default 20 */
  maxStreamsPerKey?: number
  /** Requests per second one non-admin API key may make, sustained (bursts of twice as many pass). @default 50 */
  requestsPerSecondPerKey?: number
  /** @default systemClock */
  clock?: Clock
}

/** Paths anyone may read: they carry no job data (the dashboard's pages fetch it with the caller's key). */
const PUBLIC_PATHS = /^\/(healthz|v1\/openapi\.json|dashboard\.js|objects\/.*|jobs\/[^/]+)?$/
/** Paths only an admin key may read: operators' views (counters across every key, the provisioner's plan). */
const ADMIN_PATHS = /^\/(metrics|v1\/stats|v1\/cloud\/events)$/

type Env = { Variables: { principal: Principal } }

export function createHttpApp (options: HttpAppOptions): Hono<Env> {
  const { api, log } = options
  const app = new Hono<Env>()
  const perKey = options.requestsPerSecondPerKey ?? 50
  const clock = options.clock ?? systemClock
  const limiter = new RateLimiter({ ratePerSecond: perKey, burst: perKey * 2, clock })
  /** Live log streams open per API key. */
  const openStreams = new Map<string, number>()
  const fail = (c: Context, status: Status, code: string, message: string): Response =>
    c.json({ error: { code, message } }, status)

  app.onError((err, c) => {
    const e = toHttpError(err)
    if (e.status === 500) log.error('request failed', { path: c.req.path, error: (err as Error).stack ?? String(err) })
    if (err instanceof RateLimitedError) c.header('Retry-After', String(err.retryAfterSeconds))
    if (err instanceof QuotaExceededError) c.header('Retry-After', '10')
    if (e.status === 401) c.header('WWW-Authenticate', 'Bearer realm="rgrid"')
    if (e.status === 503) {
      log.warn('a dependency is unavailable', { path: c.req.path, error: (err as Error).message })
      c.header('Retry-After', '2')
    }
    return fail(c, e.status, e.code, e.message)
  })
  app.notFound(c => fail(c, 404, 'not-found', `no route ${c.req.method} ${c.req.path}`))

  const maxBodyBytes = options.maxBodyBytes ?? 2 * LIMITS.jobSpecBytes

  // Authentication, then the key's rate; the principal decides what the routes show.
  app.use('*', async (c, next) => {
    const path = c.req.path
    if (PUBLIC_PATHS.test(path)) { c.set('principal', OPEN_PRINCIPAL); await next(); return }
    const principal = options.auth != null ? await options.auth.authenticate(c.req.header('authorization')) : OPEN_PRINCIPAL
    // Admin keys are operators' and their automation's (dashboards, exporters, test harnesses): not rate-limited.
    if (principal.keyId != null && !principal.admin && !limiter.take(principal.keyId)) throw new RateLimitedError(Math.max(1, limiter.retryAfterSeconds(principal.keyId)), perKey)
    if (ADMIN_PATHS.test(path) && !principal.admin) throw new ForbiddenError(`${path} is for admin keys only`)
    c.set('principal', principal)
    await next()
  })

  /** The job, if the caller may see it: its own, or any for an admin. Others' jobs are "not found", not "forbidden", so ids leak nothing. */
  const visibleJob = async (c: Context<Env>, id: string): Promise<JobRecord> => {
    const job = await api.getJob(id)
    const p = c.get('principal')
    if (job == null || (!p.admin && job.owner !== p.keyId)) throw new NotFoundError('job', id)
    return job
  }

  app.get('/healthz', c => c.json({ ok: true, ...api.health() }))
  app.get('/v1/stats', async c => c.json(await api.metrics()))
  app.get('/', c => c.html(overviewPage()))
  app.get('/jobs/:id', c => c.html(jobPage(jobId(c))))
  app.get('/dashboard.js', c => c.body(DASHBOARD_JS, 200, { 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'no-cache' }))
  app.get('/v1/stats/history', c => c.json({ samples: api.history() }))
  app.get('/v1/cloud/events', async c => {
    const limit = Number(c.req.query('limit') ?? 100)
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new ValidationError('limit must be an integer from 1 to 1000', 'limit')
    return c.json({ events: await api.cloudEvents(limit) })
  })
  app.get('/v1/openapi.json', c => c.json(openApiDocument(new URL(c.req.url).origin)))
  app.get('/metrics', async c => c.body(await api.prometheus(), 200, { 'content-type': METRICS_CONTENT_TYPE }))

  /**
   * The JSON body, or the 415/400 response to send instead; a body over
   * `maxBytes` throws {@link BodyTooLargeError} (413), checked first as it always was.
   */
  const jsonBody = async (c: Context, what: string, maxBytes = maxBodyBytes): Promise<{ body: unknown } | Response> => {
    const bytes = await readBody(c, maxBytes)
    const type = (c.req.header('content-type') ?? '').toLowerCase()
    if (!type.startsWith('application/json')) return fail(c, 415, 'unsupported-media-type', `send ${what} as application/json`)
    try {
      return { body: JSON.parse(utf8.decode(bytes)) }
    } catch (err) {
      // A syntax error is the client's; anything else is not expected here.
      if (!(err instanceof SyntaxError)) throw err
      return fail(c, 400, 'invalid-json', 'request body is not valid JSON')
    }
  }

  app.post('/v1/jobs', async c => {
    const read = await jsonBody(c, 'the job spec')
    if (read instanceof Response) return read
    const body = read.body
    const spec = decodeJobSpec(body)
    const job = await api.submit(spec, c.get('principal').keyId)
    c.header('Location', `/v1/jobs/${job.id}`)
    return c.json(summaryJson(job), 201)
  })

  // Many jobs in one request and one store transaction (all or none): for scripts that submit
  // thousands, like sbatch --array. The body may hold MAX_BATCH_JOBS specs, each within the single-job limit.
  app.post('/v1/jobs/batch', async c => {
    const read = await jsonBody(c, 'the batch', MAX_BATCH_BODY_BYTES)
    if (read instanceof Response) return read
    const body = read.body as { jobs?: unknown }
    if (typeof body !== 'object' || body === null || Array.isArray(body) || !Array.isArray(body.jobs) || Object.keys(body).some(k => k !== 'jobs')) {
      throw new ValidationError('a batch is {"jobs": [job spec, ...]}', 'jobs')
    }
    if (body.jobs.length < 1 || body.jobs.length > MAX_BATCH_JOBS) throw new ValidationError(`a batch has 1 to ${MAX_BATCH_JOBS} jobs, got ${body.jobs.length}`, 'jobs')
    const specs = body.jobs.map((j, i) => {
      const size = Buffer.byteLength(JSON.stringify(j) ?? '')
      if (size > 2 * LIMITS.jobSpecBytes) throw new TooLargeError(`jobs[${i}]`, size, 2 * LIMITS.jobSpecBytes)
      try {
        return decodeJobSpec(j)
      } catch (err) {
        if (err instanceof DecodeError) throw new ValidationError(`jobs[${i}]: ${err.message}`, `jobs[${i}]`)
        throw err
      }
    })
    const jobs = await api.submitMany(specs, c.get('principal').keyId)
    return c.json({ jobs: jobs.map(summaryJson) }, 201)
  })

  app.get('/v1/jobs', async c => {
    const state = c.req.query('state')
    const limitText = c.req.query('limit')
    if (state != null && !JOB_STATES.has(state)) throw new ValidationError(`state must be one of ${[...JOB_STATES].join(', ')}`, 'state')
    let limitN = 50
    if (limitText != null) {
      limitN = Number(limitText)
      if (!Number.isInteger(limitN) || limitN < 1 || limitN > 1000) throw new ValidationError('limit must be an integer from 1 to 1000', 'limit')
    }
    const batch = c.req.query('batch')
    if (batch != null && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(batch)) throw new ValidationError('batch must be 1 to 64 letters, digits, . _ -', 'batch')
    const p = c.get('principal')
    const jobs = await api.listJobs({ ...(state != null ? { state: state as JobState } : {}), ...(batch != null ? { batch } : {}), ...(!p.admin && p.keyId != null ? { owner: p.keyId } : {}), limit: limitN })
    return c.json({ jobs: jobs.map(summaryJson) })
  })

  const jobId = (c: Context): string => {
    const id = c.req.param('id') ?? ''
    if (!JOB_ID.test(id)) throw new ValidationError(`job id ${JSON.stringify(id.slice(0, 64))} is not a job id`, 'id')
    return id
  }

  app.get('/v1/jobs/:id', async c => c.json(jobJson(await visibleJob(c, jobId(c)))))

  app.get('/v1/jobs/:id/logs', async c => {
    const id = jobId(c)
    await visibleJob(c, id)
    const afterText = c.req.query('after') ?? c.req.header('last-event-id') ?? '0'
    const after = Number(afterText)
    if (!Number.isSafeInteger(after) || after < 0) throw new ValidationError('after must be a line number >= 0', 'after')
    const limitN = Number(c.req.query('limit') ?? 1000)
    if (!Number.isInteger(limitN) || limitN < 1 || limitN > 5000) throw new ValidationError('limit must be an integer from 1 to 5000', 'limit')
    const follow = c.req.query('follow') === '1' || c.req.query('follow') === 'true' || (c.req.header('accept') ?? '').includes('text/event-stream')
    if (!follow) {
      const lines = await api.listLogs(id, after, limitN)
      return c.json({ lines, next: lines.at(-1)?.line ?? after })
    }
    // Server-Sent Events: each line is an event whose id is its line number, so a client that
    // reconnects with Last-Event-ID resumes exactly; `end` comes once the job has ended and every line went out.
    const p = c.get('principal')
    const maxStreams = options.maxStreamsPerKey ?? 20
    const streamKey = p.keyId != null && !p.admin ? p.keyId : null
    if (streamKey != null) {
      const open = openStreams.get(streamKey) ?? 0
      if (open >= maxStreams) throw new RateLimitedError(5, perKey, `this API key already follows ${open} live logs (at most ${maxStreams}); close one first`)
      openStreams.set(streamKey, open + 1)
    }
    const authorization = c.req.header('authorization')
    return streamSSE(c, async stream => {
      const abort = new AbortController()
      stream.onAbort(() => { abort.abort() })
      let checkedAt = clock.now()
      try {
        let cursor = after
        /** Sends every line stored after the cursor, a page at a time. */
        const sendStored = async (): Promise<void> => {
          for (;;) {
            const page = await api.listLogs(id, cursor, 1000)
            for (const l of page) {
              await stream.writeSSE({ event: 'log', id: String(l.line), data: JSON.stringify(l) })
              cursor = l.line
            }
            if (page.length < 1000 || abort.signal.aborted) return
          }
        }
        while (!abort.signal.aborted) {
          // A key revoked while it follows a log stops being served within the key cache time.
          if (options.auth != null && p.keyId != null && clock.now() - checkedAt >= 5_000) {
            checkedAt = clock.now()
            try {
              await options.auth.authenticate(authorization)
            } catch (err) {
              await stream.writeSSE({ event: 'error', data: JSON.stringify({ code: 'unauthorized', message: (err as Error).message }) })
              return
            }
          }
          await sendStored()
          const now = await api.getJob(id)
          if (now == null || TERMINAL_STATES.has(now.state)) {
            // The result may have landed after our last read: one more read, then the end.
            await sendStored()
            await stream.writeSSE({ event: 'end', data: JSON.stringify({ state: now?.state ?? 'unknown', next: cursor }) })
            return
          }
          await api.waitForLogs(id, 1_000, abort.signal)
        }
      } finally {
        if (streamKey != null) {
          const left = (openStreams.get(streamKey) ?? 1) - 1
          if (left <= 0) openStreams.delete(streamKey)
          else openStreams.set(streamKey, left)
        }
      }
    })
  })

  app.get('/v1/jobs/:id/explain', async c => {
    const id = jobId(c)
    await visibleJob(c, id)
    return c.json(await api.explain(id))
  })

  app.get('/v1/jobs/:id/artifacts', async c => {
    const id = jobId(c)
    await visibleJob(c, id)
    return c.json({ artifacts: await api.artifacts(id) })
  })

  app.post('/v1/uploads', async c => {
    const read = await jsonBody(c, '{"sha256", "size"}')
    if (read instanceof Response) return read
    const body = read.body
    const parsed = uploadRequestSchema.safeParse(body)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]
      throw new ValidationError(`${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`, issue?.path.join('.') ?? null)
    }
    const grant = await api.grantUpload(parsed.data.sha256, parsed.data.size, c.get('principal').keyId)
    return c.json(grant, grant.url == null ? 200 : 201)
  })

  if (options.objects != null) {
    const objects = options.objects
    // Streamed: no body limit here; the signed URL carries the exact size.
    app.on(['GET', 'HEAD', 'PUT'], '/objects/*', async c => await objects.handle(c.req.raw))
  }

  app.get('/v1/jobs/:id/events', async c => {
    const id = jobId(c)
    await visibleJob(c, id)
    return c.json({ events: await api.listEvents(id) })
  })

  app.post('/v1/jobs/:id/cancel', async c => {
    const id = jobId(c)
    await visibleJob(c, id)
    const p = c.get('principal')
    const outcome = await api.cancel(id, p.keyId != null ? `key ${p.name}` : 'http')
    return c.json({ ...summaryJson(outcome.job), stoppedAttempt: outcome.stopped?.number ?? null })
  })

  app.get('/v1/nodes', async c => {
    const nodes = await api.listNodes()
    return c.json({
      nodes: nodes.map(n => ({
        peerId: n.peerId,
        capacity: { slots: n.capacity.slots, cpus: n.capacity.cpus, memoryMb: n.capacity.memoryMb, labels: n.capacity.labels, runtime: n.capacity.runtime },
        freeSlots: n.capacity.freeSlots,
        running: n.running,
        activeAwards: n.activeAwards,
        version: n.capacity.version,
        session: n.sessionOpen,
        // public: the coordinator could connect to it; relayed: only through its relay slot;
        // outbound-only: it takes part over connections it opened (NAT), with no relay slot.
        reachability: n.reachability,
        dialableAddrs: n.dialable,
        relayedAddrs: n.relayedAddrs,
        holePunchedPeers: n.upgradedPeers,
        firstSeenAt: n.firstSeenAt,
        lastHeartbeatAt: n.lastSeenAt
      }))
    })
  })

  return app
}
