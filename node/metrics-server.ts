/**
 * A node's Prometheus endpoint (`rgrid-node join --metrics HOST:PORT`):
 * GET /metrics with its slots, running attempts, bids, transfers, input
 * cache and gossip peers. Nodes have no other HTTP surface.
 */
import { createServer, type Server } from 'node:http'
import { METRICS_CONTENT_TYPE } from '../common/metrics.js'

export interface MetricsServerOptions {
  host: string
  port: number
  render: () => string
}

export class MetricsServer {
  private server: Server | null = null

  constructor (private readonly options: MetricsServerOptions) {}

  /** Listens; resolves the URL. Idempotent. */
  async start (): Promise<string> {
    if (this.server == null) {
      const server = createServer((req, res) => {
        if (req.method !== 'GET' || req.url !== '/metrics') { res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics\n'); return }
        res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE }).end(this.options.render())
      })
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(this.options.port, this.options.host, () => { server.off('error', reject); resolve() })
      })
      this.server = server
    }
    const addr = this.server.address()
    const port = typeof addr === 'object' && addr != null ? addr.port : this.options.port
    return `http://${this.options.host.includes(':') ? `[${this.options.host}]` : this.options.host}:${port}/metrics`
  }

  async stop (): Promise<void> {
    const server = this.server
    this.server = null
    if (server != null) await new Promise<void>(resolve => { server.close(() => { resolve() }); server.closeAllConnections() })
  }
}
