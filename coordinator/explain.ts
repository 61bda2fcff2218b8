/**
 * "Why is my job where it is?" in plain words: from the job, its event log
 * and the coordinator's view of the nodes. For a waiting job each node gets a
 * verdict (could run it, busy, too small, missing a label, not connected),
 * and the answer says what happens next.
 */
import type { NodeCapacity } from '../protocol/schemas.js'
import { mismatch } from '../protocol/matching.js'
import type { JobEvent, JobRecord } from './store/types.js'
import type { BidRecord } from './auction.js'

export interface NodeVerdict {
  peerId: string
  /** `can-run`, `busy`, `unsuitable` or `disconnected`. */
  verdict: 'can-run' | 'busy' | 'unsuitable' | 'disconnected'
  reason: string
}

export interface Explanation {
  id: string
  state: string
  /** One or two sentences: where the job is and why. */
  summary: string
  /** What happens next, if anything. */
  next: string
  nodes: NodeVerdict[]
  /** Bids this coordinator saw for the job (in memory since its start), oldest first. */
  bids: BidRecord[]
  /** The events that explain the current state, newest last. */
  recent: JobEvent[]
}

export interface NodeView {
  peerId: string
  capacity: NodeCapacity
  sessionOpen: boolean
  running: number
  lastSeenAt: number
}

const short = (peerId: string): string => `…${peerId.slice(-8)}`

function ago (ms: number): string {
  return ms < 1000 ? `${ms} ms` : ms < 120_000 ? `${Math.round(ms / 1000)} s` : `${Math.round(ms / 60_000)} min`
}

/** What the provisioner can say about a waiting job. */
export interface ProvisioningView {
  serverType: string
  /** null: the type's size is not known yet. */
  couldRun: boolean | null
  disabled: string | null
  lastPlan: string
}

