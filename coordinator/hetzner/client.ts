/**
 * A small typed client of the Hetzner Cloud API v1 over fetch, for the calls
 * the provisioner needs. Not hcloud-js: unmaintained, untyped, on an old
 * axios, cannot delete a server it just created and crashes on a server
 * without IPv6 (see the README's dependency notes).
 */

export interface HetznerClientOptions {
  /** API token (read-write for provisioning). */
  token: string
  /** Base URL, as `HCLOUD_ENDPOINT` names it. @default 'https://api.hetzner.cloud/v1' */
  endpoint?: string
  /** Bound on each request. @default 30000 */
  timeoutMs?: number
  /** @default globalThis.fetch */
  fetch?: typeof fetch
}

export interface HetznerServer {
  id: number
  name: string
  status: string
  created: string
  labels: Record<string, string>
  server_type: { name: string, cores: number, memory: number }
  datacenter: { name: string, location: { name: string } } | null
  public_net: { ipv4: { ip: string } | null, ipv6: { ip: string } | null }
}

export interface HetznerServerType {
  id: number
  name: string
  cores: number
  /** GB. */
  memory: number
  disk: number
  architecture: string
  deprecated?: boolean | null
  prices: Array<{ location: string, price_hourly: { net: string, gross: string } }>
}

export interface HetznerAction {
  id: number
  command: string
  status: 'running' | 'success' | 'error'
  progress: number
  error: { code: string, message: string } | null
}

export interface CreateServerInput {
  name: string
  serverType: string
  image: string
  location?: string
  labels: Record<string, string>
  userData?: string
  sshKeys?: string[]
}

/** An error answer of the API, with what a caller needs to decide: wait, retry elsewhere, or stop. */
export class HetznerApiError extends Error {
  override readonly name = 'HetznerApiError'
  constructor (readonly status: number, readonly code: string, message: string, readonly retryAfterMs: number | null = null) {
    super(`Hetzner API ${status} ${code}: ${message}`)
  }

  /** The token is wrong or lacks permission: retrying will not help. */
  get unauthorized (): boolean { return this.status === 401 || this.code === 'unauthorized' || this.code === 'forbidden' }
  /** Worth retrying later, possibly elsewhere. */
  get transient (): boolean {
    return this.status === 429 || this.status >= 500 || this.status === 0 || this.code === 'resource_unavailable' ||
      this.code === 'resource_limit_exceeded' || this.code === 'server_limit_exceeded' || this.code === 'placement_error'
  }
}

export class HetznerClient {
  readonly endpoint: string
  private readonly doFetch: typeof fetch

  constructor (private readonly options: HetznerClientOptions) {
    this.endpoint = (options.endpoint ?? 'https://api.hetzner.cloud/v1').replace(/\/+$/, '')
    this.doFetch = options.fetch ?? globalThis.fetch
  }

  private async call<T>(method: string, path: string, body: unknown, signal: AbortSignal | undefined, allow404 = false): Promise<T | null> {
    const timeout = AbortSignal.timeout(this.options.timeoutMs ?? 30_000)
    let res: Response
    try {
      res = await this.doFetch(`${this.endpoint}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.options.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: signal != null ? AbortSignal.any([signal, timeout]) : timeout
      })
    } catch (err) {
      // A network failure or timeout: transient from the caller's point of view.
      throw new HetznerApiError(0, 'unreachable', `${method} ${path}: ${(err as Error).message}`)
    }
    const text = await res.text()
    if (res.status === 404 && allow404) return null
    if (!res.ok) {
      let code = 'unknown'
      let message = text.slice(0, 300)
      try {
        const e = (JSON.parse(text) as { error?: { code?: string, message?: string } }).error
        code = e?.code ?? code
        message = e?.message ?? message
      } catch {
        // Not JSON (a proxy's error page): keep the status and the text.
      }
      throw new HetznerApiError(res.status, code, message, retryAfter(res))
    }
    return (text === '' ? {} : JSON.parse(text)) as T
  }

  /** Every server matching the label selector, across pages. */
  async listServers (labelSelector: string, signal?: AbortSignal): Promise<HetznerServer[]> {
    const out: HetznerServer[] = []
    for (let page = 1; ; page++) {
      const q = new URLSearchParams({ label_selector: labelSelector, page: String(page), per_page: '50' })
      const r = await this.call<{ servers: HetznerServer[], meta?: { pagination?: { next_page: number | null } } }>('GET', `/servers?${q.toString()}`, undefined, signal)
      out.push(...r!.servers)
      const next = r!.meta?.pagination?.next_page
      if (next == null || r!.servers.length === 0) return out
    }
  }

  async getServer (id: number, signal?: AbortSignal): Promise<HetznerServer | null> {
    return (await this.call<{ server: HetznerServer }>('GET', `/servers/${id}`, undefined, signal, true))?.server ?? null
  }

  async createServer (input: CreateServerInput, signal?: AbortSignal): Promise<{ server: HetznerServer, action: HetznerAction }> {
    const r = await this.call<{ server: HetznerServer, action: HetznerAction }>('POST', '/servers', {
      name: input.name,
      server_type: input.serverType,
      image: input.image,
      ...(input.location != null ? { location: input.location } : {}),
      labels: input.labels,
      ...(input.userData != null ? { user_data: input.userData } : {}),
      ...(input.sshKeys != null && input.sshKeys.length > 0 ? { ssh_keys: input.sshKeys } : {}),
      start_after_create: true
    }, signal)
    return r!
  }

  /** Deletes a server; null when it was already gone. */
  async deleteServer (id: number, signal?: AbortSignal): Promise<HetznerAction | null> {
    return (await this.call<{ action: HetznerAction }>('DELETE', `/servers/${id}`, undefined, signal, true))?.action ?? null
  }

  async serverTypes (signal?: AbortSignal): Promise<HetznerServerType[]> {
    const out: HetznerServerType[] = []
    for (let page = 1; ; page++) {
      const r = await this.call<{ server_types: HetznerServerType[], meta?: { pagination?: { next_page: number | null } } }>('GET', `/server_types?page=${page}&per_page=50`, undefined, signal)
      out.push(...r!.server_types)
      if (r!.meta?.pagination?.next_page == null || r!.server_types.length === 0) return out
    }
  }

  async locations (signal?: AbortSignal): Promise<Array<{ id: number, name: string }>> {
    return (await this.call<{ locations: Array<{ id: number, name: string }> }>('GET', '/locations', undefined, signal))!.locations
  }

  async getAction (id: number, signal?: AbortSignal): Promise<HetznerAction> {
    return (await this.call<{ action: HetznerAction }>('GET', `/actions/${id}`, undefined, signal))!.action
  }
}

/** When a 429 says to come back: `RateLimit-Reset` is a Unix time in seconds. */
function retryAfter (res: Response): number | null {
  const reset = Number(res.headers.get('ratelimit-reset'))
  if (Number.isFinite(reset) && reset > 0) return Math.max(0, reset * 1000 - Date.now())
  const after = Number(res.headers.get('retry-after'))
  return Number.isFinite(after) && after > 0 ? after * 1000 : null
}

/** The hourly gross price of a server type in a location (EUR), or null when it is not sold there. */
export function hourlyPrice (type: HetznerServerType, location: string): number | null {
  const p = type.prices.find(x => x.location === location)
  if (p == null) return null
  const n = Number(p.price_hourly.gross)
  return Number.isFinite(n) ? n : null
}
