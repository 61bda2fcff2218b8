/**
 * The `rgrid` submitter CLI as a user runs it: the real binary against a
 * real mesh. `rgrid run` uploads the script and file arguments, streams the
 * output, downloads what the job wrote under out/, and exits with the job's
 * exit code; read commands print text or --json; errors are one line with a
 * non-zero exit code.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { spawn } from 'node:child_process'
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { submit, waitForJob } from '../helpers/http.js'

const RGRID = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'rgrid.js')

let mesh: LocalMesh
let dataDir: string
let work: string

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-cli-'))
  work = join(dataDir, 'laptop')
  mkdirSync(work)
  mesh = new LocalMesh({ dataDir, nodes: 2, slots: 2, runtime: 'process' })
  await mesh.start()
  await mesh.waitForNodes(2)
}, 120_000)

afterAll(async () => {
  await mesh?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

interface Ran { code: number | null, stdout: string, stderr: string }

async function rgrid (args: string[], env: Record<string, string> = {}): Promise<Ran> {
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [RGRID, ...args], { cwd: work, env: { ...process.env, RGRID_COORDINATOR: mesh.httpUrl, RGRID_CONFIG: join(dataDir, 'none.json'), ...env } })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`rgrid ${args.join(' ')} did not exit; stderr: ${stderr}`)) }, 60_000)
    child.on('exit', code => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
  })
}

describe('rgrid CLI', () => {
  it('run: uploads the script and a data file, streams output, downloads out/, exits 0', async () => {
    writeFileSync(join(work, 'analyze.sh'), 'echo "rows: $(wc -l < "$1")"\nmkdir -p out\nsort -r "$1" > out/sorted.csv\necho "arg2=$2"\n')
    writeFileSync(join(work, 'data.csv'), 'b\na\nc\n')
    const r = await rgrid(['run', '--output-dir', 'results', 'analyze.sh', 'data.csv', 'plain-arg'])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toBe('rows: 3\narg2=plain-arg\n')
    expect(r.stderr).toMatch(/job [0-9a-f-]{36} submitted/)
    expect(readFileSync(join(work, 'results', 'out', 'sorted.csv'), 'utf8')).toBe('c\nb\na\n')
  })

  it('run: exits with the job\'s exit code and says why on stderr', async () => {
    writeFileSync(join(work, 'fail.sh'), 'echo partial; echo oops >&2; exit 7\n')
    const r = await rgrid(['run', '--attempts', '1', 'fail.sh'])
    expect(r.code).toBe(7)
    expect(r.stdout).toBe('partial\n')
    expect(r.stderr).toContain('oops')
    expect(r.stderr).toMatch(/failed: "sh" exited with code 7/)
  })

  it('read commands: status, list, logs, nodes, cancel, with --json', async () => {
    writeFileSync(join(work, 'slow.sh'), 'echo started; sleep 30\n')
    const d = await rgrid(['run', '--detach', 'slow.sh'])
    expect(d.code, d.stderr).toBe(0)
    const id = d.stdout.trim()
    expect(id).toMatch(/^[0-9a-f-]{36}$/)
    const status = await rgrid(['status', '--json', id])
    expect(JSON.parse(status.stdout)).toMatchObject({ id })
    // logs -f prints the line while the job still runs; then cancel ends it and the follow.
    const follow = spawn(process.execPath, [RGRID, 'logs', '-f', id], { env: { ...process.env, RGRID_COORDINATOR: mesh.httpUrl } })
    let followed = ''
    follow.stdout.on('data', (c: Buffer) => { followed += c.toString() })
    const deadline = Date.now() + 30_000
    while (!followed.includes('started') && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
    expect(followed).toBe('started\n')
    const ended = new Promise<number | null>(resolve => follow.on('exit', resolve))
    const cancel = await rgrid(['cancel', id])
    expect(cancel.code).toBe(0)
    expect(await ended).toBe(0)
    const list = await rgrid(['list', '--state', 'cancelled'])
    expect(list.stdout).toContain(id)
    const logs = await rgrid(['logs', id])
    expect(logs.stdout).toBe('started\n')
    const nodes = JSON.parse((await rgrid(['nodes', '--json'])).stdout) as Array<{ peerId: string }>
    expect(nodes.map(n => n.peerId).sort()).toEqual([...mesh.nodePeerIds].sort())
  })

  it('job-controlled text is escaped in names and messages; log lines reach a pipe as the job wrote them', async () => {
    const hostile = '\u001b]0;pwned\u0007\u001b[2J\u202eevil'
    // $0 is the hostile text (shown by list), $1 what the job prints.
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', 'printf "%s" "$1"', hostile, '\u001b[31mred\u001b[0m \u001b]0;title\u0007\n'] })
    await waitForJob(mesh.httpUrl, body.id, j => j.state === 'succeeded')
    const list = await rgrid(['list'])
    expect(list.code).toBe(0)
    const line = list.stdout.split('\n').find(l => l.startsWith(body.id))!
    expect(line).toContain('\\x1b]0;pwned\\x07')
    expect(line).toContain('\\u{202e}evil')
    expect(list.stdout).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f\u202e]/)
    // Not a terminal: the job's own bytes, colour and all, for files and pipes.
    const logs = await rgrid(['logs', body.id])
    expect(logs.stdout).toBe('\u001b[31mred\u001b[0m \u001b]0;title\u0007\n')
  })

  it('errors: one line and a distinct exit code', async () => {
    const unreachable = await rgrid(['status', '01900000-0000-7000-8000-000000000000'], { RGRID_COORDINATOR: 'http://127.0.0.1:9' })
    expect(unreachable.code).toBe(3)
    expect(unreachable.stderr.trim().split('\n')).toHaveLength(1)
    expect(unreachable.stderr).toContain('cannot reach the coordinator at http://127.0.0.1:9')
    const missing = await rgrid(['status', '01900000-0000-7000-8000-000000000000'])
    expect(missing.code).toBe(4)
    expect(missing.stderr).toContain('not found')
    const usage = await rgrid(['run', '--memory', 'lots', 'x.sh'])
    expect(usage.code).toBe(2)
    expect(usage.stderr).toContain('--memory')
    const noFile = await rgrid(['run', 'does-not-exist.py'])
    expect(noFile.code).toBe(2)
    expect(noFile.stderr).toContain('does-not-exist.py: no such file')
    const invalid = await rgrid(['run', '--timeout', '30d', 'fail.sh'])
    expect(invalid.code).toBe(3)
    expect(invalid.stderr).toContain('timeoutSeconds')
  })

  it('explain: says in plain words why a job no node can run is waiting, node by node', async () => {
    writeFileSync(join(work, 'big.sh'), 'echo never\n')
    const d = await rgrid(['run', '--detach', '--memory', '1000g', 'big.sh'])
    expect(d.code, d.stderr).toBe(0)
    const id = d.stdout.trim()
    const e = await rgrid(['explain', id])
    expect(e.code, e.stderr).toBe(0)
    expect(e.stdout).toMatch(/No node can run it: every node is unsuitable \(it needs 1024000 MiB; the largest node has \d+ MiB\)/)
    expect(e.stdout).toContain('Next: It waits until a node that matches joins')
    for (const peer of mesh.nodePeerIds) expect(e.stdout).toContain(`…${peer.slice(-12)}  unsuitable    needs 1024000 MiB`)
    const json = JSON.parse((await rgrid(['explain', '--json', id])).stdout) as { nodes: Array<{ verdict: string }> }
    expect(json.nodes.map(n => n.verdict)).toEqual(['unsuitable', 'unsuitable'])
    await rgrid(['cancel', id])
    // A finished job: where it ran and that nothing more happens.
    writeFileSync(join(work, 'ok.sh'), 'echo fine\n')
    const ok = await rgrid(['run', '--detach', 'ok.sh'])
    const okId = ok.stdout.trim()
    let text = ''
    for (let i = 0; i < 100 && !text.includes('Succeeded'); i++) {
      text = (await rgrid(['explain', okId])).stdout
      if (!text.includes('Succeeded')) await new Promise(resolve => setTimeout(resolve, 100))
    }
    expect(text).toMatch(/Succeeded on …\w{8} \(attempt 1, exit 0\)/)
    expect(text).toContain('Next: Nothing: the job has ended.')
    // How it was awarded: to the node waiting on standby (an idle mesh), or after bids, and what came of them.
    expect(text).toMatch(/awarded +attempt 1 +a node was waiting on standby|Bids:\n(.*\n)*.*attempt 1 {2}awarded/)
    expect(e.stdout).toContain('No node has bid on this attempt yet.')
  })

  it('run --batch: 30 files, one failing: progress, outputs per input, a summary, exit 1; list, retry and watch by batch', async () => {
    mkdirSync(join(work, 'data'))
    for (let i = 0; i < 30; i++) writeFileSync(join(work, 'data', `d${String(i).padStart(2, '0')}.csv`), i === 13 ? 'bad\n' : 'x\n'.repeat(i + 1))
    writeFileSync(join(work, 'count.sh'), 'if grep -q bad "$1"; then echo "cannot read $1" >&2; exit 2; fi\nmkdir -p out\nwc -l < "$1" | tr -d " " > out/count.txt\n')
    const r = await rgrid(['run', '--batch', 'data/*.csv', '--parallel', '8', '--attempts', '1', '--output-dir', 'res', 'count.sh'])
    expect(r.code, r.stderr).toBe(1)
    const batch = /batch (b-\d{8}-[0-9a-f]{8}) submitted/.exec(r.stderr)?.[1]
    expect(batch).toBeDefined()
    expect(r.stderr).toMatch(/\] 30\/30 · done 29 · running 0 · waiting 0 · failed 1/)
    const rows = r.stdout.trim().split('\n')
    expect(rows.filter(l => /^d\d\d\.csv /.test(l))).toHaveLength(30)
    expect(rows.find(l => l.startsWith('d13.csv'))).toMatch(/failed\s+2\s+1/)
    expect(r.stdout).toContain('29 succeeded, 1 failed or cancelled')
    expect(readFileSync(join(work, 'res', 'd04.csv', 'out', 'count.txt'), 'utf8')).toBe('5\n')
    expect(readFileSync(join(work, 'res', 'd29.csv', 'out', 'count.txt'), 'utf8')).toBe('30\n')
    const listed = JSON.parse((await rgrid(['list', '--json', '--batch', batch!])).stdout) as Array<{ state: string }>
    expect(listed).toHaveLength(30)
    const retried = await rgrid(['retry', '--batch', batch!, '--failed'])
    expect(retried.code, retried.stderr).toBe(0)
    expect(retried.stdout.trim().split('\n')).toHaveLength(1)
    // Reattach: the retry (newest job for d13.csv) counts; it fails again, so the batch still exits 1.
    const watched = await rgrid(['watch', '--output-dir', 'res2', batch!])
    expect(watched.code).toBe(1)
    expect(watched.stdout).toContain('29 succeeded, 1 failed or cancelled')
    expect((JSON.parse((await rgrid(['list', '--json', '--batch', batch!])).stdout) as unknown[])).toHaveLength(31)
  })

  it('Ctrl-C detaches from a running job without cancelling it, and says how to follow it', async () => {
    writeFileSync(join(work, 'long.sh'), 'echo begun; sleep 30\n')
    const child = spawn(process.execPath, [RGRID, 'run', 'long.sh'], { cwd: work, env: { ...process.env, RGRID_COORDINATOR: mesh.httpUrl, RGRID_CONFIG: join(dataDir, 'none.json') } })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
    const deadline = Date.now() + 30_000
    while (!stdout.includes('begun') && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
    expect(stdout).toBe('begun\n')
    const exited = new Promise<number | null>(resolve => child.on('exit', resolve))
    child.kill('SIGINT')
    expect(await exited).toBe(130)
    const id = /job ([0-9a-f-]{36}) submitted/.exec(stderr)?.[1]
    expect(stderr).toContain(`rgrid logs -f ${id!}`)
    // Still running: detaching is not cancelling.
    const status = JSON.parse((await rgrid(['status', '--json', id!])).stdout) as { state: string }
    expect(status.state).toBe('running')
    await rgrid(['cancel', id!])
  })
})
