/**
 * An in-process fake of the Hetzner Cloud API v1 on node:http, for tests of
 * code that creates and deletes servers. It answers like the real API: whole
 * objects with the fields the API returns (fixtures in fake-hetzner-data.ts),
 * the `{"error": {code, message, details}}` envelope, Bearer-token auth,
 * `meta.pagination`, label selectors, actions that stay `running` for
 * `actionDelayMs` and then succeed. Checked against Debian's `hcloud` CLI by
 * test/integration/fake-hetzner.test.ts.
 *
 * Where the fake has to choose something the API leaves open, it says so
 * in a comment ("fake:").
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { randomBytes } from 'node:crypto'
import { apiTime, datacenters, ERROR_MESSAGES, IMAGES, LOCATIONS, parseSelector, serverTypes, SSH_KEYS, type PriceTable } from './fake-hetzner-data.js'

export interface FakeHetznerOptions {
  /** The only token accepted. @default 'fake-hcloud-token' */
  token?: string
  /** How long an action stays `running` before it succeeds. @default 0 */
  actionDelayMs?: number
  /** Net EUR prices by server type name or `type@location`, over the defaults. */
  prices?: PriceTable
  /** false: servers get no IPv6 (`public_net.ipv6` is null). @default true */
  ipv6?: boolean
  /** The IPv4 of a new server. @default an address of 203.0.113.0/24 (TEST-NET-3) */
  ipv4For?: (serverId: number) => string
  /** Larger request bodies get 413. @default 65536 */
  maxBodyBytes?: number
  /** fake: answers a server create this long after making the server, as a slow API would. @default 0 */
  slowCreateMs?: number
}

export interface RecordedRequest { method: string, path: string, query: URLSearchParams, body: unknown }

interface Action {
  id: number, command: string, status: 'running' | 'success' | 'error', progress: number, started: string, finished: string | null
  resources: Array<{ id: number, type: string }>, error: { code: string, message: string } | null
  doneAt: number, failWith: { code: string, message: string } | null, effect: (ok: boolean) => void
}

interface Fault { method: string | null, path: RegExp, status: number, code: string, message: string, headers: Record<string, string> }

class ApiError extends Error {
  constructor (readonly status: number, readonly code: string, message: string, readonly details: unknown = null, readonly headers: Record<string, string> = {}) { super(message) }
}

