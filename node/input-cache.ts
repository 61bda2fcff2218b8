/**
 * Inputs cached by content: `DATA_DIR/cache/<sha256>`, capped in bytes,
 * least recently used evicted first. A batch of jobs sharing one script
 * downloads it once per node. Files are written under a temporary name and
 * renamed in only after their hash checked out, so the cache never holds a
 * wrong or partial file.
 */
import { copyFile, mkdir, readdir, rename, rm, stat, utimes } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from '../common/log.js'
import { errorMessage } from '../common/errors.js'

export interface InputCacheOptions {
  dir: string
  /** Total size kept, in bytes. @default 1073741824 (1 GiB) */
  maxBytes?: number
  log: Logger
}

export class InputCache {
  /** sha256 → size and last use, in least-recently-used order (Map keeps insertion order). */
  private readonly entries = new Map<string, { size: number }>()
  private total = 0
  private started = false
  readonly stats = { hits: 0, misses: 0, evictions: 0 }

  constructor (private readonly options: InputCacheOptions) {}

  get maxBytes (): number { return this.options.maxBytes ?? 1024 * 1024 * 1024 }
  get bytes (): number { return this.total }

  /** Reads what an earlier run cached, oldest use first. Idempotent. */
  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    await mkdir(join(this.options.dir, '.tmp'), { recursive: true })
    await rm(join(this.options.dir, '.tmp'), { recursive: true, force: true })
    await mkdir(join(this.options.dir, '.tmp'), { recursive: true })
    const found: Array<{ sha: string, size: number, used: number }> = []
    for (const name of await readdir(this.options.dir)) {
      if (!/^[0-9a-f]{64}$/.test(name)) continue
      const s = await stat(join(this.options.dir, name))
      found.push({ sha: name, size: s.size, used: s.mtimeMs })
    }
    found.sort((a, b) => a.used - b.used)
    for (const f of found) { this.entries.set(f.sha, { size: f.size }); this.total += f.size }
    await this.evict()
  }

  /** A fresh temporary path to download into. */
  tempPath (): string {
    return join(this.options.dir, '.tmp', `${Date.now()}-${Math.random().toString(36).slice(2)}`)
  }

  /** Copies the cached file to `dest`; false if it is not cached. */
  async copyTo (sha256: string, dest: string): Promise<boolean> {
    const entry = this.entries.get(sha256)
    if (entry == null) { this.stats.misses++; return false }
    const path = join(this.options.dir, sha256)
    try {
      // A copy, not a link: the job may change its input, and that must not reach the cache.
      await copyFile(path, dest)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      this.forget(sha256)
      this.stats.misses++
      return false
    }
    this.entries.delete(sha256)
    this.entries.set(sha256, entry)
    const now = new Date()
    await utimes(path, now, now).catch((err: unknown) => { this.options.log.debug('cache touch failed', { sha256, error: errorMessage(err) }) })
    this.stats.hits++
    return true
  }

  /** Takes a verified download into the cache (moves `tempFile`), then evicts down to the cap. */
  async add (sha256: string, tempFile: string, size: number): Promise<void> {
    if (size > this.maxBytes) { await rm(tempFile, { force: true }); return }
    await rename(tempFile, join(this.options.dir, sha256))
    if (!this.entries.has(sha256)) this.total += size
    this.entries.delete(sha256)
    this.entries.set(sha256, { size })
    await this.evict()
  }

  private forget (sha256: string): void {
    const e = this.entries.get(sha256)
    if (e == null) return
    this.entries.delete(sha256)
    this.total -= e.size
  }

  private async evict (): Promise<void> {
    for (const [sha] of this.entries) {
      if (this.total <= this.maxBytes) return
      this.forget(sha)
      this.stats.evictions++
      await rm(join(this.options.dir, sha), { force: true })
    }
  }
}
