#!/usr/bin/env node
/**
 * rgrid-coordinator: the HTTP endpoint for submitters, the mesh peer that
 * announces jobs and runs the auction, and the store.
 *
 * stdout: line 1 is the coordinator's full multiaddr, line 2 its HTTP URL.
 */
import { join, resolve } from 'node:path'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { Coordinator } from './coordinator.js'
import { createHttpApp } from './http.js'
import { keyCommand } from './keys-cli.js'
import { ApiKeyAuth } from './api-keys.js'
import { SecretBox } from './secrets.js'
import { HttpServer, parseHostPort } from './http-server.js'
import { SqliteStore } from './store/sqlite.js'
import { PostgresStore } from './store/postgres.js'
import type { Store } from './store/types.js'
import { Transfers } from './transfers.js'
import { ADDRS_FILE, tokenCommand } from './tokens-cli.js'
import { readHandoff, writeHandoff } from '../common/handoff.js'
import { PROVISIONING_FLAGS, PROVISIONING_HELP, describeProvisioning, resolveProvisioning, type ProvisioningConfig } from './provisioner/config.js'
import { Provisioner } from './provisioner/provisioner.js'
import { HetznerClient } from './hetzner/client.js'
import type { ProvisionerMesh } from './coordinator.js'
import { systemClock } from '../common/clock.js'
import { EmbeddedObjectStore } from './objects/embedded.js'
import { S3ObjectStore, parseS3Url } from './objects/s3.js'
import type { ObjectStore } from './objects/types.js'
import { loadOrCreateIdentity } from '../common/identity.js'
import { createLogger, type LogLevel } from '../common/log.js'
import { RELAY_FLAGS, RELAY_HELP, relayLimitsFromFlags } from '../common/relay-flags.js'
import type { RelayLimits } from '../common/relay.js'
import { logUnhandledRejections, parseArgsOrExit, stopOnSignals, usageError } from '../common/lifecycle.js'
import { preferredAddr } from '../common/addrs.js'
import { NETWORK_KEY_SETTING, formatNetworkKeyFile, newNetworkKey } from '../common/network-key.js'

const HELP = `Usage: rgrid-coordinator [options]
       rgrid-coordinator migrate [--db URL] [--data-dir DIR]
       rgrid-coordinator token create [--expires 7d|never] [--note TEXT] [--addr MULTIADDR]... [--db URL] [--data-dir DIR]
       rgrid-coordinator token list|revoke ID [--db URL] [--data-dir DIR]
       rgrid-coordinator key create --name NAME [--admin] | key list | key revoke ID [--db URL] [--data-dir DIR]
       rgrid-coordinator network-key [--network-key-file FILE] [--db URL] [--data-dir DIR]

Takes job submissions over HTTP, announces them on the mesh, awards each to
one bidding node, and records claims and results in its store.

  --http HOST:PORT        HTTP API address                   [127.0.0.1:8080]
  --listen MULTIADDR      libp2p listen address (repeatable) [/ip4/0.0.0.0/tcp/4002]
  --bootstrap MULTIADDR   bootstrap peer to join through (repeatable)
  --db URL                sqlite:PATH or postgres://USER:PASS@HOST:PORT/DB
                          (or RGRID_DATABASE_URL)            [sqlite:DATA_DIR/coordinator.db]
  --no-migrate            refuse to start on an out-of-date schema instead of migrating
  --data-dir DIR          identity and embedded database     [./.rgrid/coordinator]
  --bid-window-ms N       wait for better bids from busy nodes [8]
  --lease-ms N            lease of an awarded attempt; renewed by the node's
                          session every few seconds              [15000]
  --silent-node-ms N      a node holding work and silent this long (no
                          heartbeat, no renewal) gets a direct check; no
                          answer within 1.5 s and it is declared lost [3000]
  --objects URL           where job inputs and outputs live: embedded (files
                          in DATA_DIR/objects, served by this HTTP server) or
                          s3://ACCESS:SECRET@host:port/bucket?region=R&ssl=false&create=true
                          (or RGRID_OBJECTS_URL)             [embedded]
  --public-url URL        base URL nodes and submitters reach this HTTP server
                          at, for embedded object URLs       [the --http address]
  --max-file-mb N         largest input or output file       [256]
  --max-job-mb N          largest total of a job's inputs, or of its outputs [1024]
  --max-log-lines N       live log lines kept per job        [50000]
  config                  (command) print the resolved settings, secrets masked, and exit
  --bootstrap-file FILE   read a bootstrap address from FILE (waits up to 60 s for it)
  --join-token-file FILE  at start, create a join token naming this coordinator and its
                          bootstrap peers, and write it to FILE (containers started together)
  --admin-key-file FILE   at start, unless FILE exists, create an admin API key and
                          write it to FILE (mode 600; docker-compose deployments)
  --network-key-file FILE at start, write the mesh's network key (private network
                          pre-shared key, swarm-key format) to FILE, before waiting
                          for --bootstrap-file: a bootstrap peer started together
                          reads it with its own --network-key-file
  --no-api-keys           serve the HTTP API without API keys (every caller is an
                          admin; for local meshes and tests). Keys are required
                          otherwise: rgrid-coordinator key create --name NAME
  --secrets-key-file FILE key that seals jobs' secretEnv at rest; every coordinator
                          sharing a database needs the same file [DATA_DIR/secrets.key]
  --max-active-jobs-per-key N
                          unfinished jobs one API key may have; more get 429 [10000]
  --max-session-frames-per-second N
                          frames one peer may send on its session per second
                          (bursts of twice as many); beyond, rate-limited   [500]
  --deny-after-cut-ms N   after a token is revoked, how long its machines may still
                          connect and be told why before connections from them
                          are refused outright                          [5000]
  --requests-per-second-per-key N
                          HTTP requests one API key may make per second   [50]
  --open                  admit nodes without a join token (local experiments
                          and tests only; anyone who can reach the mesh can
                          then take jobs and report results)
  --relay                 also serve circuit relay v2 for nodes behind NAT
                          (bootstrap peers always do), with these bounds:
${RELAY_HELP}  --log-level LEVEL       debug|info|warn|error              [info]

${PROVISIONING_HELP}`

