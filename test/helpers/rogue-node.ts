/**
 * A raw node for session-protocol tests on a real mesh: it joins with the
 * mesh's token, takes only jobs labelled for it (real nodes lack the label),
 * and reports results frame by frame.
 */
import { expect } from 'vitest'
import { decodeJoinToken } from '../../common/join-token.js'
import { submit } from './http.js'
import type { RogueSession } from './rogue.js'

/** One slot; only jobs labelled `zone: rogue` fit it. */
export const ROGUE_CAPACITY = { slots: 1, freeSlots: 1, cpus: 1, memoryMb: 1024, labels: { zone: 'rogue' }, runtime: 'process', version: 'rogue' }

/** Says hello with the mesh's join token and expects the welcome. */
export async function greet (s: RogueSession, joinToken: string): Promise<void> {
  const t = decodeJoinToken(joinToken)
  await s.send({ type: 'hello', rid: 1, capacity: ROGUE_CAPACITY, running: [], join: { id: t.id, secret: t.secret } })
  expect(await s.frame()).toMatchObject({ type: 'welcome', rid: 1 })
}

/** Submits a job only the rogue can run; returns its id. */
export async function rogueJob (url: string, tag: string): Promise<string> {
  const { status, body } = await submit(url, { command: ['sh', '-c', `echo ${tag}`], labels: { zone: 'rogue' } })
  expect(status).toBe(201)
  return body.id as string
}

/** A succeeded `result` frame for an award, asking for the next attempt when `wantNext` is given. */
export function resultFrame (rid: number, award: { jobId: string, attempt: number, token: string }, stdout: string, wantNext?: boolean): Record<string, unknown> {
  return {
    type: 'result', rid, jobId: award.jobId, attempt: award.attempt, token: award.token, outcome: 'succeeded', exitCode: 0,
    stdout, stderr: '', stdoutTruncated: false, stderrTruncated: false, startedAt: Date.now() - 5, finishedAt: Date.now(), error: null,
    ...(wantNext != null ? { wantNext } : {})
  }
}

/** A job's event log. */
export async function jobEvents (url: string, id: string): Promise<Array<{ type: string, detail: Record<string, unknown> }>> {
  const res = await fetch(`${url}/v1/jobs/${id}/events`)
  expect(res.status).toBe(200)
  return (await res.json() as { events: Array<{ type: string, detail: Record<string, unknown> }> }).events
}

/** The helpers above bound to one test file's mesh (read when called: the mesh starts in beforeAll). */
export function rogueNodeFor (env: () => { url: string, joinToken: string }): {
  greet: (s: RogueSession) => Promise<void>
  rogueJob: (tag: string) => Promise<string>
  events: (id: string) => ReturnType<typeof jobEvents>
  result: typeof resultFrame
} {
  return {
    greet: async s => { await greet(s, env().joinToken) },
    rogueJob: async tag => await rogueJob(env().url, tag),
    events: async id => await jobEvents(env().url, id),
    result: resultFrame
  }
}
