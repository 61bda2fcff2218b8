/**
 * Checks the fake Hetzner Cloud API (test/helpers/fake-hetzner.ts) against
 * the real client that Hetzner ships: Debian's `hcloud` CLI, pointed at the
 * fake with HCLOUD_ENDPOINT. Each step asserts both what the CLI printed and
 * what the fake recorded. Without the binary these tests skip with the
 * reason, except under CI=true, where that is a failure (.ci/run installs
 * hcloud-cli).
 */
import { describe, it, expect, beforeAll, beforeEach, afterEach, type TestContext } from 'vitest'
import { execFile, spawnSync } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FakeHetzner } from '../helpers/fake-hetzner.js'

let missing: string | null = null
let fake: FakeHetzner
let url: string
let dir: string

beforeAll(() => {
  const probe = spawnSync('hcloud', ['--help'], { stdio: 'ignore', timeout: 10_000 })
  if (probe.error != null || probe.status !== 0) {
    missing = `the hcloud CLI cannot run (${probe.error?.message ?? `exit ${probe.status}`}); apt-get install hcloud-cli`
    if (process.env.CI === 'true') throw new Error(`CI=true but the hcloud CLI tests cannot run: ${missing}`)
    console.warn(`[hcloud CLI tests skipped] ${missing}`)
  }
})

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rgrid-hcloud-'))
  fake = new FakeHetzner({ token: 'test-token-0123456789' })
  url = await fake.start()
})

afterEach(async () => {
  await fake.stop()
  await rm(dir, { recursive: true, force: true })
})

function needCli (ctx: TestContext): void {
  if (missing !== null) ctx.skip(missing)
}

interface CliResult { code: number, stdout: string, stderr: string }

/** Runs hcloud against the fake, with no config file of the user's in the way. */
async function hcloud (args: string[], opts: { token?: string, fake?: FakeHetzner } = {}): Promise<CliResult> {
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: dir,
    HCLOUD_CONFIG: join(dir, 'cli.toml'),
    HCLOUD_ENDPOINT: opts.fake?.url ?? url,
    HCLOUD_TOKEN: opts.token ?? fake.token
  }
  return await new Promise(resolve => {
    execFile('hcloud', ['--poll-interval', '50ms', ...args], { env, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err == null ? 0 : typeof (err as any).code === 'number' ? (err as any).code as number : -1
      resolve({ code, stdout, stderr })
    })
  })
}

async function ok (args: string[], opts: { token?: string, fake?: FakeHetzner } = {}): Promise<string> {
  const r = await hcloud(args, opts)
  if (r.code !== 0) throw new Error(`hcloud ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`)
  return r.stdout
}

/** Creates a server straight through the API (faster than the CLI for bulk). */
async function apiCreate (name: string, labels: Record<string, string>): Promise<any> {
  const res = await fetch(`${url}/servers`, {
    method: 'POST',
    headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name, server_type: 'cx22', image: 'debian-12', location: 'nbg1', labels })
  })
  expect(res.status).toBe(201)
  return await res.json()
}

const requests = (method: string, path: string): Array<{ query: URLSearchParams, body: any }> =>
  fake.requests.filter(r => r.method === method && r.path === path)

