/**
 * The coordinator's command line around migrations: `migrate` applies them
 * and exits; `--no-migrate` refuses an out-of-date schema with a clear
 * message; a bad --db is a one-line error.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { BINS } from '../../dist/cli/local-mesh.js'
import { startTestPostgres, type TestPostgres } from '../helpers/postgres.js'

const run = promisify(execFile)
const dir = mkdtempSync(join(tmpdir(), 'rgrid-cli-'))
let pg: TestPostgres | null = null

afterAll(async () => {
  await pg?.stop()
  rmSync(dir, { recursive: true, force: true })
})

async function coordinator (args: string[], env: Record<string, string> = {}): Promise<{ code: number, stdout: string, stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BINS.coordinator, ...args, '--data-dir', dir, '--http', '127.0.0.1:0', '--listen', '/ip4/127.0.0.1/tcp/0'], { timeout: 30_000, env: { ...process.env, ...env } })
    return { code: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code: number, stdout: string, stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

describe('rgrid-coordinator migrations', () => {
  it('refuses to start on an unmigrated SQLite database with --no-migrate, and migrate fixes it', async () => {
    const db = `sqlite:${join(dir, 'fresh.db')}`
    const refused = await coordinator(['--db', db, '--no-migrate'])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/schema is out of date \(pending migrations: 1(, \d+)*\)/)
    const migrated = await coordinator(['migrate', '--db', db])
    expect(migrated.code).toBe(0)
    expect(migrated.stdout).toContain('migrations applied')
    const again = await coordinator(['migrate', '--db', db])
    expect(again.code).toBe(0)
  })

  it('does the same on PostgreSQL, with the URL from RGRID_DATABASE_URL, and hides the password in messages', async () => {
    pg = await startTestPostgres()
    const url = await pg.createDatabase()
    const refused = await coordinator(['--db', url, '--no-migrate'])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain('pending migrations')
    const migrated = await coordinator(['migrate'], { RGRID_DATABASE_URL: url })
    expect(migrated.code).toBe(0)
    expect(migrated.stdout).toContain('***')
    expect(migrated.stdout).toContain(`@127.0.0.1:${new URL(url).port}`)
    expect(migrated.stdout).not.toContain(new URL(url).password)
  })

  it('rejects an unknown database URL in one line', async () => {
    const bad = await coordinator(['--db', 'mysql://x'])
    expect(bad.code).toBe(1)
    expect(bad.stderr.trim().split('\n')).toHaveLength(1)
    expect(bad.stderr).toContain('unsupported --db')
  })
})
