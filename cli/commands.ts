/**
 * The submitter commands of `rgrid`: run, status, list, logs, cancel,
 * download, nodes. The coordinator comes from `--coordinator URL`, else
 * `RGRID_COORDINATOR`, else the config file; the API key from
 * `RGRID_API_KEY` or the config file. Read commands take `--json`.
 * Errors are one line on stderr and a non-zero exit code.
 */
import { logFor, safeLogLine, safeName } from './terminal.js'
import { parseArgs } from 'node:util'
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { Client, ClientError, type Job, type LogLine } from './client.js'
import { MAX_BATCH, newBatchId, submitBatch, summaryTable, watchBatch } from './batch.js'
import { buildRunSpec, downloadArtifacts, exitCodeOf, parseDuration, parseMemory, type RunOptions } from './run.js'

export const SUBMIT_HELP = `Usage: rgrid COMMAND [options]

  run [options] SCRIPT [ARGS...]  run a script on the mesh: uploads it and every
                                  argument naming a file, streams its output,
                                  downloads what it writes under out/, exits
                                  with its exit code
      --image I        container image          [by extension: python, node, …]
      --cpus N         CPUs                     [1]
      --memory SIZE    memory, e.g. 512m, 2g    [256m]
      --timeout D      e.g. 90s, 10m, 2h        [1h]
      --env K=V        environment (repeatable)
      --label K=V      node label required (repeatable)
      --output GLOB    more outputs besides out/** (repeatable)
      --output-dir DIR where outputs land        [.]
      --attempts N     attempts before giving up [3]
      --detach         print the job id (batch id) and exit
      --batch GLOB     one job per matching file ({} in ARGS is replaced by
                       the file, else it comes first); progress, outputs in
                       DIR/<input name>/ (DIR default rgrid-out), a summary;
                       exit 1 if any failed; Ctrl-C detaches
      --parallel N     concurrent uploads of a batch [16]; jobs are submitted
                       100 per request; how many run at once is up to the
                       mesh's free slots
  watch BATCH [--output-dir DIR]  reattach to a batch
  retry ID | --batch B --failed   submit failed jobs again
  status ID                       state, attempts, result
  list [--state S] [--batch B] [--limit N]  recent jobs
  logs [-f] ID                    output lines (-f: follow until the job ends)
  cancel ID | --batch B           cancel a job, or every unfinished job of a batch
  download ID [--output-dir DIR]  fetch a job's outputs
  explain ID                      why the job is where it is, node by node
  nodes                           nodes and their capacity
  dev                             a local mesh (rgrid dev --help)
  sim SCENARIO.yaml               a scripted simulation with faults (rgrid sim --help)

Global: --coordinator URL (or RGRID_COORDINATOR, or "coordinator" in
~/.config/rgrid/config.json) [http://127.0.0.1:8080]; RGRID_API_KEY (or
"apiKey" there); --json on read commands.
`

/** A user mistake: printed with the usage hint, exit code 2. */
class UsageError extends Error { override readonly name = 'UsageError' }

interface Config { coordinator?: string, apiKey?: string }

function readConfig (): Config {
  const path = process.env.RGRID_CONFIG ?? join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'rgrid', 'config.json')
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Config
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {}
    throw new UsageError(`cannot read ${path}: ${(err as Error).message}`)
  }
}

function clientFor (coordinator: string | undefined): Client {
  const config = readConfig()
  const url = (coordinator ?? process.env.RGRID_COORDINATOR ?? config.coordinator ?? 'http://127.0.0.1:8080').replace(/\/+$/, '')
  if (!/^https?:\/\//.test(url)) throw new UsageError(`--coordinator must be an http(s) URL, got ${JSON.stringify(url)}`)
  return new Client(url, process.env.RGRID_API_KEY ?? config.apiKey ?? null)
}

function pairs (list: string[] | undefined, flag: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const p of list ?? []) {
    const i = p.indexOf('=')
    if (i <= 0) throw new UsageError(`${flag} takes KEY=VALUE, got ${JSON.stringify(p)}`)
    out[p.slice(0, i)] = p.slice(i + 1)
  }
  return out
}

