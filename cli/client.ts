/**
 * A small typed client of the coordinator's HTTP API for the `rgrid` CLI.
 * Every failure becomes a {@link ClientError} with a one-line message a
 * person can act on (unreachable coordinator, refused request, bad reply).
 */
import { createReadStream, createWriteStream } from 'node:fs'
import { createHash } from 'node:crypto'
import { mkdir, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { putFile } from '../common/put-file.js'

/** What went wrong, in one line; `status` is the HTTP status when there was one. */
export class ClientError extends Error {
  override readonly name = 'ClientError'
  constructor (message: string, readonly status: number | null = null, readonly code: string | null = null) { super(message) }
}

export interface JobAttempt { number: number, node: string, state: string, awardedAt: number, startedAt: number | null, finishedAt: number | null }
export interface JobResult {
  attempt: number, outcome: string, exitCode: number | null, stdout: string, stderr: string,
  error: { code: string, message: string, retryable: boolean } | null, artifacts: Artifact[]
}
export interface Job { id: string, state: string, spec: Record<string, unknown>, createdAt: number, updatedAt: number, attempts: JobAttempt[], result: JobResult | null }
export interface JobSummary { id: string, state: string, attempt: number, spec: Record<string, unknown>, createdAt: number, updatedAt: number }
export interface Artifact { path: string, size: number, sha256: string, contentType: string }
export interface ArtifactLink extends Artifact { url: string }
export interface LogLine { line: number, attempt: number, stream: 'stdout' | 'stderr', at: number, text: string }
export interface JobEvent { seq: number, at: number, type: string, actor: string, attempt: number | null, detail: Record<string, unknown> }

export class Client {
  constructor (readonly baseUrl: string, private readonly apiKey: string | null = null) {}

  private async call<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    let res: Response
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: {
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...(this.apiKey != null ? { authorization: `Bearer ${this.apiKey}` } : {})
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: signal ?? AbortSignal.timeout(30_000)
      })
    } catch (err) {
      throw new ClientError(`cannot reach the coordinator at ${this.baseUrl}: ${causeOf(err)} (set --coordinator or RGRID_COORDINATOR)`)
    }
    const text = await res.text()
    let parsed: unknown = null
    try { parsed = text === '' ? null : JSON.parse(text) } catch { parsed = null }
    if (!res.ok) {
      const e = (parsed as { error?: { code?: string, message?: string } } | null)?.error
      if (res.status === 401 || res.status === 403) throw new ClientError(`the coordinator refused the request: ${e?.message ?? 'not authorised'} (check RGRID_API_KEY)`, res.status, e?.code ?? null)
      throw new ClientError(e?.message ?? `${method} ${path} answered ${res.status}`, res.status, e?.code ?? null)
    }
    if (parsed === null && text !== '') throw new ClientError(`${method} ${path}: the answer is not JSON; is ${this.baseUrl} an RGrid coordinator?`)
    return parsed as T
  }

  async submit (spec: unknown): Promise<JobSummary> { return await this.call('POST', '/v1/jobs', spec) }
  /** Up to 1000 specs in one request and one store transaction (all or none). */
  async submitMany (specs: unknown[]): Promise<JobSummary[]> { return (await this.call<{ jobs: JobSummary[] }>('POST', '/v1/jobs/batch', { jobs: specs })).jobs }
  async job (id: string): Promise<Job> { return await this.call('GET', `/v1/jobs/${encodeURIComponent(id)}`) }
  async list (query: { state?: string, batch?: string, limit?: number } = {}): Promise<JobSummary[]> {
    const q = new URLSearchParams()
    if (query.state != null) q.set('state', query.state)
    if (query.batch != null) q.set('batch', query.batch)
    if (query.limit != null) q.set('limit', String(query.limit))
    return (await this.call<{ jobs: JobSummary[] }>('GET', `/v1/jobs?${q.toString()}`)).jobs
  }

  async cancel (id: string): Promise<JobSummary> { return await this.call('POST', `/v1/jobs/${encodeURIComponent(id)}/cancel`) }
  async events (id: string): Promise<JobEvent[]> { return (await this.call<{ events: JobEvent[] }>('GET', `/v1/jobs/${encodeURIComponent(id)}/events`)).events }
  async explain (id: string): Promise<{ id: string, state: string, summary: string, next: string, nodes: Array<{ peerId: string, verdict: string, reason: string }>, bids: Array<{ node: string, attempt: number, at: number, outcome: string }>, recent: JobEvent[] }> {
    return await this.call('GET', `/v1/jobs/${encodeURIComponent(id)}/explain`)
  }

  async nodes (): Promise<unknown[]> { return (await this.call<{ nodes: unknown[] }>('GET', '/v1/nodes')).nodes }
  async artifacts (id: string): Promise<ArtifactLink[]> { return (await this.call<{ artifacts: ArtifactLink[] }>('GET', `/v1/jobs/${encodeURIComponent(id)}/artifacts`)).artifacts }
  async logs (id: string, after: number): Promise<{ lines: LogLine[], next: number }> {
    return await this.call('GET', `/v1/jobs/${encodeURIComponent(id)}/logs?after=${after}&limit=5000`)
  }

  /**
   * Follows a job's live log from line `after` (Server-Sent Events),
   * reconnecting from the last line seen if the stream breaks, until the
   * job ends. Calls `onLine` for each line.
   */
  async follow (id: string, after: number, onLine: (l: LogLine) => void, signal?: AbortSignal): Promise<number> {
    let cursor = after
    let failures = 0
    const aborted = (): boolean => signal?.aborted === true
    for (;;) {
      if (aborted()) return cursor
      try {
        const res = await fetch(`${this.baseUrl}/v1/jobs/${encodeURIComponent(id)}/logs`, {
          headers: { accept: 'text/event-stream', 'last-event-id': String(cursor), ...(this.apiKey != null ? { authorization: `Bearer ${this.apiKey}` } : {}) },
          ...(signal != null ? { signal } : {})
        })
        if (!res.ok || res.body == null) throw new ClientError(`GET logs answered ${res.status}`, res.status)
        let buffer = ''
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
        for (;;) {
          const { value: chunk, done } = await reader.read()
          if (done) break
          buffer += chunk
          let cut: number
          while ((cut = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, cut)
            buffer = buffer.slice(cut + 2)
            let event = 'message'
            let data = ''
            for (const l of block.split('\n')) {
              if (l.startsWith('event:')) event = l.slice(6).trim()
              else if (l.startsWith('data:')) data += l.slice(5).trim()
            }
            if (event === 'log') {
              const line = JSON.parse(data) as LogLine
              cursor = line.line
              onLine(line)
            } else if (event === 'end') {
              return cursor
            }
          }
        }
        failures = 0
      } catch (err) {
        if (aborted()) return cursor
        if (err instanceof ClientError && err.status === 404) throw err
        if (++failures > 5) throw new ClientError(`lost the log stream of ${id}: ${causeOf(err)}`)
        await new Promise(resolve => setTimeout(resolve, 500 * failures))
      }
    }
  }

  /** Uploads a file as a job input (once per content); returns its object id. */
  async upload (file: string): Promise<string> {
    const hash = createHash('sha256')
    await pipeline(createReadStream(file), hash)
    const sha256 = hash.digest('hex')
    const size = (await stat(file)).size
    const grant = await this.call<{ object: string, url: string | null }>('POST', '/v1/uploads', { sha256, size })
    if (grant.url != null) {
      let status: number
      try {
        status = (await putFile(grant.url, file, size)).status
      } catch (err) {
        throw new ClientError(`uploading ${file} failed: ${causeOf(err)}`)
      }
      if (status < 200 || status >= 300) throw new ClientError(`uploading ${file} failed with HTTP ${status}`, status)
    }
    return grant.object
  }

  /** Downloads an artifact to `dest`, creating its directory. */
  async download (url: string, dest: string): Promise<void> {
    let res: Response
    try { res = await fetch(url) } catch (err) { throw new ClientError(`cannot download ${dest}: ${causeOf(err)}`) }
    if (!res.ok || res.body == null) throw new ClientError(`downloading ${dest} failed with HTTP ${res.status}`, res.status)
    await mkdir(dirname(dest), { recursive: true })
    await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), createWriteStream(dest))
  }
}

/** The root cause of a fetch failure (undici hides it in `cause`). */
function causeOf (err: unknown): string {
  const e = err as { cause?: { code?: string, message?: string }, message?: string }
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err)
}
