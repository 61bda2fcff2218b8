/**
 * Request bodies read straight from Node's IncomingMessage (coordinator/http-body.ts),
 * through the real HTTP server on 127.0.0.1: size caps declared and as sent,
 * keep-alive after a refusal, clients that vanish mid-body, and bodies in many pieces.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createServer, request, Agent, type IncomingMessage, type Server } from 'node:http'
import { connect } from 'node:net'
import type { AddressInfo } from 'node:net'
import type { Context } from 'hono'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createHttpApp } from '../../coordinator/http.js'
import { HttpServer } from '../../coordinator/http-server.js'
import { Coordinator } from '../../coordinator/coordinator.js'
import { SqliteStore } from '../../coordinator/store/sqlite.js'
import { BodyAbortedError, BodyTooLargeError, readBody } from '../../coordinator/http-body.js'
import { silentLogger } from '../../common/log.js'
import { LIMITS } from '../../protocol/limits.js'

const LIMIT = 2 * LIMITS.jobSpecBytes

let store: SqliteStore
let coordinator: Coordinator
let server: HttpServer
let port: number

beforeAll(async () => {
  store = SqliteStore.open({ path: ':memory:' })
  await store.migrate()
  coordinator = new Coordinator({ privateKey: await generateKeyPair('Ed25519'), store, log: silentLogger })
  coordinator.announcer.stop()
  server = new HttpServer({ app: createHttpApp({ api: coordinator, log: silentLogger }), host: '127.0.0.1', port: 0 })
  await server.start()
  port = Number(new URL(server.url).port)
})

afterAll(async () => {
  await server.stop()
  coordinator.auction.stop()
  await store.close()
})

/** A spec of exactly `size` bytes. */
function padded (size: number): string {
  const base = JSON.stringify({ command: ['x'] })
  return base.slice(0, -1) + ' '.repeat(size - base.length) + '}'
}

interface Reply { status: number, body: any, socketReused: boolean }

/** POSTs `pieces` one write at a time; chunked unless `contentLength` is given. */
async function post (path: string, pieces: Array<string | Buffer>, o: { agent?: Agent, contentLength?: number, type?: string } = {}): Promise<Reply> {
  return await new Promise<Reply>((resolve, reject) => {
    const headers: Record<string, string> = { 'content-type': o.type ?? 'application/json' }
    if (o.contentLength != null) headers['content-length'] = String(o.contentLength)
    const req = request({ host: '127.0.0.1', port, path, method: 'POST', headers, agent: o.agent ?? false }, res => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { text += d })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body: JSON.parse(text), socketReused: req.reusedSocket }) })
    })
    // A refusal may close the request side before every piece is written.
    req.on('error', err => { if ((err as NodeJS.ErrnoException).code !== 'EPIPE' && (err as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(err) })
    for (const p of pieces) req.write(p)
    req.end()
  })
}

const jobCount = async (): Promise<number> => (await store.listJobs({ limit: 1000 })).length

describe('request bodies through the Node server', () => {
  it('takes a body at the limit and refuses one byte more, declared or chunked, storing nothing', async () => {
    const before = await jobCount()
    expect((await post('/v1/jobs', [padded(LIMIT)], { contentLength: LIMIT })).status).toBe(201)
    const declared = await post('/v1/jobs', [padded(LIMIT + 1)], { contentLength: LIMIT + 1 })
    expect(declared.status).toBe(413)
    expect(declared.body.error.code).toBe('too-large')
    // No length given: the cap is counted as the pieces arrive.
    const text = padded(LIMIT + 1)
    const chunked = await post('/v1/jobs', [text.slice(0, 1000), text.slice(1000, LIMIT - 10), text.slice(LIMIT - 10)])
    expect(chunked.status).toBe(413)
    expect(chunked.body.error.message).toContain(String(LIMIT))
    expect(await jobCount()).toBe(before + 1)
  })

  it('the batch route has its own, larger cap', async () => {
    // 100 specs of about 2 KB: over the single-job cap, well under the batch's.
    const spec = JSON.stringify({ command: ['echo', 'y'.repeat(2000)] })
    const batch = `{"jobs":[${Array.from({ length: 100 }, () => spec).join(',')}]}`
    expect(batch.length).toBeGreaterThan(LIMIT)
    const res = await post('/v1/jobs/batch', [batch.slice(0, 100), batch.slice(100)])
    expect(res.status).toBe(201)
    expect(res.body.jobs).toHaveLength(100)
  })

  it('a keep-alive connection serves the next request after a refusal', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    try {
      const text = padded(LIMIT + 5000)
      expect((await post('/v1/jobs', [text.slice(0, 10), text.slice(10)], { agent })).status).toBe(413)
      const next = await post('/v1/jobs', [JSON.stringify({ command: ['after'] })], { agent })
      expect(next.socketReused).toBe(true)
      expect(next.status).toBe(201)
      expect(next.body.spec.command).toEqual(['after'])
    } finally {
      agent.destroy()
    }
  })

  it('a client that closes mid-body creates no job, and the server goes on', async () => {
    const before = await jobCount()
    await new Promise<void>((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => {
        // Half a body, then gone: whether the server has begun reading it or not, nothing may be created.
        s.write('POST /v1/jobs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{"command":["ha', () => {
          s.destroy()
          resolve()
        })
      })
      s.on('error', reject)
    })
    const next = await post('/v1/jobs', [JSON.stringify({ command: ['still', 'here'] })])
    expect(next.status).toBe(201)
    expect(await jobCount()).toBe(before + 1)
  })

  it('decodes as Request.text() does: BOM dropped, bodies in many pieces, bad JSON is 400, wrong type 415', async () => {
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify({ command: ['bom'] }))])
    expect((await post('/v1/jobs', [bom])).status).toBe(201)
    // A multi-byte character split across two writes.
    const utf = Buffer.from(JSON.stringify({ command: ['échelle'] }))
    const split = utf.indexOf(0xc3) + 1
    const res = await post('/v1/jobs', [utf.subarray(0, split), utf.subarray(split)])
    expect(res.status).toBe(201)
    expect(res.body.spec.command).toEqual(['échelle'])
    const bad = await post('/v1/jobs', ['{"command": ['])
    expect(bad.status).toBe(400)
    expect(bad.body.error.code).toBe('invalid-json')
    const empty = await post('/v1/jobs', [], { contentLength: 0 })
    expect(empty.body.error.code).toBe('invalid-json')
    expect((await post('/v1/jobs', ['{"command":["x"]}'], { type: 'text/plain' })).body.error.code).toBe('unsupported-media-type')
  })
})

