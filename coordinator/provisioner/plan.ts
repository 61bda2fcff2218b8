/**
 * The provisioner's decisions as pure functions of what it observed, so they
 * can be tested and simulated with any clock: how many servers to create for
 * a backlog (first-fit-decreasing bin packing of the waiting jobs' cpus and
 * memory onto the server type, within the server count, the hourly budget and
 * a cooldown), and which managed servers to give back (idle long enough and
 * close to the end of a paid hour, or never joined).
 */

export interface WaitingJob {
  cpus: number
  memoryMb: number
  /** When it became open (submitted or rescheduled). */
  openSince: number
}

export interface ServerTypeOffer {
  name: string
  cores: number
  memoryMb: number
  /** Gross EUR per hour in the chosen location. */
  hourlyEur: number
}

export interface ScaleUpInput {
  now: number
  waiting: WaitingJob[]
  /** Free slots the mesh reports now: jobs they can absorb are not counted as backlog. */
  freeSlots: number
  type: ServerTypeOffer
  /** Managed servers that exist (joined or still booting). */
  managed: number
  /** Of those, booting and not joined yet: their capacity is already on its way. */
  pending: number
  maxServers: number
  maxHourlyEur: number
  /** A job counts once it has waited this long. */
  scaleUpAfterMs: number
  lastScaleUpAt: number
  cooldownMs: number
}

export interface ScaleUpPlan {
  create: number
  /** Why (or why not), for the log and the event. */
  reason: string
  /** Waiting jobs no server of this type could run (never provisioned for). */
  unrunnable: number
  /** Servers the backlog would need without the limits. */
  wanted: number
}

/** Servers needed to run `jobs` at once on servers of `type`: first fit, largest memory first. */
export function serversFor (jobs: Array<Pick<WaitingJob, 'cpus' | 'memoryMb'>>, type: ServerTypeOffer): number {
  const bins: Array<{ cpus: number, memoryMb: number }> = []
  for (const j of [...jobs].sort((a, b) => b.memoryMb - a.memoryMb || b.cpus - a.cpus)) {
    const bin = bins.find(b => b.cpus >= j.cpus && b.memoryMb >= j.memoryMb)
    if (bin != null) { bin.cpus -= j.cpus; bin.memoryMb -= j.memoryMb } else bins.push({ cpus: type.cores - j.cpus, memoryMb: type.memoryMb - j.memoryMb })
  }
  return bins.length
}

export function planScaleUp (i: ScaleUpInput): ScaleUpPlan {
  const fits = (j: WaitingJob): boolean => j.cpus <= i.type.cores && j.memoryMb <= i.type.memoryMb
  const due = i.waiting.filter(j => i.now - j.openSince >= i.scaleUpAfterMs)
  const unrunnable = due.filter(j => !fits(j)).length
  // Jobs the free slots can take are not backlog; the oldest waiting are the ones that count.
  const backlog = due.filter(fits).sort((a, b) => a.openSince - b.openSince).slice(Math.max(0, i.freeSlots))
  const wanted = serversFor(backlog, i.type)
  const none = (reason: string): ScaleUpPlan => ({ create: 0, reason, unrunnable, wanted })
  if (backlog.length === 0) return none(unrunnable > 0 ? `${unrunnable} waiting jobs need more than a ${i.type.name} has; not provisioning for them` : 'no backlog')
  const needed = wanted - i.pending
  if (needed <= 0) return none(`${i.pending} servers already booting cover the backlog of ${backlog.length} jobs`)
  if (i.now - i.lastScaleUpAt < i.cooldownMs) return none(`cooling down after the last scale-up (${Math.round((i.cooldownMs - (i.now - i.lastScaleUpAt)) / 1000)} s left)`)
  const bySlots = i.maxServers - i.managed
  const byBudget = Math.floor(i.maxHourlyEur / i.type.hourlyEur + 1e-9) - i.managed
  const create = Math.max(0, Math.min(needed, bySlots, byBudget))
  if (create === 0) {
    return none(bySlots <= byBudget
      ? `at the server limit (${i.maxServers}); ${backlog.length} jobs keep waiting`
      : `at the hourly budget (${i.maxHourlyEur} EUR: ${i.managed} × ${i.type.hourlyEur} EUR); ${backlog.length} jobs keep waiting`)
  }
  const limited = create < needed ? ` (limited by ${bySlots < byBudget ? `the server limit ${i.maxServers}` : `the hourly budget ${i.maxHourlyEur} EUR`})` : ''
  return { create, reason: `${backlog.length} jobs waited over ${Math.round(i.scaleUpAfterMs / 1000)} s; they need ${wanted} ${i.type.name}${wanted === 1 ? '' : 's'}, ${i.pending} booting; creating ${create}${limited}`, unrunnable, wanted }
}

export interface ManagedServer {
  id: number
  name: string
  createdAt: number
  /** When it joined the mesh, or null if it has not. */
  joinedAt: number | null
  /** Since when it has run nothing, or null while busy. */
  idleSince: number | null
}

export interface ScaleDownInput {
  now: number
  servers: ManagedServer[]
  idleBeforeDeleteMs: number
  /** A server that has not joined this long after creation is deleted. */
  joinDeadlineMs: number
  /**
   * Hetzner bills started hours: keep an idle server until the last
   * `hourEndWindowMs` of its current hour, since leaving earlier saves
   * nothing. 0 turns this off (tests, per-second billing).
   * @default 300000
   */
  hourEndWindowMs?: number
}

export function planScaleDown (i: ScaleDownInput): Array<{ server: ManagedServer, reason: string }> {
  const out: Array<{ server: ManagedServer, reason: string }> = []
  const window = i.hourEndWindowMs ?? 300_000
  for (const s of i.servers) {
    if (s.joinedAt == null) {
      if (i.now - s.createdAt >= i.joinDeadlineMs) out.push({ server: s, reason: `never joined the mesh within ${Math.round(i.joinDeadlineMs / 1000)} s of its creation` })
      continue
    }
    if (s.idleSince == null || i.now - s.idleSince < i.idleBeforeDeleteMs) continue
    const intoHour = (i.now - s.createdAt) % 3_600_000
    if (window > 0 && intoHour < 3_600_000 - window) continue
    out.push({ server: s, reason: `idle for ${Math.round((i.now - s.idleSince) / 1000)} s${window > 0 ? ', near the end of its paid hour' : ''}` })
  }
  return out
}
