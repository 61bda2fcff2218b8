/**
 * The embedded object store and its URL signing, driven through handle()
 * with real files under a temp dir and a clock the tests move by hand.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { EmbeddedObjectStore, attachmentDisposition, safeContentType } from '../../coordinator/objects/embedded.js'
import { sign, verify, type SignedFields } from '../../coordinator/objects/signing.js'
import { inputKey, outputKey } from '../../coordinator/objects/types.js'
import type { Clock } from '../../common/clock.js'

const T0 = 1_700_000_000_000
const SECRET = new Uint8Array(32).fill(7)
const JOB = '0190a0b0-1234-7abc-8def-0123456789ab'
const sha = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex')

let root: string
let now: number
let store: EmbeddedObjectStore
const clock: Clock = { now: () => now }

beforeEach(async () => {
  root = mkdtempSync(join(tmpdir(), 'rgrid-objects-test-'))
  now = T0
  store = new EmbeddedObjectStore({ root, secret: SECRET, clock, publicUrl: () => 'http://objects.test/' })
  await store.start()
})
afterEach(() => { rmSync(root, { recursive: true, force: true }) })

/** A streamed body, so the store cannot learn the size from a content-length. */
const streamed = (bytes: Uint8Array): RequestInit =>
  ({ body: Readable.toWeb(Readable.from([Buffer.from(bytes)])) as ReadableStream, duplex: 'half' } as RequestInit)

async function put (url: string, body: Uint8Array | null, init: RequestInit = {}): Promise<Response> {
  return await store.handle(new Request(url, { method: 'PUT', ...(body != null ? streamed(body) : {}), ...init }))
}

async function errorCode (res: Response): Promise<string> {
  expect(res.headers.get('content-type')).toMatch(/^application\/json/)
  const body = await res.json() as { error: { code: string, message: string } }
  expect(body.error.message.length).toBeGreaterThan(0)
  return body.error.code
}

/** Stores `bytes` under its input key and returns the key. */
async function stored (bytes: Uint8Array): Promise<string> {
  const key = inputKey(sha(bytes))
  const res = await put(await store.presignPut(key, 60_000, { size: bytes.length, sha256: sha(bytes) }), bytes)
  expect(res.status).toBe(200)
  return key
}

/** Whatever is left in the temp upload dir: a refused upload must not leave a partial file behind. */
const leftovers = (): string[] => readdirSync(join(root, '.tmp'))

describe('EmbeddedObjectStore uploads and downloads', () => {
  it('stores a PUT with the signed size and sha256, and serves it with the signed content type', async () => {
    const bytes = Buffer.from('a,b\n1,2\n')
    const key = await stored(bytes)
    expect(await store.stat(key)).toEqual({ size: bytes.length })

    const url = await store.presignGet(key, 60_000, { contentType: 'text/csv' })
    const res = await store.handle(new Request(url))
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe('text/csv')
    expect(res.headers.get('content-length')).toBe(String(bytes.length))
    expect(Buffer.from(await res.arrayBuffer())).toEqual(bytes)
    expect(store.stats).toMatchObject({ puts: 1, gets: 1, refused: 0 })
  })

  it('serves octet-stream when no content type was signed', async () => {
    const key = await stored(Buffer.from('x'))
    const res = await store.handle(new Request(await store.presignGet(key, 60_000)))
    expect(res.headers.get('content-type')).toBe('application/octet-stream')
    expect(await res.text()).toBe('x')
  })

  it('answers HEAD with the headers and no body', async () => {
    const bytes = Buffer.from('hello head')
    const key = await stored(bytes)
    const url = await store.presignGet(key, 60_000, { contentType: 'text/plain' })
    const res = await store.handle(new Request(url, { method: 'HEAD' }))
    expect(res.status).toBe(200)
    expect(res.headers.get('content-length')).toBe(String(bytes.length))
    expect(res.headers.get('content-type')).toBe('text/plain')
    expect(res.body).toBeNull()
  })

  it('accepts a 0-byte upload, streamed or with no body at all', async () => {
    const empty = new Uint8Array(0)
    const key = await stored(empty)
    expect(await store.stat(key)).toEqual({ size: 0 })

    const other = outputKey(JOB, 1, 'empty.txt')
    const res = await put(await store.presignPut(other, 60_000, { size: 0, sha256: sha(empty) }), null)
    expect(res.status).toBe(200)
    expect(await store.stat(other)).toEqual({ size: 0 })
    const got = await store.handle(new Request(await store.presignGet(other, 60_000)))
    expect(got.headers.get('content-length')).toBe('0')
    expect((await got.arrayBuffer()).byteLength).toBe(0)
  })

  it('answers 404 for a validly signed URL to a missing object', async () => {
    const key = inputKey(sha('never stored'))
    const res = await store.handle(new Request(await store.presignGet(key, 60_000)))
    expect(res.status).toBe(404)
    expect(await errorCode(res)).toBe('not-found')
    expect(await store.stat(key)).toBeNull()
  })

  it('stores output keys with nested paths and reports stat() for files only', async () => {
    const bytes = Buffer.from('nested')
    const key = outputKey(JOB, 2, 'out/deep/r.txt')
    expect((await put(await store.presignPut(key, 60_000, { size: bytes.length, sha256: sha(bytes) }), bytes)).status).toBe(200)
    expect(await store.stat(key)).toEqual({ size: bytes.length })
    // A directory that happens to sit at a key is not an object.
    expect(await store.stat(outputKey(JOB, 2, 'out/deep'))).toBeNull()
  })
})

