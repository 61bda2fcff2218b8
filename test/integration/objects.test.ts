/**
 * Job inputs and outputs end to end with the embedded object store: uploads
 * by content hash (stored once), inputs from objects and from URLs checked
 * against their sha256, outputs by glob uploaded and listed as artifacts,
 * and the refusals: traversal, links out of the work dir, oversized files,
 * corrupted downloads, forged or re-targeted URLs, fenced-off uploads.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createHash } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { submit, waitForAll, waitForJob, TERMINAL } from '../helpers/http.js'
import { RogueSession, startRogue } from '../helpers/rogue.js'
import type { RGridHost } from '../../common/p2p.js'
import { decodeJoinToken } from '../../common/join-token.js'

const sha = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex')
const SCRIPT = 'mkdir -p out; tr a-z A-Z < data.txt > out/upper.csv; wc -c < data.txt > out/count.csv; echo skipped > out/not-matched.txt; echo ran\n'
const DATA = 'hello objects\n'

let mesh: LocalMesh
let dataDir: string
let server: Server
let served: Map<string, string | Buffer>
let base = ''
let rogue: RGridHost | null = null

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-objects-'))
  served = new Map()
  server = createServer((req, res) => {
    const body = served.get(req.url ?? '')
    if (body == null) { res.writeHead(404).end(); return }
    res.writeHead(200, { 'content-length': String(Buffer.byteLength(body)) }).end(body)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  mesh = new LocalMesh({ dataDir, nodes: 2, slots: 2, runtime: 'process', coordinatorArgs: ['--max-file-mb', '1', '--max-job-mb', '2'] })
  await mesh.start()
  await mesh.waitForNodes(2)
}, 120_000)

afterAll(async () => {
  await rogue?.stop()
  await mesh?.stop()
  await new Promise(resolve => server?.close(resolve))
  rmSync(dataDir, { recursive: true, force: true })
})

async function upload (content: string | Buffer): Promise<{ object: string, url: string | null, status: number }> {
  const res = await fetch(`${mesh.httpUrl}/v1/uploads`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sha256: sha(content), size: Buffer.byteLength(content) }) })
  const body = await res.json() as { object: string, url: string | null }
  if (body.url != null) {
    const put = await fetch(body.url, { method: 'PUT', body: content })
    expect(put.status, await put.text()).toBe(200)
  }
  return { ...body, status: res.status }
}

async function stats (): Promise<{ transfers: { uploadsGranted: number, uploadsDeduplicated: number } }> {
  return await (await fetch(`${mesh.httpUrl}/v1/stats`)).json() as { transfers: { uploadsGranted: number, uploadsDeduplicated: number } }
}

describe('inputs and outputs (embedded store)', () => {
  it('runs a job with an uploaded script and a URL input, and lists its outputs as artifacts', async () => {
    const script = await upload(SCRIPT)
    expect(script.status).toBe(201)
    expect(script.object).toBe(`sha256:${sha(SCRIPT)}`)
    served.set('/data.txt', DATA)
    const { status, body } = await submit(mesh.httpUrl, {
      command: ['sh', 'bin/script.sh'],
      inputs: [{ path: 'bin/script.sh', object: script.object }, { path: 'data.txt', url: `${base}/data.txt`, sha256: sha(DATA) }],
      outputs: [{ path: 'out/*.csv' }, { path: 'missing/*' }]
    })
    expect(status, JSON.stringify(body)).toBe(201)
    const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state), 60_000)
    expect(job.state, JSON.stringify(job.result)).toBe('succeeded')
    expect(job.result?.stdout).toBe('ran\n')
    const { artifacts } = await (await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/artifacts`)).json() as { artifacts: Array<{ path: string, size: number, sha256: string, contentType: string, url: string }> }
    expect(artifacts.map(a => a.path)).toEqual(['out/count.csv', 'out/upper.csv'])
    const upper = DATA.toUpperCase()
    expect(artifacts[1]).toMatchObject({ size: upper.length, sha256: sha(upper), contentType: 'text/csv' })
    const got = await fetch(artifacts[1]!.url)
    expect(got.headers.get('content-type')).toBe('text/csv')
    expect(await got.text()).toBe(upper)
    expect((await (await fetch(artifacts[0]!.url)).text()).trim()).toBe(String(DATA.length))
  })

  it('stores the same content once: 20 jobs sharing one script upload it once', async () => {
    const before = await stats()
    const again = await upload(SCRIPT)
    expect(again).toMatchObject({ url: null, status: 200, object: `sha256:${sha(SCRIPT)}` })
    const ids: string[] = []
    // Each submitter uploads before submitting, as a batch script would; only the first one transfers.
    for (let i = 0; i < 20; i++) {
      const u = await upload('echo shared\n')
      const { body } = await submit(mesh.httpUrl, { command: ['sh', 's.sh'], inputs: [{ path: 's.sh', object: u.object }] })
      ids.push(body.id)
    }
    const jobs = await waitForAll(mesh.httpUrl, ids, 60_000)
    for (const j of jobs) expect(j.result?.stdout).toBe('shared\n')
    const after = await stats()
    expect(after.transfers.uploadsGranted - before.transfers.uploadsGranted).toBe(1)
    expect(after.transfers.uploadsDeduplicated - before.transfers.uploadsDeduplicated).toBe(20)
  })

  it('rejects paths that leave the work dir, at submission and on the node', async () => {
    for (const [spec, field] of [
      [{ command: ['true'], inputs: [{ path: '../escape', url: `${base}/data.txt` }] }, 'inputs[0].path'],
      [{ command: ['true'], inputs: [{ path: '/etc/passwd', url: `${base}/data.txt` }] }, 'inputs[0].path'],
      [{ command: ['true'], outputs: [{ path: 'out/../../*' }] }, 'outputs[0].path'],
      [{ command: ['true'], inputs: [{ path: 'a', url: 'file:///etc/passwd' }] }, 'inputs[0].url'],
      [{ command: ['true'], inputs: [{ path: 'a', url: `${base}/x`, object: `sha256:${sha('x')}` }] }, 'inputs[0]'],
      [{ command: ['true'], inputs: [{ path: 'a', object: `sha256:${sha('never uploaded')}` }] }, 'input']
    ] as const) {
      const { status, body } = await submit(mesh.httpUrl, spec)
      expect(status, JSON.stringify(body)).toBe(400)
      expect(body.error.message).toContain(field === 'input' ? 'not stored' : field)
    }
    // A job that links an output to a file outside its work dir: the node refuses to upload it.
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', 'mkdir out; ln -s /etc/hostname out/evil.csv'], outputs: [{ path: 'out/*' }], maxAttempts: 1 })
    const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state), 30_000)
    expect(job.state).toBe('failed')
    expect(job.result?.error).toMatchObject({ code: 'path-outside-workdir', retryable: false })
    expect(job.result?.error?.message).toContain('out/evil.csv')
  })

  it('enforces the size limits before transfer where it can', async () => {
    const big = Buffer.alloc(1024 * 1024 + 1, 'x')
    const res = await fetch(`${mesh.httpUrl}/v1/uploads`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sha256: sha(big), size: big.length }) })
    expect(res.status).toBe(413)
    expect((await res.json() as { error: { code: string } }).error.code).toBe('too-large')
    // A URL signed for n bytes takes no more.
    const small = 'small'
    const grant = await (await fetch(`${mesh.httpUrl}/v1/uploads`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sha256: sha(small), size: small.length }) })).json() as { url: string }
    const over = await fetch(grant.url, { method: 'PUT', body: 'smaller-than-big-but-longer' })
    expect(over.status).toBe(413)
    const wrong = await fetch(grant.url, { method: 'PUT', body: 'SMALL' })
    expect(wrong.status).toBe(400)
    expect((await wrong.json() as { error: { code: string } }).error.code).toBe('sha256-mismatch')
    // An output over the per-file limit fails the attempt for good.
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', 'head -c 1100000 /dev/zero > big.bin'], outputs: [{ path: '*.bin' }], maxAttempts: 1 })
    const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state), 30_000)
    expect(job.result?.error).toMatchObject({ code: 'output-too-large', retryable: false })
  })

  it('fails a corrupted download as retryable, on every attempt, and says so', async () => {
    served.set('/corrupt.txt', 'not what was promised')
    const { body } = await submit(mesh.httpUrl, { command: ['cat', 'in.txt'], inputs: [{ path: 'in.txt', url: `${base}/corrupt.txt`, sha256: sha('what was promised') }], maxAttempts: 2 })
    const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state), 60_000)
    expect(job.state).toBe('failed')
    expect(job.attempts.map(a => a.state)).toEqual(['failed', 'failed'])
    expect(job.result?.error?.message).toMatch(/input-corrupt/)
  })

  it('refuses forged, re-targeted and mis-used object URLs with 403', async () => {
    const content = 'signed content'
    const grant = await (await fetch(`${mesh.httpUrl}/v1/uploads`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sha256: sha(content), size: content.length }) })).json() as { url: string }
    const u = new URL(grant.url)
    const sig = u.searchParams.get('sig')!
    const tampered = new URL(grant.url)
    tampered.searchParams.set('sig', (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1))
    expect((await fetch(tampered, { method: 'PUT', body: content })).status).toBe(403)
    const longer = new URL(grant.url)
    longer.searchParams.set('expires', String(Number(u.searchParams.get('expires')) + 3_600_000))
    expect((await fetch(longer, { method: 'PUT', body: content })).status).toBe(403)
    const retargeted = new URL(grant.url)
    retargeted.pathname = retargeted.pathname.replace(/[0-9a-f]{64}$/, sha('other'))
    expect((await fetch(retargeted, { method: 'PUT', body: content })).status).toBe(403)
    // A PUT URL does not read.
    expect((await fetch(grant.url)).status).toBe(403)
    const ok = await fetch(grant.url, { method: 'PUT', body: content })
    expect(ok.status).toBe(200)
  })

  it('gives no upload URL to an attempt that is not current (fencing)', async () => {
    rogue = await startRogue(mesh)
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', 'echo x > o.txt'], outputs: [{ path: 'o.txt' }] })
    await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state), 30_000)
    const s = await RogueSession.open(rogue, mesh.coordinatorPeerId)
    try {
      await s.send({ type: 'hello', rid: 1, capacity: { slots: 1, freeSlots: 1, cpus: 1, memoryMb: 256, labels: {}, runtime: 'process', version: '0.1.0' }, running: [], join: { id: decodeJoinToken(mesh.joinToken).id, secret: decodeJoinToken(mesh.joinToken).secret } })
      expect((await s.frame()).type).toBe('welcome')
      await s.send({ type: 'outputs', rid: 2, jobId: body.id, attempt: 1, token: '0'.repeat(32), files: [{ path: 'o.txt', size: 2, sha256: sha('x\n'), contentType: 'text/plain' }] })
      expect(await s.frame()).toMatchObject({ type: 'stale', rid: 2, jobId: body.id })
    } finally {
      s.close()
    }
    const events = (await (await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/events`)).json() as { events: Array<{ type: string, detail: Record<string, unknown> }> }).events
    expect(events.filter(e => e.type === 'stale-report' && e.detail.report === 'outputs')).toHaveLength(1)
  })
})
