/**
 * The embedded object store: files under the coordinator's data dir, served
 * by the coordinator's own HTTP server at `/objects/<key>` with its own
 * signed, expiring URLs (see signing.ts). Uploads stream to a temporary file
 * while their size and sha256 are checked, and are renamed into place only
 * when both match what the URL was signed for.
 */
import { createHash, randomUUID } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, rename, rm, stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { Clock } from '../../common/clock.js'
import { systemClock } from '../../common/clock.js'
import { errorMessage } from '../../common/errors.js'
import { OBJECT_KEY, type GetOptions, type ObjectStore, type PutConstraints } from './types.js'
import { sign, verify, type SignedFields } from './signing.js'

export interface EmbeddedObjectStoreOptions {
  /** Directory holding the objects (created at start). */
  root: string
  /** HMAC key for URLs; at least 32 bytes, kept secret and stable across restarts. */
  secret: Uint8Array
  /** Base URL nodes and submitters reach the coordinator's HTTP server at, e.g. `http://10.0.0.1:8080`. */
  publicUrl: () => string
  /** @default systemClock */
  clock?: Clock
}

/** Path prefix of the object routes on the coordinator's HTTP server. */
export const OBJECTS_PATH = '/objects/'

export class EmbeddedObjectStore implements ObjectStore {
  readonly kind = 'embedded' as const
  private readonly clock: Clock
  readonly stats = { puts: 0, gets: 0, refused: 0 }

  constructor (private readonly options: EmbeddedObjectStoreOptions) {
    if (options.secret.length < 32) throw new RangeError('the object store secret needs at least 32 bytes')
    this.clock = options.clock ?? systemClock
  }

  async start (): Promise<void> {
    await mkdir(join(this.options.root, '.tmp'), { recursive: true })
  }

  async stop (): Promise<void> {}

  async presignPut (key: string, expiresMs: number, c: PutConstraints): Promise<string> {
    return this.url({ method: 'PUT', key, expiresAt: this.clock.now() + expiresMs, size: c.size, sha256: c.sha256 })
  }

  async presignGet (key: string, expiresMs: number, options: GetOptions = {}): Promise<string> {
    return this.url({ method: 'GET', key, expiresAt: this.clock.now() + expiresMs, ...(options.contentType != null ? { contentType: options.contentType } : {}) })
  }

  async stat (key: string): Promise<{ size: number } | null> {
    try {
      const s = await stat(this.pathOf(key))
      return s.isFile() ? { size: s.size } : null
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw err
    }
  }

  private url (f: SignedFields): string {
    const q = new URLSearchParams({ expires: String(f.expiresAt) })
    if (f.size != null) q.set('size', String(f.size))
    if (f.sha256 != null) q.set('sha256', f.sha256)
    if (f.contentType != null) q.set('type', f.contentType)
    q.set('sig', sign(this.options.secret, f))
    const path = f.key.split('/').map(encodeURIComponent).join('/')
    return `${this.options.publicUrl().replace(/\/$/, '')}${OBJECTS_PATH}${path}?${q.toString()}`
  }

  private pathOf (key: string): string {
    if (!OBJECT_KEY.test(key) || key.split('/').some(s => s === '..' || s === '.' || s === '')) throw new Error(`not an object key: ${key}`)
    return join(this.options.root, key)
  }

