/** Small HTTP helpers for tests that talk to a running coordinator. */

export interface JobJson {
  id: string
  state: string
  spec: Record<string, unknown>
  attempts: Array<{ number: number, node: string, state: string, awardedAt: number, startedAt: number | null, finishedAt: number | null }>
  result: { exitCode: number | null, stdout: string, stderr: string, outcome: string, error: { code: string, message: string, retryable: boolean } | null, startedAt: number | null, finishedAt: number } | null
}

/** `Authorization` for an API key, or nothing (coordinators of test meshes run with --no-api-keys). */
export const bearer = (apiKey?: string): Record<string, string> => apiKey != null && apiKey !== '' ? { authorization: `Bearer ${apiKey}` } : {}

export async function submit (url: string, spec: unknown, apiKey?: string): Promise<{ status: number, body: any }> {
  const res = await fetch(`${url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(apiKey) }, body: JSON.stringify(spec) })
  return { status: res.status, body: await res.json() }
}

export async function getJob (url: string, id: string, apiKey?: string): Promise<JobJson> {
  const res = await fetch(`${url}/v1/jobs/${id}`, { headers: bearer(apiKey) })
  if (res.status !== 200) throw new Error(`GET job ${id}: ${res.status}`)
  return await res.json() as JobJson
}

export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled'])

/** Polls until `predicate` holds for the job or the deadline passes. */
export async function waitForJob (url: string, id: string, predicate: (job: JobJson) => boolean, timeoutMs = 30_000, apiKey?: string): Promise<JobJson> {
  const deadline = Date.now() + timeoutMs
  let job = await getJob(url, id, apiKey)
  while (!predicate(job)) {
    if (Date.now() > deadline) throw new Error(`job ${id} still ${job.state} after ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 50))
    job = await getJob(url, id, apiKey)
  }
  return job
}

/** Polls until every job is terminal; returns them in order. */
export async function waitForAll (url: string, ids: string[], timeoutMs = 60_000, apiKey?: string): Promise<JobJson[]> {
  const deadline = Date.now() + timeoutMs
  const done = new Map<string, JobJson>()
  while (done.size < ids.length) {
    for (const id of ids) {
      if (done.has(id)) continue
      const res = await fetch(`${url}/v1/jobs/${id}`, { headers: bearer(apiKey) })
      // 503: the coordinator's database is (still) away, e.g. just after a restart; ask again.
      if (res.status === 503) break
      if (res.status !== 200) throw new Error(`GET job ${id}: ${res.status}`)
      const job = await res.json() as JobJson
      if (TERMINAL.has(job.state)) done.set(id, job)
    }
    if (done.size < ids.length) {
      if (Date.now() > deadline) {
        const stuck = ids.filter(id => !done.has(id)).slice(0, 5)
        const states = await Promise.all(stuck.map(async id => {
          const job = await getJob(url, id, apiKey)
          const events = await (await fetch(`${url}/v1/jobs/${id}/events`, { headers: bearer(apiKey) })).json() as { events: Array<{ type: string, actor: string, detail: unknown }> }
          return `${id} ${job.state} attempts=${JSON.stringify(job.attempts)} events=${JSON.stringify(events.events)}`
        }))
        throw new Error(`${ids.length - done.size} of ${ids.length} jobs not finished after ${timeoutMs} ms; e.g.\n${states.join('\n')}`)
      }
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }
  return ids.map(id => done.get(id)!)
}

/** Largest number of [start, end] intervals overlapping at any instant. */
export function maxOverlap (intervals: Array<[number, number]>): number {
  const points: Array<[number, number]> = []
  for (const [s, e] of intervals) { points.push([s, 1], [e, -1]) }
  // Ends sort before starts at the same instant: back-to-back is not overlap.
  points.sort((a, b) => a[0] - b[0] || a[1] - b[1])
  let cur = 0
  let max = 0
  for (const [, d] of points) { cur += d; max = Math.max(max, cur) }
  return max
}
