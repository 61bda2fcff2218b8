/**
 * The relay's bounds (issue 11): a bootstrap peer must not become a free
 * bandwidth pipe. Real libp2p hosts over TCP on 127.0.0.1, the relay built
 * exactly as rgrid-bootstrap builds it (common/p2p.ts with `relay` limits):
 * reservations past the limit are refused, a relayed connection is reset
 * once it carried its byte allowance or outlived its duration, and a peer
 * without the mesh's network key cannot even reach the relay.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection, Stream } from '@libp2p/interface'
import { createHost, fullAddrs, type RGridHost } from '../../dist/common/p2p.js'
import { RelaySlotKeeper, isRelayed, relayOf, reserveRelaySlot, trustListenAddrs } from '../../dist/common/relay.js'
import { createLogger } from '../../dist/common/log.js'
import { newNetworkKey } from '../../dist/common/network-key.js'
import type { RelayLimits } from '../../dist/common/relay.js'
import { until } from '../helpers/rogue.js'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { BINS } from '../../dist/cli/local-mesh.js'

const ECHO = '/rgrid-test/echo/1.0.0'
const hosts: RGridHost[] = []
afterEach(async () => { await Promise.all(hosts.splice(0).map(async h => { await h.stop() })) })

async function host (networkKey: string | undefined, relay?: RelayLimits): Promise<RGridHost> {
  const h = await createHost({
    privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [],
    ...(networkKey != null ? { networkKey } : {}), ...(relay != null ? { relay } : {})
  })
  hosts.push(h)
  await h.start()
  trustListenAddrs(h)
  return h
}

/** A node behind the relay that echoes everything on ECHO, over relayed connections too. */
async function echoingClient (key: string, relayAddr: string): Promise<RGridHost> {
  const h = await host(key)
  await h.handle(ECHO, async (stream: Stream) => {
    for await (const chunk of stream) {
      if (!stream.send(chunk.subarray())) await stream.onDrain()
    }
    await stream.close()
  }, { runOnLimitedConnection: true })
  await reserveRelaySlot(h, relayAddr)
  return h
}

/** Sends `bytes` in 1 KiB chunks over a fresh ECHO stream and counts what comes back, until the stream ends or fails. */
async function echoThrough (conn: Connection, bytes: number): Promise<{ echoed: number, error: string | null }> {
  const stream = await conn.newStream(ECHO, { runOnLimitedConnection: true, signal: AbortSignal.timeout(10_000) })
  let echoed = 0
  let error: string | null = null
  const reading = (async () => {
    try {
      for await (const chunk of stream) echoed += chunk.byteLength
    } catch (err) { error = (err as Error).message }
  })()
  try {
    for (let sent = 0; sent < bytes; sent += 1024) {
      if (!stream.send(new Uint8Array(1024))) await stream.onDrain({ signal: AbortSignal.timeout(10_000) })
    }
    await stream.close()
  } catch (err) { error ??= (err as Error).message }
  await reading
  return { echoed, error }
}

