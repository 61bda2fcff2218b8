/**
 * A node's input downloads and output uploads against a real HTTP server on
 * 127.0.0.1, with real work dirs, links and a real input cache.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { InputCache } from '../../node/input-cache.js'
import { NodeTransfers, TransferError, type TransferLimits } from '../../node/transfers.js'
import { silentLogger } from '../../common/log.js'
import type { InputSource } from '../../protocol/schemas.js'

const sha = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex')
const LIMITS: TransferLimits = { maxFileBytes: 1 << 20, maxJobBytes: 4 << 20 }
const never = new AbortController().signal

interface Received { headers: IncomingMessage['headers'], body: Buffer }
/** Per path: what to answer, one handler per request in turn (the last one repeats). */
const routes = new Map<string, Array<(res: ServerResponse) => void>>()
const hits = new Map<string, number>()
const received = new Map<string, Received[]>()
let server: Server
let base: string

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const path = req.url ?? ''
      const n = hits.get(path) ?? 0
      hits.set(path, n + 1)
      received.set(path, [...(received.get(path) ?? []), { headers: req.headers, body: Buffer.concat(chunks) }])
      const handlers = routes.get(path)
      if (handlers == null) { res.writeHead(404).end('no such thing'); return }
      handlers[Math.min(n, handlers.length - 1)]!(res)
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
})
afterAll(async () => {
  server.closeAllConnections()
  await new Promise(resolve => server.close(resolve))
})

let cache: InputCache
let transfers: NodeTransfers
let work: string
beforeEach(async () => {
  routes.clear(); hits.clear(); received.clear()
  base = realpathSync(mkdtempSync(join(tmpdir(), 'rgrid-transfers-test-')))
  work = join(base, 'work')
  mkdirSync(work)
  cache = new InputCache({ dir: join(base, 'cache'), log: silentLogger })
  await cache.start()
  transfers = new NodeTransfers({ cache, log: silentLogger, backoffMs: 10 })
})
afterEach(() => { rmSync(base, { recursive: true, force: true }) })

const urlOf = (path: string): string => `http://127.0.0.1:${(server.address() as AddressInfo).port}${path}`
const ok = (body: Uint8Array | string) => (res: ServerResponse) => { res.writeHead(200, { 'content-length': Buffer.byteLength(body) }).end(body) }
const status = (code: number) => (res: ServerResponse) => { res.writeHead(code).end(`status ${code}`) }

/** Serves `body` at `path` and describes it as an input placed at `at`. */
function serve (path: string, body: Uint8Array | string, at: string, declare: { sha256?: boolean, size?: boolean } = {}): InputSource {
  routes.set(path, [ok(body)])
  return { path: at, url: urlOf(path), sha256: declare.sha256 === false ? null : sha(body), size: declare.size === true ? Buffer.byteLength(body) : null }
}

/** The TransferError a promise must reject with. */
async function failure (promise: Promise<unknown>): Promise<TransferError> {
  const err = await promise.then(() => null, (e: unknown) => e)
  expect(err).toBeInstanceOf(TransferError)
  return err as TransferError
}