/** RFC 1123 hostname, as the API requires of server names. */
const HOSTNAME = /^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/
const LABEL_KEY = /^([a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\/)?[a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?$/
const LABEL_VALUE = /^([a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?)?$/
const USER_DATA_MAX = 32 * 1024
const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T

export class FakeHetzner {
  readonly token: string
  actionDelayMs: number
  /** Every request that reached the fake, faulted ones included. */
  readonly requests: RecordedRequest[] = []
  createdCount = 0
  deletedCount = 0
  private http: Server | null = null
  private readonly types: any[]
  private readonly dcs: any[]
  private readonly live = new Map<number, any>()
  private readonly data = new Map<number, string>()
  private readonly actions = new Map<number, Action>()
  private readonly faults: Fault[] = []
  private readonly actionFaults: Array<{ command: string, code: string, message: string }> = []
  private nextServerId = 50_000_001
  private nextActionId = 700_000_001

  constructor (private readonly opts: FakeHetznerOptions = {}) {
    this.token = opts.token ?? 'fake-hcloud-token'
    this.actionDelayMs = opts.actionDelayMs ?? 0
    this.types = serverTypes(opts.prices)
    this.dcs = datacenters(this.types)
  }

  /** Listens on 127.0.0.1 on a free port; resolves to the base URL, ending in /v1. */
  async start (): Promise<string> {
    const http = createServer((req, res) => { void this.handle(req, res) })
    await new Promise<void>((resolve, reject) => { http.once('error', reject); http.listen(0, '127.0.0.1', resolve) })
    this.http = http
    return this.url
  }

  get url (): string { return `http://127.0.0.1:${(this.http!.address() as AddressInfo).port}/v1` }

  async stop (): Promise<void> {
    const http = this.http
    this.http = null
    if (http == null) return
    http.closeAllConnections()
    await new Promise<void>(resolve => http.close(() => resolve()))
  }

  /** The current servers (deleted ones gone), as GET /servers would show them, by id. */
  servers (): any[] { this.refresh(); return [...this.live.values()].map(clone) }
  server (id: number): any | undefined { this.refresh(); const s = this.live.get(id); return s == null ? undefined : clone(s) }
  /** The user_data a server was created with (the API never returns it); kept after deletion. */
  userData (serverId: number): string | undefined { return this.data.get(serverId) }

  /**
   * Makes the next request matching `path` fail with this status and error
   * code. `path` is a path with or without the /v1 prefix, may start with a
   * method ('POST /servers') and may use `*` for one segment ('/servers/*').
   * Several calls queue up; each fault is used once.
   */
  failNext (path: string, status: number, code: string, headers: Record<string, string> = {}, message?: string): void {
    const m = /^([A-Z]+)\s+(.*)$/.exec(path.trim())
    const p = (m?.[2] ?? path.trim()).replace(/^\/v1(?=\/)/, '')
    const re = new RegExp('^' + p.split('*').map(s => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^/]+') + '$')
    const hdrs = { ...headers }
    if (status === 429 && !Object.keys(hdrs).some(h => h.toLowerCase() === 'ratelimit-reset')) {
      Object.assign(hdrs, { 'RateLimit-Limit': '3600', 'RateLimit-Remaining': '0', 'RateLimit-Reset': String(Math.ceil(Date.now() / 1000) + 1) })
    }
    this.faults.push({ method: m?.[1] ?? null, path: re, status, code, message: message ?? ERROR_MESSAGES[code] ?? code.replace(/_/g, ' '), headers: hdrs })
  }

  /** The next action of this command (create_server, start_server, delete_server) ends in `error`. */
  failNextAction (command: string, code = 'action_failed', message = 'Action failed'): void {
    this.actionFaults.push({ command, code, message })
  }

  private async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake')
    const method = req.method ?? 'GET'
    const path = url.pathname.replace(/\/+$/, '')
    const headers: Record<string, string> = {}
    try {
      const raw = await this.readBody(req)
      this.requests.push({ method, path, query: url.searchParams, body: raw === '' ? undefined : raw })
      const sub = path.startsWith('/v1/') ? path.slice(3) : null
      const fi = sub == null ? -1 : this.faults.findIndex(f => (f.method == null || f.method === method) && f.path.test(sub))
      if (fi >= 0) {
        const f = this.faults.splice(fi, 1)[0]!
        throw new ApiError(f.status, f.code, f.message, null, f.headers)
      }
      if (req.headers.authorization !== `Bearer ${this.token}`) throw new ApiError(401, 'unauthorized', 'unable to authenticate')
      if (sub == null) throw new ApiError(404, 'not_found', 'not found')
      let body: any
      if (method === 'POST' || method === 'PUT') {
        try { body = JSON.parse(raw) } catch { throw new ApiError(400, 'json_error', 'Invalid JSON input in your request.') }
        if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new ApiError(400, 'json_error', 'Invalid JSON input in your request.')
        this.requests[this.requests.length - 1]!.body = body
      }
      this.refresh()
      const [status, out] = this.route(method, sub, url.searchParams, body, headers)
      if (method === 'POST' && sub === '/servers' && status === 201 && (this.opts.slowCreateMs ?? 0) > 0) {
        await new Promise(resolve => setTimeout(resolve, this.opts.slowCreateMs))
      }
      this.send(res, status, out, headers)
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError(500, 'server_error', (err as Error).message)
      this.send(res, e.status, { error: { code: e.code, message: e.message, details: e.details } }, e.headers)
    }
  }

  private async readBody (req: IncomingMessage): Promise<string> {
    const max = this.opts.maxBodyBytes ?? 65536
    const chunks: Buffer[] = []
    let size = 0
    for await (const chunk of req) {
      size += (chunk as Buffer).length
      if (size > max) {
        req.resume()
        // fake: the real API's limit and answer are not documented.
        throw new ApiError(413, 'invalid_input', `request body larger than ${max} bytes`, null, { Connection: 'close' })
      }
      chunks.push(chunk as Buffer)
    }
    return Buffer.concat(chunks).toString('utf8')
  }

  private send (res: ServerResponse, status: number, body: unknown, headers: Record<string, string>): void {
    const text = JSON.stringify(body)
    res.writeHead(status, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(text),
      'X-Correlation-Id': randomBytes(8).toString('hex'),
      'RateLimit-Limit': '3600',
      'RateLimit-Remaining': '3599',
      'RateLimit-Reset': String(Math.ceil(Date.now() / 1000) + 1),
      ...headers
    })
    res.end(text)
  }

  private route (method: string, path: string, q: URLSearchParams, body: any, headers: Record<string, string>): [number, unknown] {
    const seg = path.split('/').slice(1)
    const [coll, idText, sub, subId] = seg
    const id = idText != null && /^\d+$/.test(idText) ? Number(idText) : null
    const only = (m: string): void => { if (method !== m) throw new ApiError(405, 'method_not_allowed', 'method not allowed') }
    const one = (kind: string, items: any[]): [number, unknown] => {
      only('GET')
      const item = items.find(x => x.id === id)
      if (item == null) throw new ApiError(404, 'not_found', `${kind.replace('_', ' ')} with ID '${idText}' not found`)
      return [200, { [kind]: item }]
    }
    const catalogue: Record<string, [string, () => any[]]> = {
      server_types: ['server_type', () => this.types],
      locations: ['location', () => LOCATIONS],
      datacenters: ['datacenter', () => this.dcs],
      images: ['image', () => IMAGES],
      ssh_keys: ['ssh_key', () => SSH_KEYS],
      actions: ['action', () => [...this.actions.values()].map(a => this.actionJson(a))]
    }
    if (coll === 'servers') {
      if (seg.length === 1 && method === 'POST') return [201, this.createServer(body)]
      if (seg.length === 1) { only('GET'); return [200, this.list('servers', [...this.live.values()], q, headers)] }
      if (id == null) throw new ApiError(404, 'not_found', 'not found')
      const server = this.live.get(id)
      if (seg.length === 2 && method === 'DELETE') {
        if (server == null) throw new ApiError(404, 'not_found', `server with ID '${id}' not found`)
        return [200, { action: this.actionJson(this.deleteServer(server)) }]
      }
      if (seg.length === 2) return one('server', [...this.live.values()])
      if (server == null) throw new ApiError(404, 'not_found', `server with ID '${id}' not found`)
      const mine = [...this.actions.values()].filter(a => a.resources.some(r => r.type === 'server' && r.id === id)).map(a => this.actionJson(a))
      if (sub === 'actions' && seg.length === 3) { only('GET'); return [200, this.list('actions', mine, q, headers)] }
      if (sub === 'actions' && seg.length === 4 && /^\d+$/.test(subId!)) {
        const found = mine.find(a => a.id === Number(subId))
        if (found == null) throw new ApiError(404, 'not_found', `action with ID '${subId}' not found`)
        only('GET')
        return [200, { action: found }]
      }
    } else if (coll != null && catalogue[coll] != null) {
      const [kind, items] = catalogue[coll]
      if (seg.length === 1) { only('GET'); return [200, this.list(coll, items(), q, headers)] }
      if (seg.length === 2 && id != null) return one(kind, items())
    }
    throw new ApiError(404, 'not_found', 'not found')
  }

  /** A list answer: filters, label selector, sort, then a page with `meta.pagination` and a Link header. */
  private list (key: string, all: any[], q: URLSearchParams, headers: Record<string, string>): unknown {
    let items = all
    const filters: Record<string, (x: any, v: string) => boolean> = {
      name: (x, v) => x.name === v,
      status: (x, v) => x.status === v,
      architecture: (x, v) => x.architecture === v,
      type: (x, v) => x.type === v,
      id: (x, v) => String(x.id) === v,
      fingerprint: (x, v) => x.fingerprint === v
    }
    for (const [param, test] of Object.entries(filters)) {
      const values = q.getAll(param)
      if (values.length > 0) items = items.filter(x => values.some(v => test(x, v)))
    }
    const selector = q.get('label_selector')
    if (selector != null && selector !== '') {
      const match = parseSelector(selector)
      if (match == null) throw new ApiError(422, 'invalid_input', `invalid label_selector: '${selector}'`, { fields: [{ name: 'label_selector', messages: ['invalid label selector'] }] })
      items = items.filter(x => match(x.labels ?? {}))
    }
    const sorts = q.getAll('sort').length > 0 ? q.getAll('sort') : ['id']
    const keys = sorts.map(s => {
      const [field, dir = 'asc'] = s.split(':')
      if (!['id', 'name', 'created', 'command', 'status', 'started', 'finished', 'progress'].includes(field!) || !['asc', 'desc'].includes(dir)) {
        throw new ApiError(422, 'invalid_input', `invalid input in field 'sort'`, { fields: [{ name: 'sort', messages: [`invalid sort: ${s}`] }] })
      }
      return { field: field!, sign: dir === 'desc' ? -1 : 1 }
    })
    items = [...items].sort((a, b) => {
      for (const k of keys) { if (a[k.field] !== b[k.field]) return (a[k.field] < b[k.field] ? -1 : 1) * k.sign }
      return 0
    })
    const num = (name: string, dflt: number): number => {
      const v = q.get(name)
      if (v == null) return dflt
      if (!/^\d+$/.test(v) || Number(v) < 1) throw new ApiError(422, 'invalid_input', `invalid input in field '${name}'`, { fields: [{ name, messages: ['must be a positive integer'] }] })
      return Number(v)
    }
    const page = num('page', 1)
    const perPage = Math.min(num('per_page', 25), 50)
    const last = Math.max(1, Math.ceil(items.length / perPage))
    const pagination = { page, per_page: perPage, previous_page: page > 1 ? page - 1 : null, next_page: page < last ? page + 1 : null, last_page: last, total_entries: items.length }
    const link = (p: number, rel: string): string => `<${this.url}/${key}?page=${p}&per_page=${perPage}>; rel="${rel}"`
    headers.Link = [page > 1 ? link(page - 1, 'prev') : null, page < last ? link(page + 1, 'next') : null, link(last, 'last')].filter(x => x != null).join(', ')
    return { [key]: items.slice((page - 1) * perPage, page * perPage).map(clone), meta: { pagination } }
  }

  private createServer (b: any): unknown {
    const fields: Array<{ name: string, messages: string[] }> = []
    const bad = (name: string, message: string): void => { fields.push({ name, messages: [message] }) }
    const byIdOrName = <T extends { id: number, name: string }>(items: T[], v: unknown): T | undefined =>
      items.find(x => (typeof v === 'number' && x.id === v) || (typeof v === 'string' && (x.name === v || String(x.id) === v)))
    if (typeof b.name !== 'string') bad('name', 'Missing data for required field.')
    else if (!HOSTNAME.test(b.name)) bad('name', 'Name must be a valid hostname.')
    const type = byIdOrName(this.types, b.server_type)
    if (b.server_type == null) bad('server_type', 'Missing data for required field.')
    else if (type == null) bad('server_type', 'server type not found')
    const image = b.image == null ? undefined : typeof b.image === 'number'
      ? IMAGES.find(i => i.id === b.image)
      : IMAGES.find(i => i.name === b.image && i.architecture === (type?.architecture ?? 'x86')) ?? IMAGES.find(i => String(i.id) === b.image)
    if (b.image == null) bad('image', 'Missing data for required field.')
    else if (image == null) bad('image', 'image not found')
    else if (type != null && image.architecture !== type.architecture) bad('image', 'image architecture does not match server type')
    let dc: any
    if (b.location != null && b.datacenter != null) bad('location', 'location and datacenter are mutually exclusive')
    else if (b.datacenter != null) { dc = byIdOrName(this.dcs, b.datacenter); if (dc == null) bad('datacenter', 'datacenter not found') } else if (b.location != null) {
      const loc = byIdOrName(LOCATIONS, b.location)
      if (loc == null) bad('location', 'location not found')
      dc = this.dcs.find(d => d.location.name === loc?.name)
    } else {
      // fake: the real API picks some location; this one takes the first the type is sold in.
      dc = this.dcs.find(d => type?.prices.some((p: any) => p.location === d.location.name))
    }
    if (dc != null && type != null && !type.prices.some((p: any) => p.location === dc.location.name)) bad('server_type', 'unsupported location for server type')
    const labels = b.labels ?? {}
    if (typeof labels !== 'object' || Array.isArray(labels) || Object.entries(labels).some(([k, v]) => typeof v !== 'string' || !LABEL_KEY.test(k) || !LABEL_VALUE.test(v) || k.startsWith('hetzner.cloud/'))) {
      bad('labels', 'invalid label')
    }
    if (b.user_data != null && (typeof b.user_data !== 'string' || Buffer.byteLength(b.user_data) > USER_DATA_MAX)) bad('user_data', `user_data must be a string of at most ${USER_DATA_MAX} bytes`)
    const keys: any[] = Array.isArray(b.ssh_keys) ? b.ssh_keys : []
    if (b.ssh_keys != null && !Array.isArray(b.ssh_keys)) bad('ssh_keys', 'Not a valid list.')
    else if (keys.some(k => byIdOrName(SSH_KEYS, k) == null)) bad('ssh_keys', 'ssh key not found')
    if (b.start_after_create != null && typeof b.start_after_create !== 'boolean') bad('start_after_create', 'Not a valid boolean.')
    if (fields.length > 0) {
      throw new ApiError(422, 'invalid_input', `invalid input in field${fields.length > 1 ? 's' : ''} ${fields.map(f => `'${f.name}'`).join(', ')}`, { fields })
    }
    if ([...this.live.values()].some(s => s.name === b.name)) {
      throw new ApiError(409, 'uniqueness_error', 'server name is already used', { fields: [{ name: 'name' }] })
    }
    const id = this.nextServerId++
    const v4 = b.public_net?.enable_ipv4 !== false
    const v6 = b.public_net?.enable_ipv6 !== false && this.opts.ipv6 !== false
    const ip = this.opts.ipv4For?.(id) ?? `203.0.113.${(id % 250) + 2}`
    const server = {
      id,
      name: b.name,
      status: 'initializing',
      created: apiTime(),
      public_net: {
        ipv4: v4 ? { id: 90_000_000 + id, ip, blocked: false, dns_ptr: `static.${ip.split('.').reverse().join('.')}.clients.your-server.de` } : null,
        ipv6: v6 ? { id: 91_000_000 + id, ip: `2001:db8:${(id % 65536).toString(16)}::/64`, blocked: false, dns_ptr: [] } : null,
        floating_ips: [],
        firewalls: []
      },
      private_net: [],
      server_type: clone(type),
      datacenter: clone(dc),
      location: clone(dc.location),
      image: clone(image),
      iso: null,
      rescue_enabled: false,
      locked: false,
      backup_window: null,
      outgoing_traffic: 0,
      ingoing_traffic: 0,
      included_traffic: 21990232555520,
      protection: { delete: false, rebuild: false },
      labels: { ...labels },
      volumes: [],
      load_balancers: [],
      primary_disk_size: type.disk,
      placement_group: null
    }
    this.live.set(id, server)
    if (typeof b.user_data === 'string') this.data.set(id, b.user_data)
    this.createdCount++
    const start = b.start_after_create !== false
    const res = [{ id, type: 'server' }]
    let createdOk = true
    // fake: a server whose create_server action failed stays, switched off.
    const create = this.newAction('create_server', res, ok => { createdOk = ok; server.status = 'off' })
    const next = start ? [this.newAction('start_server', res, ok => { if (ok && createdOk) server.status = 'running' })] : []
    return {
      server: clone(server),
      action: this.actionJson(create),
      next_actions: next.map(a => this.actionJson(a)),
      root_password: keys.length > 0 ? null : randomBytes(15).toString('base64url')
    }
  }

  private deleteServer (server: any): Action {
    this.deletedCount++
    // fake: while its delete action runs the server is listed as `deleting`.
    server.status = 'deleting'
    return this.newAction('delete_server', [{ id: server.id, type: 'server' }], ok => { if (ok) this.live.delete(server.id); else server.status = 'running' })
  }

  private newAction (command: string, resources: Action['resources'], effect: Action['effect']): Action {
    const fi = this.actionFaults.findIndex(f => f.command === command)
    const failWith = fi >= 0 ? this.actionFaults.splice(fi, 1)[0]! : null
    const now = Date.now()
    const a: Action = { id: this.nextActionId++, command, status: 'running', progress: 0, started: apiTime(now), finished: null, resources, error: null, doneAt: now + this.actionDelayMs, failWith, effect }
    this.actions.set(a.id, a)
    return a
  }

  private actionJson (a: Action): any {
    return { id: a.id, command: a.command, status: a.status, progress: a.progress, started: a.started, finished: a.finished, resources: clone(a.resources), error: clone(a.error) }
  }

  /** Finishes the actions whose time has come, in the order they started. */
  private refresh (): void {
    const now = Date.now()
    for (const a of this.actions.values()) {
      if (a.status !== 'running' || a.doneAt > now) continue
      a.status = a.failWith == null ? 'success' : 'error'
      a.progress = 100
      a.finished = apiTime(Math.max(a.doneAt, Date.parse(a.started)))
      a.error = a.failWith == null ? null : { code: a.failWith.code, message: a.failWith.message }
      a.effect(a.failWith == null)
    }
  }
}
