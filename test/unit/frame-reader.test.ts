/**
 * The session frame reader (common/frame-reader.ts) on real libp2p streams
 * between two hosts over TCP on 127.0.0.1: frames however the bytes are cut,
 * the same wire format as lpStream both ways, its limits, the end of the
 * stream, a reset, an abort signal, and pausing when frames pile up unread.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { lpStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { FramePrefixError, FrameReader, FrameTooLargeError, encodeFrames, varintLength } from '../../common/frame-reader.js'
import { FrameChannel, drained } from '../../common/session.js'
import { YAMUX_STREAM_OPTIONS } from '../../common/p2p.js'

const PROTO = '/rgrid-test/frames/1.0.0'
let a: Libp2p
let b: Libp2p
/** Inbound streams at b, in the order they were opened. */
const inbound: Stream[] = []
let arrived: () => void = () => {}

async function host (): Promise<Libp2p> {
  // RGrid's yamux settings: a paused stream must not overflow its read buffer (common/p2p.ts).
  return await createLibp2p({ addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] }, transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [yamux({ streamOptions: YAMUX_STREAM_OPTIONS })] })
}

beforeAll(async () => {
  a = await host()
  b = await host()
  await b.handle(PROTO, (stream: Stream) => { inbound.push(stream); arrived() })
})

afterAll(async () => {
  await a?.stop()
  await b?.stop()
})

/** A stream from a to b opened by sending `first`: the writing end, and b's end with nothing reading it yet. */
async function connect (first: Uint8Array): Promise<{ out: Stream, into: Stream }> {
  const seen = inbound.length
  const got = new Promise<void>(resolve => { arrived = resolve })
  const out = await a.dialProtocol(b.getMultiaddrs()[0]!, PROTO)
  // The far end exists once the first bytes arrive.
  out.send(first)
  if (inbound.length === seen) await got
  return { out, into: inbound[seen]! }
}

/** As connect, with a FrameReader on b's end. */
async function open (first: Uint8Array, options: { maxFrameBytes: number, maxQueuedBytes?: number } = { maxFrameBytes: 1024 }): Promise<{ out: Stream, into: Stream, reader: FrameReader }> {
  const { out, into } = await connect(first)
  return { out, into, reader: new FrameReader(into, options) }
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s)
const str = (u: Uint8Array | null): string | null => u == null ? null : new TextDecoder().decode(u)