describe('readBody', () => {
  /** A real IncomingMessage, handed to `handle` by a plain Node server. */
  async function withIncoming (send: (port: number) => void, handle: (incoming: IncomingMessage) => Promise<void>): Promise<void> {
    let failure: unknown = null
    let served!: () => void
    const done = new Promise<void>(resolve => { served = resolve })
    const srv: Server = createServer((incoming, res) => {
      handle(incoming).catch((err: unknown) => { failure = err }).finally(() => { res.end(); served() })
    })
    await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve))
    try {
      send((srv.address() as AddressInfo).port)
      await done
    } finally {
      srv.closeAllConnections()
      await new Promise(resolve => srv.close(resolve))
    }
    if (failure != null) throw failure
  }

  /** A context as @hono/node-server builds it, whose web request must not be touched. */
  const nodeContext = (incoming: IncomingMessage): Context => ({
    env: { incoming },
    req: {
      header: (name: string) => incoming.headers[name.toLowerCase()] as string | undefined,
      get raw (): never { throw new Error('the web Request was built') }
    }
  }) as unknown as Context

  const send = (body: string, headers: Record<string, string>) => (p: number): void => {
    const req = request({ host: '127.0.0.1', port: p, method: 'POST', headers, agent: false }, res => { res.resume() })
    req.on('error', () => {})
    req.end(body)
  }

  it('reads from the IncomingMessage without building the web Request', async () => {
    await withIncoming(send('{"a":1}', { 'content-type': 'application/json' }), async incoming => {
      const bytes = await readBody(nodeContext(incoming), 100)
      expect(Buffer.from(bytes).toString()).toBe('{"a":1}')
    })
  })

  it('refuses a declared length over the cap before reading, and a longer body as it arrives', async () => {
    await withIncoming(send('x'.repeat(200), { 'content-length': '200' }), async incoming => {
      await expect(readBody(nodeContext(incoming), 100)).rejects.toBeInstanceOf(BodyTooLargeError)
      expect(incoming.readableDidRead).toBe(false)
    })
    await withIncoming(send('x'.repeat(200), { 'transfer-encoding': 'chunked' }), async incoming => {
      const err = await readBody(nodeContext(incoming), 100).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(BodyTooLargeError)
      expect((err as BodyTooLargeError).maxBytes).toBe(100)
    })
  })

  /** Resolves once the request's connection is gone (its `close`, or already destroyed). */
  const gone = async (incoming: IncomingMessage): Promise<void> => {
    if (!incoming.destroyed) await new Promise(resolve => incoming.once('close', resolve))
  }

  /** Sends raw request bytes and closes the connection at once. */
  const sendAndClose = (raw: string) => (port: number): void => {
    const s = connect(port, '127.0.0.1', () => { s.end(raw) })
    s.on('error', () => {})
  }

  it('takes a whole body sent before the client went away, even if it is read afterwards', async () => {
    await withIncoming(sendAndClose('POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 7\r\n\r\n{"a":1}'), async incoming => {
      await gone(incoming)
      expect(incoming.destroyed).toBe(true)
      expect(Buffer.from(await readBody(nodeContext(incoming), 100)).toString()).toBe('{"a":1}')
    })
  })

  it('says at once that a body cut short before it was read is incomplete', async () => {
    await withIncoming(sendAndClose('POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc'), async incoming => {
      await gone(incoming)
      await expect(readBody(nodeContext(incoming), 1000)).rejects.toBeInstanceOf(BodyAbortedError)
    })
  })

  it('says the body was cut short when the client goes away', async () => {
    let reading!: () => void
    const isReading = new Promise<void>(resolve => { reading = resolve })
    await withIncoming(port => {
      const s = connect(port, '127.0.0.1', () => {
        s.write('POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc')
        // Gone only once the server is reading the body, so the test is about a body cut short.
        void isReading.then(() => s.destroy())
      })
      s.on('error', () => {})
    }, async incoming => {
      const read = readBody(nodeContext(incoming), 1000)
      reading()
      await expect(read).rejects.toBeInstanceOf(BodyAbortedError)
    })
  })
})
