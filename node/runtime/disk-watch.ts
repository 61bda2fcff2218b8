/**
 * Watches how much a running job has written to its work dir, so a job
 * cannot fill the node's disk. Docker's own per-container disk quota
 * (`HostConfig.StorageOpt.size`) is not used: it only works on some storage
 * drivers (overlay2 on xfs with pquota, devicemapper, btrfs, zfs), it does not
 * cover bind mounts such as the work dir at all, and most nodes run overlay2
 * on ext4, where the engine refuses it.
 */
import { lstat, opendir } from 'node:fs/promises'
import { join } from 'node:path'

/** What one walk of a directory found. */
export interface DirUsage {
  /** Sum of the sizes of the regular files seen. */
  bytes: number
  /** Entries visited (files, directories, links). */
  entries: number
  /** False when the walk stopped at its entry bound or was aborted: `bytes` is then a lower bound. */
  complete: boolean
  /** Directories it could not read (their contents are not counted). */
  unreadable: number
}

export interface DirUsageOptions {
  /** Entries one walk visits at most; a larger tree is measured in part. @default 100000 */
  maxEntries?: number
  /** Stops the walk early (the result is then incomplete). */
  signal?: AbortSignal
}

/**
 * Total size of the regular files under `dir`. Never follows symbolic links
 * (a link into the node's own files must not count, nor be walked), uses only
 * asynchronous calls, and visits at most `maxEntries` entries.
 */
export async function dirUsage (dir: string, options: DirUsageOptions = {}): Promise<DirUsage> {
  const maxEntries = options.maxEntries ?? 100_000
  const usage: DirUsage = { bytes: 0, entries: 0, complete: true, unreadable: 0 }
  const pending = [dir]
  while (pending.length > 0) {
    const current = pending.pop() as string
    let handle
    try {
      handle = await opendir(current)
    } catch (err) {
      // Gone since it was listed (the job deleted it) is not an error; unreadable (mode 000) is reported.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') usage.unreadable++
      continue
    }
    for await (const entry of handle) {
      if (usage.entries >= maxEntries || options.signal?.aborted === true) {
        usage.complete = false
        // Leaving the loop early closes the handle.
        break
      }
      usage.entries++
      const path = join(current, entry.name)
      // Dirent types come from the directory itself (lstat semantics): a link is never a directory here.
      if (entry.isDirectory()) {
        pending.push(path)
      } else if (entry.isFile()) {
        try {
          usage.bytes += (await lstat(path)).size
        } catch {
          // Deleted between the listing and the lstat: it no longer uses space.
        }
      }
    }
    if (!usage.complete) break
  }
  return usage
}

export interface DiskWatchOptions {
  /** Time between two walks of the directory, in ms (a walk never overlaps the next). @default 1000 */
  intervalMs?: number
  /** Entries one walk visits at most (see {@link dirUsage}). @default 100000 */
  maxEntries?: number
}

/**
 * Walks `dir` every `intervalMs` while a job runs and calls `onExceeded`
 * (once) with the bytes found when they exceed `limitBytes`.
 */
export class DiskWatch {
  private timer: NodeJS.Timeout | null = null
  private readonly abort = new AbortController()
  private exceeded = false
  private stopped = false
  /** The last walk's result, if one finished. */
  last: DirUsage | null = null

  constructor (
    private readonly dir: string,
    readonly limitBytes: number,
    private readonly onExceeded: (bytes: number) => void,
    private readonly options: DiskWatchOptions = {}
  ) {}

  /** Starts watching; the first walk happens after one interval. */
  start (): this {
    this.schedule()
    return this
  }

  /** Stops watching; a walk in progress is abandoned. Idempotent. */
  stop (): void {
    this.stopped = true
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.abort.abort()
  }

  /**
   * Measures once now and returns what it found, without calling
   * `onExceeded`: for the final check once the job has exited (also after
   * stop()).
   */
  async check (): Promise<DirUsage> {
    const usage = await dirUsage(this.dir, { maxEntries: this.options.maxEntries, ...(this.stopped ? {} : { signal: this.abort.signal }) })
    this.last = usage
    return usage
  }

  /** Whether `usage` is over the limit. */
  over (usage: DirUsage): boolean {
    return usage.bytes > this.limitBytes
  }

  private schedule (): void {
    if (this.stopped || this.exceeded) return
    this.timer = setTimeout(() => {
      this.timer = null
      // Errors of the walk itself (the dir removed under us) just end this round.
      this.check().then(usage => {
        if (this.stopped || !this.over(usage)) return
        this.exceeded = true
        this.onExceeded(usage.bytes)
      }).catch(() => {}).finally(() => { this.schedule() })
    }, this.options.intervalMs ?? 1000)
    this.timer.unref()
  }
}