  /**
   * Serves `GET` and `PUT` on `/objects/<key>`. Every refusal is a clear
   * status with a JSON error: 403 for a bad or expired signature, 413 for an
   * upload larger than signed, 400 for a size or sha256 mismatch.
   */
  async handle (request: Request): Promise<Response> {
    const url = new URL(request.url)
    const method = request.method === 'HEAD' ? 'GET' : request.method
    if (method !== 'GET' && method !== 'PUT') return problem(405, 'method-not-allowed', 'objects take GET and PUT')
    let key: string
    try {
      key = url.pathname.slice(OBJECTS_PATH.length).split('/').map(decodeURIComponent).join('/')
    } catch {
      return problem(400, 'invalid-request', 'malformed object path')
    }
    const q = url.searchParams
    const expiresAt = Number(q.get('expires'))
    const size = q.get('size')
    const fields: SignedFields = {
      method, key, expiresAt,
      ...(size != null ? { size: Number(size) } : {}),
      ...(q.get('sha256') != null ? { sha256: q.get('sha256')! } : {}),
      ...(q.get('type') != null ? { contentType: q.get('type')! } : {})
    }
    const why = Number.isFinite(expiresAt) ? verify(this.options.secret, fields, q.get('sig') ?? '', this.clock.now()) : 'bad-signature'
    if (why !== null || !OBJECT_KEY.test(key)) {
      this.stats.refused++
      return why === 'expired'
        ? problem(403, 'url-expired', 'this URL has expired; ask the coordinator for a new one')
        : problem(403, 'bad-signature', 'this URL is not valid for this object and method')
    }
    return method === 'GET' ? await this.serve(key, fields.contentType, request.method === 'HEAD') : await this.receive(key, fields, request)
  }

  private async serve (key: string, contentType: string | undefined, headOnly: boolean): Promise<Response> {
    const path = this.pathOf(key)
    let size: number
    try {
      size = (await stat(path)).size
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return problem(404, 'not-found', 'no such object')
      throw err
    }
    this.stats.gets++
    const headers = { ...downloadHeaders(key, contentType), 'content-length': String(size) }
    if (headOnly) return new Response(null, { status: 200, headers })
    return new Response(Readable.toWeb(createReadStream(path)) as ReadableStream, { status: 200, headers })
  }

  private async receive (key: string, f: SignedFields, request: Request): Promise<Response> {
    if (f.size == null || f.sha256 == null) return problem(403, 'bad-signature', 'upload URLs carry a size and a sha256')
    const declared = request.headers.get('content-length')
    // Refuse before reading a byte when the client says it is sending more than was signed.
    if (declared != null && Number(declared) > f.size) return problem(413, 'too-large', `this URL takes exactly ${f.size} bytes; the request has ${declared}`)
    if (request.body == null) return f.size === 0 ? await this.commitEmpty(key, f) : problem(400, 'size-mismatch', `expected ${f.size} bytes, got none`)
    const tmp = join(this.options.root, '.tmp', randomUUID())
    const hash = createHash('sha256')
    let received = 0
    const limit = f.size
    const meter = new Transform({
      transform (chunk: Buffer, _enc, done) {
        received += chunk.length
        if (received > limit) { done(new TooLargeUpload()); return }
        hash.update(chunk)
        done(null, chunk)
      }
    })
    try {
      await pipeline(Readable.fromWeb(request.body as import('node:stream/web').ReadableStream), meter, createWriteStream(tmp))
    } catch (err) {
      await rm(tmp, { force: true })
      if (err instanceof TooLargeUpload) return problem(413, 'too-large', `this URL takes exactly ${f.size} bytes; more arrived`)
      return problem(400, 'upload-failed', `the upload did not complete: ${errorMessage(err)}`)
    }
    if (received !== f.size) {
      await rm(tmp, { force: true })
      return problem(400, 'size-mismatch', `expected ${f.size} bytes, got ${received}`)
    }
    const digest = hash.digest('hex')
    if (digest !== f.sha256) {
      await rm(tmp, { force: true })
      return problem(400, 'sha256-mismatch', `the content's sha256 is ${digest}, not ${f.sha256}`)
    }
    const dest = this.pathOf(key)
    await mkdir(dirname(dest), { recursive: true })
    // Atomic: a reader sees the old object or the whole new one, never a partial file.
    await rename(tmp, dest)
    this.stats.puts++
    return new Response(null, { status: 200 })
  }

