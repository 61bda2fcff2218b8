#!/usr/bin/env node
/**
 * rgrid: the submitter's and researcher's command line: `rgrid dev` here,
 * the submitter commands in commands.ts.
 */
import { createHash } from 'node:crypto'
import { parseArgs } from 'node:util'
import { dirname, join, resolve } from 'node:path'
import { mkdir, readFile, rm } from 'node:fs/promises'
import { LocalMesh } from './local-mesh.js'
import { SUBMIT_HELP, submitCommand } from './commands.js'
import { loadTraceFiles, parseScenario } from './sim/scenario.js'
import { runScenario } from './sim/run.js'
import { usageError } from '../common/lifecycle.js'
import { errorMessage } from '../common/errors.js'

const HELP = `Usage: rgrid dev [--nodes 3] [--http 127.0.0.1:8080] [--runtime process|docker] [--slots 4] [--samples]

Starts a bootstrap peer, a coordinator and N nodes on loopback, each its own
process, with embedded defaults (SQLite store). Prints the HTTP endpoint and
runs until Ctrl-C, then stops them all.

  --nodes N          nodes to start                             [3]
  --http HOST:PORT   coordinator HTTP address                   [127.0.0.1:8080]
  --runtime R        process (no Docker needed) or docker       [process]
  --slots N          slots per node                             [4]
  --data-dir DIR     state and logs                             [./.rgrid/dev]
  --fresh            delete DIR first
  --samples          submit a few sample jobs and print their results
`

interface JobView { id: string, state: string, result: { exitCode: number | null, stdout: string, stderr: string, error: { message: string } | null } | null, attempts: Array<{ node: string }> }

/** Uploads `content` as a job input the way a submitter would; returns its object id. */
async function uploadInput (url: string, content: string, auth: Record<string, string>): Promise<string> {
  const sha256 = createHash('sha256').update(content).digest('hex')
  const res = await fetch(`${url}/v1/uploads`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify({ sha256, size: Buffer.byteLength(content) }) })
  const grant = await res.json() as { object: string, url: string | null }
  if (res.status >= 300) throw new Error(`upload refused: ${res.status} ${JSON.stringify(grant)}`)
  if (grant.url != null) {
    const put = await fetch(grant.url, { method: 'PUT', body: content })
    if (put.status !== 200) throw new Error(`upload failed: ${put.status} ${await put.text()}`)
  }
  return grant.object
}

