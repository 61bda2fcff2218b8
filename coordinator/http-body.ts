/**
 * Request bodies with a size cap, read without building a web `Request`.
 *
 * Why not hono's `bodyLimit`: it reads `c.req.raw.body`, which makes
 * @hono/node-server turn its lightweight request into a full undici
 * `Request` with a web stream, then wraps that stream in another one to
 * count bytes. Profiled on `POST /v1/jobs`, that was about a quarter of the
 * coordinator's CPU per submission (docs/performance.md, change 12). Under
 * @hono/node-server the body is read straight from Node's IncomingMessage
 * (`c.env.incoming`); anywhere else (tests through `app.request()`, other
 * runtimes) from the web stream, with the same cap and the same errors.
 */
import { IncomingMessage } from 'node:http'
import type { Context } from 'hono'

/** The body was longer than allowed, declared or as sent. */
export class BodyTooLargeError extends Error {
  override readonly name = 'BodyTooLargeError'
  constructor (readonly maxBytes: number) {
    super(`request body exceeds ${maxBytes} bytes`)
  }
}

/** The client went away before the body was complete. */
export class BodyAbortedError extends Error {
  override readonly name = 'BodyAbortedError'
  constructor () {
    super('the client closed the connection before the request body was complete')
  }
}

/** Reads the whole body, at most `maxBytes` of it; throws {@link BodyTooLargeError} beyond. */
export async function readBody (c: Context, maxBytes: number): Promise<Uint8Array> {
  const declared = Number(c.req.header('content-length') ?? Number.NaN)
  if (Number.isFinite(declared) && declared > maxBytes) throw new BodyTooLargeError(maxBytes)
  const incoming = (c.env as { incoming?: unknown } | undefined)?.incoming
  if (incoming instanceof IncomingMessage) return await readIncoming(incoming, maxBytes)
  return await readWebStream(c.req.raw.body, maxBytes)
}

async function readIncoming (incoming: IncomingMessage, maxBytes: number): Promise<Uint8Array> {
  if (incoming.readableEnded) return new Uint8Array(0)
  const chunks: Buffer[] = []
  let size = 0
  /** Adds a chunk; false once the cap is passed. */
  const take = (chunk: Buffer): boolean => {
    size += chunk.byteLength
    if (size > maxBytes) return false
    chunks.push(chunk)
    return true
  }
  const whole = (): Buffer => chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)
  /**
   * The connection is gone. A body that arrived whole before that is the
   * request as sent (a client may close its side right after sending, and
   * authentication may take a while before the body is read), so it is read
   * from the stream's buffer, as @hono/node-server does; anything less was cut short.
   */
  const afterDisconnect = (): Buffer => {
    if (!incoming.complete) throw new BodyAbortedError()
    let chunk: Buffer | null
    while ((chunk = incoming.read() as Buffer | null) !== null) {
      if (!take(chunk)) throw new BodyTooLargeError(maxBytes)
    }
    return whole()
  }
  // Events that already happened do not happen again.
  if (incoming.destroyed) return afterDisconnect()
  return await new Promise<Uint8Array>((resolve, reject) => {
    const done = (): void => {
      incoming.off('data', onData)
      incoming.off('end', onEnd)
      incoming.off('error', onClose)
      incoming.off('close', onClose)
    }
    const onData = (chunk: Buffer): void => {
      if (take(chunk)) return
      // The rest is left to the server, which discards what the client still sends.
      done()
      reject(new BodyTooLargeError(maxBytes))
    }
    const onEnd = (): void => { done(); resolve(whole()) }
    // A reset or a close: either way the connection is gone.
    const onClose = (): void => {
      done()
      try {
        resolve(afterDisconnect())
      } catch (err) {
        reject(err)
      }
    }
    incoming.on('data', onData)
    incoming.once('end', onEnd)
    incoming.once('error', onClose)
    incoming.once('close', onClose)
  })
}

async function readWebStream (body: ReadableStream<Uint8Array> | null, maxBytes: number): Promise<Uint8Array> {
  if (body == null) return new Uint8Array(0)
  const reader = body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  while (true) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > maxBytes) {
      await reader.cancel()
      throw new BodyTooLargeError(maxBytes)
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks, size)
}
