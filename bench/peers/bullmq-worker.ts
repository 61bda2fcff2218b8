/**
 * One BullMQ worker process for the BullMQ peer benchmark (bench/peers/bullmq.ts),
 * forked by it with a JSON config as the only argument:
 * `{ host, port, queue, concurrency, command? }`.
 *
 * The processor is a no-op, or runs `command` (e.g. `['true']`, to compare with
 * RGrid, whose trivial job is a process) and waits for it. Over IPC the process reports:
 * - `{ type: 'ready' }` once its connections are up and it is fetching jobs;
 * - `{ type: 'started', id, at }` for jobs whose data has `report: true` (the
 *   latency probes), `at` being the wall clock when the processor was entered;
 * - `{ type: 'progress', completed, lastAt }`: its running count of completed
 *   jobs and when the last one completed, batched so that throughput runs do
 *   not pay for one IPC message per job;
 * - `{ type: 'failed', id, reason }` for any failed job, which voids the run.
 * It closes its worker and exits on `{ type: 'close' }`, or when the parent goes.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Worker, type Job } from 'bullmq'

interface Config { host: string, port: number, queue: string, concurrency: number, command?: string[] }
const execFileAsync = promisify(execFile)

/** Wall-clock ms with sub-ms resolution; the bench process uses the same clock. */
function wallNow (): number {
  return performance.timeOrigin + performance.now()
}

function send (msg: object): void {
  // The parent may already be gone while we close; nothing is left to tell it.
  if (process.connected) process.send?.(msg)
}

async function main (): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? '') as Config
  let completed = 0
  let lastAt = 0
  let flushPending = false
  const flush = (): void => {
    flushPending = false
    send({ type: 'progress', completed, lastAt })
  }

  const worker = new Worker(cfg.queue, async (job: Job) => {
    if ((job.data as { report?: boolean }).report === true) send({ type: 'started', id: job.id, at: wallNow() })
    if (cfg.command != null) await execFileAsync(cfg.command[0]!, cfg.command.slice(1))
  }, {
    connection: { host: cfg.host, port: cfg.port },
    concurrency: cfg.concurrency
  })

  worker.on('completed', () => {
    completed++
    lastAt = wallNow()
    // A short batch window: one message per ~5 ms per process, not per job.
    if (!flushPending) {
      flushPending = true
      setTimeout(flush, 5)
    }
  })
  worker.on('failed', (job, err) => send({ type: 'failed', id: job?.id ?? null, reason: err.message }))
  worker.on('error', err => process.stderr.write(`bullmq-worker ${process.pid}: ${err.message}\n`))

  let closing = false
  const close = async (): Promise<void> => {
    if (closing) return
    closing = true
    // worker.close() waits for Redis, which may be gone too; do not linger as an orphan.
    setTimeout(() => process.exit(1), 5000).unref()
    try {
      await worker.close()
    } catch (err) {
      process.stderr.write(`bullmq-worker ${process.pid}: close failed: ${(err as Error).message}\n`)
      process.exit(1)
    }
    if (flushPending) flush()
    process.exit(0)
  }
  process.on('message', (msg: { type?: string }) => {
    if (msg.type === 'close') void close()
  })
  // Orphaned workers would keep polling Redis forever; follow the parent out.
  process.on('disconnect', () => { void close() })

  await worker.waitUntilReady()
  send({ type: 'ready' })
}

main().catch((err: unknown) => {
  process.stderr.write(`bullmq-worker: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