function parse (argv: string[], options: Record<string, { type: 'string' | 'boolean', multiple?: boolean, short?: string }>, positionals = true): { values: Record<string, unknown>, positionals: string[] } {
  try {
    return parseArgs({ args: argv, options: { ...options, coordinator: { type: 'string' }, json: { type: 'boolean' } }, allowPositionals: positionals, strict: true })
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}

const out = (text: string): void => { process.stdout.write(text) }
const age = (ms: number): string => ms < 1000 ? `${ms} ms` : ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60_000)} min`

function printJob (job: Job): void {
  out(`${job.id}  ${job.state}\n`)
  for (const a of job.attempts) {
    const ran = a.startedAt != null && a.finishedAt != null ? ` ran ${age(a.finishedAt - a.startedAt)}` : ''
    out(`  attempt ${a.number} on …${a.node.slice(-8)}: ${a.state}${ran}\n`)
  }
  const r = job.result
  if (r != null) {
    out(`  result: ${r.outcome}${r.exitCode != null ? `, exit ${r.exitCode}` : ''}${r.error != null ? ` (${safeName(r.error.code)}: ${safeName(r.error.message)})` : ''}\n`)
    for (const a of r.artifacts) out(`  output: ${safeName(a.path)} (${a.size} bytes)\n`)
  }
}

/** Runs a submitter command; resolves the process exit code. */
export async function submitCommand (command: string, argv: string[]): Promise<number> {
  try {
    return await dispatch(command, argv)
  } catch (err) {
    if (err instanceof UsageError) { process.stderr.write(`rgrid ${command}: ${err.message}\n(rgrid --help for usage)\n`); return 2 }
    if (err instanceof ClientError) { process.stderr.write(`rgrid ${command}: ${err.message}\n`); return err.status === 404 ? 4 : 3 }
    throw err
  }
}

async function dispatch (command: string, argv: string[]): Promise<number> {
  switch (command) {
    case 'run': return await run(argv)
    case 'status': {
      const { values, positionals } = parse(argv, {})
      const id = one(positionals, 'a job id')
      const job = await clientFor(values.coordinator as string | undefined).job(id)
      if (values.json === true) out(JSON.stringify(job, null, 2) + '\n')
      else printJob(job)
      return 0
    }
    case 'list': {
      const { values } = parse(argv, { state: { type: 'string' }, batch: { type: 'string' }, limit: { type: 'string' } }, false)
      const limit = values.limit != null ? Number(values.limit) : values.batch != null ? MAX_BATCH : 50
      const jobs = await clientFor(values.coordinator as string | undefined).list({
        ...(values.state != null ? { state: values.state as string } : {}), ...(values.batch != null ? { batch: values.batch as string } : {}), limit
      })
      if (values.json === true) { out(JSON.stringify(jobs, null, 2) + '\n'); return 0 }
      for (const j of jobs) out(`${j.id}  ${j.state.padEnd(9)}  attempt ${j.attempt}  ${safeName(((j.spec.command as string[]) ?? []).join(' ').slice(0, 60))}\n`)
      if (jobs.length === 0) out('no jobs\n')
      return 0
    }
    case 'logs': {
      const { values, positionals } = parse(argv, { follow: { type: 'boolean', short: 'f' } })
      const id = one(positionals, 'a job id')
      const client = clientFor(values.coordinator as string | undefined)
      const print = (l: LogLine): void => {
        if (values.json === true) out(JSON.stringify(l) + '\n')
        else {
          const stream = l.stream === 'stderr' ? process.stderr : process.stdout
          stream.write(logFor(stream, l.text) + '\n')
        }
      }
      if (values.follow === true) {
        const stop = new AbortController()
        process.once('SIGINT', () => { stop.abort() })
        await client.follow(id, 0, print, stop.signal)
        return 0
      }
      let after = 0
      for (;;) {
        const page = await client.logs(id, after)
        page.lines.forEach(print)
        if (page.lines.length === 0) return 0
        after = page.next
      }
    }
    case 'explain': {
      const { values, positionals } = parse(argv, {})
      const id = one(positionals, 'a job id')
      const e = await clientFor(values.coordinator as string | undefined).explain(id)
      if (values.json === true) { out(JSON.stringify(e, null, 2) + '\n'); return 0 }
      out(`${e.id}  ${e.state}\n\n${safeLogLine(e.summary)}\nNext: ${safeLogLine(e.next)}\n`)
      if (e.nodes.length > 0 && !['succeeded', 'failed', 'cancelled'].includes(e.state)) {
        out('\nNodes:\n')
        for (const n of e.nodes) out(`  …${n.peerId.slice(-12)}  ${n.verdict.padEnd(12)}  ${safeName(n.reason)}\n`)
      }
      if (e.bids.length > 0) {
        out('\nBids:\n')
        for (const b of e.bids) out(`  ${new Date(b.at).toISOString()}  …${b.node.slice(-12)}  attempt ${b.attempt}  ${b.outcome}\n`)
      }
      if (e.recent.length > 0) {
        out('\nRecent events:\n')
        for (const ev of e.recent) out(`  ${new Date(ev.at).toISOString()}  ${ev.type.padEnd(12)} ${ev.attempt != null ? `attempt ${ev.attempt}  ` : ''}${typeof ev.detail.reason === 'string' ? safeName(ev.detail.reason) : ''}\n`)
      }
      return 0
    }
    case 'cancel': {
      const { values, positionals } = parse(argv, { batch: { type: 'string' } })
      const client = clientFor(values.coordinator as string | undefined)
      if (values.batch != null) {
        if (positionals.length > 0) throw new UsageError('give a job id or --batch, not both')
        const open = (await client.list({ batch: values.batch as string, limit: MAX_BATCH })).filter(j => !TERMINAL.has(j.state))
        for (const j of open) {
          try {
            await client.cancel(j.id)
          } catch (err) {
            // It ended between the listing and the cancel: nothing to do.
            if (!(err instanceof ClientError && err.status === 409)) throw err
          }
        }
        out(values.json === true ? JSON.stringify({ cancelled: open.map(j => j.id) }) + '\n' : `${open.length} jobs of batch ${String(values.batch)} cancelled\n`)
        return 0
      }
      const id = one(positionals, 'a job id or --batch B')
      const job = await client.cancel(id)
      if (values.json === true) out(JSON.stringify(job, null, 2) + '\n')
      else out(`${id} cancelled\n`)
      return 0
    }
    case 'retry': {
      const { values, positionals } = parse(argv, { batch: { type: 'string' }, failed: { type: 'boolean' } })
      const client = clientFor(values.coordinator as string | undefined)
      let specs: Array<Record<string, unknown>>
      if (values.batch != null) {
        if (values.failed !== true) throw new UsageError('rgrid retry --batch B needs --failed (only failed jobs are submitted again)')
        const jobs = await client.list({ batch: values.batch as string, limit: MAX_BATCH })
        // Only inputs whose newest job failed: a retry that succeeded is not retried again.
        const newest = new Map<string, typeof jobs[number]>()
        for (const j of jobs) { const k = JSON.stringify(j.spec.inputs ?? j.id); if (!newest.has(k)) newest.set(k, j) }
        specs = [...newest.values()].filter(j => j.state === 'failed' || j.state === 'cancelled').map(j => j.spec)
      } else {
        specs = [(await client.job(one(positionals, 'a job id or --batch B --failed'))).spec]
      }
      const ids: string[] = []
      for (const spec of specs) ids.push((await client.submit(spec)).id)
      out(values.json === true ? JSON.stringify({ submitted: ids }) + '\n' : ids.length === 0 ? 'nothing to retry\n' : ids.map(i => `${i}\n`).join(''))
      return 0
    }
    case 'watch': {
      const { values, positionals } = parse(argv, { 'output-dir': { type: 'string' } })
      const batch = one(positionals, 'a batch id')
      return await watch(clientFor(values.coordinator as string | undefined), batch, (values['output-dir'] as string | undefined) ?? 'rgrid-out', values.json === true)
    }
    case 'download': {
      const { values, positionals } = parse(argv, { 'output-dir': { type: 'string' } })
      const id = one(positionals, 'a job id')
      const files = await downloadArtifacts(clientFor(values.coordinator as string | undefined), id, (values['output-dir'] as string | undefined) ?? '.')
      if (values.json === true) out(JSON.stringify(files, null, 2) + '\n')
      else out(files.length === 0 ? 'no outputs\n' : files.map(f => `${safeName(f)}\n`).join(''))
      return 0
    }
    case 'nodes': {
      const { values } = parse(argv, {}, false)
      const nodes = await clientFor(values.coordinator as string | undefined).nodes() as Array<{ peerId: string, capacity: { slots: number, cpus: number, memoryMb: number, labels: Record<string, string>, runtime: string }, freeSlots: number, running: number, session: boolean, lastHeartbeatAt: number }>
      if (values.json === true) { out(JSON.stringify(nodes, null, 2) + '\n'); return 0 }
      for (const n of nodes) {
        const labels = safeName(Object.entries(n.capacity.labels).map(([k, v]) => `${k}=${v}`).join(','))
        out(`…${n.peerId.slice(-12)}  ${n.session ? 'connected' : 'away     '}  ${n.running}/${n.capacity.slots} slots busy  ${n.capacity.cpus} cpus  ${n.capacity.memoryMb} MiB  ${n.capacity.runtime}  heard ${age(Date.now() - n.lastHeartbeatAt)} ago${labels !== '' ? `  ${labels}` : ''}\n`)
      }
      if (nodes.length === 0) out('no nodes\n')
      return 0
    }
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`)
  }
}