describe('FrameReader', () => {
  it('reads frames however the bytes are cut: many per send, and split at every byte', async () => {
    const frames = ['a', '', 'x'.repeat(200), 'ünïcode', 'y'.repeat(1000)].map(text)
    const wire = encodeFrames(frames)
    // Two-byte prefixes for the 200- and 1000-byte frames: the split falls inside them too.
    expect(varintLength(1000)).toBe(2)
    const { out, reader } = await open(wire.subarray(0, 1))
    for (let i = 1; i < wire.byteLength; i++) { if (!out.send(wire.subarray(i, i + 1))) await drained(out) }
    out.send(wire)
    await out.close()
    const got: Array<string | null> = []
    for (let i = 0; i < frames.length * 2; i++) got.push(str(await reader.next()))
    const want = frames.map(f => str(f))
    expect(got).toEqual([...want, ...want])
    expect(await reader.next()).toBeNull()
  })

  it('speaks the wire format of lpStream both ways', async () => {
    // lpStream writes, FrameReader reads.
    const { out, reader } = await open(encodeFrames([text('first')]))
    const lpOut = lpStream(out)
    await lpOut.write(text('x'.repeat(300)))
    await lpOut.writeV([text('one'), text('two')])
    expect(str(await reader.next())).toBe('first')
    expect(str(await reader.next())).toBe('x'.repeat(300))
    expect(str(await reader.next())).toBe('one')
    expect(str(await reader.next())).toBe('two')
    // encodeFrames writes, lpStream reads.
    const { out: out2, into: into2 } = await connect(encodeFrames([text('z'.repeat(700)), text('end')]))
    const lpIn = lpStream(into2)
    expect(str((await lpIn.read()).subarray())).toBe('z'.repeat(700))
    expect(str((await lpIn.read()).subarray())).toBe('end')
    await out.close()
    await out2.close()
  })

  it('takes a frame at the limit and fails on the prefix of one byte over, before its body arrives', async () => {
    const limit = 300
    const atLimit = new Uint8Array(limit).fill(0x61)
    const { out, reader } = await open(encodeFrames([atLimit]), { maxFrameBytes: limit })
    expect((await reader.next())?.byteLength).toBe(limit)
    // Only the prefix of a 301-byte frame: the reader must not wait for the body.
    const prefix = encodeFrames([new Uint8Array(limit + 1)]).subarray(0, varintLength(limit + 1))
    out.send(prefix)
    const err = await reader.next().then(() => null, (e: unknown) => e)
    expect(err).toBeInstanceOf(FrameTooLargeError)
    expect(err).toMatchObject({ length: limit + 1, limit })
    // Failed for good: later bytes are not read as frames.
    out.send(encodeFrames([text('after')]))
    await expect(reader.next()).rejects.toBeInstanceOf(FrameTooLargeError)
    out.abort(new Error('test done'))
  })

  it('fails on a length prefix longer than any allowed length needs', async () => {
    // 1024 needs 2 prefix bytes; three continuation bytes cannot be an allowed length.
    const { out, reader } = await open(Uint8Array.of(0x80, 0x80, 0x80))
    await expect(reader.next()).rejects.toBeInstanceOf(FramePrefixError)
    out.abort(new Error('test done'))
  })

  it('ends with null when the remote closes, dropping a frame cut short', async () => {
    const wire = encodeFrames([text('whole'), text('cut short by the close')])
    const { out, reader } = await open(wire.subarray(0, wire.byteLength - 3))
    await out.close()
    expect(str(await reader.next())).toBe('whole')
    expect(await reader.next()).toBeNull()
    expect(await reader.next()).toBeNull()
  })

  it('wakes a waiting read when the remote closes or resets', async () => {
    const closed = await open(encodeFrames([text('hi')]))
    expect(str(await closed.reader.next())).toBe('hi')
    const waiting = closed.reader.next()
    await closed.out.close()
    expect(await waiting).toBeNull()

    const reset = await open(encodeFrames([text('hi')]))
    expect(str(await reset.reader.next())).toBe('hi')
    const waiting2 = reset.reader.next()
    reset.out.abort(new Error('gone'))
    const err = await waiting2.then(() => null, (e: unknown) => e)
    expect(err).toBeInstanceOf(Error)
    expect(reset.into.status).not.toBe('open')
  })

  it('an aborted read rejects with the reason; frames that come later are still read', async () => {
    const { out, reader } = await open(encodeFrames([text('one')]))
    expect(str(await reader.next())).toBe('one')
    const controller = new AbortController()
    const waiting = reader.next(controller.signal)
    controller.abort(new Error('no longer wanted'))
    await expect(waiting).rejects.toThrow('no longer wanted')
    await expect(reader.next(controller.signal)).rejects.toThrow('no longer wanted')
    out.send(encodeFrames([text('two')]))
    expect(str(await reader.next())).toBe('two')
    await out.close()
  })

  it('pauses the stream while frames pile up unread, and resumes once they are taken', async () => {
    const frame = new Uint8Array(100).fill(0x62)
    const { out, into, reader } = await open(encodeFrames([frame]), { maxFrameBytes: 1024, maxQueuedBytes: 250 })
    out.send(encodeFrames([frame, frame]))
    await out.close()
    // 300 bytes queued and none taken: over 250, so paused.
    await until(() => into.readStatus === 'paused')
    for (let i = 0; i < 3; i++) expect((await reader.next())?.byteLength).toBe(100)
    expect(into.readStatus).not.toBe('paused')
    expect(await reader.next()).toBeNull()
  })
})

describe('FrameChannel writes', () => {
  it('wait while the peer reads nothing, and all arrive once it reads again, every time', async () => {
    const { out, into } = await connect(encodeFrames([text('hello')]))
    const channel = new FrameChannel<unknown, { n: number, pad: string }>(out, { decode: () => null })
    const reader = new FrameReader(into, { maxFrameBytes: 1024 * 1024 })
    expect(str(await reader.next())).toBe('hello')
    const pad = 'x'.repeat(60_000)
    const frames = 200 // 12 MB a round, far beyond the window and the buffers on the way
    // Twice: a wait must not return at once because an earlier one ended (a stale drain), and
    // the window grown while reading the first round must not let the second overflow the paused reader.
    for (let round = 0; round < 2; round++) {
      // The far end reads nothing: yamux's receive window fills, then a's send buffer.
      into.pause()
      let sent = 0
      // One at a time, so each write is its own flush and the count shows where the sender was held.
      const sends = (async () => { for (let n = 0; n < frames; n++) { await channel.send({ n, pad }); sent++ } })()
      // Progress stops well short of the whole: nothing holds the sender back but the unread peer.
      let last = -1
      let still = Date.now()
      while (Date.now() - still < 500 && sent < frames) {
        if (sent !== last) { last = sent; still = Date.now() }
        await new Promise(resolve => setTimeout(resolve, 20))
      }
      expect(sent, `round ${round}`).toBeLessThan(frames)
      // Reading again lets every write through, in order.
      into.resume()
      for (let n = 0; n < frames; n++) expect(JSON.parse(str(await reader.next()) ?? 'null').n).toBe(n)
      await sends
      expect(sent).toBe(frames)
    }
  })
})

async function until (check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}
