/**
 * S3 and S3-compatible stores (MinIO, Hetzner Object Storage, AWS) through
 * the `minio` client. The coordinator holds the credentials; nodes and
 * submitters only ever see presigned URLs.
 */
import { Client } from 'minio'
import { errorMessage } from '../../common/errors.js'
import { attachmentDisposition, safeContentType } from './embedded.js'
import { ObjectStoreUnavailableError, type GetOptions, type ObjectStore, type PutConstraints } from './types.js'

export interface S3ObjectStoreOptions {
  endPoint: string
  port?: number
  /** @default true */
  useSSL?: boolean
  accessKey: string
  secretKey: string
  bucket: string
  /** Signing region; MinIO accepts any. @default 'us-east-1' */
  region?: string
  /** Create the bucket at start if it does not exist. @default false */
  createBucket?: boolean
  /** Path-style URLs (`host/bucket/key`), needed by MinIO and most self-hosted servers. @default true */
  pathStyle?: boolean
}

export class S3ObjectStore implements ObjectStore {
  readonly kind = 's3' as const
  private readonly client: Client

  constructor (private readonly options: S3ObjectStoreOptions) {
    this.client = new Client({
      endPoint: options.endPoint,
      ...(options.port != null ? { port: options.port } : {}),
      useSSL: options.useSSL ?? true,
      accessKey: options.accessKey,
      secretKey: options.secretKey,
      region: options.region ?? 'us-east-1',
      pathStyle: options.pathStyle ?? true
    })
  }

  /** Checks the bucket is reachable (creating it when asked). @throws ObjectStoreUnavailableError */
  async start (): Promise<void> {
    const { bucket } = this.options
    try {
      if (await this.client.bucketExists(bucket)) return
      if (this.options.createBucket !== true) throw new ObjectStoreUnavailableError(`bucket ${bucket} does not exist at ${this.where()}; create it or pass create=true`)
      await this.client.makeBucket(bucket, this.options.region ?? 'us-east-1')
    } catch (err) {
      if (err instanceof ObjectStoreUnavailableError) throw err
      throw new ObjectStoreUnavailableError(`object store ${this.where()} bucket ${bucket}: ${errorMessage(err)}`, { cause: err })
    }
  }

  async stop (): Promise<void> {}

  /**
   * S3 presigned PUTs cannot pin the size or the hash here: the node checks
   * sha256 on every download, and the coordinator compares the stored size
   * with the reported one before it records an artifact.
   */
  async presignPut (key: string, expiresMs: number, _c: PutConstraints): Promise<string> {
    return await this.client.presignedPutObject(this.options.bucket, key, seconds(expiresMs))
  }

  /**
   * The URL pins the response headers, as the embedded store sets them (see
   * downloadHeaders there): a download, never a page, and never a type a
   * browser would run. The type is always set, since S3 would otherwise serve
   * whatever Content-Type the uploader's PUT carried.
   */
  async presignGet (key: string, expiresMs: number, options: GetOptions = {}): Promise<string> {
    return await this.client.presignedGetObject(this.options.bucket, key, seconds(expiresMs), {
      'response-content-type': safeContentType(options.contentType),
      'response-content-disposition': attachmentDisposition(key),
      'response-cache-control': 'private'
    })
  }

  async stat (key: string): Promise<{ size: number } | null> {
    try {
      const s = await this.client.statObject(this.options.bucket, key)
      return { size: s.size }
    } catch (err) {
      const code = (err as { code?: string }).code
      if (code === 'NotFound' || code === 'NoSuchKey') return null
      throw new ObjectStoreUnavailableError(`object store ${this.where()}: ${errorMessage(err)}`, { cause: err })
    }
  }

  private where (): string {
    return `${this.options.useSSL === false ? 'http' : 'https'}://${this.options.endPoint}${this.options.port != null ? `:${this.options.port}` : ''}`
  }
}

/** S3 counts presigned lifetimes in whole seconds, between 1 s and 7 days. */
function seconds (ms: number): number {
  return Math.min(7 * 24 * 3600, Math.max(1, Math.ceil(ms / 1000)))
}

/**
 * Parses `s3://ACCESS:SECRET@host[:port]/bucket?region=…&ssl=false&create=true`.
 * @throws Error naming what is wrong.
 */
export function parseS3Url (text: string): S3ObjectStoreOptions {
  let url: URL
  try { url = new URL(text) } catch { throw new Error('not a URL; expected s3://ACCESS:SECRET@host:port/bucket') }
  if (url.protocol !== 's3:') throw new Error(`expected an s3:// URL, got ${url.protocol}`)
  const bucket = url.pathname.replace(/^\/+|\/+$/g, '')
  if (bucket === '' || bucket.includes('/')) throw new Error('the URL path must be the bucket name, e.g. s3://KEY:SECRET@host:9000/rgrid')
  if (url.username === '' || url.password === '') throw new Error('the URL needs credentials: s3://ACCESS:SECRET@host/bucket')
  const flag = (name: string, fallback: boolean): boolean => {
    const v = url.searchParams.get(name)
    if (v == null) return fallback
    if (v === 'true' || v === '1') return true
    if (v === 'false' || v === '0') return false
    throw new Error(`${name} must be true or false, got ${JSON.stringify(v)}`)
  }
  return {
    endPoint: url.hostname.replace(/^\[|\]$/g, ''),
    ...(url.port !== '' ? { port: Number(url.port) } : {}),
    useSSL: flag('ssl', true),
    accessKey: decodeURIComponent(url.username),
    secretKey: decodeURIComponent(url.password),
    bucket,
    region: url.searchParams.get('region') ?? 'us-east-1',
    createBucket: flag('create', false),
    pathStyle: flag('pathStyle', true)
  }
}