function one (positionals: string[], what: string): string {
  if (positionals.length !== 1) throw new UsageError(`expected ${what}`)
  return positionals[0]!
}

/** Progress on stderr: rewritten in place on a terminal, a line every few seconds otherwise. */
function progressPrinter (): { update: (text: string) => void, end: () => void } {
  let last = ''
  let lastAt = 0
  const tty = process.stderr.isTTY
  return {
    update: (text: string) => {
      if (text === last) return
      last = text
      if (tty) process.stderr.write(`\r\x1b[K${text}`)
      else if (Date.now() - lastAt > 2000) { lastAt = Date.now(); process.stderr.write(text + '\n') }
    },
    end: () => { if (tty) process.stderr.write('\n'); else if (last !== '') process.stderr.write(last + '\n') }
  }
}

async function watch (client: Client, batch: string, outputDir: string, json: boolean): Promise<number> {
  const detach = new AbortController()
  const onInt = (): void => { detach.abort() }
  process.once('SIGINT', onInt)
  const progress = progressPrinter()
  let rows
  try {
    rows = await watchBatch(client, batch, outputDir, detach.signal, progress.update)
  } finally {
    process.off('SIGINT', onInt)
    progress.end()
  }
  if (rows == null) {
    process.stderr.write(`rgrid: detached; the batch keeps running. Reattach with: rgrid watch ${batch}\n`)
    return 130
  }
  out(json ? JSON.stringify({ batch, jobs: rows }, null, 2) + '\n' : summaryTable(rows))
  if (!json) process.stderr.write(`rgrid: outputs in ${outputDir}/<input name>/\n`)
  return rows.every(r => r.state === 'succeeded') ? 0 : 1
}