async function samples (url: string, apiKey: string): Promise<void> {
  const auth = { authorization: `Bearer ${apiKey}` }
  const script = 'mkdir -p out\nfor n in 1 2 3 4 5; do echo "$n,$((n * n))"; done > out/squares.csv\necho "wrote $(wc -l < out/squares.csv) rows"\n'
  const jobs = [
    { command: ['echo', 'hello from an rgrid node'] },
    { command: ['sh', 'squares.sh'], inputs: [{ path: 'squares.sh', object: await uploadInput(url, script, auth) }], outputs: [{ path: 'out/*.csv' }] },
    { command: ['sh', '-c', 'echo "running as pid $$ on $(uname -s)"; echo "to stderr" >&2'] },
    { command: [process.execPath, '-e', 'console.log("6 * 7 =", 6 * 7)'] },
    { command: ['sh', '-c', 'echo failing on purpose; exit 3'] }
  ]
  const ids: string[] = []
  for (const spec of jobs) {
    const res = await fetch(`${url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify(spec) })
    const body = await res.json() as { id: string }
    if (res.status !== 201) throw new Error(`submit failed: ${res.status} ${JSON.stringify(body)}`)
    ids.push(body.id)
    process.stdout.write(`submitted ${body.id}: ${spec.command.join(' ')}\n`)
  }
  const deadline = Date.now() + 60_000
  const pending = new Set(ids)
  while (pending.size > 0 && Date.now() < deadline) {
    for (const id of [...pending]) {
      const job = await (await fetch(`${url}/v1/jobs/${id}`, { headers: auth })).json() as JobView
      if (!['succeeded', 'failed', 'cancelled'].includes(job.state)) continue
      pending.delete(id)
      const node = job.attempts.at(-1)?.node.slice(-8) ?? '?'
      process.stdout.write(`\n${id} ${job.state} on node …${node} (exit ${job.result?.exitCode ?? '-'})\n`)
      if (job.result?.stdout) process.stdout.write(`  stdout: ${job.result.stdout.trimEnd()}\n`)
      if (job.result?.stderr) process.stdout.write(`  stderr: ${job.result.stderr.trimEnd()}\n`)
      if (job.result?.error) process.stdout.write(`  error:  ${job.result.error.message}\n`)
      const { artifacts } = await (await fetch(`${url}/v1/jobs/${id}/artifacts`, { headers: auth })).json() as { artifacts: Array<{ path: string, size: number, url: string }> }
      for (const a of artifacts) process.stdout.write(`  output: ${a.path} (${a.size} bytes) ${a.url}\n`)
    }
    if (pending.size > 0) await new Promise(resolve => setTimeout(resolve, 100))
  }
  if (pending.size > 0) process.stdout.write(`\n${pending.size} sample jobs did not finish within 60 s\n`)
}

async function dev (argv: string[]): Promise<void> {
  let args
  try {
    args = parseArgs({
      args: argv,
      options: {
        nodes: { type: 'string' }, http: { type: 'string' }, runtime: { type: 'string' }, slots: { type: 'string' },
        'data-dir': { type: 'string' }, fresh: { type: 'boolean' }, samples: { type: 'boolean' }, help: { type: 'boolean', short: 'h' }
      },
      strict: true
    }).values
  } catch (err) {
    usageError('rgrid dev', (err as Error).message)
  }
  if (args.help === true) { process.stdout.write(HELP); return }
  const nodes = Number(args.nodes ?? 3)
  const slots = Number(args.slots ?? 4)
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 200) usageError('rgrid dev', '--nodes must be an integer from 1 to 200')
  if (!Number.isInteger(slots) || slots < 1) usageError('rgrid dev', '--slots must be a positive integer')
  const runtime = args.runtime ?? 'process'
  if (runtime !== 'process' && runtime !== 'docker') usageError('rgrid dev', '--runtime must be process or docker')
  const dataDir = resolve(args['data-dir'] ?? join('.rgrid', 'dev'))
  if (args.fresh === true) await rm(dataDir, { recursive: true, force: true })
  await mkdir(dataDir, { recursive: true })
  const mesh = new LocalMesh({ dataDir, nodes, slots, runtime, http: args.http ?? '127.0.0.1:8080', apiKeys: true })
  let stopping = false
  const stop = async (): Promise<void> => {
    if (stopping) return
    stopping = true
    process.stdout.write('\nstopping the mesh…\n')
    await mesh.stop()
    process.stdout.write('stopped\n')
    process.exit(0)
  }
  process.on('SIGINT', () => { void stop() })
  process.on('SIGTERM', () => { void stop() })
  let apiKey = ''
  try {
    await mesh.start()
    await mesh.waitForNodes(nodes)
    apiKey = mesh.apiKey
  } catch (err) {
    process.stderr.write(`rgrid dev: ${errorMessage(err)}\n`)
    await mesh.stop()
    process.exit(1)
  }
  process.stdout.write(`RGrid dev mesh: ${nodes} nodes (${runtime} runtime), logs in ${join(dataDir, 'logs')}\n`)
  process.stdout.write(`coordinator HTTP API: ${mesh.httpUrl}   dashboard: ${mesh.httpUrl}/\n`)
  process.stdout.write(`join token for more nodes: ${mesh.joinToken}\n`)
  process.stdout.write(`API key (admin; make more with rgrid-coordinator key create --data-dir ${join(dataDir, 'coordinator')}): ${apiKey}\n`)
  process.stdout.write(`  try: export RGRID_API_KEY=${apiKey} RGRID_COORDINATOR=${mesh.httpUrl}; npx rgrid nodes; npx rgrid run script.sh\n`)
  process.stdout.write(`   or: curl -s -XPOST ${mesh.httpUrl}/v1/jobs -H "authorization: Bearer $RGRID_API_KEY" -H 'content-type: application/json' -d '{"command":["echo","hi"]}'\n`)
  if (args.samples === true) await samples(mesh.httpUrl, apiKey)
  process.stdout.write('\nmesh running; press Ctrl-C to stop\n')
}

/** `rgrid sim SCENARIO.yaml [--out DIR] [--seed N]`. */
async function sim (argv: string[]): Promise<void> {
  let parsed
  try {
    parsed = parseArgs({ args: argv, options: { out: { type: 'string' }, seed: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true })
  } catch (err) {
    usageError('rgrid sim', (err as Error).message)
  }
  if (parsed.values.help === true || parsed.positionals.length !== 1) {
    process.stdout.write('Usage: rgrid sim SCENARIO.yaml [--out DIR] [--seed N]\n\nRuns a scenario (mesh, workload, fault timeline) on loopback with the sim runtime and writes\nsummary.json, jobs.csv/json, faults.json, SVG plots and report.html to DIR [./sim-out/NAME-SEED].\nSee bench/scenarios/ and docs/simulations.md.\n')
    if (parsed.values.help !== true) process.exitCode = 2
    return
  }
  const file = parsed.positionals[0]!
  let scenario
  try {
    scenario = await loadTraceFiles(parseScenario(await readFile(file, 'utf8'), file), file, async p => await readFile(resolve(dirname(resolve(file)), p), 'utf8'))
  } catch (err) {
    process.stderr.write(`rgrid sim: ${errorMessage(err)}\n`)
    process.exitCode = 2
    return
  }
  const seed = parsed.values.seed != null ? Number(parsed.values.seed) : scenario.seed
  if (!Number.isInteger(seed) || seed < 0) usageError('rgrid sim', '--seed must be a non-negative integer')
  const out = resolve(parsed.values.out ?? join('sim-out', `${scenario.name.replace(/[^A-Za-z0-9._-]+/g, '-')}-${seed}`))
  const summary = await runScenario(scenario, { outDir: out, seed, log: line => { process.stderr.write(`rgrid sim: ${line}\n`) } })
  process.stdout.write(JSON.stringify(summary, null, 2) + '\n')
  process.stderr.write(`rgrid sim: report in ${join(out, 'report.html')}\n`)
  if ((summary.lost as number) > 0 || (summary.duplicates as number) > 0) process.exitCode = 1
}

async function main (): Promise<void> {
  const [command, ...rest] = process.argv.slice(2)
  if (command === 'dev') return await dev(rest)
  if (command === 'sim') return await sim(rest)
  if (command == null || command === '--help' || command === '-h' || command === 'help') { process.stdout.write(SUBMIT_HELP); return }
  process.exitCode = await submitCommand(command, rest)
}

main().catch((err: unknown) => {
  process.stderr.write(`rgrid: ${errorMessage(err)}\n`)
  process.exit(1)
})
