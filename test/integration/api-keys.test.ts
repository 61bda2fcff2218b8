/**
 * Submitters' API keys and job secrets on a real mesh (processes over TCP):
 * keys made with `rgrid-coordinator key create` are required, scope what a
 * key sees, and can be revoked; a job's secretEnv reaches the job, is masked
 * in its output and live log, and is not in the database in clear.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { until } from '../helpers/rogue.js'

let mesh: LocalMesh
let dataDir: string
let alice: string
let bob: string

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-keys-'))
  mesh = new LocalMesh({ dataDir, nodes: 1, slots: 2, runtime: 'process', apiKeys: true })
  await mesh.start()
  await mesh.waitForNodes(1)
  alice = await mesh.createApiKey('alice')
  bob = await mesh.createApiKey('bob')
}, 120_000)

afterAll(async () => {
  await mesh?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

const call = async (key: string | null, path: string, init: RequestInit = {}): Promise<{ status: number, body: any }> => {
  const res = await fetch(`${mesh.httpUrl}${path}`, { ...init, headers: { ...(init.headers as Record<string, string> ?? {}), ...(key != null ? { authorization: `Bearer ${key}` } : {}) } })
  return { status: res.status, body: await res.json() }
}
const post = async (key: string | null, path: string, body: unknown): Promise<{ status: number, body: any }> =>
  await call(key, path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })

async function finished (key: string, id: string): Promise<any> {
  return await until(`job ${id} to end`, async () => {
    const { body } = await call(key, `/v1/jobs/${id}`)
    return ['succeeded', 'failed', 'cancelled'].includes(body.state) ? body : undefined
  }, 30_000)
}

describe('API keys on a running coordinator', () => {
  it('key create prints a key once; requests without one are refused with 401', async () => {
    expect(alice).toMatch(/^rgk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/)
    const none = await post(null, '/v1/jobs', { command: ['echo', 'x'] })
    expect(none.status).toBe(401)
    expect(none.body.error.code).toBe('unauthorized')
    const list = await mesh.coordinatorCommand(['key', 'list', '--data-dir', join(dataDir, 'coordinator')])
    expect(list).toMatch(/alice/)
    // The secret is base64url and may itself contain '_', so take everything after the id.
    const secret = alice.slice('rgk_'.length + 16 + 1)
    expect(secret).toHaveLength(43)
    expect(list).not.toContain(secret)
  })

  it('each key sees and cancels only its own jobs', async () => {
    const a = await post(alice, '/v1/jobs', { command: ['sleep', '30'] })
    expect(a.status).toBe(201)
    expect((await call(bob, `/v1/jobs/${a.body.id}`)).status).toBe(404)
    expect((await post(bob, `/v1/jobs/${a.body.id}/cancel`, {})).status).toBe(404)
    expect((await call(bob, '/v1/jobs')).body.jobs.map((j: { id: string }) => j.id)).not.toContain(a.body.id)
    expect((await call(alice, '/v1/jobs')).body.jobs.map((j: { id: string }) => j.id)).toContain(a.body.id)
    expect((await call(mesh.apiKey, '/v1/jobs')).body.jobs.map((j: { id: string }) => j.id)).toContain(a.body.id)
    expect((await post(alice, `/v1/jobs/${a.body.id}/cancel`, {})).status).toBe(200)
  })

  it('secretEnv reaches the job, is masked in its output and log, and is not stored in clear', async () => {
    const secret = 'hunter2-' + Math.random().toString(36).slice(2)
    const sha = createHash('sha256').update(secret).digest('hex')
    // The job checks the value by its hash, so the secret itself appears nowhere but in secretEnv.
    const { status, body } = await post(alice, '/v1/jobs', {
      command: ['sh', '-c', 'echo "token=$TOKEN"; echo "again $TOKEN" >&2; test "$(printf %s "$TOKEN" | sha256sum | cut -d" " -f1)" = "$SHA"'],
      env: { SHA: sha },
      secretEnv: { TOKEN: secret }
    })
    expect(status).toBe(201)
    expect(body.spec.secretEnv).toEqual({ TOKEN: '[redacted]' })
    const job = await finished(alice, body.id)
    expect(job.state).toBe('succeeded')
    expect(job.result.stdout).toBe('token=***\n')
    expect(job.result.stderr).toBe('again ***\n')
    const logs = await call(alice, `/v1/jobs/${body.id}/logs`)
    expect(logs.body.lines.map((l: { text: string }) => l.text).sort()).toEqual(['again ***', 'token=***'])
    for (const path of [`/v1/jobs/${body.id}`, '/v1/jobs', `/v1/jobs/${body.id}/events`]) {
      expect(JSON.stringify((await call(alice, path)).body)).not.toContain(secret)
    }
    // The coordinator's SQLite files (database and write-ahead log) never hold the value in clear.
    const dir = join(dataDir, 'coordinator')
    for (const f of readdirSync(dir).filter(n => n.startsWith('coordinator.db'))) {
      expect(readFileSync(join(dir, f)).includes(Buffer.from(secret)), f).toBe(false)
    }
  })

  it('a revoked key is refused within its cache time', async () => {
    const carol = await mesh.createApiKey('carol')
    expect((await call(carol, '/v1/jobs')).status).toBe(200)
    const id = carol.split('_')[1]!
    await mesh.coordinatorCommand(['key', 'revoke', id, '--data-dir', join(dataDir, 'coordinator')])
    await until('the revoked key to be refused', async () => (await call(carol, '/v1/jobs')).status === 401 ? true : undefined, 10_000, 200)
  })
})