async function run (argv: string[]): Promise<number> {
  // Options end at the script: what follows belongs to it, dashes included.
  const scriptAt = argv.findIndex((a, i) => !a.startsWith('-') && !(i > 0 && VALUE_FLAGS.has(argv[i - 1]!)))
  if (scriptAt < 0) throw new UsageError('expected SCRIPT [ARGS...]')
  const { values } = parse(argv.slice(0, scriptAt), {
    image: { type: 'string' }, cpus: { type: 'string' }, memory: { type: 'string' }, timeout: { type: 'string' },
    env: { type: 'string', multiple: true }, label: { type: 'string', multiple: true }, output: { type: 'string', multiple: true },
    'output-dir': { type: 'string' }, attempts: { type: 'string' }, detach: { type: 'boolean' },
    batch: { type: 'string' }, parallel: { type: 'string' }
  }, false)
  const client = clientFor(values.coordinator as string | undefined)
  let memoryMb: number | undefined
  let timeoutSeconds: number | undefined
  try {
    if (values.memory != null) memoryMb = parseMemory(values.memory as string)
    if (values.timeout != null) timeoutSeconds = parseDuration(values.timeout as string)
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
  const cpus = values.cpus != null ? Number(values.cpus) : undefined
  if (cpus != null && !(cpus > 0)) throw new UsageError('--cpus must be a positive number')
  const outputDir = (values['output-dir'] as string | undefined) ?? (values.batch != null ? 'rgrid-out' : '.')
  const runOptions: RunOptions = {
    script: argv[scriptAt]!, args: argv.slice(scriptAt + 1),
    env: pairs(values.env as string[] | undefined, '--env'), labels: pairs(values.label as string[] | undefined, '--label'),
    outputs: (values.output as string[] | undefined) ?? [], outputDir,
    ...(values.image != null ? { image: values.image as string } : {}),
    ...(cpus != null ? { cpus } : {}),
    ...(memoryMb != null ? { memoryMb } : {}),
    ...(timeoutSeconds != null ? { timeoutSeconds } : {}),
    ...(values.attempts != null ? { maxAttempts: Number(values.attempts) } : {})
  }
  if (values.batch != null) {
    const parallel = Number(values.parallel ?? 16)
    if (!Number.isInteger(parallel) || parallel < 1 || parallel > 256) throw new UsageError('--parallel must be an integer from 1 to 256')
    const batch = newBatchId()
    const progress = progressPrinter()
    try {
      await submitBatch(client, { ...runOptions, pattern: values.batch as string, parallel }, batch, progress.update)
    } catch (err) {
      progress.end()
      if (err instanceof ClientError) throw err
      throw new UsageError((err as Error).message)
    }
    progress.end()
    process.stderr.write(`rgrid: batch ${batch} submitted (rgrid watch ${batch} to reattach)\n`)
    if (values.detach === true) { out(`${batch}\n`); return 0 }
    return await watch(client, batch, outputDir, values.json === true)
  }
  let built
  try {
    built = await buildRunSpec(client, runOptions)
  } catch (err) {
    if (err instanceof ClientError) throw err
    throw new UsageError((err as Error).message)
  }
  const job = await client.submit(built.spec)
  if (values.detach === true || values.json === true) {
    out(values.json === true ? JSON.stringify({ id: job.id, state: job.state }) + '\n' : `${job.id}\n`)
    return 0
  }
  process.stderr.write(`rgrid: job ${job.id} submitted\n`)
  // Ctrl-C detaches: the job keeps running.
  const detach = new AbortController()
  const onInt = (): void => {
    detach.abort()
    process.stderr.write(`\nrgrid: detached; the job keeps running. Follow it with: rgrid logs -f ${job.id}   (status: rgrid status ${job.id})\n`)
  }
  process.once('SIGINT', onInt)
  let printed = 0
  try {
    await client.follow(job.id, 0, l => {
      printed++
      const stream = l.stream === 'stderr' ? process.stderr : process.stdout
      stream.write(logFor(stream, l.text) + '\n')
    }, detach.signal)
  } finally {
    process.off('SIGINT', onInt)
  }
  if (detach.signal.aborted) return 130
  const done = await client.job(job.id)
  // A coordinator without live lines (or lines dropped): show the result's output instead.
  if (printed === 0 && done.result != null) {
    if (done.result.stdout !== '') process.stdout.write(logFor(process.stdout, done.result.stdout.endsWith('\n') ? done.result.stdout : done.result.stdout + '\n'))
    if (done.result.stderr !== '') process.stderr.write(logFor(process.stderr, done.result.stderr.endsWith('\n') ? done.result.stderr : done.result.stderr + '\n'))
  }
  const files = await downloadArtifacts(client, job.id, outputDir)
  for (const f of files) process.stderr.write(`rgrid: output ${safeName(f)}\n`)
  if (done.state !== 'succeeded') {
    const e = done.result?.error
    process.stderr.write(`rgrid: job ${job.id} ${done.state}${e != null ? `: ${safeName(e.message)}` : ''}\n`)
  }
  return exitCodeOf(done)
}

const VALUE_FLAGS = new Set(['--image', '--cpus', '--memory', '--timeout', '--env', '--label', '--output', '--output-dir', '--attempts', '--coordinator', '--batch', '--parallel'])
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled'])
