/**
 * Live logs over real processes: a node ships a running job's output lines
 * to the coordinator while the job runs, and `GET /v1/jobs/:id/logs` serves
 * them as JSON pages or as Server-Sent Events that resume from a line.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalMesh } from '../../dist/cli/local-mesh.js'
import { getJob, submit, waitForJob, TERMINAL } from '../helpers/http.js'

interface Line { line: number, attempt: number, stream: string, at: number, text: string }
interface SseEvent { event: string, id: string | null, data: string }

let mesh: LocalMesh
let dataDir: string

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'rgrid-logs-'))
  mesh = new LocalMesh({ dataDir, nodes: 1, slots: 2, runtime: 'process' })
  await mesh.start()
  await mesh.waitForNodes(1)
}, 120_000)

afterAll(async () => {
  await mesh?.stop()
  rmSync(dataDir, { recursive: true, force: true })
})

/** Reads SSE events from a response until `stop` says so or the stream ends. */
async function readEvents (res: Response, stop: (e: SseEvent, all: SseEvent[]) => boolean, timeoutMs = 30_000): Promise<SseEvent[]> {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader()
  const events: SseEvent[] = []
  let buffer = ''
  const deadline = Date.now() + timeoutMs
  try {
    while (Date.now() < deadline) {
      const { value, done } = await reader.read()
      if (done) return events
      buffer += value
      let cut: number
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, cut)
        buffer = buffer.slice(cut + 2)
        const e: SseEvent = { event: 'message', id: null, data: '' }
        for (const l of block.split('\n')) {
          if (l.startsWith('event:')) e.event = l.slice(6).trim()
          else if (l.startsWith('id:')) e.id = l.slice(3).trim()
          else if (l.startsWith('data:')) e.data += l.slice(5).trim()
        }
        if (block.trim() === '' || block.startsWith(':')) continue
        events.push(e)
        if (stop(e, events)) return events
      }
    }
    throw new Error(`no end of events within ${timeoutMs} ms`)
  } finally {
    await reader.cancel()
  }
}

describe('live logs', () => {
  it('streams lines while the job runs, resumes from a line, and ends with the job', async () => {
    // Prints a line, then waits for a file only the test creates after it has seen that line live.
    const gate = join(dataDir, `gate-${Date.now()}`)
    const { body } = await submit(mesh.httpUrl, {
      command: ['sh', '-c', `echo first; echo to-stderr >&2; while [ ! -e ${gate} ]; do sleep 0.05; done; for i in 1 2 3; do echo after-$i; done; printf 'no newline'`]
    })
    const res = await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/logs?follow=1`)
    expect(res.headers.get('content-type')).toContain('text/event-stream')
    const early = await readEvents(res, (_e, all) => all.filter(x => x.event === 'log').length >= 2)
    // Seen live: the job is still running, blocked on the gate.
    expect((await getJob(mesh.httpUrl, body.id)).state).toBe('running')
    const earlyLines = early.filter(e => e.event === 'log').map(e => JSON.parse(e.data) as Line)
    expect(earlyLines.map(l => [l.stream, l.text]).sort()).toEqual([['stderr', 'to-stderr'], ['stdout', 'first']])
    expect(earlyLines.map(l => l.line).sort()).toEqual([1, 2])
    const { writeFileSync } = await import('node:fs')
    writeFileSync(gate, '')
    // Resume after line 2, as a reconnecting EventSource would.
    const resumed = await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/logs`, { headers: { accept: 'text/event-stream', 'last-event-id': '2' } })
    const rest = await readEvents(resumed, e => e.event === 'end')
    const restLines = rest.filter(e => e.event === 'log').map(e => JSON.parse(e.data) as Line)
    expect(restLines.map(l => l.text)).toEqual(['after-1', 'after-2', 'after-3', 'no newline'])
    expect(restLines.map(l => l.line)).toEqual([3, 4, 5, 6])
    expect(rest.filter(e => e.event === 'log').map(e => e.id)).toEqual(['3', '4', '5', '6'])
    expect(JSON.parse(rest.at(-1)!.data)).toMatchObject({ state: 'succeeded', next: 6 })
    const job = await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state))
    expect(job.result?.stdout).toBe('first\nafter-1\nafter-2\nafter-3\nno newline')
    // The same lines as a JSON page, with paging.
    const page = await (await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/logs?after=1&limit=2`)).json() as { lines: Line[], next: number }
    expect(page.lines.map(l => l.line)).toEqual([2, 3])
    expect(page.next).toBe(3)
    for (const l of page.lines) expect(l.attempt).toBe(1)
  })

  it('answers a follow of a finished job with its lines and the end at once', async () => {
    const { body } = await submit(mesh.httpUrl, { command: ['sh', '-c', 'echo one; echo two'] })
    await waitForJob(mesh.httpUrl, body.id, j => TERMINAL.has(j.state))
    const events = await readEvents(await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/logs?follow=1`), e => e.event === 'end', 10_000)
    expect(events.filter(e => e.event === 'log').map(e => (JSON.parse(e.data) as Line).text)).toEqual(['one', 'two'])
  })

  it('rejects bad offsets and unknown jobs clearly', async () => {
    const { body } = await submit(mesh.httpUrl, { command: ['true'] })
    const bad = await fetch(`${mesh.httpUrl}/v1/jobs/${body.id}/logs?after=-1`)
    expect(bad.status).toBe(400)
    expect(((await bad.json()) as { error: { message: string } }).error.message).toContain('after')
    const missing = await fetch(`${mesh.httpUrl}/v1/jobs/01900000-0000-7000-8000-000000000000/logs`)
    expect(missing.status).toBe(404)
  })
})
