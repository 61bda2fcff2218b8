/**
 * The checks every fault scenario makes on its jobs: each ended, succeeded
 * exactly once with its own output, the recorded result belongs to the
 * attempt that succeeded (never to a replaced one), and the event log
 * explains every attempt that was not the last.
 */
import { expect } from 'vitest'
import type { JobJson } from './http.js'

export interface JobEvent { type: string, attempt: number | null, actor: string, detail: Record<string, unknown> }

export async function jobEvents (url: string, id: string, apiKey?: string): Promise<JobEvent[]> {
  return (await (await fetch(`${url}/v1/jobs/${id}/events`, { headers: apiKey != null ? { authorization: `Bearer ${apiKey}` } : {} })).json() as { events: JobEvent[] }).events
}

export interface ExactlyOnceSummary {
  /** Attempts that were replaced (lost, failed retryably or released). */
  replaced: number
  /** Reports refused for carrying a replaced attempt's token. */
  staleReports: number
  /** Reschedule reasons seen, with counts. */
  reasons: Map<string, number>
}

/**
 * Asserts the exactly-once contract on finished jobs; `stdout(i)` is what
 * job i printed. Returns what the fault did, so a test can also assert that
 * the fault happened at all.
 */
export async function expectExactlyOnce (url: string, jobs: JobJson[], stdout: (i: number) => string, apiKey?: string): Promise<ExactlyOnceSummary> {
  const summary: ExactlyOnceSummary = { replaced: 0, staleReports: 0, reasons: new Map() }
  for (const [i, job] of jobs.entries()) {
    expect(job.state, `job ${i} (${job.id})`).toBe('succeeded')
    expect(job.result?.stdout, `job ${i} output`).toBe(stdout(i))
    const succeeded = job.attempts.filter(a => a.state === 'succeeded')
    expect(succeeded, `job ${i}: exactly one succeeded attempt`).toHaveLength(1)
    // The recorded result is the surviving attempt's, and it is the last one.
    const result = job.result as (JobJson['result'] & { attempt: number }) | null
    expect(result?.attempt, `job ${i}: result from attempt`).toBe(succeeded[0]!.number)
    expect(succeeded[0]!.number, `job ${i}: the succeeded attempt is the latest`).toBe(Math.max(...job.attempts.map(a => a.number)))
    const events = await jobEvents(url, job.id, apiKey)
    expect(events.filter(e => e.type === 'finished'), `job ${i}: one finished event`).toHaveLength(1)
    // Every replaced attempt has exactly one reschedule event with a reason.
    const resched = events.filter(e => e.type === 'rescheduled')
    expect(resched.map(e => e.attempt).sort(), `job ${i}: reschedules`).toEqual(job.attempts.slice(0, -1).map(a => a.number).sort())
    for (const r of resched) {
      const reason = String(r.detail.reason ?? '')
      expect(reason.length, `job ${i}: reschedule reason`).toBeGreaterThan(10)
      const key = reason.replace(/[0-9a-z]{40,}/gi, '<peer>').replace(/\d+(\.\d+)? ?m?s\b/g, '<t>')
      summary.reasons.set(key, (summary.reasons.get(key) ?? 0) + 1)
    }
    summary.replaced += resched.length
    for (const a of job.attempts.slice(0, -1)) expect(['lost', 'failed', 'cancelled'], `job ${i}: replaced attempt ${a.number}`).toContain(a.state)
    // A refused report may only come from an attempt that was replaced.
    const stale = events.filter(e => e.type === 'stale-report')
    for (const s of stale) expect(s.attempt, `job ${i}: stale report ${JSON.stringify(s.detail)}`).not.toBe(succeeded[0]!.number)
    summary.staleReports += stale.length
  }
  return summary
}
