/** The node's content-addressed input cache, on real files in a temp dir. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { InputCache } from '../../node/input-cache.js'
import { silentLogger } from '../../common/log.js'

let base: string
let dir: string
beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), 'rgrid-cache-test-'))
  dir = join(base, 'cache')
})
afterEach(() => { rmSync(base, { recursive: true, force: true }) })

const sha = (b: string): string => createHash('sha256').update(b).digest('hex')

async function open (maxBytes?: number): Promise<InputCache> {
  const cache = new InputCache({ dir, log: silentLogger, ...(maxBytes != null ? { maxBytes } : {}) })
  await cache.start()
  return cache
}

/** Downloads `content` into a temp file of the cache and adds it, as NodeTransfers does. */
async function put (cache: InputCache, content: string): Promise<string> {
  const tmp = cache.tempPath()
  writeFileSync(tmp, content)
  await cache.add(sha(content), tmp, Buffer.byteLength(content))
  return sha(content)
}

let copies = 0
/** Copies `hash` out of the cache; the content, or null on a miss. */
async function take (cache: InputCache, hash: string): Promise<string | null> {
  const dest = join(base, `copy-${++copies}`)
  return await cache.copyTo(hash, dest) ? readFileSync(dest, 'utf8') : null
}

const cached = (): string[] => readdirSync(dir).filter(n => n !== '.tmp').sort()
const filler = (c: string): string => c.repeat(100)

describe('InputCache', () => {
  it('copies an added file out, and a change to the copy does not reach the cache', async () => {
    const cache = await open()
    const hash = await put(cache, 'print("hi")\n')
    expect(cached()).toEqual([hash])
    expect(readdirSync(join(dir, '.tmp'))).toEqual([])

    const dest = join(base, 'job-input.py')
    expect(await cache.copyTo(hash, dest)).toBe(true)
    expect(readFileSync(dest, 'utf8')).toBe('print("hi")\n')
    writeFileSync(dest, 'tampered by the job')
    expect(await take(cache, hash)).toBe('print("hi")\n')
    expect(readFileSync(join(dir, hash), 'utf8')).toBe('print("hi")\n')
    expect(cache.stats).toEqual({ hits: 2, misses: 0, evictions: 0 })
    expect(cache.bytes).toBe(Buffer.byteLength('print("hi")\n'))
  })

  it('misses on an unknown sha256', async () => {
    const cache = await open()
    expect(await cache.copyTo(sha('nothing'), join(base, 'nope'))).toBe(false)
    expect(existsSync(join(base, 'nope'))).toBe(false)
    expect(cache.stats).toEqual({ hits: 0, misses: 1, evictions: 0 })
  })

  it('evicts the least recently used entry once over the cap, counting a copy as a use', async () => {
    const cache = await open(250)
    const a = await put(cache, filler('a'))
    const b = await put(cache, filler('b'))
    // Without this use of `a`, `a` would be the oldest and go first.
    expect(await take(cache, a)).toBe(filler('a'))
    const c = await put(cache, filler('c'))

    expect(cache.stats.evictions).toBe(1)
    expect(cache.bytes).toBe(200)
    expect(cached()).toEqual([a, c].sort())
    expect(await take(cache, b)).toBeNull()
    expect(await take(cache, a)).toBe(filler('a'))
    expect(await take(cache, c)).toBe(filler('c'))
  })

  it('counts a file added twice once', async () => {
    const cache = await open(250)
    const a = await put(cache, filler('a'))
    await put(cache, filler('a'))
    expect(cache.bytes).toBe(100)
    await put(cache, filler('b'))
    expect(cache.stats.evictions).toBe(0)
    expect(await take(cache, a)).toBe(filler('a'))
  })

  it('does not keep a file larger than the cap, nor evict others for it', async () => {
    const cache = await open(150)
    const small = await put(cache, filler('s'))
    const tmp = cache.tempPath()
    const big = 'B'.repeat(151)
    writeFileSync(tmp, big)
    await cache.add(sha(big), tmp, 151)

    expect(existsSync(tmp)).toBe(false)
    expect(cached()).toEqual([small])
    expect(await take(cache, sha(big))).toBeNull()
    expect(await take(cache, small)).toBe(filler('s'))
    expect(cache.stats.evictions).toBe(0)
    expect(cache.bytes).toBe(100)
  })

  it('finds earlier entries after a restart, ordered by last use, and evicts down to its new cap', async () => {
    const first = await open()
    const names = [await put(first, filler('x')), await put(first, filler('y')), await put(first, filler('z'))]
    // Last use against the order of adding (and of the names), so only the mtimes can explain what survives.
    const order = [...names].sort().reverse()
    const t = Date.now() / 1000
    order.forEach((name, i) => { utimesSync(join(dir, name), t - 300 + i * 100, t - 300 + i * 100) })
    writeFileSync(join(dir, '.tmp', 'half-downloaded'), 'partial')
    writeFileSync(join(dir, 'not-a-sha'), 'ignored')

    const restarted = await open(150)
    expect(restarted.stats.evictions).toBe(2)
    expect(restarted.bytes).toBe(100)
    expect(readdirSync(dir).filter(n => /^[0-9a-f]{64}$/.test(n))).toEqual([order[2]])
    expect(readdirSync(join(dir, '.tmp'))).toEqual([])
    expect(await take(restarted, order[2]!)).toBe(readFileSync(join(dir, order[2]!), 'utf8'))
    expect(await take(restarted, order[0]!)).toBeNull()
    expect(await take(restarted, order[1]!)).toBeNull()
  })

  it('keeps every earlier entry after a restart under a large enough cap', async () => {
    const first = await open()
    const a = await put(first, filler('a'))
    const b = await put(first, filler('b'))
    const restarted = await open(1000)
    expect(restarted.bytes).toBe(200)
    expect(await take(restarted, a)).toBe(filler('a'))
    expect(await take(restarted, b)).toBe(filler('b'))
    expect(restarted.stats).toEqual({ hits: 2, misses: 0, evictions: 0 })
  })

  it('forgets an entry whose file vanished behind its back', async () => {
    const cache = await open()
    const a = await put(cache, filler('a'))
    rmSync(join(dir, a))
    expect(await take(cache, a)).toBeNull()
    expect(cache.stats.misses).toBe(1)
    expect(cache.bytes).toBe(0)
  })
})