describe('hcloud CLI against the fake Hetzner API', () => {
  it('server-type list shows the catalogue with prices per location', async ctx => {
    needCli(ctx)
    const types = JSON.parse(await ok(['server-type', 'list', '-o', 'json'])) as any[]
    const cx22 = types.find(t => t.name === 'cx22')
    expect(cx22).toMatchObject({ id: 104, cores: 2, memory: 4, disk: 40, cpu_type: 'shared', storage_type: 'local' })
    expect(cx22.prices.map((p: any) => p.location)).toEqual(['fsn1', 'nbg1', 'hel1'])
    expect(cx22.prices[0]).toEqual({
      location: 'fsn1',
      price_hourly: { net: '0.0060000000', gross: '0.0071400000000000' },
      price_monthly: { net: '3.7900000000', gross: '4.5101000000000000' }
    })
    const table = await ok(['server-type', 'list'])
    expect(table).toMatch(/^ID\s+NAME\s+CORES/)
    expect(table).toMatch(/104\s+cx22\s+2\s+shared\s+4\.0 GB\s+40 GB/)
    const gets = requests('GET', '/v1/server_types')
    expect(gets).toHaveLength(2)
    expect(gets[0]!.query.get('per_page')).toBe('50')
  })

  it('location list shows the five locations', async ctx => {
    needCli(ctx)
    const locations = JSON.parse(await ok(['location', 'list', '-o', 'json'])) as any[]
    expect(locations.map(l => l.name)).toEqual(['fsn1', 'nbg1', 'hel1', 'ash', 'hil'])
    expect(locations[0]).toMatchObject({ id: 1, country: 'DE', city: 'Falkenstein', network_zone: 'eu-central' })
    expect(requests('GET', '/v1/locations')).toHaveLength(1)
  })

  it('creates, lists by label, describes and deletes a server', async ctx => {
    needCli(ctx)
    const userData = '#cloud-config\nruncmd:\n  - [echo, rgrid]\n'
    const file = join(dir, 'user-data.yaml')
    await writeFile(file, userData)

    // create
    const out = await ok(['server', 'create', '--name', 'x', '--type', 'cx22', '--image', 'debian-12', '--location', 'fsn1', '--label', 'rgrid=managed', '--user-data-from-file', file])
    const [created] = fake.servers()
    expect(fake.servers()).toHaveLength(1)
    expect(fake.createdCount).toBe(1)
    expect(out).toContain(`Server ${created.id} created`)
    expect(out).toContain(`IPv4: ${created.public_net.ipv4.ip}`)
    expect(out).toMatch(/^Root password: \S+$/m)
    expect(created).toMatchObject({ name: 'x', status: 'running', labels: { rgrid: 'managed' }, server_type: { name: 'cx22' }, datacenter: { location: { name: 'fsn1' } } })
    expect(fake.userData(created.id)).toBe(userData)
    // The CLI resolves the image to its id itself and sends type and location by name.
    const [post] = requests('POST', '/v1/servers')
    expect(post!.body).toMatchObject({ name: 'x', server_type: 'cx22', image: 114690387, location: 'fsn1', labels: { rgrid: 'managed' }, user_data: userData, start_after_create: true })
    expect(requests('GET', '/v1/images')[0]!.query.get('name')).toBe('debian-12')
    // It waited for create_server and then start_server before printing.
    expect(fake.requests.some(r => r.path === '/v1/actions' || r.path.startsWith('/v1/actions/'))).toBe(true)

    // label selector: a server without the label is not listed
    const other = await apiCreate('other', { team: 'b' })
    const listed = JSON.parse(await ok(['server', 'list', '-l', 'rgrid=managed', '-o', 'json'])) as any[]
    expect(listed.map(s => s.id)).toEqual([created.id])
    expect(listed[0]).toMatchObject({ name: 'x', status: 'running', labels: { rgrid: 'managed' } })
    expect(requests('GET', '/v1/servers').at(-1)!.query.get('label_selector')).toBe('rgrid=managed')
    const unlabelled = JSON.parse(await ok(['server', 'list', '-l', '!rgrid', '-o', 'json'])) as any[]
    expect(unlabelled.map(s => s.id)).toEqual([other.server.id])
    const table = await ok(['server', 'list'])
    expect(table).toMatch(new RegExp(`${created.id}\\s+x\\s+running\\s+${created.public_net.ipv4.ip.replace(/\./g, '\\.')}`))

    // describe, by name and by id
    const described = JSON.parse(await ok(['server', 'describe', 'x', '-o', 'json']))
    expect(described).toMatchObject({
      id: created.id,
      name: 'x',
      status: 'running',
      labels: { rgrid: 'managed' },
      server_type: { name: 'cx22', cores: 2, memory: 4 },
      datacenter: { name: 'fsn1-dc14', location: { name: 'fsn1' } },
      image: { name: 'debian-12', type: 'system' },
      public_net: { ipv4: { ip: created.public_net.ipv4.ip } }
    })
    expect(described).not.toHaveProperty('user_data')
    const text = await ok(['server', 'describe', String(created.id)])
    expect(text).toMatch(/^Name:\s+x$/m)
    expect(text).toMatch(/rgrid: managed/)

    // delete
    const del = await hcloud(['server', 'delete', 'x'])
    expect(del).toMatchObject({ code: 0, stdout: 'Server x deleted\n' })
    expect(requests('DELETE', `/v1/servers/${created.id}`)).toHaveLength(1)
    expect(fake.deletedCount).toBe(1)
    expect(fake.servers().map(s => s.name)).toEqual(['other'])
    expect(fake.userData(created.id)).toBe(userData)
    const gone = await hcloud(['server', 'describe', 'x'])
    expect(gone.code).not.toBe(0)
    expect(gone.stderr).toContain('server not found: x')
  })

  it('lists every server across pages', async ctx => {
    needCli(ctx)
    for (let i = 0; i < 57; i++) await apiCreate(`w-${i}`, { rgrid: 'managed' })
    for (let i = 0; i < 3; i++) await apiCreate(`other-${i}`, {})
    const listed = JSON.parse(await ok(['server', 'list', '-l', 'rgrid=managed', '-o', 'json'])) as any[]
    expect(listed).toHaveLength(57)
    expect(listed.map(s => s.name)).toEqual(Array.from({ length: 57 }, (_, i) => `w-${i}`))
    const pages = requests('GET', '/v1/servers').map(r => [r.query.get('page'), r.query.get('per_page')])
    expect(pages).toEqual([['1', '50'], ['2', '50']])
    // The pagination block itself, as the API documents it.
    const res = await fetch(`${url}/servers?label_selector=rgrid%3Dmanaged&per_page=25&page=2`, { headers: { authorization: `Bearer ${fake.token}` } })
    const body = await res.json() as any
    expect(body.servers).toHaveLength(25)
    expect(body.meta.pagination).toEqual({ page: 2, per_page: 25, previous_page: 1, next_page: 3, last_page: 3, total_entries: 57 })
    expect(res.headers.get('link')).toContain('rel="next"')
  })

  it('a wrong token: the CLI exits non-zero with the API message and nothing changes', async ctx => {
    needCli(ctx)
    const r = await hcloud(['server', 'create', '--name', 'y', '--type', 'cx22', '--image', 'debian-12'], { token: 'wrong-token' })
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain('unable to authenticate (unauthorized)')
    expect(fake.createdCount).toBe(0)
    const list = await hcloud(['server', 'list'], { token: 'wrong-token' })
    expect(list.code).not.toBe(0)
    expect(list.stderr).toContain('unable to authenticate (unauthorized)')
  })

  it('a name already taken: 409 uniqueness_error', async ctx => {
    needCli(ctx)
    await apiCreate('dup', {})
    const r = await hcloud(['server', 'create', '--name', 'dup', '--type', 'cx22', '--image', 'debian-12'])
    expect(r.code).not.toBe(0)
    expect(r.stderr).toContain('server name is already used (uniqueness_error)')
    expect(fake.createdCount).toBe(1)
  })

  it('an unknown server type or location: 422 invalid_input', async ctx => {
    needCli(ctx)
    const t = await hcloud(['server', 'create', '--name', 'z', '--type', 'cx999', '--image', 'debian-12'])
    expect(t.code).not.toBe(0)
    expect(t.stderr).toContain("invalid input in field 'server_type' (invalid_input)")
    const l = await hcloud(['server', 'create', '--name', 'z', '--type', 'cx22', '--image', 'debian-12', '--location', 'mars1'])
    expect(l.code).not.toBe(0)
    expect(l.stderr).toContain("invalid input in field 'location' (invalid_input)")
    expect(fake.createdCount).toBe(0)
  })

  it('a 429 injected once: this CLI does not retry it; a 409 conflict it does retry', async ctx => {
    needCli(ctx)
    await apiCreate('a', {})
    fake.failNext('GET /servers', 429, 'rate_limit_exceeded')
    const limited = await hcloud(['server', 'list', '-o', 'noheader'])
    // hcloud 1.30 (hcloud-go v1) gives up at once, RateLimit-Reset or not.
    expect(limited).toMatchObject({ code: 1, stdout: '' })
    expect(limited.stderr).toBe('hcloud: limit of 3600 requests per hour reached (rate_limit_exceeded)\n')
    expect(requests('GET', '/v1/servers')).toHaveLength(1)
    // The fault was used once: the next run goes through.
    expect(await ok(['server', 'list', '-o', 'noheader', '-o', 'columns=name'])).toBe('a\n')
    expect(requests('GET', '/v1/servers')).toHaveLength(2)
    // A 429 on the create itself: no retry, nothing created.
    fake.failNext('POST /servers', 429, 'rate_limit_exceeded')
    const create = await hcloud(['server', 'create', '--name', 'b', '--type', 'cx22', '--image', 'debian-12'])
    expect(create.code).toBe(1)
    expect(create.stderr).toContain('(rate_limit_exceeded)')
    expect(requests('POST', '/v1/servers')).toHaveLength(2) // apiCreate('a') and this one
    expect(fake.createdCount).toBe(1)
    // The only error code hcloud-go v1 retries (after a backoff) is `conflict`.
    fake.failNext('GET /servers', 409, 'conflict')
    expect(await ok(['server', 'list', '-o', 'noheader', '-o', 'columns=name'])).toBe('a\n')
    expect(requests('GET', '/v1/servers')).toHaveLength(4)
  })

  it('a 503 on create and a failed create action', async ctx => {
    needCli(ctx)
    fake.failNext('POST /v1/servers', 503, 'unavailable')
    const down = await hcloud(['server', 'create', '--name', 'c', '--type', 'cx22', '--image', 'debian-12'])
    expect(down.code).toBe(1)
    expect(down.stderr).toBe('hcloud: service temporarily unavailable (unavailable)\n')
    expect(fake.createdCount).toBe(0)
    fake.failNextAction('create_server', 'action_failed', 'Action failed')
    const failed = await hcloud(['server', 'create', '--name', 'c', '--type', 'cx22', '--image', 'debian-12'])
    expect(failed.code).toBe(1)
    expect(failed.stderr).toMatch(/^hcloud: action \d+ failed: Action failed \(action_failed\)$/m)
    expect(fake.servers()).toMatchObject([{ name: 'c', status: 'off' }])
  })

  it('waits for a slow create action', async ctx => {
    needCli(ctx)
    fake.actionDelayMs = 1500
    const started = Date.now()
    const out = await ok(['server', 'create', '--name', 'slow', '--type', 'cx22', '--image', 'debian-12'])
    expect(Date.now() - started).toBeGreaterThanOrEqual(1500)
    expect(out).toMatch(/Server \d+ created/)
    expect(fake.servers()[0]!.status).toBe('running')
    const polls = fake.requests.filter(r => r.path.startsWith('/v1/actions')).length
    expect(polls).toBeGreaterThan(2)
  })

  it('a server without IPv6', async ctx => {
    needCli(ctx)
    const v4only = new FakeHetzner({ token: fake.token, ipv6: false })
    await v4only.start()
    try {
      const out = await ok(['server', 'create', '--name', 'v4', '--type', 'cx22', '--image', 'debian-12'], { fake: v4only })
      expect(out).toMatch(/IPv4: 203\.0\.113\.\d+/)
      expect(out).not.toContain('IPv6')
      const described = JSON.parse(await ok(['server', 'describe', 'v4', '-o', 'json'], { fake: v4only }))
      expect(described.public_net.ipv6).toBeNull()
      expect(v4only.servers()[0]!.public_net.ipv6).toBeNull()
    } finally {
      await v4only.stop()
    }
  })
})