/** Opens the store named by `url`; migrations are applied unless `migrate` is false. */
async function openStore (url: string, dataDir: string, migrate: boolean): Promise<Store> {
  let store: Store
  if (url.startsWith('sqlite:')) {
    const path = url.slice('sqlite:'.length)
    if (path === '') throw new Error('--db sqlite: needs a path, e.g. sqlite:./rgrid.db')
    store = SqliteStore.open({ path: path === ':memory:' ? path : resolve(dataDir, path) })
  } else if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    store = PostgresStore.open({ url })
  } else {
    throw new Error(`unsupported --db ${JSON.stringify(redact(url))}; expected sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DB`)
  }
  try {
    if (migrate) {
      await store.migrate()
    } else {
      const pending = await store.pendingMigrations()
      if (pending.length > 0) {
        throw new Error(`the database schema is out of date (pending migrations: ${pending.join(', ')}); run 'rgrid-coordinator migrate --db …' or start without --no-migrate`)
      }
    }
  } catch (err) {
    await store.close()
    throw err
  }
  return store
}

/** Hides the password in a database URL for messages. */
function redact (url: string): string {
  return url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@')
}

async function main (): Promise<void> {
  const parsed = parseArgsOrExit('rgrid-coordinator', {
    allowPositionals: true,
    options: {
      http: { type: 'string' },
      listen: { type: 'string', multiple: true },
      bootstrap: { type: 'string', multiple: true },
      db: { type: 'string' },
      'data-dir': { type: 'string' },
      'bid-window-ms': { type: 'string' },
      'lease-ms': { type: 'string' },
      'silent-node-ms': { type: 'string' },
      objects: { type: 'string' },
      'no-api-keys': { type: 'boolean' },
      'secrets-key-file': { type: 'string' },
      'max-active-jobs-per-key': { type: 'string' },
      'max-session-frames-per-second': { type: 'string' },
      'deny-after-cut-ms': { type: 'string' },
      'requests-per-second-per-key': { type: 'string' },
      name: { type: 'string' },
      admin: { type: 'boolean' },
      'admin-key-file': { type: 'string' },
      'network-key-file': { type: 'string' },
      'public-url': { type: 'string' },
      'max-file-mb': { type: 'string' },
      'max-job-mb': { type: 'string' },
      'max-log-lines': { type: 'string' },
      'no-migrate': { type: 'boolean' },
      open: { type: 'boolean' },
      'bootstrap-file': { type: 'string' },
      'join-token-file': { type: 'string' },
      expires: { type: 'string' },
      note: { type: 'string' },
      addr: { type: 'string', multiple: true },
      ...PROVISIONING_FLAGS,
      relay: { type: 'boolean' },
      ...RELAY_FLAGS,
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' }
    },
    strict: true
  })
  const args = parsed.values
  if (args.help === true) { process.stdout.write(HELP); return }
  const [command, ...extra] = parsed.positionals
  if (command != null && command !== 'migrate' && command !== 'token' && command !== 'config' && command !== 'network-key' && command !== 'key') usageError('rgrid-coordinator', `unexpected argument ${JSON.stringify(command)}`)
  if (command !== 'token' && command !== 'key' && extra.length > 0) usageError('rgrid-coordinator', `unexpected argument ${JSON.stringify(extra[0])}`)
  const dbUrl = args.db ?? process.env.RGRID_DATABASE_URL ?? 'sqlite:coordinator.db'
  const log = createLogger('coordinator', { level: (args['log-level'] ?? 'info') as LogLevel })
  logUnhandledRejections(log)
  const dataDir = resolve(args['data-dir'] ?? join('.rgrid', 'coordinator'))
  let http
  try { http = parseHostPort(args.http ?? '127.0.0.1:8080') } catch (err) { usageError('rgrid-coordinator', `--http: ${(err as Error).message}`) }
  const bidWindowMs = args['bid-window-ms'] != null ? Number(args['bid-window-ms']) : undefined
  if (bidWindowMs != null && (!Number.isFinite(bidWindowMs) || bidWindowMs < 0)) usageError('rgrid-coordinator', '--bid-window-ms must be a number >= 0')
  const leaseMs = args['lease-ms'] != null ? Number(args['lease-ms']) : undefined
  if (leaseMs != null && (!Number.isInteger(leaseMs) || leaseMs < 1000)) usageError('rgrid-coordinator', '--lease-ms must be an integer >= 1000')
  const silentNodeMs = args['silent-node-ms'] != null ? Number(args['silent-node-ms']) : undefined
  if (silentNodeMs != null && (!Number.isInteger(silentNodeMs) || silentNodeMs < 1000)) usageError('rgrid-coordinator', '--silent-node-ms must be an integer >= 1000')
  await mkdir(dataDir, { recursive: true })
  if (command === 'migrate') {
    const store = await openStore(dbUrl, dataDir, true)
    await store.close()
    process.stdout.write(`migrations applied to ${redact(dbUrl)}\n`)
    return
  }
  let provisioning: ProvisioningConfig | null
  try { provisioning = resolveProvisioning(args, process.env) } catch (err) { usageError('rgrid-coordinator', (err as Error).message) }
  if (command === 'config') {
    process.stdout.write(JSON.stringify({
      dataDir, db: redact(dbUrl), http: `${http.host}:${http.port}`, listen: args.listen ?? ['/ip4/0.0.0.0/tcp/4002'], bootstrap: args.bootstrap ?? [],
      objects: (args.objects ?? process.env.RGRID_OBJECTS_URL ?? 'embedded').replace(/\/\/([^:@/]+):[^@]*@/, '//$1:***@'),
      open: args.open === true, leaseMs: leaseMs ?? 15_000, silentNodeMs: silentNodeMs ?? 3_000,
      ...describeProvisioning(provisioning)
    }, null, 2) + '\n')
    return
  }
  /** Runs a store subcommand: prints its output, or its one-line error with exit code 1. */
  const storeCommand = async (name: string, run: (store: Store) => Promise<string>): Promise<void> => {
    const store = await openStore(dbUrl, dataDir, true)
    try {
      process.stdout.write(await run(store))
    } catch (err) {
      process.stderr.write(`rgrid-coordinator ${name}: ${(err as Error).message}\n`)
      process.exitCode = 1
    } finally {
      await store.close()
    }
  }
  if (command === 'token') {
    const [sub, ...rest] = extra
    if (sub == null) usageError('rgrid-coordinator', 'token needs create, list or revoke')
    await storeCommand(`token ${sub}`, async store => await tokenCommand(sub, rest, { store, dataDir, addrs: args.addr ?? [], expires: args.expires ?? '7d', note: args.note ?? '', now: Date.now() }))
    return
  }
  if (command === 'key') {
    const [sub, ...rest] = extra
    if (sub == null) usageError('rgrid-coordinator', 'key needs create, list or revoke')
    await storeCommand(`key ${sub}`, async store => await keyCommand(sub, rest, { store, name: args.name, admin: args.admin === true, now: Date.now() }))
    return
  }
  if (command === 'network-key') {
    await storeCommand('network-key', async store => {
      const key = await store.ensureSetting({ name: NETWORK_KEY_SETTING, value: newNetworkKey() })
      if (args['network-key-file'] == null) return formatNetworkKeyFile(key)
      await writeHandoff(args['network-key-file'], formatNetworkKeyFile(key), 0o600)
      return ''
    })
    return
  }
  const objectsUrl = args.objects ?? process.env.RGRID_OBJECTS_URL ?? 'embedded'
  const mb = (name: string, text: string | undefined, fallback: number): number => {
    if (text == null) return fallback * 1024 * 1024
    const n = Number(text)
    if (!Number.isInteger(n) || n < 1) usageError('rgrid-coordinator', `--${name} must be a positive integer`)
    return n * 1024 * 1024
  }
  const maxFileBytes = mb('max-file-mb', args['max-file-mb'], 256)
  const maxJobBytes = mb('max-job-mb', args['max-job-mb'], 1024)
  let publicUrl = args['public-url']
  if (publicUrl != null) {
    try { if (!/^https?:$/.test(new URL(publicUrl).protocol)) throw new Error('not http') } catch { usageError('rgrid-coordinator', '--public-url must be an http(s) URL') }
  }
  let embedded: EmbeddedObjectStore | null = null
  let objects: ObjectStore
  if (objectsUrl === 'embedded') {
    embedded = new EmbeddedObjectStore({
      root: join(dataDir, 'objects'),
      secret: await loadOrCreateSecret(join(dataDir, 'objects.key')),
      publicUrl: () => publicUrl ?? 'http://127.0.0.1'
    })
    objects = embedded
  } else {
    try { objects = new S3ObjectStore(parseS3Url(objectsUrl)) } catch (err) { usageError('rgrid-coordinator', `--objects: ${(err as Error).message}`) }
  }
  const transfers = new Transfers({ objects, maxFileBytes, maxJobBytes })
  const maxLogLines = Number(args['max-log-lines'] ?? 50_000)
  if (!Number.isInteger(maxLogLines) || maxLogLines < 0) usageError('rgrid-coordinator', '--max-log-lines must be an integer >= 0')
  const store = await openStore(dbUrl, dataDir, args['no-migrate'] !== true)
  if (args.open === true) log.warn('open mode: nodes join without a join token; anyone who can reach this mesh can take jobs and report results')
  const apiKeys = args.open !== true && args['no-api-keys'] !== true
  if (!apiKeys) log.warn('the HTTP API is open: every caller can submit, see and cancel every job')
  function positive (name: string, fallback: number): number {
    const text = args[name as 'max-active-jobs-per-key' | 'requests-per-second-per-key' | 'max-session-frames-per-second' | 'deny-after-cut-ms']
    if (text == null) return fallback
    const n = Number(text)
    if (!Number.isInteger(n) || n < 1) usageError('rgrid-coordinator', `--${name} must be a positive integer`)
    return n
  }
  // The mesh's network key lives in the store, so every coordinator sharing it agrees on it.
  const networkKey = args.open === true ? undefined : await store.ensureSetting({ name: NETWORK_KEY_SETTING, value: newNetworkKey() })
  if (networkKey != null && args['network-key-file'] != null) await writeHandoff(args['network-key-file'], formatNetworkKeyFile(networkKey), 0o600)
  if (apiKeys && args['admin-key-file'] != null) {
    const existing = await readFile(args['admin-key-file'], 'utf8').catch((err: NodeJS.ErrnoException) => { if (err.code === 'ENOENT') return ''; throw err })
    if (existing.trim() === '') await writeHandoff(args['admin-key-file'], (await keyCommand('create', [], { store, name: 'admin-key-file', admin: true, now: Date.now() })).trim(), 0o600)
  }
  const prov = provisioning
  const bootstrap = [...(args.bootstrap ?? [])]
  if (args['bootstrap-file'] != null) {
    try { bootstrap.push(await readHandoff(args['bootstrap-file'], 60_000)) } catch (err) { usageError('rgrid-coordinator', (err as Error).message) }
  }
  let relay: RelayLimits | undefined
  try { relay = args.relay === true ? relayLimitsFromFlags(args) : undefined } catch (err) { usageError('rgrid-coordinator', (err as Error).message) }
  const coordinator = new Coordinator({
    ...(relay != null ? { relay } : {}),
    requireJoinToken: args.open !== true,
    secrets: new SecretBox((await loadOrCreateSecret(args['secrets-key-file'] ?? join(dataDir, 'secrets.key'))).subarray(0, 32)),
    maxActiveJobsPerKey: positive('max-active-jobs-per-key', 10_000),
    maxSessionFramesPerSecond: positive('max-session-frames-per-second', 500),
    denyAfterCutMs: positive('deny-after-cut-ms', 5_000),
    ...(networkKey != null ? { networkKey } : {}),
    ...(prov != null
      ? {
          provisioner: (mesh: ProvisionerMesh) => new Provisioner({
            ...mesh,
            client: new HetznerClient({ token: prov.token, endpoint: prov.endpoint }),
            store, log: log.child('provisioner'), clock: systemClock,
            meshId: prov.meshId ?? (mesh.coordinatorPeerIds()[0] ?? 'mesh').slice(-8).toLowerCase(),
            serverType: prov.serverType, fallbackServerTypes: prov.fallbackServerTypes, locations: prov.locations, image: prov.image,
            maxServers: prov.maxServers, maxHourlyEur: prov.maxHourlyEur,
            scaleUpAfterMs: prov.scaleUpAfterMs, idleBeforeDeleteMs: prov.idleBeforeDeleteMs,
            cooldownMs: prov.cooldownMs, joinDeadlineMs: prov.joinDeadlineMs, hourEndWindowMs: prov.hourEndWindowMs, scanMs: prov.scanMs,
            sshKeys: prov.sshKeys, unknownServers: prov.unknownServers
          })
        }
      : {}),
    transfers,
    maxLogLinesPerJob: maxLogLines,
    privateKey: await loadOrCreateIdentity(dataDir),
    store,
    log,
    listen: args.listen ?? ['/ip4/0.0.0.0/tcp/4002'],
    bootstrap,
    ...(bidWindowMs != null ? { bidWindowMs } : {}),
    ...(leaseMs != null ? { leaseMs } : {}),
    ...(silentNodeMs != null ? { silentNodeMs } : {})
  })
  await coordinator.start()
  const server = new HttpServer({
    app: createHttpApp({
      api: coordinator, log: log.child('http'), ...(embedded != null ? { objects: embedded } : {}),
      ...(apiKeys ? { auth: new ApiKeyAuth({ store, clock: systemClock }) } : {}),
      requestsPerSecondPerKey: positive('requests-per-second-per-key', 50)
    }),
    host: http.host, port: http.port
  })
  await server.start()
  publicUrl ??= server.url
  log.info('objects', { store: objects.kind, ...(embedded != null ? { url: publicUrl } : {}), maxFileBytes, maxJobBytes })
  // For `token create`: the addresses nodes can dial, as this run listens on them.
  await writeFile(join(dataDir, ADDRS_FILE), JSON.stringify(coordinator.addrs()) + '\n')
  if (args['join-token-file'] != null) {
    // Nodes reading this file trust this coordinator and dial it and the bootstrap peers; keep the file private to them.
    const token = (await tokenCommand('create', [], { store, dataDir, addrs: coordinator.addrs(), dialAddrs: bootstrap, expires: 'never', note: 'written to --join-token-file', now: Date.now() })).trim()
    await writeHandoff(args['join-token-file'], token, 0o600)
  }
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

/** The embedded object store's URL key: 32 random bytes, made once and kept (0600) so URLs survive restarts. */
async function loadOrCreateSecret (path: string): Promise<Uint8Array> {
  try {
    const key = await readFile(path)
    if (key.length >= 32) return key
    throw new Error(`${path} holds ${key.length} bytes; it needs at least 32 (delete it to make a new one)`)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  const key = randomBytes(32)
  // 'wx': if another coordinator sharing this dir made one meanwhile, use that one.
  try {
    await writeFile(path, key, { mode: 0o600, flag: 'wx' })
    return key
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    return await readFile(path)
  }
}
