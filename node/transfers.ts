/**
 * A node's side of job inputs and outputs. Inputs are fetched from the URLs
 * in the award (presigned by the coordinator, or the submitter's own),
 * checked against their sha256 and placed under the work dir; outputs are
 * found by their patterns after the command exits, hashed, and PUT to the
 * URLs the coordinator grants the current attempt. Everything streams; no
 * file is held in memory. Nothing may escape the work dir.
 */
import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { glob, lstat, mkdir, realpath, rename, rm, stat } from 'node:fs/promises'
import { dirname, extname, join, sep } from 'node:path'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { Artifact, InputSource } from '../protocol/schemas.js'
import { LIMITS } from '../protocol/limits.js'
import type { Logger } from '../common/log.js'
import { errorMessage } from '../common/errors.js'
import { putFile } from '../common/put-file.js'
import type { InputCache } from './input-cache.js'

/** Why a transfer failed, as a job outcome: the code, and whether another attempt could do better. */
export class TransferError extends Error {
  override readonly name = 'TransferError'
  constructor (readonly code: string, message: string, readonly retryable: boolean) { super(message.slice(0, 4000)) }
}

export interface TransferLimits {
  /** Largest single file, in bytes. */
  maxFileBytes: number
  /** Largest total of one attempt's inputs, or of its outputs, in bytes. */
  maxJobBytes: number
}

export interface NodeTransfersOptions {
  cache: InputCache
  log: Logger
  /** Tries per file on 5xx answers and broken connections. @default 4 */
  tries?: number
  /** First retry delay, doubled each time, in ms. @default 250 */
  backoffMs?: number
}

/** An output found after the command exited, ready to upload. */
export interface FoundOutput extends Artifact {
  /** Where it is on this machine. */
  file: string
}

const CONTENT_TYPES: Record<string, string> = {
  '.txt': 'text/plain', '.log': 'text/plain', '.md': 'text/markdown', '.csv': 'text/csv', '.tsv': 'text/tab-separated-values',
  '.json': 'application/json', '.html': 'text/html', '.xml': 'application/xml', '.png': 'image/png', '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg', '.svg': 'image/svg+xml', '.pdf': 'application/pdf', '.gz': 'application/gzip', '.tar': 'application/x-tar',
  '.zip': 'application/zip', '.parquet': 'application/vnd.apache.parquet'
}

export function contentTypeOf (path: string): string {
  return CONTENT_TYPES[extname(path).toLowerCase()] ?? 'application/octet-stream'
}

class TooBig extends Error { override readonly name = 'TooBig' }
class HttpStatusError extends Error {
  override readonly name = 'HttpStatusError'
  constructor (readonly status: number, message: string) { super(message) }
}

export class NodeTransfers {
  readonly stats = { inputsFetched: 0, inputsFromCache: 0, outputsUploaded: 0, retries: 0 }

  constructor (private readonly options: NodeTransfersOptions) {}

  /** Places every input under `workDir`. @throws TransferError */
  async stageInputs (inputs: InputSource[], workDir: string, limits: TransferLimits, signal: AbortSignal): Promise<void> {
    let total = 0
    for (const input of inputs) {
      const dest = await this.target(workDir, input.path)
      if (input.sha256 != null && await this.options.cache.copyTo(input.sha256, dest)) {
        this.stats.inputsFromCache++
        total += (await stat(dest)).size
      } else {
        total += await this.download(input, dest, Math.min(limits.maxFileBytes, limits.maxJobBytes - total), signal)
      }
      if (total > limits.maxJobBytes) throw new TransferError('input-too-large', `the job's inputs exceed ${limits.maxJobBytes} bytes`, false)
    }
  }

  /**
   * The work-dir path for `rel`, with its parent directories created. Refuses
   * anything that would land outside the work dir, symlinked parents included.
   */
  private async target (workDir: string, rel: string): Promise<string> {
    const root = await realpath(workDir)
    const dest = join(root, rel)
    if (!dest.startsWith(root + sep)) throw new TransferError('path-outside-workdir', `input path ${JSON.stringify(rel)} leaves the work dir`, false)
    await mkdir(dirname(dest), { recursive: true })
    const parent = await realpath(dirname(dest))
    if (parent !== root && !parent.startsWith(root + sep)) throw new TransferError('path-outside-workdir', `input path ${JSON.stringify(rel)} goes through a link out of the work dir`, false)
    const existing = await lstat(dest).catch((err: NodeJS.ErrnoException) => { if (err.code === 'ENOENT') return null; throw err })
    if (existing != null) throw new TransferError('input-conflict', `input path ${JSON.stringify(rel)} already exists in the work dir`, false)
    return dest
  }