describe('NodeTransfers.stageInputs', () => {
  it('places every input, creating nested dirs, and checks its sha256', async () => {
    const script = 'echo hi\n'
    const data = randomBytes(200_000)
    await transfers.stageInputs([
      serve('/script', script, 'run.sh', { size: true }),
      serve('/data', data, 'in/deep/data.bin'),
      serve('/plain', 'no hash', 'plain.txt', { sha256: false })
    ], work, LIMITS, never)

    expect(readFileSync(join(work, 'run.sh'), 'utf8')).toBe(script)
    expect(readFileSync(join(work, 'in/deep/data.bin'))).toEqual(data)
    expect(readFileSync(join(work, 'plain.txt'), 'utf8')).toBe('no hash')
    expect(transfers.stats).toMatchObject({ inputsFetched: 3, inputsFromCache: 0, retries: 0 })
  })

  it('retries a 5xx answer and then succeeds', async () => {
    routes.set('/flaky', [status(500), status(503), ok('third time')])
    await transfers.stageInputs([{ path: 'f.txt', url: urlOf('/flaky'), sha256: sha('third time'), size: null }], work, LIMITS, never)
    expect(readFileSync(join(work, 'f.txt'), 'utf8')).toBe('third time')
    expect(transfers.stats.retries).toBe(2)
    expect(hits.get('/flaky')).toBe(3)
  })

  it('gives up after its tries with a retryable input-fetch-failed', async () => {
    routes.set('/down', [status(502)])
    const err = await failure(transfers.stageInputs([{ path: 'f', url: urlOf('/down'), sha256: null, size: null }], work, LIMITS, never))
    expect(err).toMatchObject({ code: 'input-fetch-failed', retryable: true })
    expect(hits.get('/down')).toBe(4)
  })

  it('fails a 404 at once with input-fetch-failed, not retryable', async () => {
    const err = await failure(transfers.stageInputs([{ path: 'f', url: urlOf('/missing?sig=secret'), sha256: null, size: null }], work, LIMITS, never))
    expect(err).toMatchObject({ code: 'input-fetch-failed', retryable: false })
    expect(err.message).toContain('404')
    expect(err.message).not.toContain('secret')
    expect(hits.get('/missing?sig=secret')).toBe(1)
    expect(existsSync(join(work, 'f'))).toBe(false)
  })

  it('fails content that does not match its sha256 as input-corrupt, retryable, and caches nothing', async () => {
    routes.set('/changed', [ok('not what was promised')])
    const input = { path: 'x.txt', url: urlOf('/changed'), sha256: sha('what was promised'), size: null }
    const err = await failure(transfers.stageInputs([input], work, LIMITS, never))
    expect(err).toMatchObject({ code: 'input-corrupt', retryable: true })
    expect(existsSync(join(work, 'x.txt'))).toBe(false)
    expect(cache.bytes).toBe(0)
    expect(readdirSync(join(base, 'cache', '.tmp'))).toEqual([])
  })

  it('fails a download larger than its declared size or than maxFileBytes as input-too-large, not retryable', async () => {
    const declared = serve('/ten', '0123456789', 'ten.txt')
    let err = await failure(transfers.stageInputs([{ ...declared, size: 5 }], work, LIMITS, never))
    expect(err).toMatchObject({ code: 'input-too-large', retryable: false })
    expect(hits.get('/ten')).toBe(1)

    // No content-length: the stream itself has to be cut off.
    routes.set('/chunked', [(res) => { res.writeHead(200); res.write('01234'); res.end('56789') }])
    err = await failure(transfers.stageInputs([{ path: 'c.txt', url: urlOf('/chunked'), sha256: null, size: 5 }], work, LIMITS, never))
    expect(err).toMatchObject({ code: 'input-too-large', retryable: false })

    const small = { maxFileBytes: 8, maxJobBytes: 100 }
    err = await failure(transfers.stageInputs([{ path: 'u.txt', url: urlOf('/ten'), sha256: null, size: null }], work, small, never))
    expect(err).toMatchObject({ code: 'input-too-large', retryable: false })
    err = await failure(transfers.stageInputs([{ path: 'u.txt', url: urlOf('/ten'), sha256: null, size: 10 }], work, small, never))
    expect(err).toMatchObject({ code: 'input-too-large', retryable: false })
    expect(readdirSync(work)).toEqual([])
  })

  it('refuses an input whose path already exists', async () => {
    writeFileSync(join(work, 'taken.txt'), 'mine')
    const err = await failure(transfers.stageInputs([serve('/t', 'theirs', 'taken.txt')], work, LIMITS, never))
    expect(err).toMatchObject({ code: 'input-conflict', retryable: false })
    expect(readFileSync(join(work, 'taken.txt'), 'utf8')).toBe('mine')
    expect(hits.get('/t')).toBeUndefined()
  })

  it('refuses an input path that goes through a link out of the work dir', async () => {
    const other = join(base, 'other')
    mkdirSync(other)
    symlinkSync(other, join(work, 'link'))
    const err = await failure(transfers.stageInputs([serve('/x', 'escape', 'link/x')], work, LIMITS, never))
    expect(err).toMatchObject({ code: 'path-outside-workdir', retryable: false })
    expect(readdirSync(other)).toEqual([])
    expect(hits.get('/x')).toBeUndefined()
  })

  it('takes the second copy of an input from the cache', async () => {
    const input = serve('/shared', 'shared script', 'a/s.py')
    await transfers.stageInputs([input], work, LIMITS, never)
    const second = join(base, 'work2')
    mkdirSync(second)
    await transfers.stageInputs([{ ...input, path: 's.py' }], second, LIMITS, never)
    expect(readFileSync(join(second, 's.py'), 'utf8')).toBe('shared script')
    expect(transfers.stats).toMatchObject({ inputsFetched: 1, inputsFromCache: 1 })
    expect(hits.get('/shared')).toBe(1)
  })
})

