/**
 * Job inputs and outputs as the coordinator sees them: it checks sizes
 * against its limits, hands out presigned URLs (never credentials), and
 * checks what nodes say they uploaded before it is recorded.
 */
import type { Artifact, InputSource, JobSpec } from '../protocol/schemas.js'
import { InputMissingError, TooLargeError, ValidationError } from '../common/errors.js'
import { inputKey, outputKey, type ObjectStore } from './objects/types.js'

export interface TransfersOptions {
  objects: ObjectStore
  /** Largest single input or output file, in bytes. @default 268435456 (256 MiB) */
  maxFileBytes?: number
  /** Largest total of a job's inputs, and of one attempt's outputs, in bytes. @default 1073741824 (1 GiB) */
  maxJobBytes?: number
  /** Lifetime of every presigned URL handed out, in ms. @default 900000 (15 min) */
  urlTtlMs?: number
}

export interface UploadGrant {
  /** The id a job input names: `sha256:<hex>`. */
  object: string
  /** Presigned PUT, or null when that content is already stored. */
  url: string | null
  expiresAt: number | null
}

export interface ArtifactLink extends Artifact {
  url: string
}

export class Transfers {
  readonly maxFileBytes: number
  readonly maxJobBytes: number
  readonly urlTtlMs: number
  readonly stats = { uploadsGranted: 0, uploadsDeduplicated: 0, outputUrls: 0, artifactsRefused: 0 }

  constructor (private readonly options: TransfersOptions) {
    this.maxFileBytes = options.maxFileBytes ?? 256 * 1024 * 1024
    this.maxJobBytes = options.maxJobBytes ?? 1024 * 1024 * 1024
    this.urlTtlMs = options.urlTtlMs ?? 15 * 60_000
  }

  get objects (): ObjectStore { return this.options.objects }

  /** For `POST /v1/uploads`: where to PUT content with this hash, unless it is stored already. */
  async grantUpload (sha256: string, size: number, now: number, owner: string | null = null): Promise<UploadGrant> {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new ValidationError('sha256 must be 64 lower-case hex digits', 'sha256')
    if (!Number.isSafeInteger(size) || size < 0) throw new ValidationError('size must be a whole number of bytes', 'size')
    if (size > this.maxFileBytes) throw new TooLargeError('the file', size, this.maxFileBytes)
    const key = inputKey(sha256, owner)
    const object = `sha256:${sha256}`
    const stored = await this.options.objects.stat(key)
    // Content-addressed: the same bytes are stored once, however many jobs use them.
    if (stored != null && stored.size === size) {
      this.stats.uploadsDeduplicated++
      return { object, url: null, expiresAt: null }
    }
    this.stats.uploadsGranted++
    return { object, url: await this.options.objects.presignPut(key, this.urlTtlMs, { size, sha256 }), expiresAt: now + this.urlTtlMs }
  }

  /** At submission: every named object is stored, and together they fit the job limit. */
  async checkInputs (spec: JobSpec, owner: string | null = null): Promise<void> {
    let total = 0
    for (const input of spec.inputs) {
      if (input.object == null) continue
      const stored = await this.options.objects.stat(inputKey(input.object.slice('sha256:'.length), owner))
      if (stored == null) throw new InputMissingError(input.object, input.path)
      total += stored.size
    }
    if (total > this.maxJobBytes) throw new TooLargeError("the job's stored inputs", total, this.maxJobBytes)
  }

  /** At award: where the node fetches each input. */
  async inputSources (spec: JobSpec, owner: string | null = null): Promise<InputSource[]> {
    return await Promise.all(spec.inputs.map(async (input): Promise<InputSource> => {
      if (input.url != null) return { path: input.path, url: input.url, sha256: input.sha256 ?? null, size: null }
      const sha256 = input.object!.slice('sha256:'.length)
      const key = inputKey(sha256, owner)
      const stored = await this.options.objects.stat(key)
      return { path: input.path, url: await this.options.objects.presignGet(key, this.urlTtlMs), sha256, size: stored?.size ?? null }
    }))
  }

  /** For the current attempt's holder (the caller checks the fencing token): where to PUT each output. */
  async outputUrls (jobId: string, attempt: number, files: Artifact[]): Promise<Array<{ path: string, url: string }>> {
    this.checkOutputSizes(files)
    this.stats.outputUrls += files.length
    return await Promise.all(files.map(async f => ({
      path: f.path,
      url: await this.options.objects.presignPut(outputKey(jobId, attempt, f.path), this.urlTtlMs, { size: f.size, sha256: f.sha256 })
    })))
  }

  /**
   * Before a result's artifacts are recorded: each must be stored under its
   * attempt's key with the reported size. Returns the problem, or null.
   */
  async checkArtifacts (jobId: string, attempt: number, artifacts: Artifact[]): Promise<string | null> {
    if (new Set(artifacts.map(a => a.path)).size !== artifacts.length) return 'two artifacts have the same path'
    try {
      this.checkOutputSizes(artifacts)
    } catch (err) {
      return (err as Error).message
    }
    for (const a of artifacts) {
      const stored = await this.options.objects.stat(outputKey(jobId, attempt, a.path))
      if (stored == null) { this.stats.artifactsRefused++; return `output ${a.path} was reported but never uploaded` }
      if (stored.size !== a.size) { this.stats.artifactsRefused++; return `output ${a.path} is stored with ${stored.size} bytes, reported as ${a.size}` }
    }
    return null
  }

  /** For `GET /v1/jobs/:id/artifacts`: each artifact with a presigned GET. */
  async links (jobId: string, attempt: number, artifacts: Artifact[]): Promise<ArtifactLink[]> {
    return await Promise.all(artifacts.map(async a => ({
      ...a, url: await this.options.objects.presignGet(outputKey(jobId, attempt, a.path), this.urlTtlMs, { contentType: a.contentType })
    })))
  }

  private checkOutputSizes (files: Artifact[]): void {
    let total = 0
    for (const f of files) {
      if (f.size > this.maxFileBytes) throw new TooLargeError(`output ${f.path}`, f.size, this.maxFileBytes)
      total += f.size
    }
    if (total > this.maxJobBytes) throw new TooLargeError("the attempt's outputs", total, this.maxJobBytes)
  }
}