  private async commitEmpty (key: string, f: SignedFields): Promise<Response> {
    if (f.sha256 !== createHash('sha256').digest('hex')) return problem(400, 'sha256-mismatch', 'an empty body does not have the signed sha256')
    const dest = this.pathOf(key)
    await mkdir(dirname(dest), { recursive: true })
    const tmp = join(this.options.root, '.tmp', randomUUID())
    await pipeline(Readable.from([]), createWriteStream(tmp))
    await rename(tmp, dest)
    this.stats.puts++
    return new Response(null, { status: 200 })
  }
}

/**
 * Media types a browser executes or renders as active content (scripts,
 * markup that can carry scripts, stylesheets that pull in XSL). Objects are
 * written by strangers' jobs and served from the coordinator's own origin,
 * where the dashboard runs with the user's API key in localStorage: a
 * `report.html` that the browser rendered there could read that key and act
 * with it. So whatever type was signed into the URL, these are served as
 * opaque bytes. (Attachment disposition, nosniff and a sandbox CSP below are
 * further layers; this one also holds for clients that ignore them.)
 */
const ACTIVE_TYPES = new Set([
  'text/html', 'application/xhtml+xml', 'image/svg+xml', 'text/xml', 'application/xml', 'text/xsl',
  'text/javascript', 'application/javascript', 'application/ecmascript', 'text/ecmascript'
])
/** `type/subtype` with optional parameters, in header-safe characters only. */
const MEDIA_TYPE = /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+(\s*;\s*[a-z0-9!#$&^_.+-]+=("[^"\\\x00-\x1f\x7f]*"|[a-z0-9!#$&^_.+-]+))*$/i

/**
 * The Content-Type an object is served with: the signed one, unless it is
 * missing, malformed, or a type browsers treat as active content (see
 * ACTIVE_TYPES), which all become `application/octet-stream`.
 */
export function safeContentType (contentType: string | undefined): string {
  const fallback = 'application/octet-stream'
  if (contentType == null) return fallback
  const type = contentType.trim()
  if (!MEDIA_TYPE.test(type)) return fallback
  const essence = type.split(';')[0]!.trim().toLowerCase()
  if (ACTIVE_TYPES.has(essence) || /html|xml|script/.test(essence)) return fallback
  return type
}

/**
 * `attachment; filename="…"; filename*=UTF-8''…` for the last segment of
 * `key`: the quoted fallback is plain printable ASCII without quotes or
 * backslashes (accents dropped, other non-ASCII as `_`), and filename*
 * carries the exact name percent-encoded per RFC 5987.
 */
export function attachmentDisposition (key: string): string {
  const name = (key.split('/').at(-1) ?? '').toWellFormed()
  let ascii = name.normalize('NFKD').replace(/[\u0300-\u036f]/g, '')
    .replace(/[\x00-\x1f\x7f"\\]/g, '')
    .replace(/[^\x20-\x7e]/g, '_')
    .trim()
  if (ascii === '') ascii = 'download'
  // encodeURIComponent leaves ' ( ) * alone, which RFC 5987's attr-char does not allow.
  const encoded = encodeURIComponent(name === '' ? 'download' : name).replace(/['()*]/g, c => '%' + c.charCodeAt(0).toString(16).toUpperCase())
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encoded}`
}

/**
 * Headers of every object download: job outputs are untrusted, and they are
 * served from the coordinator's origin, so they are never rendered there:
 * a download (attachment), no type sniffing, a sandbox with nothing allowed
 * should a browser render it anyway, and no shared caches.
 */
export function downloadHeaders (key: string, contentType: string | undefined): Record<string, string> {
  return {
    'content-type': safeContentType(contentType),
    'content-disposition': attachmentDisposition(key),
    'x-content-type-options': 'nosniff',
    'content-security-policy': "sandbox; default-src 'none'",
    'cache-control': 'private'
  }
}

class TooLargeUpload extends Error {
  override readonly name = 'TooLargeUpload'
}

function problem (status: number, code: string, message: string): Response {
  return new Response(JSON.stringify({ error: { code, message } }), { status, headers: { 'content-type': 'application/json' } })
}
