/** Job ids and fencing tokens drawn from the pooled random source (common/ids.ts). */
import { describe, expect, it } from 'vitest'
import { newFencingToken, uuidv7 } from '../../common/ids.js'

describe('ids', () => {
  it('fencing tokens are 128-bit hex and never repeat, across many pool refills', () => {
    const seen = new Set<string>()
    // 4 KiB pool, 16 bytes a draw: 256 draws a refill, so this crosses the refill 39 times.
    for (let i = 0; i < 10_000; i++) {
      const t = newFencingToken()
      expect(t).toMatch(/^[0-9a-f]{32}$/)
      seen.add(t)
    }
    expect(seen.size).toBe(10_000)
  })

  it('uuidv7 carries version, variant and time order, and its random part varies', () => {
    const ids = Array.from({ length: 600 }, (_, i) => uuidv7(1_700_000_000_000 + i))
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    expect([...ids].sort()).toEqual(ids)
    const same = Array.from({ length: 300 }, () => uuidv7(1_700_000_000_000))
    expect(new Set(same).size).toBe(300)
    expect(new Set(same.map(id => id.slice(-12))).size).toBe(300)
  })
})
