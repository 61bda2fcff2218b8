/**
 * `rgrid run --batch GLOB SCRIPT`: one job per matching file, submitted
 * together under one batch id, watched with a progress line, outputs of each
 * job downloaded into `DIR/<input name>/`, a summary at the end. Ctrl-C
 * detaches; `rgrid watch BATCH` reattaches.
 */
import { safeName } from './terminal.js'
import { glob } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { Client, JobSummary } from './client.js'
import { buildRunSpec, downloadArtifacts, type RunOptions } from './run.js'

/** The most jobs one batch may have: a listing returns at most 1000 jobs. */
export const MAX_BATCH = 1000
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled'])

export interface BatchOptions extends RunOptions {
  pattern: string
  /** Concurrent uploads (jobs are submitted 100 per request). The mesh's free slots decide how many run at once. @default 16 */
  parallel: number
}

export function newBatchId (): string {
  return `b-${new Date().toISOString().slice(0, 10).replace(/-/g, '')}-${randomBytes(4).toString('hex')}`
}

/** Specs sent per `POST /v1/jobs/batch`: jobs start running while later files still upload. */
const SUBMIT_CHUNK = 100

/**
 * Submits one job per file; returns how many were submitted. Inputs upload
 * `parallel` at a time; the specs go out in chunks of up to 100 per request
 * (`POST /v1/jobs/batch`, each chunk all or none), so the coordinator
 * creates and announces them together instead of one request per job.
 */
export async function submitBatch (client: Client, o: BatchOptions, batch: string, progress: (text: string) => void): Promise<number> {
  const files: string[] = []
  for await (const f of glob(o.pattern)) files.push(f)
  files.sort()
  if (files.length === 0) throw new Error(`--batch ${JSON.stringify(o.pattern)} matches no file`)
  if (files.length > MAX_BATCH) throw new Error(`--batch matches ${files.length} files; one batch takes at most ${MAX_BATCH}`)
  let next = 0
  let submitted = 0
  let ready: unknown[] = []
  // One chunk in flight at a time, in the order the specs became ready.
  let sending: Promise<void> = Promise.resolve()
  const send = (): void => {
    const chunk = ready
    ready = []
    if (chunk.length === 0) return
    sending = sending.then(async () => {
      try {
        await client.submitMany(chunk)
      } catch (err) {
        // Stop uploading for jobs that will not be submitted; the error is thrown below.
        refused = true
        throw err
      }
      submitted += chunk.length
      progress(`submitting ${submitted}/${files.length}`)
    })
  }
  let refused = false
  const worker = async (): Promise<void> => {
    while (next < files.length && !refused) {
      const file = files[next++]!
      // The file replaces {} in the arguments, or comes first when there is no {}.
      const args = o.args.includes('{}') ? o.args.map(a => a === '{}' ? file : a) : [file, ...o.args]
      const { spec } = await buildRunSpec(client, { ...o, args })
      ready.push({ ...spec, batch })
      if (ready.length >= SUBMIT_CHUNK) send()
    }
  }
  try {
    await Promise.all(Array.from({ length: Math.max(1, Math.min(o.parallel, files.length)) }, worker))
  } finally {
    // What was built is submitted even when a later upload failed, as one request per job did before.
    send()
    await sending
  }
  return submitted
}

/** The batch file a job was made for: its input under `inputs/`. */
function inputName (job: JobSummary): string {
  const inputs = (job.spec.inputs as Array<{ path: string }> | undefined) ?? []
  const mine = inputs.find(i => i.path.startsWith('inputs/'))
  return mine != null ? basename(mine.path) : job.id
}

export interface BatchRow { input: string, id: string, state: string, exitCode: number | null, attempts: number, seconds: number | null }

/**
 * Watches a batch until every job has ended (or `signal` aborts), downloading
 * each finished job's outputs into `DIR/<input name>/`. The newest job per
 * input counts (a retry replaces the failed one).
 */
export async function watchBatch (client: Client, batch: string, outputDir: string, signal: AbortSignal, progress: (text: string) => void): Promise<BatchRow[] | null> {
  const started = Date.now()
  const downloaded = new Set<string>()
  const rows = new Map<string, BatchRow>()
  for (;;) {
    const jobs = await client.list({ batch, limit: MAX_BATCH })
    if (jobs.length === 0) throw new Error(`no jobs in batch ${batch}`)
    // Newest first: the first job seen per input is the one that counts.
    const latest = new Map<string, JobSummary>()
    for (const j of jobs) if (!latest.has(inputName(j))) latest.set(inputName(j), j)
    for (const [input, j] of latest) {
      if (TERMINAL.has(j.state) && !downloaded.has(j.id)) {
        downloaded.add(j.id)
        const full = await client.job(j.id)
        const a = full.attempts.at(-1)
        rows.set(input, {
          input, id: j.id, state: j.state, exitCode: full.result?.exitCode ?? null, attempts: full.attempts.length,
          seconds: a?.startedAt != null && a.finishedAt != null ? (a.finishedAt - a.startedAt) / 1000 : null
        })
        await downloadArtifacts(client, j.id, join(outputDir, input))
      } else if (!TERMINAL.has(j.state)) {
        rows.set(input, { input, id: j.id, state: j.state, exitCode: null, attempts: 0, seconds: null })
      }
    }
    const count = (s: string): number => [...rows.values()].filter(r => r.state === s).length
    const done = count('succeeded')
    const failed = count('failed') + count('cancelled')
    const running = count('running') + count('claimed')
    const waiting = count('announced')
    const total = rows.size
    const finished = done + failed
    const elapsed = (Date.now() - started) / 1000
    const eta = finished > 0 && finished < total ? Math.round((total - finished) * elapsed / finished) : null
    const width = 24
    const bar = '#'.repeat(Math.round(width * finished / Math.max(1, total))).padEnd(width, '.')
    progress(`[${bar}] ${finished}/${total} · done ${done} · running ${running} · waiting ${waiting} · failed ${failed}${eta != null ? ` · ETA ${Math.floor(eta / 60)}:${String(eta % 60).padStart(2, '0')}` : ''}`)
    if (finished === total) return [...rows.values()].sort((a, b) => a.input.localeCompare(b.input))
    if (signal.aborted) return null
    await new Promise<void>(resolve => {
      const t = setTimeout(resolve, 1000)
      signal.addEventListener('abort', () => { clearTimeout(t); resolve() }, { once: true })
    })
    if (signal.aborted) return null
  }
}

export function summaryTable (rows: BatchRow[]): string {
  const w = Math.max(5, ...rows.map(r => safeName(r.input).length))
  const lines = [`${'input'.padEnd(w)}  state      exit  attempts  seconds  job`]
  for (const r of rows) {
    lines.push(`${safeName(r.input).padEnd(w)}  ${r.state.padEnd(9)}  ${String(r.exitCode ?? '-').padStart(4)}  ${String(r.attempts).padStart(8)}  ${(r.seconds != null ? r.seconds.toFixed(1) : '-').padStart(7)}  ${r.id}`)
  }
  const failed = rows.filter(r => r.state !== 'succeeded').length
  lines.push('', `${rows.length - failed} succeeded, ${failed} failed or cancelled`)
  return lines.join('\n') + '\n'
}