  /** Streams one input to `dest` through the cache; returns its size. */
  private async download (input: InputSource, dest: string, maxBytes: number, signal: AbortSignal): Promise<number> {
    const limit = input.size ?? maxBytes
    if (input.size != null && input.size > maxBytes) throw new TransferError('input-too-large', `input ${input.path} has ${input.size} bytes; the limit is ${maxBytes}`, false)
    const tmp = this.options.cache.tempPath()
    let got: { size: number, sha256: string }
    try {
      got = await this.withRetries(`download of ${input.path}`, signal, async () => {
        const res = await fetch(input.url, { signal })
        if (!res.ok || res.body == null) throw new HttpStatusError(res.status, `GET ${redact(input.url)} answered ${res.status}`)
        const declared = Number(res.headers.get('content-length'))
        if (Number.isFinite(declared) && declared > limit) throw new TooBig(`input ${input.path} has ${declared} bytes; the limit is ${limit}`)
        return await this.streamTo(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), tmp, limit, input.path)
      })
    } catch (err) {
      await rm(tmp, { force: true })
      throw this.asTransferError(err, 'input-fetch-failed', `input ${input.path}`)
    }
    if (input.sha256 != null && got.sha256 !== input.sha256) {
      await rm(tmp, { force: true })
      // A corrupted transfer or a changed source: another attempt may well fetch it right.
      throw new TransferError('input-corrupt', `input ${input.path}: expected sha256 ${input.sha256}, downloaded ${got.sha256} (${got.size} bytes)`, true)
    }
    if (input.size != null && got.size !== input.size) {
      await rm(tmp, { force: true })
      throw new TransferError('input-corrupt', `input ${input.path}: expected ${input.size} bytes, downloaded ${got.size}`, true)
    }
    this.stats.inputsFetched++
    if (input.sha256 != null) {
      await this.options.cache.add(input.sha256, tmp, got.size)
      if (!await this.options.cache.copyTo(input.sha256, dest)) {
        throw new TransferError('input-fetch-failed', `input ${input.path} vanished from the cache`, true)
      }
    } else {
      await rename(tmp, dest)
    }
    return got.size
  }

  private async streamTo (body: Readable, file: string, limit: number, what: string): Promise<{ size: number, sha256: string }> {
    const hash = createHash('sha256')
    let size = 0
    const meter = new Transform({
      transform (chunk: Buffer, _enc, done) {
        size += chunk.length
        if (size > limit) { done(new TooBig(`${what} exceeds ${limit} bytes`)); return }
        hash.update(chunk)
        done(null, chunk)
      }
    })
    await pipeline(body, meter, createWriteStream(file))
    return { size, sha256: hash.digest('hex') }
  }

  /**
   * Finds the files matching the output patterns, inside the work dir only.
   * @throws TransferError for a file linked from outside, or too much output.
   */
  async collectOutputs (workDir: string, patterns: string[], limits: TransferLimits): Promise<FoundOutput[]> {
    const root = await realpath(workDir)
    const found = new Map<string, FoundOutput>()
    let total = 0
    for (const pattern of patterns) {
      for await (const rel of glob(pattern, { cwd: root })) {
        const relPath = rel.split(sep).join('/')
        if (found.has(relPath)) continue
        const file = join(root, rel)
        // The file itself or any directory on its way may be a link: resolve the whole path, not just the last name.
        const real = await realpath(file).catch(() => '')
        if (real === '' || !real.startsWith(root + sep)) {
          throw new TransferError('path-outside-workdir', `output ${relPath} is a link to a file outside the work dir`, false)
        }
        const s = await stat(real)
        if (!s.isFile()) continue
        if (s.size > limits.maxFileBytes) throw new TransferError('output-too-large', `output ${relPath} has ${s.size} bytes; the limit is ${limits.maxFileBytes}`, false)
        total += s.size
        if (total > limits.maxJobBytes) throw new TransferError('output-too-large', `the outputs exceed ${limits.maxJobBytes} bytes`, false)
        if (found.size >= LIMITS.outputFiles) throw new TransferError('output-too-large', `more than ${LIMITS.outputFiles} output files`, false)
        found.set(relPath, { path: relPath, file: real, size: s.size, sha256: await hashFile(real), contentType: contentTypeOf(relPath) })
      }
    }
    return [...found.values()].sort((a, b) => a.path.localeCompare(b.path))
  }

  /** PUTs each file to its URL. @throws TransferError */
  async upload (files: Array<{ file: string, size: number, path: string, url: string }>, signal: AbortSignal): Promise<void> {
    for (const f of files) {
      try {
        await this.withRetries(`upload of ${f.path}`, signal, async () => {
          const res = await putFile(f.url, f.file, f.size, { contentType: contentTypeOf(f.path), signal })
          if (res.status < 200 || res.status >= 300) throw new HttpStatusError(res.status, `PUT answered ${res.status}: ${res.text.slice(0, 300)}`)
        })
      } catch (err) {
        throw this.asTransferError(err, 'output-upload-failed', `output ${f.path}`)
      }
      this.stats.outputsUploaded++
    }
  }

  /** Retries on 5xx, 408, 429 and broken connections, with doubling backoff. */
  private async withRetries<T>(what: string, signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
    const tries = this.options.tries ?? 4
    let delay = this.options.backoffMs ?? 250
    for (let i = 1; ; i++) {
      try {
        return await fn()
      } catch (err) {
        const transient = err instanceof HttpStatusError ? (err.status >= 500 || err.status === 408 || err.status === 429) : !(err instanceof TooBig) && !signal.aborted
        if (!transient || i >= tries) throw err
        this.stats.retries++
        this.options.log.warn('transfer failed; retrying', { what, attempt: i, error: errorMessage(err) })
        await new Promise(resolve => setTimeout(resolve, delay))
        delay *= 2
      }
    }
  }

  private asTransferError (err: unknown, code: string, what: string): TransferError {
    if (err instanceof TransferError) return err
    if (err instanceof TooBig) return new TransferError(code === 'input-fetch-failed' ? 'input-too-large' : 'output-too-large', err.message, false)
    // 403 is usually an expired URL, which a new attempt (with new URLs) fixes; other 4xx will not change.
    const retryable = !(err instanceof HttpStatusError) || err.status >= 500 || err.status === 403 || err.status === 408 || err.status === 429
    return new TransferError(code, `${what}: ${errorMessage(err)}`, retryable)
  }
}

async function hashFile (file: string): Promise<string> {
  const hash = createHash('sha256')
  await pipeline(createReadStream(file), hash)
  return hash.digest('hex')
}

/** A URL for logs and messages, without its query (which may carry a signature). */
function redact (url: string): string {
  try { const u = new URL(url); return `${u.origin}${u.pathname}` } catch { return '<url>' }
}
