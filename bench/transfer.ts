/**
 * Transfer benchmark: one large input through the embedded object store to a
 * node and back as an output. Upload (submitter → coordinator), job (node
 * downloads and hashes the input, the command copies it, the node hashes and
 * uploads the output) and download (submitter ← coordinator) are timed, and
 * the peak resident memory of the coordinator and the node is read from
 * /proc (VmHWM): if transfers streamed, it stays far below the file size.
 *
 * Writes bench/results/transfer-<timestamp>.json and rewrites docs/benchmarks.md.
 * Usage: node dist/bench/transfer.js [--mb 256]
 */
import { parseArgs } from 'node:util'
import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream, mkdtempSync, rmSync, mkdirSync, writeFileSync, readFileSync } from 'node:fs'
import { stat } from 'node:fs/promises'
import { tmpdir, cpus } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { LocalMesh } from '../cli/local-mesh.js'
import { ROOT, commit } from './measure.js'
import { renderBenchmarks } from './report.js'


/** Peak resident set of a process, in MiB. */
function peakMiB (pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find(l => l.startsWith('VmHWM:')) ?? 'VmHWM: 0 kB'
  return Math.round(Number(line.split(/\s+/)[1]) / 1024)
}

async function main (): Promise<void> {
  const { values } = parseArgs({ options: { mb: { type: 'string' } } })
  const mb = Number(values.mb ?? 256)
  const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-transfer-'))
  const file = join(dataDir, 'input.bin')
  // Incompressible-looking content without holding it in memory: a hash chain, 1 MiB at a time.
  {
    let block = createHash('sha256').update('seed').digest()
    const chunks = (function * () {
      for (let i = 0; i < mb; i++) {
        const parts: Buffer[] = []
        for (let j = 0; j < 1024 * 1024 / 32; j++) { block = createHash('sha256').update(block).digest(); parts.push(block) }
        yield Buffer.concat(parts)
      }
    })()
    await pipeline(Readable.from(chunks), createWriteStream(file))
  }
  const hash = createHash('sha256')
  await pipeline(createReadStream(file), hash)
  const sha256 = hash.digest('hex')
  const size = (await stat(file)).size
  const mesh = new LocalMesh({ dataDir, nodes: 1, slots: 1, runtime: 'process', logLevel: 'warn', coordinatorArgs: ['--max-file-mb', String(mb * 2), '--max-job-mb', String(mb * 4)] })
  let result: Record<string, unknown> | null = null
  try {
    await mesh.start()
    await mesh.waitForNodes(1)
    const t0 = Date.now()
    const grant = await (await fetch(`${mesh.httpUrl}/v1/uploads`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sha256, size }) })).json() as { object: string, url: string }
    const put = await fetch(grant.url, { method: 'PUT', body: Readable.toWeb(createReadStream(file)) as ReadableStream, headers: { 'content-length': String(size) }, duplex: 'half' } as RequestInit)
    if (put.status !== 200) throw new Error(`upload: ${put.status} ${await put.text()}`)
    const uploadMs = Date.now() - t0
    const t1 = Date.now()
    const sub = await (await fetch(`${mesh.httpUrl}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ command: ['sh', '-c', 'mkdir out && cp in.bin out/copy.bin'], inputs: [{ path: 'in.bin', object: grant.object }], outputs: [{ path: 'out/*' }], timeoutSeconds: 600 }) })).json() as { id: string }
    for (;;) {
      const job = await (await fetch(`${mesh.httpUrl}/v1/jobs/${sub.id}`)).json() as { state: string, result: unknown }
      if (job.state === 'succeeded') break
      if (job.state === 'failed' || job.state === 'cancelled') throw new Error(`job ${job.state}: ${JSON.stringify(job.result)}`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    const jobMs = Date.now() - t1
    const { artifacts } = await (await fetch(`${mesh.httpUrl}/v1/jobs/${sub.id}/artifacts`)).json() as { artifacts: Array<{ sha256: string, url: string }> }
    const t2 = Date.now()
    const res = await fetch(artifacts[0]!.url)
    const back = createHash('sha256')
    await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), back)
    const downloadMs = Date.now() - t2
    if (back.digest('hex') !== sha256 || artifacts[0]!.sha256 !== sha256) throw new Error('the output does not match the input')
    const coordinator = mesh.processes.find(p => p.name === 'coordinator')!.child.pid!
    const node = mesh.processes.find(p => p.name === 'node-0')!.child.pid!
    const rate = (ms: number): number => Math.round(mb / (ms / 1000))
    result = {
      benchmark: 'transfer', date: new Date().toISOString(), commit: commit(), machine: { cpus: cpus().length, node: process.version },
      config: { mb, store: 'embedded', runtime: 'process' },
      ms: { upload: uploadMs, job: jobMs, download: downloadMs },
      mibPerSecond: { upload: rate(uploadMs), download: rate(downloadMs) },
      peakRssMiB: { coordinator: peakMiB(coordinator), node: peakMiB(node) }
    }
  } finally {
    await mesh.stop()
    rmSync(dataDir, { recursive: true, force: true })
  }
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true })
  const out = join(ROOT, 'bench', 'results', `transfer-${String(result.date).replace(/[:.]/g, '-')}.json`)
  writeFileSync(out, JSON.stringify(result, null, 2) + '\n')
  writeFileSync(join(ROOT, 'docs', 'benchmarks.md'), renderBenchmarks(join(ROOT, 'bench', 'results')))
  process.stdout.write(`${JSON.stringify(result)}\nwritten to ${out}\n`)
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