describe('fake Hetzner API answers without the CLI', () => {
  const call = async (method: string, path: string, body?: string, token = fake.token): Promise<{ status: number, body: any, headers: Headers }> => {
    const res = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, ...(body != null ? { body } : {}) })
    return { status: res.status, body: await res.json(), headers: res.headers }
  }

  it('errors come in the JSON envelope', async () => {
    expect(await call('POST', '/servers', '{not json')).toMatchObject({ status: 400, body: { error: { code: 'json_error', details: null } } })
    expect(await call('GET', '/servers/123')).toMatchObject({ status: 404, body: { error: { code: 'not_found', message: "server with ID '123' not found" } } })
    expect(await call('DELETE', '/servers/123')).toMatchObject({ status: 404, body: { error: { code: 'not_found' } } })
    expect(await call('GET', '/servers', undefined, 'nope')).toMatchObject({ status: 401, body: { error: { code: 'unauthorized', message: 'unable to authenticate' } } })
    expect(await call('POST', '/servers', JSON.stringify({ name: 'big', user_data: 'x'.repeat(70_000) }))).toMatchObject({ status: 413 })
    const invalid = await call('POST', '/servers', JSON.stringify({ name: 'bad_name!', server_type: 'cx22', image: 'debian-12' }))
    expect(invalid).toMatchObject({ status: 422, body: { error: { code: 'invalid_input', details: { fields: [{ name: 'name' }] } } } })
  })

  it('injected faults are used once, in order, with their headers', async () => {
    fake.failNext('POST /servers', 429, 'rate_limit_exceeded', { 'RateLimit-Reset': '1900000000' })
    fake.failNext('/v1/servers', 503, 'unavailable')
    fake.failNext('POST /servers', 412, 'resource_unavailable')
    fake.failNext('POST /servers', 403, 'server_limit_exceeded')
    const body = JSON.stringify({ name: 'f', server_type: 'cx22', image: 'debian-12' })
    const first = await call('POST', '/servers', body)
    expect(first).toMatchObject({ status: 429, body: { error: { code: 'rate_limit_exceeded' } } })
    expect(first.headers.get('ratelimit-reset')).toBe('1900000000')
    expect((await call('POST', '/servers', body)).status).toBe(503)
    expect((await call('POST', '/servers', body)).body.error.code).toBe('resource_unavailable')
    expect((await call('POST', '/servers', body)).body.error.code).toBe('server_limit_exceeded')
    const made = await call('POST', '/servers', body)
    expect(made.status).toBe(201)
    expect(made.body).toMatchObject({ server: { name: 'f', status: 'initializing' }, action: { command: 'create_server', status: 'running' }, next_actions: [{ command: 'start_server' }] })
    expect(fake.createdCount).toBe(1)
  })

  it('label selectors: =, !=, presence, absence, in, notin, AND', async () => {
    const mk = async (name: string, labels: Record<string, string>): Promise<void> => {
      expect((await call('POST', '/servers', JSON.stringify({ name, server_type: 'cx22', image: 'debian-12', labels }))).status).toBe(201)
    }
    await mk('a', { rgrid: 'managed', pool: 'eu' })
    await mk('b', { rgrid: 'managed', pool: 'us' })
    await mk('c', { rgrid: 'other' })
    await mk('d', {})
    const names = async (sel: string): Promise<string[]> => (await call('GET', `/servers?label_selector=${encodeURIComponent(sel)}`)).body.servers.map((s: any) => s.name)
    expect(await names('rgrid=managed')).toEqual(['a', 'b'])
    expect(await names('rgrid==managed,pool!=eu')).toEqual(['b'])
    expect(await names('rgrid!=managed')).toEqual(['c', 'd'])
    expect(await names('pool')).toEqual(['a', 'b'])
    expect(await names('!rgrid')).toEqual(['d'])
    expect(await names('pool in (eu,asia)')).toEqual(['a'])
    expect(await names('rgrid notin (managed)')).toEqual(['c', 'd'])
    expect((await call('GET', '/servers?label_selector=%3D%3Dx')).status).toBe(422)
  })

  it('actions stay running for actionDelayMs, then succeed and the server runs', async () => {
    fake.actionDelayMs = 300
    const made = (await call('POST', '/servers', JSON.stringify({ name: 's', server_type: 'cx22', image: 'debian-12' }))).body
    const id = made.server.id
    expect((await call('GET', `/actions/${made.action.id}`)).body.action.status).toBe('running')
    expect(fake.server(id)!.status).toBe('initializing')
    await new Promise(resolve => setTimeout(resolve, 350))
    expect((await call('GET', `/servers/${id}/actions/${made.action.id}`)).body.action).toMatchObject({ status: 'success', progress: 100 })
    expect(fake.server(id)!.status).toBe('running')
    fake.failNextAction('delete_server')
    const del = (await call('DELETE', `/servers/${id}`)).body.action
    await new Promise(resolve => setTimeout(resolve, 350))
    expect((await call('GET', `/actions/${del.id}`)).body.action).toMatchObject({ status: 'error', error: { code: 'action_failed' } })
  })
})
