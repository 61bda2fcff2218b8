/**
 * The process runtime's host: a small child process of the node that starts
 * jobs on its behalf (see forked-process.ts). Entry point for
 * `child_process.fork`; talks to its parent over the IPC channel only.
 */
import { ProcessRuntime } from './process.js'
import { createLogger } from '../../common/log.js'
import type { HostRequest, HostReply } from './host-protocol.js'

const log = createLogger('process-host')
const runtime = new ProcessRuntime({ logger: log })
const running = new Map<number, AbortController>()

function send (reply: HostReply): void {
  process.send?.(reply)
}

process.on('message', (raw: unknown) => {
  const msg = raw as HostRequest
  if (msg.type === 'run') {
    const controller = new AbortController()
    running.set(msg.id, controller)
    runtime.run({
      jobId: msg.jobId,
      attempt: msg.attempt,
      spec: msg.spec,
      workDir: msg.workDir,
      signal: controller.signal,
      onStarted: (at, info) => { send({ type: 'started', id: msg.id, at, pid: info?.pid ?? null }) },
      ...(msg.live ? { onOutput: (stream: 'stdout' | 'stderr', data: Uint8Array) => { send({ type: 'output', id: msg.id, stream, data }) } } : {})
    }).then((outcome) => { send({ type: 'outcome', id: msg.id, outcome }) }, (err: unknown) => {
      send({ type: 'failed', id: msg.id, message: err instanceof Error ? err.message : String(err) })
    }).finally(() => { running.delete(msg.id) })
  } else if (msg.type === 'cancel') {
    running.get(msg.id)?.abort(new Error('cancelled'))
  }
})

// The node went away: stop every job it started, then leave.
process.on('disconnect', () => {
  for (const c of running.values()) c.abort(new Error('node gone'))
  const exitWhenIdle = (): void => {
    if (running.size === 0) process.exit(0)
    else setTimeout(exitWhenIdle, 50).unref()
  }
  exitWhenIdle()
  setTimeout(() => { process.exit(1) }, 10_000).unref()
})

send({ type: 'ready' })