describe('EmbeddedObjectStore downloads of untrusted outputs', () => {
  /** Stores `bytes` as output `path` of attempt 1 and returns a GET URL signed with `contentType`. */
  async function output (path: string, bytes: Buffer, contentType?: string): Promise<string> {
    const key = outputKey(JOB, 1, path)
    expect((await put(await store.presignPut(key, 60_000, { size: bytes.length, sha256: sha(bytes) }), bytes)).status).toBe(200)
    return await store.presignGet(key, 60_000, contentType != null ? { contentType } : {})
  }

  const expectDownloadHeaders = (res: Response, ascii: string, encoded: string): void => {
    expect(res.headers.get('content-disposition')).toBe(`attachment; filename="${ascii}"; filename*=UTF-8''${encoded}`)
    expect(res.headers.get('x-content-type-options')).toBe('nosniff')
    expect(res.headers.get('content-security-policy')).toBe("sandbox; default-src 'none'")
    expect(res.headers.get('cache-control')).toBe('private')
  }

  it('serves an HTML artifact as an octet-stream attachment with nosniff and a sandbox CSP, on GET and HEAD', async () => {
    const html = Buffer.from('<script>alert(document.cookie)</script>')
    const url = await output('out/report.html', html, 'text/html')
    const res = await store.handle(new Request(url))
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe('application/octet-stream')
    expectDownloadHeaders(res, 'report.html', 'report.html')
    expect(Buffer.from(await res.arrayBuffer())).toEqual(html)

    const head = await store.handle(new Request(url, { method: 'HEAD' }))
    expect(head.status).toBe(200)
    expect(head.body).toBeNull()
    expect(head.headers.get('content-type')).toBe('application/octet-stream')
    expect(head.headers.get('content-length')).toBe(String(html.length))
    expectDownloadHeaders(head, 'report.html', 'report.html')
  })

  it('gives a name with quotes, spaces and non-ASCII a safe ASCII fallback and an exact filename*', async () => {
    const url = await output('résumé "v2".txt', Buffer.from('cv'), 'text/plain; charset=utf-8')
    for (const method of ['GET', 'HEAD']) {
      const res = await store.handle(new Request(url, { method }))
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8')
      expectDownloadHeaders(res, 'resume v2.txt', 'r%C3%A9sum%C3%A9%20%22v2%22.txt')
    }
    // filename* decodes back to the exact name (the last path segment).
    const cd = attachmentDisposition(outputKey(JOB, 1, 'dir/résumé "v2".txt'))
    expect(decodeURIComponent(/filename\*=UTF-8''(.*)$/.exec(cd)![1]!)).toBe('résumé "v2".txt')
  })

  it('keeps the ASCII fallback free of quotes, backslashes and control characters', () => {
    const cd = attachmentDisposition(outputKey(JOB, 1, 'a\\b"c\x01\x7fd\t日本.txt'))
    expect(/filename="([^"]*)"/.exec(cd)![1]).toBe('abcd__.txt')
    expect(cd).toMatch(/^[\x20-\x7e]+$/)
    expect(cd).toContain("filename*=UTF-8''a%5Cb%22c%01%7Fd%09%E6%97%A5%E6%9C%AC.txt")
    expect(attachmentDisposition(outputKey(JOB, 1, "it's (1)*.txt"))).toContain("filename*=UTF-8''it%27s%20%281%29%2A.txt")
    expect(attachmentDisposition(outputKey(JOB, 1, '"""'))).toContain('filename="download"')
  })

  it('downgrades every type a browser would run or render as active content', async () => {
    for (const t of ['text/html', 'TEXT/HTML; charset=utf-8', 'application/xhtml+xml', 'image/svg+xml', 'text/xml', 'application/xml',
      'text/javascript', 'application/javascript', 'application/x-javascript', 'application/rss+xml', 'text/x-html-ish', 'application/ecmascript',
      'text/html\r\nx-evil: 1', 'not a type', '']) {
      expect(safeContentType(t), JSON.stringify(t)).toBe('application/octet-stream')
    }
    for (const t of ['text/plain', 'text/csv', 'application/json', 'image/png', 'application/pdf', 'text/plain; charset=utf-8']) expect(safeContentType(t)).toBe(t)
    const res = await store.handle(new Request(await output('pic.svg', Buffer.from('<svg onload="alert(1)"/>'), 'image/svg+xml')))
    expect(res.headers.get('content-type')).toBe('application/octet-stream')
    expectDownloadHeaders(res, 'pic.svg', 'pic.svg')
  })
})

