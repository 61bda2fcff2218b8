#!/usr/bin/env node
/**
 * rgrid-coordinator: the HTTP endpoint for submitters, the mesh peer that
 * announces jobs and runs the auction, and the store.
 *
 * stdout: line 1 is the coordinator's full multiaddr, line 2 its HTTP URL.
 */
import { parseArgs } from 'node:util'
import { join, resolve } from 'node:path'
import { mkdir } from 'node:fs/promises'
import { Coordinator } from './coordinator.js'
import { createHttpApp } from './http.js'
import { HttpServer, parseHostPort } from './http-server.js'
import { SqliteStore } from './store/sqlite.js'
import type { Store } from './store/types.js'
import { loadOrCreateIdentity } from '../common/identity.js'
import { createLogger, type LogLevel } from '../common/log.js'
import { stopOnSignals, usageError } from '../common/lifecycle.js'
import { preferredAddr } from '../common/addrs.js'

const HELP = `Usage: rgrid-coordinator [options]

Takes job submissions over HTTP, announces them on the mesh, awards each to
one bidding node, and records claims and results in its store.

  --http HOST:PORT        HTTP API address                   [127.0.0.1:8080]
  --listen MULTIADDR      libp2p listen address (repeatable) [/ip4/0.0.0.0/tcp/4002]
  --bootstrap MULTIADDR   bootstrap peer to join through (repeatable)
  --db URL                sqlite:PATH                        [sqlite:DATA_DIR/coordinator.db]
  --data-dir DIR          identity and embedded database     [./.rgrid/coordinator]
  --bid-window-ms N       wait for better bids from busy nodes [8]
  --log-level LEVEL       debug|info|warn|error              [info]
`

async function openStore (url: string, dataDir: string): Promise<Store> {
  if (url.startsWith('sqlite:')) {
    const path = url.slice('sqlite:'.length)
    if (path === '') throw new Error('--db sqlite: needs a path, e.g. sqlite:./rgrid.db')
    const store = SqliteStore.open({ path: path === ':memory:' ? path : resolve(dataDir, path) })
    await store.migrate()
    return store
  }
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    throw new Error('the PostgreSQL store is not available in this build; use --db sqlite:PATH')
  }
  throw new Error(`unsupported --db ${JSON.stringify(url)}; expected sqlite:PATH`)
}

async function main (): Promise<void> {
  let args
  try {
    args = parseArgs({
      options: {
        http: { type: 'string' },
        listen: { type: 'string', multiple: true },
        bootstrap: { type: 'string', multiple: true },
        db: { type: 'string' },
        'data-dir': { type: 'string' },
        'bid-window-ms': { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' }
      },
      strict: true
    }).values
  } catch (err) {
    usageError('rgrid-coordinator', (err as Error).message)
  }
  if (args.help === true) { process.stdout.write(HELP); return }
  const log = createLogger('coordinator', { level: (args['log-level'] ?? 'info') as LogLevel })
  const dataDir = resolve(args['data-dir'] ?? join('.rgrid', 'coordinator'))
  let http
  try { http = parseHostPort(args.http ?? '127.0.0.1:8080') } catch (err) { usageError('rgrid-coordinator', `--http: ${(err as Error).message}`) }
  const bidWindowMs = args['bid-window-ms'] != null ? Number(args['bid-window-ms']) : undefined
  if (bidWindowMs != null && (!Number.isFinite(bidWindowMs) || bidWindowMs < 0)) usageError('rgrid-coordinator', '--bid-window-ms must be a number >= 0')
  await mkdir(dataDir, { recursive: true })
  const store = await openStore(args.db ?? 'sqlite:coordinator.db', dataDir)
  const coordinator = new Coordinator({
    privateKey: await loadOrCreateIdentity(dataDir),
    store,
    log,
    listen: args.listen ?? ['/ip4/0.0.0.0/tcp/4002'],
    bootstrap: args.bootstrap ?? [],
    ...(bidWindowMs != null ? { bidWindowMs } : {})
  })
  await coordinator.start()
  const server = new HttpServer({ app: createHttpApp({ api: coordinator, log: log.child('http') }), host: http.host, port: http.port })
  await server.start()
  process.stdout.write(`${preferredAddr(coordinator.addrs())}\n${server.url}\n`)
  log.info('HTTP API listening', { url: server.url })
  stopOnSignals({
    stop: async () => {
      await server.stop()
      await coordinator.stop()
      await store.close()
    }
  }, log)
}

main().catch((err: unknown) => {
  process.stderr.write(`rgrid-coordinator: ${(err as Error).message}\n`)
  process.exit(1)
})
