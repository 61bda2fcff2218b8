/**
 * The provisioner's decisions with a simulated clock: bin packing of the
 * backlog, limits (servers, budget, cooldown), jobs no server could run, and
 * which servers to give back.
 */
import { describe, it, expect } from 'vitest'
import { planScaleDown, planScaleUp, serversFor, type ScaleUpInput } from '../../coordinator/provisioner/plan.js'

const T = 1_700_000_000_000
const cx22 = { name: 'cx22', cores: 2, memoryMb: 4096, hourlyEur: 0.0071 }
const job = (cpus: number, memoryMb: number, waitedMs = 60_000): { cpus: number, memoryMb: number, openSince: number } => ({ cpus, memoryMb, openSince: T - waitedMs })
const base: ScaleUpInput = {
  now: T, waiting: [], freeSlots: 0, type: cx22, managed: 0, pending: 0, maxServers: 10, maxHourlyEur: 1, scaleUpAfterMs: 30_000, lastScaleUpAt: 0, cooldownMs: 60_000
}

describe('serversFor', () => {
  it('packs jobs onto servers by cpus and memory, largest first', () => {
    expect(serversFor([], cx22)).toBe(0)
    expect(serversFor(Array.from({ length: 4 }, () => job(1, 256)), cx22)).toBe(2)
    // Memory-bound: three 3 GiB jobs need three servers though cpus would fit two per server.
    expect(serversFor(Array.from({ length: 3 }, () => job(0.5, 3072)), cx22)).toBe(3)
    // Small jobs fill the gaps the big ones leave.
    expect(serversFor([job(1, 3072), job(1, 3072), job(1, 1024), job(1, 1024)], cx22)).toBe(2)
  })
})

describe('planScaleUp', () => {
  it('creates enough servers for jobs that waited past the threshold, minus what free slots and booting servers cover', () => {
    const waiting = [...Array.from({ length: 10 }, () => job(1, 512)), job(1, 512, 5_000)]
    expect(planScaleUp({ ...base, waiting })).toMatchObject({ create: 5, wanted: 5 })
    expect(planScaleUp({ ...base, waiting, freeSlots: 4 })).toMatchObject({ create: 3 })
    expect(planScaleUp({ ...base, waiting, pending: 2 })).toMatchObject({ create: 3 })
    const covered = planScaleUp({ ...base, waiting, pending: 5 })
    expect(covered.create).toBe(0)
    expect(covered.reason).toContain('already booting')
  })

  it('does not scale for fresh jobs, and not during the cooldown', () => {
    expect(planScaleUp({ ...base, waiting: [job(1, 512, 10_000)] }).create).toBe(0)
    const cooling = planScaleUp({ ...base, waiting: [job(1, 512)], lastScaleUpAt: T - 10_000 })
    expect(cooling.create).toBe(0)
    expect(cooling.reason).toMatch(/cooling down .*\(50 s left\)/)
  })

  it('respects the server limit and the hourly budget, saying which one bound it', () => {
    const waiting = Array.from({ length: 40 }, () => job(2, 1024))
    const byCount = planScaleUp({ ...base, waiting, managed: 7 })
    expect(byCount.create).toBe(3)
    expect(byCount.reason).toContain('server limit 10')
    const byBudget = planScaleUp({ ...base, waiting, maxHourlyEur: 0.05 })
    expect(byBudget.create).toBe(7) // floor(0.05 / 0.0071)
    expect(byBudget.reason).toContain('hourly budget')
    const atBudget = planScaleUp({ ...base, waiting, managed: 7, maxHourlyEur: 0.05 })
    expect(atBudget.create).toBe(0)
    expect(atBudget.reason).toMatch(/at the hourly budget/)
    // A burst of 10,000 jobs changes nothing about the ceiling.
    const burst = planScaleUp({ ...base, waiting: Array.from({ length: 10_000 }, () => job(1, 256)), maxHourlyEur: 0.05, maxServers: 1000 })
    expect(burst.create).toBe(7)
    expect(burst.wanted).toBe(5000)
  })

  it('never provisions for jobs no server of the type could run', () => {
    const plan = planScaleUp({ ...base, waiting: [job(4, 512), job(1, 8192)] })
    expect(plan).toMatchObject({ create: 0, unrunnable: 2 })
    expect(plan.reason).toContain('need more than a cx22 has')
  })
})

describe('planScaleDown', () => {
  const server = (over: Partial<{ createdAt: number, joinedAt: number | null, idleSince: number | null }>): { id: number, name: string, createdAt: number, joinedAt: number | null, idleSince: number | null } =>
    ({ id: 1, name: 's1', createdAt: T - 3_300_000, joinedAt: T - 3_200_000, idleSince: T - 700_000, ...over })

  it('gives back an idle server near the end of its paid hour, and keeps it earlier in the hour', () => {
    expect(planScaleDown({ now: T, servers: [server({})], idleBeforeDeleteMs: 600_000, joinDeadlineMs: 600_000 })).toHaveLength(1)
    // 40 minutes into its hour: leaving now saves nothing.
    expect(planScaleDown({ now: T, servers: [server({ createdAt: T - 2_400_000 })], idleBeforeDeleteMs: 600_000, joinDeadlineMs: 600_000 })).toHaveLength(0)
    expect(planScaleDown({ now: T, servers: [server({ createdAt: T - 2_400_000 })], idleBeforeDeleteMs: 600_000, joinDeadlineMs: 600_000, hourEndWindowMs: 0 })).toHaveLength(1)
  })

  it('keeps busy or recently idle servers, and deletes one that never joined', () => {
    expect(planScaleDown({ now: T, servers: [server({ idleSince: null })], idleBeforeDeleteMs: 600_000, joinDeadlineMs: 600_000 })).toHaveLength(0)
    expect(planScaleDown({ now: T, servers: [server({ idleSince: T - 60_000 })], idleBeforeDeleteMs: 600_000, joinDeadlineMs: 600_000 })).toHaveLength(0)
    const lost = planScaleDown({ now: T, servers: [server({ joinedAt: null, createdAt: T - 900_000 })], idleBeforeDeleteMs: 600_000, joinDeadlineMs: 600_000 })
    expect(lost[0]?.reason).toMatch(/never joined/)
    expect(planScaleDown({ now: T, servers: [server({ joinedAt: null, createdAt: T - 100_000 })], idleBeforeDeleteMs: 600_000, joinDeadlineMs: 600_000 })).toHaveLength(0)
  })
})
