import { describe, it, expect } from 'vitest'
import { secretMasker } from '../../common/mask.js'
import { LogShipper } from '../../node/log-shipper.js'
import { LIMITS } from '../../protocol/limits.js'
import { silentLogger } from '../../common/log.js'
import type { CoordinatorFrame, NodeFrame } from '../../protocol/schemas.js'

const SECRET = 'hunter2-0123456789abcdef'

describe('secret masking', () => {
  it('masks every occurrence, longest secret first, and leaves short values alone', () => {
    const m = secretMasker({ A: SECRET, B: 'hunter2', C: 'on' })
    expect(m(`x ${SECRET} y hunter2 on`)).toBe('x *** y *** on')
    expect(m.longest).toBe(SECRET.length)
    expect(secretMasker({})('anything')).toBe('anything')
  })

  it('masks the end of a secret left at the start of output whose head was cut off', () => {
    const m = secretMasker({ A: SECRET })
    expect(m.cutHead(`${SECRET.slice(-10)} rest`)).toBe('*** rest')
    expect(m.cutHead(`${SECRET.slice(5)} and ${SECRET}`)).toBe('*** and ***')
    expect(m.cutHead('ef plain')).toBe('ef plain') // two characters tell nothing
  })

  it('a live log line with no newline is cut into pieces without splitting a secret', async () => {
    const sent: string[] = []
    const shipper = new LogShipper({
      send: async (req: Extract<NodeFrame, { type: 'log' }> | any): Promise<CoordinatorFrame> => { for (const l of req.lines) sent.push(l.text); return { type: 'ack', rid: 1 } },
      onStale: () => {},
      log: silentLogger,
      clock: { now: () => 0 },
      flushMs: 5
    })
    const log = shipper.open({ jobId: '01a21e00-460c-74c1-917a-10c50f894085', attempt: 1, token: '0'.repeat(32) }, undefined, secretMasker({ A: SECRET }))
    // The secret straddles the first 8 KiB boundary, and arrives in two writes.
    const before = 'a'.repeat(LIMITS.logLineChars - 10)
    const text = before + SECRET + 'b'.repeat(LIMITS.logLineChars)
    log.write('stdout', new TextEncoder().encode(text.slice(0, LIMITS.logLineChars - 3)))
    log.write('stdout', new TextEncoder().encode(text.slice(LIMITS.logLineChars - 3)))
    await log.close()
    const all = sent.join('')
    expect(all).not.toContain(SECRET.slice(0, 10))
    expect(all).not.toContain(SECRET.slice(-10))
    expect(all).toBe(before + '***' + 'b'.repeat(LIMITS.logLineChars))
    expect(sent.every(p => p.length <= LIMITS.logLineChars)).toBe(true)
  })
})
