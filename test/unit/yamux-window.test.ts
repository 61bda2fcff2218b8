/**
 * The half-window threshold for yamux window updates (common/yamux-window.ts),
 * on two real libp2p hosts over TCP on 127.0.0.1: small request/reply traffic
 * sends no window updates, and a transfer many windows long still flows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { YamuxStream } from '@chainsafe/libp2p-yamux/stream'
import { lpStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { holdsWindowUpdate, installYamuxWindowThreshold } from '../../common/yamux-window.js'

const ECHO = '/rgrid-test/echo/1.0.0'
const SINK = '/rgrid-test/sink/1.0.0'

/** Window-update frames each stream received, by stream object. */
const updatesReceived = new Map<object, number>()

/** How many stream objects are this stream (at either end: both share its id), and the window updates they heard. */
function updatesOn (stream: Stream): { streams: number, frames: number } {
  const ours = [...updatesReceived].filter(([s]) => s === stream || (s as { id?: string }).id === stream.id)
  return { streams: ours.length, frames: ours.reduce((n, [, c]) => n + c, 0) }
}

async function host (): Promise<Libp2p> {
  return await createLibp2p({ addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] }, transports: [tcp()], connectionEncrypters: [noise()], streamMuxers: [yamux()] })
}

let a: Libp2p
let b: Libp2p
let sinkTotal: Promise<number>
let resolveSink: (n: number) => void

beforeAll(async () => {
  installYamuxWindowThreshold()
  const proto = YamuxStream.prototype as unknown as { handleWindowUpdate: (frame: unknown) => void }
  const handle = proto.handleWindowUpdate
  proto.handleWindowUpdate = function (this: object, frame: unknown) {
    updatesReceived.set(this, (updatesReceived.get(this) ?? 0) + 1)
    handle.call(this, frame)
  }
  a = await host()
  b = await host()
  await b.handle(ECHO, async (stream: Stream) => {
    const lp = lpStream(stream)
    for (;;) {
      const msg = await lp.read().catch(() => null)
      if (msg == null) return
      await lp.write(msg.subarray())
    }
  })
  sinkTotal = new Promise(resolve => { resolveSink = resolve })
  await b.handle(SINK, async (stream: Stream) => {
    let n = 0
    for await (const chunk of stream) {
      n += chunk.byteLength
      // A slow reader: the sender must wait for window updates, several times over.
      if (n % (256 * 1024) < chunk.byteLength) await new Promise(resolve => setImmediate(resolve))
    }
    resolveSink(n)
    await stream.close()
  })
})

afterAll(async () => {
  await a?.stop()
  await b?.stop()
})

describe('yamux window updates', () => {
  it('holds an update while less than half the window is used', () => {
    expect(holdsWindowUpdate({ state: 3, recvWindow: 1000, recvWindowCapacity: 999 })).toBe(true)
    expect(holdsWindowUpdate({ state: 3, recvWindow: 1000, recvWindowCapacity: 501 })).toBe(true)
    expect(holdsWindowUpdate({ state: 3, recvWindow: 1000, recvWindowCapacity: 500 })).toBe(false)
    expect(holdsWindowUpdate({ state: 3, recvWindow: 1000, recvWindowCapacity: 0 })).toBe(false)
    // Opening streams still send their SYN/ACK flags; paused ones keep the library's path.
    expect(holdsWindowUpdate({ state: 1, recvWindow: 1000, recvWindowCapacity: 999 })).toBe(false)
    expect(holdsWindowUpdate({ state: 2, recvWindow: 1000, recvWindowCapacity: 999 })).toBe(false)
    expect(holdsWindowUpdate({ state: 5, recvWindow: 1000, recvWindowCapacity: 999 })).toBe(false)
    // A library that renamed its fields falls back to its own behaviour.
    expect(holdsWindowUpdate({ state: 3, recvWindow: undefined, recvWindowCapacity: 999 })).toBe(false)
  })

  it('sends none for 300 small request/reply exchanges', async () => {
    const stream = await a.dialProtocol(b.getMultiaddrs()[0], ECHO)
    const lp = lpStream(stream)
    const body = new Uint8Array(200).fill(7)
    for (let i = 0; i < 300; i++) {
      await lp.write(body)
      const reply = await lp.read()
      expect(reply.byteLength).toBe(200)
    }
    await stream.close()
    // Both ends' streams share the id. The only window-update frame either hears is the ACK that opens the
    // stream; the library alone sends one per data frame in each direction (603 here).
    const { streams, frames: received } = updatesOn(stream)
    expect(streams).toBeGreaterThan(0)
    expect(received).toBeLessThanOrEqual(2)
  })

  it('still moves 8 MiB, many windows long, intact', async () => {
    const stream = await a.dialProtocol(b.getMultiaddrs()[0], SINK)
    const chunk = new Uint8Array(64 * 1024).fill(1)
    for (let i = 0; i < 128; i++) {
      if (!stream.send(chunk)) await new Promise<void>(resolve => { stream.addEventListener('drain', () => { resolve() }, { once: true }) })
    }
    await stream.close()
    expect(await sinkTotal).toBe(8 * 1024 * 1024)
    // The window was granted again and again: updates still flow when they are due.
    expect(updatesOn(stream).frames).toBeGreaterThan(4)
  }, 60_000)
})
