/**
 * `rgrid run analyze.py data.csv` end to end with the Docker runtime: a real
 * Python script in a Python image built locally (test/images/build-python.sh),
 * reading its input and writing an output that lands in the output dir.
 * Skips without an engine or the image, except under CI=true.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { execFileSync, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import Dockerode from 'dockerode'
import { LocalMesh } from '../../dist/cli/local-mesh.js'

const IMAGE = 'rgrid-test/python:latest'
const HERE = dirname(fileURLToPath(import.meta.url))
const RGRID = join(HERE, '..', '..', 'dist', 'cli', 'rgrid.js')
let unavailable: string | null = null
let mesh: LocalMesh | null = null
let dataDir = ''

beforeAll(async () => {
  const docker = new Dockerode()
  try {
    await docker.ping()
    try {
      await docker.getImage(IMAGE).inspect()
    } catch {
      // Builds it when this machine can (root, debootstrap, a Debian mirror).
      execFileSync('bash', [join(HERE, '..', 'images', 'build-python.sh')], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 })
    }
  } catch (err) {
    unavailable = (err as Error).message
    if (process.env.CI === 'true') throw new Error(`CI=true but the Python Docker test cannot run: ${unavailable}`)
    return
  }
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-py-'))
  mesh = new LocalMesh({ dataDir, nodes: 1, slots: 2, runtime: 'docker', nodeArgs: () => ['--memory-mb', '2048'] })
  await mesh.start()
  await mesh.waitForNodes(1)
}, 700_000)

afterAll(async () => {
  await mesh?.stop()
  if (dataDir !== '') rmSync(dataDir, { recursive: true, force: true })
})

describe('rgrid run with a Python script in Docker', () => {
  it('runs analyze.py on data.csv and brings back out/summary.json', async (ctx) => {
    if (unavailable != null || mesh == null) { ctx.skip(`Docker or the Python image is unavailable: ${unavailable}`); return }
    const work = join(dataDir, 'laptop')
    mkdirSync(work)
    writeFileSync(join(work, 'analyze.py'), [
      'import csv, json, os, sys',
      'with open(sys.argv[1], newline="") as f:',
      '    rows = list(csv.DictReader(f))',
      'total = sum(float(r["value"]) for r in rows)',
      'print(f"rows={len(rows)} total={total}")',
      'print("python", sys.version.split()[0], file=sys.stderr)',
      'os.makedirs("out", exist_ok=True)',
      'with open("out/summary.json", "w") as f:',
      '    json.dump({"rows": len(rows), "total": total, "input": sys.argv[1]}, f)',
      ''
    ].join('\n'))
    writeFileSync(join(work, 'data.csv'), 'name,value\na,1.5\nb,2\nc,3.5\n')
    const r = await new Promise<{ code: number | null, stdout: string, stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [RGRID, 'run', '--image', IMAGE, 'analyze.py', 'data.csv'], { cwd: work, env: { ...process.env, RGRID_COORDINATOR: mesh!.httpUrl } })
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
      child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
      const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`rgrid run did not exit: ${stderr}`)) }, 120_000)
      child.on('exit', code => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
    })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toBe('rows=3 total=7.0\n')
    expect(r.stderr).toMatch(/python 3\.\d+/)
    expect(JSON.parse(readFileSync(join(work, 'out', 'summary.json'), 'utf8'))).toEqual({ rows: 3, total: 7, input: 'inputs/data.csv' })
  })
})