describe('NodeTransfers.collectOutputs', () => {
  function files (tree: Record<string, string>): void {
    for (const [path, content] of Object.entries(tree)) {
      mkdirSync(join(work, path, '..'), { recursive: true })
      writeFileSync(join(work, path), content)
    }
  }

  it('finds the files matching the patterns, sorted, with sizes, hashes and content types', async () => {
    files({ 'out/b.csv': 'b,1\n', 'out/a.csv': 'a\n', 'out/c.txt': 'see', 'out/sub/d.csv': 'no', 'top.txt': 'top', 'notes/n.txt': 'n', 'x.log': 'l' })
    const found = await transfers.collectOutputs(work, ['out/*.csv', '**/*.txt'], LIMITS)
    expect(found.map(f => f.path)).toEqual(['notes/n.txt', 'out/a.csv', 'out/b.csv', 'out/c.txt', 'top.txt'])
    expect(found[2]).toEqual({ path: 'out/b.csv', file: join(work, 'out/b.csv'), size: 4, sha256: sha('b,1\n'), contentType: 'text/csv' })
    expect(found[4]).toMatchObject({ size: 3, sha256: sha('top'), contentType: 'text/plain' })
  })

  it('skips directories and lists a file matched twice once', async () => {
    files({ 'res/sub/inner.txt': 'i', 'res/file.bin': 'f' })
    const found = await transfers.collectOutputs(work, ['res/*', 'res/file.bin'], LIMITS)
    expect(found.map(f => [f.path, f.contentType])).toEqual([['res/file.bin', 'application/octet-stream']])
  })

  it('refuses a link to a file outside the work dir', async () => {
    writeFileSync(join(base, 'secret.txt'), 'do not upload')
    symlinkSync(join(base, 'secret.txt'), join(work, 'leak.txt'))
    const err = await failure(transfers.collectOutputs(work, ['*.txt'], LIMITS))
    expect(err).toMatchObject({ code: 'path-outside-workdir', retryable: false })
  })

  it('refuses a file reached through a linked directory outside the work dir', async () => {
    mkdirSync(join(base, 'outside'))
    writeFileSync(join(base, 'outside', 'secret.txt'), 'do not upload')
    symlinkSync(join(base, 'outside'), join(work, 'd'))
    const err = await failure(transfers.collectOutputs(work, ['d/*.txt'], LIMITS))
    expect(err).toMatchObject({ code: 'path-outside-workdir', retryable: false })
  })

  it('allows a link to a file inside the work dir, read from its target', async () => {
    files({ 'real/r.txt': 'real content' })
    symlinkSync(join(work, 'real/r.txt'), join(work, 'alias.txt'))
    const found = await transfers.collectOutputs(work, ['alias.txt'], LIMITS)
    expect(found).toEqual([{ path: 'alias.txt', file: join(work, 'real/r.txt'), size: 12, sha256: sha('real content'), contentType: 'text/plain' }])
  })

  it('refuses an output over maxFileBytes, or outputs over maxJobBytes, not retryable', async () => {
    files({ 'big.bin': 'x'.repeat(11), 'a.txt': 'x'.repeat(6), 'b.txt': 'x'.repeat(6) })
    let err = await failure(transfers.collectOutputs(work, ['big.bin'], { maxFileBytes: 10, maxJobBytes: 100 }))
    expect(err).toMatchObject({ code: 'output-too-large', retryable: false })
    err = await failure(transfers.collectOutputs(work, ['*.txt'], { maxFileBytes: 10, maxJobBytes: 11 }))
    expect(err).toMatchObject({ code: 'output-too-large', retryable: false })
    expect(await transfers.collectOutputs(work, ['*.txt'], { maxFileBytes: 10, maxJobBytes: 12 })).toHaveLength(2)
  })
})

describe('NodeTransfers.upload', () => {
  /** A file in the work dir, ready to upload to `path` on the test server. */
  function output (name: string, content: Uint8Array | string, path = `/put/${name}`) {
    writeFileSync(join(work, name), content)
    return { file: join(work, name), size: Buffer.byteLength(content), path: name, url: urlOf(path) }
  }

  it('streams each file with its content-length, and the server gets the exact bytes', async () => {
    const data = randomBytes(300_000)
    routes.set('/put/data.bin', [status(200)])
    routes.set('/put/r.csv', [status(200)])
    await transfers.upload([output('data.bin', data), output('r.csv', 'a,b\n')], never)

    const [got] = received.get('/put/data.bin')!
    expect(got!.body.equals(data)).toBe(true)
    expect(got!.headers['content-length']).toBe(String(data.length))
    expect(got!.headers['transfer-encoding']).toBeUndefined()
    expect(received.get('/put/r.csv')![0]).toMatchObject({ body: Buffer.from('a,b\n') })
    expect(received.get('/put/r.csv')![0]!.headers['content-type']).toBe('text/csv')
    expect(transfers.stats.outputsUploaded).toBe(2)
  })

  it('retries a 5xx answer with the whole file again', async () => {
    routes.set('/put/f.txt', [status(500), status(200)])
    await transfers.upload([output('f.txt', 'again')], never)
    expect(transfers.stats.retries).toBe(1)
    expect(received.get('/put/f.txt')!.map(r => r.body.toString())).toEqual(['again', 'again'])
    expect(transfers.stats.outputsUploaded).toBe(1)
  })

  it('fails a 403 as output-upload-failed, retryable (new URLs may help)', async () => {
    routes.set('/put/f.txt', [status(403)])
    const err = await failure(transfers.upload([output('f.txt', 'denied')], never))
    expect(err).toMatchObject({ code: 'output-upload-failed', retryable: true })
    expect(err.message).toContain('403')
    expect(hits.get('/put/f.txt')).toBe(1)
    expect(transfers.stats.outputsUploaded).toBe(0)
  })

  it('fails a 400 as output-upload-failed, not retryable', async () => {
    routes.set('/put/f.txt', [status(400)])
    const err = await failure(transfers.upload([output('f.txt', 'refused')], never))
    expect(err).toMatchObject({ code: 'output-upload-failed', retryable: false })
    expect(hits.get('/put/f.txt')).toBe(1)
  })
})
