/** Event-loop delay windows (common/loop-delay.ts): fine sampling while busy, coarse after a whole idle window. */
import { afterEach, describe, expect, it, vi } from 'vitest'
import { LoopDelayMonitor, type LoopDelayWindow } from '../../common/loop-delay.js'

let monitor: LoopDelayMonitor | null = null
afterEach(() => { monitor?.stop(); monitor = null })

async function windowAfter (m: LoopDelayMonitor, seq: number): Promise<LoopDelayWindow> {
  return await vi.waitFor(() => {
    const w = m.snapshot().lastWindow
    if (w == null || w.seq <= seq) throw new Error(`window ${seq + 1} not closed yet`)
    return w
  }, { timeout: 5_000, interval: 10 })
}

describe('LoopDelayMonitor', () => {
  it('samples finely by default and reports the resolution of each window', async () => {
    monitor = new LoopDelayMonitor({ windowMs: 200, resolutionMs: 10 })
    monitor.start()
    const first = await windowAfter(monitor, 0)
    const second = await windowAfter(monitor, first.seq)
    expect(first.resolutionMs).toBe(10)
    expect(second.resolutionMs).toBe(10)
    expect(second.samples).toBeGreaterThan(5)
  })

  it('samples coarsely after a whole idle window, and finely again as soon as the node turns busy', async () => {
    let running = 0
    monitor = new LoopDelayMonitor({ windowMs: 1000, resolutionMs: 10, idleResolutionMs: 100, isBusy: () => running > 0 })
    monitor.start()
    const first = await windowAfter(monitor, 0)
    expect(first.resolutionMs).toBe(10)
    const idle = await windowAfter(monitor, first.seq)
    expect(idle.resolutionMs).toBe(100)
    // About 10 samples in a 1 s window at 100 ms, against about 100 at 10 ms.
    expect(idle.samples).toBeLessThan(20)
    // A job starts mid-window: the coarse window closes at once, and the next is fine.
    await vi.waitFor(() => { if ((monitor!.current()?.samples ?? 0) === 0) throw new Error('no coarse sample yet') }, { timeout: 5_000, interval: 10 })
    running = 1
    monitor.busy()
    const cut = monitor.snapshot().lastWindow!
    expect(cut.seq).toBe(idle.seq + 1)
    expect(cut.resolutionMs).toBe(100)
    const busy = await windowAfter(monitor, cut.seq)
    expect(busy.resolutionMs).toBe(10)
    // Busy at the turn of the window keeps it fine.
    const still = await windowAfter(monitor, busy.seq)
    expect(still.resolutionMs).toBe(10)
  })

  it('switches a coarse window without samples to fine sampling without reporting it', async () => {
    let running = 0
    // Coarse sampling slower than the window: a coarse window never holds a sample.
    monitor = new LoopDelayMonitor({ windowMs: 500, resolutionMs: 10, idleResolutionMs: 5_000, isBusy: () => running > 0 })
    monitor.start()
    const first = await windowAfter(monitor, 0)
    expect(first.resolutionMs).toBe(10)
    await vi.waitFor(() => { if (monitor!.current()?.resolutionMs !== 5_000) throw new Error('not coarse yet') }, { timeout: 5_000, interval: 10 })
    expect(monitor.current()!.samples).toBe(0)
    const before = monitor.snapshot().lastWindow!.seq
    running = 1
    monitor.busy()
    // No empty window is reported; sampling is fine from here.
    expect(monitor.snapshot().lastWindow!.seq).toBe(before)
    expect(monitor.current()!.resolutionMs).toBe(10)
    const busy = await windowAfter(monitor, before)
    expect(busy.resolutionMs).toBe(10)
    expect(busy.samples).toBeGreaterThan(0)
  })

  it('keeps a window fine when a job came and went within it', async () => {
    monitor = new LoopDelayMonitor({ windowMs: 1000, resolutionMs: 10, idleResolutionMs: 100, isBusy: () => false })
    monitor.start()
    // Busy during the first (fine) window, idle again before it closes: the next window stays fine.
    monitor.busy()
    expect(monitor.snapshot().lastWindow).toBeNull()
    const first = await windowAfter(monitor, 0)
    expect(first.resolutionMs).toBe(10)
    const next = await windowAfter(monitor, first.seq)
    expect(next.resolutionMs).toBe(10)
    const idle = await windowAfter(monitor, next.seq)
    expect(idle.resolutionMs).toBe(100)
  })
})
