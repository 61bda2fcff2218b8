/** Serves the Hono app on a TCP port with @hono/node-server. */
import { serve, type ServerType } from '@hono/node-server'
import type { AddressInfo } from 'node:net'

export interface HttpServerOptions {
  app: { fetch: (request: Request, ...rest: any[]) => Response | Promise<Response> }
  host: string
  port: number
  /** How long stop() waits for open connections, in ms. @default 3000 */
  closeTimeoutMs?: number
  /**
   * How long an idle keep-alive connection stays open, in ms. Longer than
   * clients keep theirs (undici: 4 s), so the client always closes first:
   * a server closing a connection the client is reusing at that instant
   * makes the client's request fail with ECONNRESET. @default 65000
   */
  keepAliveTimeoutMs?: number
}

export class HttpServer {
  private server: ServerType | null = null
  private address: AddressInfo | null = null

  constructor (private readonly options: HttpServerOptions) {}

  get url (): string {
    if (this.address == null) throw new Error('HTTP server not started')
    const host = this.address.family === 'IPv6' ? `[${this.address.address}]` : this.address.address
    return `http://${host}:${this.address.port}`
  }

  async start (): Promise<void> {
    if (this.server != null) return
    await new Promise<void>((resolve, reject) => {
      const server = serve({ fetch: this.options.app.fetch, hostname: this.options.host, port: this.options.port }, info => {
        this.address = info
        resolve()
      })
      server.once('error', reject)
      if ('keepAliveTimeout' in server) {
        server.keepAliveTimeout = this.options.keepAliveTimeoutMs ?? 65_000
        // Node requires the header timeout to exceed the keep-alive one.
        server.headersTimeout = server.keepAliveTimeout + 1_000
      }
      this.server = server
    })
  }

  async stop (): Promise<void> {
    const server = this.server
    if (server == null) return
    this.server = null
    await new Promise<void>(resolve => {
      const timer = setTimeout(() => {
        if ('closeAllConnections' in server) server.closeAllConnections()
        resolve()
      }, this.options.closeTimeoutMs ?? 3_000)
      server.close(() => { clearTimeout(timer); resolve() })
      if ('closeIdleConnections' in server) server.closeIdleConnections()
    })
  }
}

/** Parses `host:port` (IPv6 as `[::1]:8080`). */
export function parseHostPort (text: string): { host: string, port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text)
  const port = Number(m?.[3])
  if (m == null || port > 65535) throw new Error(`expected HOST:PORT, got ${JSON.stringify(text)}`)
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port }
}
