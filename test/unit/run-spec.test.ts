/**
 * How `rgrid run` turns a local command line into a job spec: the image and
 * interpreter follow the script's extension, file arguments are uploaded and
 * rewritten to their path in the job, and dependency files beside the script
 * become a setup step that keeps the arguments intact.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildRunSpec, parseDuration, parseMemory, exitCodeOf } from '../../cli/run.js'
import type { Client, Job } from '../../cli/client.js'

let dir: string
let uploaded: string[]
const client = { upload: async (file: string) => { uploaded.push(file); return `sha256:${String(uploaded.length).padStart(64, '0')}` } } as unknown as Client
const base = { env: {}, labels: {}, outputs: [], outputDir: '.' }

beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'rgrid-spec-')); uploaded = [] })
afterEach(() => { rmSync(dir, { recursive: true, force: true }) })

describe('buildRunSpec', () => {
  it('runs a Python script with python3 in a Python image, uploading file arguments under inputs/', async () => {
    writeFileSync(join(dir, 'analyze.py'), 'print(1)')
    writeFileSync(join(dir, 'a.csv'), 'x')
    const { spec } = await buildRunSpec(client, { ...base, script: join(dir, 'analyze.py'), args: [join(dir, 'a.csv'), '--flag', 'not-a-file'] })
    expect(spec.image).toBe('python:3.12-slim')
    expect(spec.command).toEqual(['python3', 'analyze.py', 'inputs/a.csv', '--flag', 'not-a-file'])
    expect((spec.inputs as Array<{ path: string }>).map(i => i.path)).toEqual(['analyze.py', 'inputs/a.csv'])
    expect(spec.outputs).toEqual([{ path: 'out/**' }])
    expect(uploaded).toEqual([join(dir, 'analyze.py'), join(dir, 'a.csv')])
  })

  it('keeps two arguments with the same file name apart', async () => {
    writeFileSync(join(dir, 's.sh'), 'true')
    const other = mkdtempSync(join(tmpdir(), 'rgrid-spec-other-'))
    try {
      writeFileSync(join(dir, 'd.csv'), '1')
      writeFileSync(join(other, 'd.csv'), '2')
      const { spec } = await buildRunSpec(client, { ...base, script: join(dir, 's.sh'), args: [join(dir, 'd.csv'), join(other, 'd.csv')] })
      expect(spec.command).toEqual(['sh', 's.sh', 'inputs/d.csv', 'inputs/2-d.csv'])
      // Shell scripts run in the node's default image.
      expect(spec.image).toBeUndefined()
    } finally {
      rmSync(other, { recursive: true, force: true })
    }
  })

  it('installs requirements.txt before a Python script, passing its arguments through "$@"', async () => {
    writeFileSync(join(dir, 'job.py'), 'import sys')
    writeFileSync(join(dir, 'requirements.txt'), 'requests==2.32.3\n')
    const { spec } = await buildRunSpec(client, { ...base, script: join(dir, 'job.py'), args: ['a b', '$(rm -rf /)'], image: 'my/python:1' })
    expect(spec.image).toBe('my/python:1')
    expect(spec.command).toEqual(['sh', '-c', 'pip install --quiet --no-input --disable-pip-version-check -r requirements.txt >&2 && exec "$@"', 'rgrid-run', 'python3', 'job.py', 'a b', '$(rm -rf /)'])
    expect((spec.inputs as Array<{ path: string }>).map(i => i.path)).toContain('requirements.txt')
  })

  it('installs package.json dependencies before a Node script', async () => {
    writeFileSync(join(dir, 'job.mjs'), '')
    writeFileSync(join(dir, 'package.json'), '{}')
    const { spec } = await buildRunSpec(client, { ...base, script: join(dir, 'job.mjs'), args: [] })
    expect(spec.image).toBe('node:22-slim')
    expect((spec.command as string[]).slice(0, 3)).toEqual(['sh', '-c', 'npm install --omit=dev --no-audit --no-fund --loglevel=error >&2 && exec "$@"'])
    expect((spec.command as string[]).slice(-2)).toEqual(['node', 'job.mjs'])
  })

  it('refuses a missing script', async () => {
    await expect(buildRunSpec(client, { ...base, script: join(dir, 'nope.py'), args: [] })).rejects.toThrow('nope.py: no such file')
  })
})

describe('parsing and exit codes', () => {
  it('parses sizes and durations, refusing nonsense', () => {
    expect(parseMemory('512m')).toBe(512)
    expect(parseMemory('2g')).toBe(2048)
    expect(parseMemory('1024')).toBe(1024)
    expect(() => parseMemory('lots')).toThrow('--memory')
    expect(parseDuration('90s')).toBe(90)
    expect(parseDuration('10m')).toBe(600)
    expect(parseDuration('2h')).toBe(7200)
    expect(() => parseDuration('soon')).toThrow('--timeout')
  })

  it('exits with the job\'s code, 1 when it has none', () => {
    const job = (state: string, exitCode: number | null): Job => ({ id: 'x', state, spec: {}, createdAt: 0, updatedAt: 0, attempts: [], result: exitCode === null ? null : { attempt: 1, outcome: state, exitCode, stdout: '', stderr: '', error: null, artifacts: [] } })
    expect(exitCodeOf(job('succeeded', 0))).toBe(0)
    expect(exitCodeOf(job('failed', 7))).toBe(7)
    expect(exitCodeOf(job('failed', null))).toBe(1)
    expect(exitCodeOf(job('cancelled', null))).toBe(1)
  })
})
