/**
 * `rgrid-node` for operators: a node started from a config file with a join
 * token, `rgrid-node status` showing what it does, and the defaults that keep
 * a reserve of the machine for its owner.
 */
import { describe, it, expect, afterAll } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { BINS, LocalMesh } from '../../dist/cli/local-mesh.js'
import { submit, waitForJob, TERMINAL } from '../helpers/http.js'

const dataDir = mkdtempSync(join(tmpdir(), 'rgrid-nodecli-'))
const mesh = new LocalMesh({ dataDir, nodes: 0, runtime: 'process' })
let node: ChildProcess | null = null

afterAll(async () => {
  if (node != null && node.exitCode == null) {
    const exited = new Promise(resolve => node!.once('exit', resolve))
    node.kill('SIGTERM')
    await exited
  }
  await mesh.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

async function nodeStatus (dir: string, json = false): Promise<{ code: number | null, out: string }> {
  return await new Promise(resolve => {
    const child = spawn(process.execPath, [BINS.node, 'status', '--data-dir', dir, ...(json ? ['--json'] : [])])
    let out = ''
    child.stdout.on('data', (c: Buffer) => { out += c.toString() })
    child.stderr.on('data', (c: Buffer) => { out += c.toString() })
    child.on('exit', code => { resolve({ code, out }) })
  })
}

describe('rgrid-node for operators', () => {
  it('joins from a config file, shows its status, and keeps a reserve of the machine by default', async () => {
    await mesh.start()
    const nodeDir = join(dataDir, 'config-node')
    const config = join(dataDir, 'node.json')
    writeFileSync(config, JSON.stringify({ join: [mesh.joinToken, mesh.bootstrapAddr], runtime: 'process', 'data-dir': nodeDir, labels: 'from=config', listen: '/ip4/127.0.0.1/tcp/0' }))
    expect((await nodeStatus(nodeDir)).code).toBe(1)
    node = spawn(process.execPath, [BINS.node, 'join', '--config', config, '--slots', '2'], { stdio: ['ignore', 'pipe', 'pipe'] })
    const peerId = await new Promise<string>((resolve, reject) => {
      createInterface({ input: node!.stdout! }).once('line', resolve)
      node!.once('exit', code => { reject(new Error(`node exited ${code}`)) })
    })
    await mesh.waitForNodes(1)
    const { nodes } = await (await fetch(`${mesh.httpUrl}/v1/nodes`)).json() as { nodes: Array<{ peerId: string, capacity: { slots: number, cpus: number, memoryMb: number, labels: Record<string, string> } }> }
    const me = nodes.find(n => n.peerId === peerId)!
    // The file's label and the flag's slots both apply.
    expect(me.capacity.labels).toEqual({ from: 'config' })
    expect(me.capacity.slots).toBe(2)
    const cores = availableParallelism()
    expect(me.capacity.cpus).toBe(cores > 2 ? cores - 1 : cores)
    const totalMb = Math.floor(totalmem() / 1024 / 1024)
    expect(me.capacity.memoryMb).toBeLessThanOrEqual(totalMb - 512)
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', 'echo via-config'], labels: { from: 'config' } })
    const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state))
    expect(job.result?.stdout).toBe('via-config\n')
    // Status shows identity, the coordinator session and the recent result (rewritten every 2 s).
    let s = await nodeStatus(nodeDir, true)
    const deadline = Date.now() + 10_000
    while (!s.out.includes(body.id) && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, 200))
      s = await nodeStatus(nodeDir, true)
    }
    const parsed = JSON.parse(s.out) as { peerId: string, stale: boolean, coordinators: string[], connections: string[], recentResults: Array<{ jobId: string, outcome: string }> }
    expect(parsed.peerId).toBe(peerId)
    expect(parsed.stale).toBe(false)
    expect(parsed.coordinators).toEqual([mesh.coordinatorPeerId])
    expect(parsed.connections.length).toBeGreaterThan(0)
    expect(parsed.recentResults[0]).toMatchObject({ jobId: body.id, outcome: 'succeeded' })
    const text = await nodeStatus(nodeDir)
    expect(text.out).toContain(`node ${peerId}`)
    expect(text.out).toMatch(/recent results:[\s\S]*succeeded exit 0/)
  })

  it('refuses a config file with an unknown setting, naming it', async () => {
    const bad = join(dataDir, 'bad.json')
    writeFileSync(bad, JSON.stringify({ join: mesh.joinToken, slotz: 3 }))
    const r = await new Promise<{ code: number | null, err: string }>(resolve => {
      const child = spawn(process.execPath, [BINS.node, 'join', '--config', bad])
      let err = ''
      child.stderr.on('data', (c: Buffer) => { err += c.toString() })
      child.on('exit', code => { resolve({ code, err }) })
    })
    expect(r.code).not.toBe(0)
    expect(r.err).toContain('unknown setting "slotz"')
  })

  it('starts jobs through rgrid-spawn by default, through Node\'s child_process with --spawner node, and refuses other spawners', async () => {
    const children = (pid: number): Array<{ pid: number, cmd: string }> => readdirSync('/proc').filter(d => /^\d+$/.test(d)).flatMap(d => {
      try {
        const stat = readFileSync(`/proc/${d}/stat`, 'utf8')
        if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) !== pid) return []
        return [{ pid: Number(d), cmd: readFileSync(`/proc/${d}/cmdline`, 'utf8').replaceAll('\0', ' ') }]
      } catch {
        return [] // exited while we looked
      }
    })
    await mesh.start() // idempotent: running alone, this test starts the mesh
    const helperBuilt = existsSync(join(import.meta.dirname, '..', '..', 'dist', 'node', 'runtime', 'spawn-helper', 'rgrid-spawn'))
    if (process.env.CI === 'true') expect(helperBuilt).toBe(true)
    for (const [spawner, expected] of [['node', 'process-host.js'], ...(helperBuilt ? [['auto', 'rgrid-spawn']] : [])] as Array<[string, string]>) {
      const label = `spawner-${spawner}`
      const child = spawn(process.execPath, [BINS.node, 'join', mesh.joinToken, mesh.bootstrapAddr, '--runtime', 'process', '--spawner', spawner,
        '--data-dir', join(dataDir, label), '--labels', `via=${label}`, '--listen', '/ip4/127.0.0.1/tcp/0'], { stdio: ['ignore', 'pipe', 'pipe'] })
      try {
        const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', 'echo $PPID'], labels: { via: label } })
        const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state))
        expect(job.state).toBe('succeeded')
        const helpers = children(child.pid!).filter(c => c.cmd.includes(expected))
        expect(helpers, `${spawner}: children ${JSON.stringify(children(child.pid!))}`).toHaveLength(1)
        // The job's parent was that helper.
        expect(job.result?.stdout).toBe(`${helpers[0]!.pid}\n`)
      } finally {
        const exited = new Promise(resolve => child.once('exit', resolve))
        child.kill('SIGTERM')
        await exited
      }
    }
    const bad = await new Promise<{ code: number | null, err: string }>(resolve => {
      const child = spawn(process.execPath, [BINS.node, 'join', mesh.joinToken, '--runtime', 'process', '--spawner', 'fork'])
      let err = ''
      child.stderr.on('data', (c: Buffer) => { err += c.toString() })
      child.on('exit', code => { resolve({ code, err }) })
    })
    expect(bad.code).not.toBe(0)
    expect(bad.err).toContain('--spawner must be auto, helper or node, got "fork"')
  })
})