describe('EmbeddedObjectStore refusals', () => {
  const bytes = Buffer.from('the right content')
  const key = inputKey(sha(bytes))
  const putUrl = async (): Promise<string> => await store.presignPut(key, 60_000, { size: bytes.length, sha256: sha(bytes) })

  it('refuses an expired URL with url-expired', async () => {
    const stored1 = await stored(bytes)
    const url = await store.presignGet(stored1, 60_000)
    now = T0 + 60_000
    expect((await store.handle(new Request(url))).status).toBe(200)
    now = T0 + 60_001
    const res = await store.handle(new Request(url))
    expect(res.status).toBe(403)
    expect(await errorCode(res)).toBe('url-expired')
    expect(store.stats.refused).toBe(1)
  })

  it('refuses a tampered signature, a changed expiry, a re-targeted key and a PUT URL used for GET', async () => {
    await stored(bytes)
    const other = await stored(Buffer.from('another object'))
    const good = new URL(await store.presignGet(key, 60_000))

    const tampered = new URL(good)
    const sig = tampered.searchParams.get('sig') ?? ''
    tampered.searchParams.set('sig', (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1))
    const later = new URL(good)
    later.searchParams.set('expires', String(T0 + 3_600_000))
    const retargeted = new URL(good)
    retargeted.pathname = `/objects/${other}`
    const unsigned = new URL(good)
    unsigned.searchParams.delete('sig')
    const putAsGet = await putUrl()

    for (const url of [tampered, later, retargeted, unsigned, putAsGet]) {
      const res = await store.handle(new Request(url))
      expect(res.status, String(url)).toBe(403)
      expect(await errorCode(res)).toBe('bad-signature')
    }
    expect((await store.handle(new Request(good))).status).toBe(200)
  })

  it('refuses a GET URL used for PUT, and a PUT whose size was changed in the URL', async () => {
    const getUrl = await store.presignGet(key, 60_000)
    const res = await put(getUrl, bytes)
    expect(res.status).toBe(403)
    expect(await errorCode(res)).toBe('bad-signature')

    const resized = new URL(await putUrl())
    resized.searchParams.set('size', String(bytes.length + 1))
    expect(await errorCode(await put(String(resized), Buffer.concat([bytes, Buffer.from('!')])))).toBe('bad-signature')
    expect(await store.stat(key)).toBeNull()
  })

  it('refuses a body longer than signed with 413 and stores nothing, declared or not', async () => {
    const longer = Buffer.concat([bytes, Buffer.from('+extra')])
    const res = await put(await putUrl(), longer)
    expect(res.status).toBe(413)
    expect(await errorCode(res)).toBe('too-large')

    const declared = await put(await putUrl(), longer, { headers: { 'content-length': String(longer.length) } })
    expect(declared.status).toBe(413)
    expect(await errorCode(declared)).toBe('too-large')

    expect(await store.stat(key)).toBeNull()
    expect(leftovers()).toEqual([])
    expect(store.stats.puts).toBe(0)
  })

  it('refuses a shorter body with size-mismatch', async () => {
    const res = await put(await putUrl(), bytes.subarray(0, 5))
    expect(res.status).toBe(400)
    expect(await errorCode(res)).toBe('size-mismatch')
    expect(await store.stat(key)).toBeNull()
    expect(leftovers()).toEqual([])
  })

  it('refuses content of the right size with the wrong sha256', async () => {
    const wrong = Buffer.from(bytes)
    wrong[0] = wrong[0]! ^ 1
    const res = await put(await putUrl(), wrong)
    expect(res.status).toBe(400)
    expect(await errorCode(res)).toBe('sha256-mismatch')
    expect(await store.stat(key)).toBeNull()
    expect(leftovers()).toEqual([])
  })

  it('refuses methods other than GET, HEAD and PUT', async () => {
    const res = await store.handle(new Request(await putUrl(), { method: 'DELETE' }))
    expect(res.status).toBe(405)
    expect(await errorCode(res)).toBe('method-not-allowed')
  })

  it('never turns a key with ".." into a usable URL', async () => {
    const outside = Buffer.from('escape')
    const evil = 'inputs/../x'
    // The URL is signed for the literal key, but the path collapses to /objects/x on the way in.
    const url = await store.presignPut(evil, 60_000, { size: outside.length, sha256: sha(outside) })
    const res = await put(url, outside)
    expect(res.status).toBe(403)
    expect(await errorCode(res)).toBe('bad-signature')
    expect(existsSync(join(root, 'x'))).toBe(false)
    await expect(store.stat(evil)).rejects.toThrow(/not an object key/)
    await expect(store.stat('../etc/passwd')).rejects.toThrow(/not an object key/)
  })

  it('refuses a validly signed URL for a key outside the key space', async () => {
    const outside = Buffer.from('stray')
    const url = await store.presignPut('stray/file', 60_000, { size: outside.length, sha256: sha(outside) })
    const res = await put(url, outside)
    expect(res.status).toBe(403)
    expect(await errorCode(res)).toBe('bad-signature')
    expect(existsSync(join(root, 'stray'))).toBe(false)
  })

  it('needs a secret of at least 32 bytes', () => {
    expect(() => new EmbeddedObjectStore({ root, secret: new Uint8Array(31), publicUrl: () => 'http://objects.test' })).toThrow(RangeError)
    expect(() => new EmbeddedObjectStore({ root, secret: new Uint8Array(32), publicUrl: () => 'http://objects.test' })).not.toThrow()
  })
})

describe('signing', () => {
  const fields: SignedFields = { method: 'GET', key: inputKey(sha('s')), expiresAt: T0 }

  it('accepts its own signature until the expiry and calls it expired after', () => {
    const sig = sign(SECRET, fields)
    expect(verify(SECRET, fields, sig, T0)).toBeNull()
    expect(verify(SECRET, fields, sig, T0 + 1)).toBe('expired')
  })

  it('calls a forged expired URL a bad signature, not expired', () => {
    const forged = sign(new Uint8Array(32).fill(9), fields)
    expect(verify(SECRET, fields, forged, T0 + 1)).toBe('bad-signature')
    expect(verify(SECRET, fields, '', T0 + 1)).toBe('bad-signature')
    expect(verify(SECRET, { ...fields, contentType: 'text/plain' }, sign(SECRET, fields), T0 + 1)).toBe('bad-signature')
  })
})
