/**
 * What operators and tools read: Prometheus metrics on the coordinator and on
 * a node, and the OpenAPI document, which must describe every route the
 * server has.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { createHttpApp } from '../../coordinator/http.js'
import type { CoordinatorApi } from '../../coordinator/coordinator.js'
import { silentLogger } from '../../common/log.js'
import { submit, waitForAll } from '../helpers/http.js'

let mesh: LocalMesh
let dataDir: string
let nodeMetrics = ''

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => { const a = s.address(); s.close(() => { resolve(typeof a === 'object' && a != null ? a.port : 0) }) })
  })
}

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-obs-'))
  const port = await freePort()
  nodeMetrics = `http://127.0.0.1:${port}/metrics`
  mesh = new LocalMesh({ dataDir, nodes: 1, slots: 2, runtime: 'process', nodeArgs: () => ['--metrics', `127.0.0.1:${port}`] })
  await mesh.start()
  await mesh.waitForNodes(1)
}, 120_000)

afterAll(async () => {
  await mesh?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

/** The value of one sample line, e.g. `rgrid_jobs{state="succeeded"}`. */
function sample (text: string, name: string): number {
  const line = text.split('\n').find(l => l.startsWith(name + ' '))
  if (line == null) throw new Error(`no sample ${name} in:\n${text}`)
  return Number(line.slice(name.length + 1))
}

describe('observability', () => {
  it('serves Prometheus metrics on the coordinator and the node that follow the work done', async () => {
    const ids: string[] = []
    for (let i = 0; i < 5; i++) ids.push((await submit(mesh.httpUrl, { command: ['echo', String(i)] })).body.id)
    await waitForAll(mesh.httpUrl, ids)
    const res = await fetch(`${mesh.httpUrl}/metrics`)
    expect(res.headers.get('content-type')).toContain('text/plain; version=0.0.4')
    const text = await res.text()
    expect(sample(text, 'rgrid_jobs{state="succeeded"}')).toBe(5)
    expect(sample(text, 'rgrid_announce_to_award_seconds_count')).toBeGreaterThanOrEqual(5)
    expect(sample(text, 'rgrid_announce_to_award_seconds_bucket{le="+Inf"}')).toBe(sample(text, 'rgrid_announce_to_award_seconds_count'))
    expect(sample(text, 'rgrid_nodes{session="open"}')).toBe(1)
    expect(sample(text, 'rgrid_awards_total')).toBeGreaterThanOrEqual(5)
    expect(text).toMatch(new RegExp(`rgrid_node_heartbeat_age_seconds\\{node="${mesh.nodePeerIds[0]}"\\} \\d`))
    // Every family has HELP and TYPE.
    const families = new Set(text.split('\n').filter(l => l.startsWith('# TYPE ')).map(l => l.split(' ')[2]))
    for (const l of text.split('\n').filter(l => l !== '' && !l.startsWith('#'))) {
      const name = l.split(/[{ ]/)[0]!.replace(/_(bucket|sum|count)$/, '')
      expect(families.has(name) || families.has(l.split(/[{ ]/)[0]!), l).toBe(true)
    }
    const node = await (await fetch(nodeMetrics)).text()
    expect(sample(node, 'rgrid_node_slots')).toBe(2)
    expect(sample(node, 'rgrid_node_awards_total')).toBeGreaterThanOrEqual(5)
    expect(sample(node, 'rgrid_node_connections')).toBeGreaterThan(0)
    expect((await fetch(nodeMetrics.replace('/metrics', '/other'))).status).toBe(404)
  })

  it('publishes an OpenAPI 3.1 document that describes every route the server has', async () => {
    const doc = await (await fetch(`${mesh.httpUrl}/v1/openapi.json`)).json() as { openapi: string, paths: Record<string, Record<string, unknown>>, components: { schemas: Record<string, { properties?: Record<string, unknown> }> } }
    expect(doc.openapi).toBe('3.1.0')
    const app = createHttpApp({ api: {} as CoordinatorApi, log: silentLogger, objects: { handle: async () => new Response(null) } })
    const routes = app.routes
      .filter(r => r.method !== 'ALL')
      .map(r => ({ method: r.method.toLowerCase(), path: r.path.replace(/:(\w+)/g, '{$1}').replace(/\/\*$/, '/{key}') }))
    expect(routes.length).toBeGreaterThan(10)
    for (const r of routes) {
      if (r.method === 'head') continue
      expect(doc.paths[r.path]?.[r.method], `${r.method.toUpperCase()} ${r.path} is not in the OpenAPI document`).toBeDefined()
    }
    // The request schema is the validator's own: new spec fields appear without editing the document.
    expect(Object.keys(doc.components.schemas.JobSpec!.properties ?? {})).toEqual(expect.arrayContaining(['command', 'inputs', 'outputs', 'batch', 'maxAttempts']))
  })
})