export function explain (job: JobRecord, events: JobEvent[], nodes: NodeView[], now: number, bids: BidRecord[] = [], provisioning: ProvisioningView | null = null): Explanation {
  const spec = job.spec
  const need = { resources: spec.resources, labels: spec.labels }
  const verdicts: NodeVerdict[] = nodes.map(n => {
    const why = mismatch(n.capacity, need)
    if (why != null) return { peerId: n.peerId, verdict: 'unsuitable', reason: why }
    if (!n.sessionOpen) return { peerId: n.peerId, verdict: 'disconnected', reason: `not connected (last heard ${ago(now - n.lastSeenAt)} ago)` }
    if (n.capacity.freeSlots <= 0) return { peerId: n.peerId, verdict: 'busy', reason: `no free slot (${n.running} of ${n.capacity.slots} running)` }
    return { peerId: n.peerId, verdict: 'can-run', reason: `${n.capacity.freeSlots} free slot${n.capacity.freeSlots === 1 ? '' : 's'}` }
  })
  const recent = events.slice(-8)
  const last = (type: string): JobEvent | undefined => [...events].reverse().find(e => e.type === type)
  const current = job.attempts.find(a => a.number === job.attempt)
  let summary: string
  let next: string
  switch (job.state) {
    case 'succeeded':
    case 'failed': {
      const r = job.result
      const where = current != null ? ` on ${short(current.node)}` : ''
      summary = job.state === 'succeeded'
        ? `Succeeded${where} (attempt ${job.attempt}${r?.exitCode != null ? `, exit ${r.exitCode}` : ''}).`
        : `Failed${where}: ${r?.error?.message ?? 'no reason recorded'}${r?.error != null ? ` (${r.error.code})` : ''}.`
      const retried = job.attempts.length - 1
      if (retried > 0) summary += ` It took ${job.attempts.length} attempts; earlier ones: ${job.attempts.slice(0, -1).map(a => `${a.number} ${a.state} on ${short(a.node)}`).join(', ')}.`
      next = job.state === 'failed' && r?.error?.retryable === true ? 'Nothing: it used up its attempts. Submit it again (rgrid retry) if the cause is gone.' : 'Nothing: the job has ended.'
      break
    }
    case 'cancelled': {
      const c = last('cancelled')
      summary = `Cancelled${c != null ? ` by ${c.actor}${typeof c.detail.reason === 'string' ? ` (${c.detail.reason})` : ''}` : ''}.`
      next = 'Nothing: the job has ended.'
      break
    }
    case 'claimed':
    case 'running': {
      const since = current?.startedAt ?? current?.awardedAt ?? job.updatedAt
      summary = `${job.state === 'running' ? 'Running' : 'Awarded, starting'} on ${current != null ? short(current.node) : 'a node'} (attempt ${job.attempt} of ${spec.maxAttempts}) for ${ago(now - since)}.`
      const holder = nodes.find(n => n.peerId === current?.node)
      if (holder != null && !holder.sessionOpen) summary += ` Its node is not connected right now (last heard ${ago(now - holder.lastSeenAt)} ago).`
      next = `It ends when the node reports a result, or after ${spec.timeoutSeconds} s (its timeout). If the node falls silent, the attempt is declared lost and the job is offered again${job.attempt < spec.maxAttempts ? '' : ' — but this is its last attempt'}.`
      break
    }
    default: {
      const r = last('rescheduled')
      const notBefore = typeof r?.detail.notBefore === 'number' ? r.detail.notBefore : 0
      const able = verdicts.filter(v => v.verdict === 'can-run')
      const busy = verdicts.filter(v => v.verdict === 'busy')
      const unsuitable = verdicts.filter(v => v.verdict === 'unsuitable')
      summary = `Waiting to be claimed (attempt ${job.attempt} of ${spec.maxAttempts}, submitted ${ago(now - job.createdAt)} ago).`
      const current = bids.filter(b => b.attempt === job.attempt)
      summary += current.length === 0
        ? ' No node has bid on this attempt yet.'
        : ` ${current.length} bid${current.length === 1 ? '' : 's'} on this attempt: ${current.map(b => `${short(b.node)} ${b.outcome}`).join(', ')}.`
      if (r != null) summary += ` Attempt ${r.attempt ?? job.attempt - 1} was given up: ${String(r.detail.reason)}.`
      if (nodes.length === 0) {
        next = 'No node has joined yet; the job is offered to the first one that joins.'
      } else if (able.length === 0 && busy.length === 0) {
        const biggest = nodes.reduce((a, b) => (b.capacity.memoryMb > a.capacity.memoryMb ? b : a))
        summary += ` No node can run it: ${unsuitable.length === nodes.length ? 'every node is unsuitable' : 'the suitable ones are not connected'}` +
          `${spec.resources.memoryMb > biggest.capacity.memoryMb ? ` (it needs ${spec.resources.memoryMb} MiB; the largest node has ${biggest.capacity.memoryMb} MiB)` : ''}.`
        next = 'It waits until a node that matches joins or reconnects (or cancel it, or submit it with smaller requirements).'
        if (provisioning != null) {
          next += provisioning.disabled != null
            ? ` Provisioning is stopped: ${provisioning.disabled}.`
            : provisioning.couldRun === false
              ? ` No ${provisioning.serverType} server could run it either, so none will be created for it.`
              : ` New ${provisioning.serverType} servers are created for waiting jobs (last decision: ${provisioning.lastPlan || 'none yet'}).`
        }
      } else if (notBefore > now) {
        next = `It is held back after the failed attempt and will be offered again in ${ago(notBefore - now)}.`
      } else if (able.length > 0) {
        next = `${able.length} connected node${able.length === 1 ? ' has' : 's have'} room; it should be claimed at its next announcement (within seconds).`
      } else {
        next = `Every suitable node is busy (${busy.length}); it is claimed when one of them frees a slot.`
      }
    }
  }
  return { id: job.id, state: job.state, summary, next, nodes: verdicts, bids, recent }
}
