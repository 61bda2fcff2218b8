/**
 * The same flow against a real S3-protocol server: s3rver, started here on
 * loopback (it checks expiry but not signatures, so signature tests run
 * against the embedded store). The coordinator talks to it with the minio
 * client and creates the bucket; nodes only see presigned URLs.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import S3rver from 's3rver'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { submit, waitForJob, TERMINAL } from '../helpers/http.js'

const sha = (data: string): string => createHash('sha256').update(data).digest('hex')

let s3: S3rver
let mesh: LocalMesh
let dataDir: string
let endpoint = ''

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-s3-'))
  s3 = new S3rver({ address: '127.0.0.1', port: 0, directory: join(dataDir, 's3'), silent: true })
  const { port } = await s3.run()
  endpoint = `127.0.0.1:${port}`
  mesh = new LocalMesh({
    dataDir, nodes: 1, slots: 2, runtime: 'process',
    coordinatorArgs: ['--objects', `s3://S3RVER:S3RVER@${endpoint}/rgrid-test?ssl=false&create=true&region=us-east-1`]
  })
  await mesh.start()
  await mesh.waitForNodes(1)
}, 120_000)

afterAll(async () => {
  await mesh?.stop()
  await s3?.close()
  rmSync(dataDir, { recursive: true, force: true })
})

describe('inputs and outputs (S3 protocol)', () => {
  it('uploads by content hash, runs the job, and serves its outputs from the bucket', async () => {
    const script = 'mkdir -p out; cat data.txt > out/copy.txt; echo two > out/two.txt; echo done\n'
    const data = 'bytes through s3\n'
    const objects: string[] = []
    for (const content of [script, data]) {
      const grant = await (await fetch(`${mesh.httpUrl}/v1/uploads`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sha256: sha(content), size: content.length }) })).json() as { object: string, url: string }
      // The URL points at the S3 server, not at the coordinator.
      expect(grant.url).toContain(`http://${endpoint}/rgrid-test/inputs/${sha(content)}`)
      const put = await fetch(grant.url, { method: 'PUT', body: content, headers: { 'content-length': String(content.length) } })
      expect(put.status).toBe(200)
      objects.push(grant.object)
    }
    const again = await (await fetch(`${mesh.httpUrl}/v1/uploads`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sha256: sha(script), size: script.length }) })).json() as { url: string | null }
    expect(again.url).toBeNull()
    const { status, body } = await submit(mesh.httpUrl, {
      command: ['sh', 'run.sh'],
      inputs: [{ path: 'run.sh', object: objects[0] }, { path: 'data.txt', object: objects[1] }],
      outputs: [{ path: 'out/*.txt' }]
    })
    expect(status, JSON.stringify(body)).toBe(201)
    const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state), 60_000)
    expect(job.state, JSON.stringify(job.result)).toBe('succeeded')
    expect(job.result?.stdout).toBe('done\n')
    const { artifacts } = await (await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/artifacts`)).json() as { artifacts: Array<{ path: string, size: number, sha256: string, url: string }> }
    expect(artifacts.map(a => [a.path, a.size, a.sha256])).toEqual([['out/copy.txt', data.length, sha(data)], ['out/two.txt', 4, sha('two\n')]])
    for (const a of artifacts) expect(a.url).toContain(`http://${endpoint}/rgrid-test/outputs/${body.id}/1/`)
    expect(await (await fetch(artifacts[0]!.url)).text()).toBe(data)
  })

  it('serves outputs as attachments, never as HTML: the presigned URL pins disposition and type, and s3rver applies them', async () => {
    const { status, body } = await submit(mesh.httpUrl, {
      command: ['sh', '-c', 'mkdir -p out; echo "<script>alert(1)</script>" > out/report.html; echo cv > "out/résumé v2.txt"'],
      outputs: [{ path: 'out/*' }]
    })
    expect(status, JSON.stringify(body)).toBe(201)
    const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state), 60_000)
    expect(job.state, JSON.stringify(job.result)).toBe('succeeded')
    const { artifacts } = await (await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/artifacts`)).json() as { artifacts: Array<{ path: string, contentType: string, url: string }> }
    const byPath = new Map(artifacts.map(a => [a.path, a]))
    const html = byPath.get('out/report.html')!
    const resume = byPath.get('out/résumé v2.txt')!
    expect(html.contentType).toBe('text/html')

    // The query the coordinator signed: S3 answers with these headers in place of the stored ones.
    const q = new URL(html.url).searchParams
    expect(q.get('response-content-type')).toBe('application/octet-stream')
    expect(q.get('response-content-disposition')).toBe('attachment; filename="report.html"; filename*=UTF-8\'\'report.html')
    expect(q.get('response-cache-control')).toBe('private')
    expect(new URL(resume.url).searchParams.get('response-content-disposition')).toBe('attachment; filename="resume v2.txt"; filename*=UTF-8\'\'r%C3%A9sum%C3%A9%20v2.txt')

    // s3rver honours response-content-* overrides on signed GETs (its response-header-override
    // middleware), so the headers are checked on the download itself. The node uploaded the
    // HTML with Content-Type text/html; the override replaces it.
    const res = await fetch(html.url)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe('application/octet-stream')
    expect(res.headers.get('content-disposition')).toBe('attachment; filename="report.html"; filename*=UTF-8\'\'report.html')
    expect(res.headers.get('cache-control')).toBe('private')
    expect(await res.text()).toBe('<script>alert(1)</script>\n')
    const res2 = await fetch(resume.url)
    expect(res2.status).toBe(200)
    expect(res2.headers.get('content-type')).toBe('text/plain')
    expect(res2.headers.get('content-disposition')).toBe('attachment; filename="resume v2.txt"; filename*=UTF-8\'\'r%C3%A9sum%C3%A9%20v2.txt')
    expect(await res2.text()).toBe('cv\n')
  })

  it('refuses a job naming an object the bucket does not hold', async () => {
    const { status, body } = await submit(mesh.httpUrl, { command: ['true'], inputs: [{ path: 'x', object: `sha256:${sha('absent')}` }] })
    expect(status).toBe(400)
    expect(body.error.code).toBe('input-missing')
  })
})