describe('relay bounds', () => {
  it('refuses reservations past maxReservations', async () => {
    const key = newNetworkKey()
    const relay = await host(key, { maxReservations: 1 })
    const relayAddr = fullAddrs(relay)[0]!
    const first = await echoingClient(key, relayAddr)
    expect(first.getMultiaddrs().some(a => isRelayed(a.toString()))).toBe(true)
    expect(relayOf(relay)!.reservations.size).toBe(1)
    const second = await host(key)
    const listeners = (h: RGridHost): number => (h as unknown as { components: { transportManager: { getListeners: () => unknown[] } } }).components.transportManager.getListeners().length
    const before = listeners(second)
    for (let i = 0; i < 3; i++) await expect(reserveRelaySlot(second, relayAddr)).rejects.toThrow()
    // A refused slot leaves no listener behind (libp2p keeps the listener of a failed listen otherwise).
    expect(listeners(second)).toBe(before)
    expect(second.getMultiaddrs().some(a => isRelayed(a.toString()))).toBe(false)
    expect(relayOf(relay)!.reservations.size).toBe(1)
  })

  it('resets a relayed connection once it carried its byte allowance', async () => {
    const key = newNetworkKey()
    const relay = await host(key, { connectionBytes: 16_384 })
    const target = await echoingClient(key, fullAddrs(relay)[0]!)
    const via = target.getMultiaddrs().find(a => isRelayed(a.toString()))!
    const dialer = await host(key)
    const conn = await dialer.dial(via, { signal: AbortSignal.timeout(10_000) })
    expect(isRelayed(conn.remoteAddr.toString())).toBe(true)
    // Well within the allowance: all of it comes back.
    expect(await echoThrough(conn, 4_096)).toEqual({ echoed: 4_096, error: null })
    // Far past it: the relay cuts the connection before 64 KiB make the round trip.
    const big = await echoThrough(await dialer.dial(via, { signal: AbortSignal.timeout(10_000) }), 65_536).catch((err: Error) => ({ echoed: 0, error: err.message }))
    expect(big.echoed).toBeLessThan(65_536)
    await until('the relayed connection to be gone', () => dialer.getConnections(target.peerId).every(c => c.status !== 'open' || !isRelayed(c.remoteAddr.toString())) ? true : undefined, 10_000, 50)
  })

  it('closes a relayed connection that outlives its duration', async () => {
    const key = newNetworkKey()
    const relay = await host(key, { connectionDurationMs: 1_500 })
    const target = await echoingClient(key, fullAddrs(relay)[0]!)
    const dialer = await host(key)
    const conn = await dialer.dial(target.getMultiaddrs().find(a => isRelayed(a.toString()))!, { signal: AbortSignal.timeout(10_000) })
    const openedAt = Date.now()
    expect(conn.status).toBe('open')
    await until('the relay to close the connection', () => conn.status !== 'open' ? true : undefined, 15_000, 50)
    expect(Date.now() - openedAt).toBeGreaterThanOrEqual(1_000)
  })

  it('a peer without the network key cannot reserve a slot or reach a node through the relay', async () => {
    const key = newNetworkKey()
    const relay = await host(key, {})
    const relayAddr = fullAddrs(relay)[0]!
    const target = await echoingClient(key, relayAddr)
    const outsider = await host(newNetworkKey())
    await expect(reserveRelaySlot(outsider, relayAddr)).rejects.toThrow()
    await expect(outsider.dial(target.getMultiaddrs().find(a => isRelayed(a.toString()))!, { signal: AbortSignal.timeout(5_000) })).rejects.toThrow()
    expect(relayOf(relay)!.reservations.size).toBe(1)
  })

  it('rgrid-coordinator serves relay slots only with --relay, within the bounds its flags set', async () => {
    const started: ChildProcess[] = []
    const dirs: string[] = []
    const coordinator = async (args: string[]): Promise<string> => {
      const dir = mkdtempSync(join(tmpdir(), 'rgrid-relay-co-'))
      dirs.push(dir)
      const child = spawn(process.execPath, [BINS.coordinator, '--open', '--no-api-keys', '--db', `sqlite:${join(dir, 'c.db')}`, '--data-dir', dir, '--http', '127.0.0.1:0', '--listen', '/ip4/127.0.0.1/tcp/0', '--log-level', 'warn', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
      started.push(child)
      return await new Promise<string>((resolve, reject) => {
        child.once('exit', code => { reject(new Error(`coordinator exited with ${code}`)) })
        createInterface({ input: child.stdout! }).once('line', resolve)
      })
    }
    try {
      const withRelay = await coordinator(['--relay', '--relay-max-reservations', '1'])
      const first = await host(undefined)
      await reserveRelaySlot(first, withRelay)
      expect(first.getMultiaddrs().some(a => a.toString().startsWith(`${withRelay}/p2p-circuit`))).toBe(true)
      await expect(reserveRelaySlot(await host(undefined), withRelay)).rejects.toThrow()
      const without = await coordinator([])
      await expect(reserveRelaySlot(await host(undefined), without)).rejects.toThrow(/hop/)
    } finally {
      for (const c of started) c.kill('SIGKILL')
      for (const d of dirs) rmSync(d, { recursive: true, force: true })
    }
  }, 60_000)

  it('a RelaySlotKeeper takes a slot again after the relay restarts, and tries the next relay when one refuses', async () => {
    const key = newNetworkKey()
    const relayKey = await generateKeyPair('Ed25519')
    const first = await createHost({ privateKey: relayKey, listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [], networkKey: key, relay: {} })
    await first.start()
    trustListenAddrs(first)
    const relayAddr = fullAddrs(first)[0]!
    const notARelay = await host(key)
    const client = await host(key)
    const keeper = new RelaySlotKeeper({ host: client, relays: () => [fullAddrs(notARelay)[0]!, relayAddr], log: createLogger('test', { level: 'error' }), retryMs: 200, maxRetryMs: 400 })
    keeper.start()
    try {
      await until('a slot on the second relay', () => keeper.holds() ? true : undefined, 10_000, 50)
      expect(keeper.stats.refused).toBeGreaterThanOrEqual(1)
      expect(client.getMultiaddrs().some(a => a.toString().startsWith(`${relayAddr}/p2p-circuit`))).toBe(true)
      await first.stop()
      await until('the slot to be gone with the relay', () => keeper.holds() ? undefined : true, 10_000, 50)
      // The same relay comes back on the same address and identity.
      const again = await createHost({ privateKey: relayKey, listen: [relayAddr.split('/p2p/')[0]!], bootstrap: [], networkKey: key, relay: {} })
      hosts.push(again)
      await again.start()
      await until('a slot on the restarted relay', () => keeper.holds() ? true : undefined, 15_000, 50)
      expect(relayOf(again)!.reservations.has(client.peerId)).toBe(true)
      // One relayed address per relay address: the lost slot's listener is gone, not re-announcing.
      const relayed = client.getMultiaddrs().map(String).filter(isRelayed)
      expect(relayed).toHaveLength(new Set(relayed).size)
      expect(relayed).toHaveLength(1)
    } finally {
      keeper.stop()
      await first.stop()
    }
  }, 40_000)
})
