import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { mkdtemp, mkdir, rm, writeFile, symlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DiskWatch, dirUsage } from '../../node/runtime/disk-watch.js'

let root: string
let dir: string

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'rgrid-disk-watch-'))
  dir = join(root, 'work')
  await mkdir(dir)
})
afterEach(async () => { await rm(root, { recursive: true, force: true }) })

describe('dirUsage', () => {
  it('sums the sizes of regular files in nested directories', async () => {
    await mkdir(join(dir, 'a', 'b'), { recursive: true })
    await writeFile(join(dir, 'one'), Buffer.alloc(1000))
    await writeFile(join(dir, 'a', 'two'), Buffer.alloc(2000))
    await writeFile(join(dir, 'a', 'b', 'three'), Buffer.alloc(3000))
    expect(await dirUsage(dir)).toEqual({ bytes: 6000, entries: 5, complete: true, unreadable: 0 })
  })

  it('does not follow links, to files or to directories', async () => {
    await mkdir(join(root, 'outside'))
    await writeFile(join(root, 'outside', 'big'), Buffer.alloc(50_000))
    await symlink(join(root, 'outside', 'big'), join(dir, 'file-link'))
    await symlink(join(root, 'outside'), join(dir, 'dir-link'))
    // A loop would never end if links were followed.
    await symlink(dir, join(dir, 'loop'))
    await writeFile(join(dir, 'mine'), Buffer.alloc(10))
    expect(await dirUsage(dir)).toMatchObject({ bytes: 10, entries: 4, complete: true })
  })

  it('stops at its entry bound and says the result is partial', async () => {
    for (let i = 0; i < 20; i++) await writeFile(join(dir, `f${i}`), Buffer.alloc(100))
    const usage = await dirUsage(dir, { maxEntries: 5 })
    expect(usage).toMatchObject({ entries: 5, bytes: 500, complete: false })
  })

  it('counts a missing directory as empty', async () => {
    expect(await dirUsage(join(root, 'gone'))).toEqual({ bytes: 0, entries: 0, complete: true, unreadable: 0 })
  })
})

describe('DiskWatch', () => {
  it('calls onExceeded once when the directory grows over the limit', async () => {
    const seen: number[] = []
    const watch = new DiskWatch(dir, 4096, bytes => { seen.push(bytes) }, { intervalMs: 10 }).start()
    try {
      await new Promise(resolve => setTimeout(resolve, 50))
      expect(seen).toEqual([])
      await writeFile(join(dir, 'big'), Buffer.alloc(5000))
      await expect.poll(() => seen, { timeout: 2000, interval: 10 }).toEqual([5000])
      await writeFile(join(dir, 'bigger'), Buffer.alloc(5000))
      await new Promise(resolve => setTimeout(resolve, 100))
      expect(seen).toEqual([5000])
    } finally {
      watch.stop()
    }
  })

  it('measures on demand after stop, without calling onExceeded', async () => {
    const seen: number[] = []
    const watch = new DiskWatch(dir, 100, bytes => { seen.push(bytes) }, { intervalMs: 60_000 }).start()
    watch.stop()
    await writeFile(join(dir, 'big'), Buffer.alloc(500))
    const usage = await watch.check()
    expect(usage.bytes).toBe(500)
    expect(watch.over(usage)).toBe(true)
    expect(seen).toEqual([])
  })
})
