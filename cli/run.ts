/**
 * `rgrid run SCRIPT [ARGS...]`: turns a local command line into a job.
 * The script and every argument that names an existing file are uploaded
 * (once per content) and rewritten to their path inside the job; the job's
 * output is streamed live; its outputs are downloaded; the exit code is the
 * job's.
 */
import { existsSync, statSync } from 'node:fs'
import { basename, dirname, extname, join, resolve } from 'node:path'
import type { Client, Job } from './client.js'

export interface RunOptions {
  script: string
  args: string[]
  image?: string
  cpus?: number
  memoryMb?: number
  timeoutSeconds?: number
  env: Record<string, string>
  labels: Record<string, string>
  /** Output patterns besides the default `out/**`. */
  outputs: string[]
  /** Where outputs land, mirroring their paths in the job. @default '.' */
  outputDir: string
  maxAttempts?: number
}

/** How a script of each kind is started, and the image that has its interpreter. */
const KINDS: Record<string, { run: string[], image?: string }> = {
  '.py': { run: ['python3'], image: 'python:3.12-slim' },
  '.js': { run: ['node'], image: 'node:22-slim' },
  '.mjs': { run: ['node'], image: 'node:22-slim' },
  '.cjs': { run: ['node'], image: 'node:22-slim' },
  '.rb': { run: ['ruby'], image: 'ruby:3.3-slim' },
  // Shell scripts run in the node's default image.
  '.sh': { run: ['sh'] },
  '.bash': { run: ['bash'], image: 'debian:bookworm-slim' }
}

export const DEFAULT_OUTPUTS = ['out/**']

/** Parses `512m`, `2g`, `1024` (MiB). */
export function parseMemory (text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([mgMG]?)i?[bB]?$/.exec(text.trim())
  if (m == null) throw new Error(`--memory: ${JSON.stringify(text)} is not a size like 512m or 2g`)
  const n = Number(m[1]) * (m[2]?.toLowerCase() === 'g' ? 1024 : 1)
  if (!Number.isInteger(n) || n < 4) throw new Error('--memory must be a whole number of MiB, at least 4')
  return n
}

/** Parses `90`, `90s`, `10m`, `2h` into seconds. */
export function parseDuration (text: string): number {
  const m = /^(\d+)\s*([smhd]?)$/.exec(text.trim())
  if (m == null) throw new Error(`--timeout: ${JSON.stringify(text)} is not a duration like 90s, 10m or 2h`)
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd']
  return Number(m[1]) * unit
}

/** Builds the job spec, uploading what it needs. Returns the spec and how local args were rewritten. */
export async function buildRunSpec (client: Client, o: RunOptions): Promise<{ spec: Record<string, unknown>, uploaded: Array<[string, string]> }> {
  if (!existsSync(o.script) || !statSync(o.script).isFile()) throw new Error(`${o.script}: no such file`)
  const ext = extname(o.script).toLowerCase()
  const kind = KINDS[ext]
  const scriptName = basename(o.script)
  const inputs: Array<{ path: string, object: string }> = [{ path: scriptName, object: await client.upload(o.script) }]
  const uploaded: Array<[string, string]> = [[o.script, scriptName]]
  const used = new Set([scriptName])
  const args: string[] = []
  for (const a of o.args) {
    if (existsSync(a) && statSync(a).isFile()) {
      let path = `inputs/${basename(a)}`
      for (let n = 2; used.has(path); n++) path = `inputs/${n}-${basename(a)}`
      used.add(path)
      inputs.push({ path, object: await client.upload(a) })
      uploaded.push([a, path])
      args.push(path)
    } else {
      args.push(a)
    }
  }
  // Dependencies beside the script are installed in the job before it runs.
  const here = dirname(resolve(o.script))
  let setup: string | null = null
  if (ext === '.py' && existsSync(join(here, 'requirements.txt'))) {
    inputs.push({ path: 'requirements.txt', object: await client.upload(join(here, 'requirements.txt')) })
    setup = 'pip install --quiet --no-input --disable-pip-version-check -r requirements.txt'
  } else if (kind?.run[0] === 'node' && existsSync(join(here, 'package.json'))) {
    inputs.push({ path: 'package.json', object: await client.upload(join(here, 'package.json')) })
    if (existsSync(join(here, 'package-lock.json'))) inputs.push({ path: 'package-lock.json', object: await client.upload(join(here, 'package-lock.json')) })
    setup = 'npm install --omit=dev --no-audit --no-fund --loglevel=error'
  }
  const run = [...(kind?.run ?? ['sh']), scriptName, ...args]
  // With a setup step the command goes through sh; the arguments still travel as "$@", never re-parsed.
  const command = setup == null ? run : ['sh', '-c', `${setup} >&2 && exec "$@"`, 'rgrid-run', ...run]
  const spec: Record<string, unknown> = {
    command,
    inputs,
    outputs: [...DEFAULT_OUTPUTS, ...o.outputs].map(path => ({ path })),
    env: o.env,
    labels: o.labels,
    ...(o.image ?? kind?.image) != null ? { image: o.image ?? kind?.image } : {},
    ...(o.cpus != null || o.memoryMb != null ? { resources: { ...(o.cpus != null ? { cpus: o.cpus } : {}), ...(o.memoryMb != null ? { memoryMb: o.memoryMb } : {}) } } : {}),
    ...(o.timeoutSeconds != null ? { timeoutSeconds: o.timeoutSeconds } : {}),
    ...(o.maxAttempts != null ? { maxAttempts: o.maxAttempts } : {})
  }
  return { spec, uploaded }
}

/** The exit code `rgrid run` ends with for a finished job. */
export function exitCodeOf (job: Job): number {
  if (job.state === 'succeeded') return 0
  const code = job.result?.exitCode
  return code != null && code > 0 && code < 256 ? code : 1
}

/** Downloads the job's artifacts under `dir`, mirroring their paths. Returns the local paths. */
export async function downloadArtifacts (client: Client, id: string, dir: string): Promise<string[]> {
  const out: string[] = []
  for (const a of await client.artifacts(id)) {
    const dest = resolve(dir, a.path)
    // Artifact paths are checked by the coordinator; this keeps a hostile one inside `dir` anyway.
    if (!dest.startsWith(resolve(dir) + '/')) throw new Error(`refusing artifact path ${a.path}`)
    await client.download(a.url, dest)
    out.push(dest)
  }
  return out
}
