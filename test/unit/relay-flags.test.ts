/** The relay flags of rgrid-bootstrap and rgrid-coordinator --relay, and the defaults they fall back to. */
import { describe, it, expect } from 'vitest'
import { relayLimitsFromFlags } from '../../dist/common/relay-flags.js'
import { RELAY_DEFAULTS } from '../../dist/common/relay.js'

describe('relay flags', () => {
  it('turn into limits, leaving unset ones to the defaults', () => {
    expect(relayLimitsFromFlags({})).toEqual({})
    expect(relayLimitsFromFlags({ 'relay-max-reservations': '32', 'relay-limit-bytes': '2097152', 'relay-limit-ms': '60000', 'relay-reservation-ttl-ms': '600000' }))
      .toEqual({ maxReservations: 32, connectionBytes: 2_097_152, connectionDurationMs: 60_000, reservationTtlMs: 600_000 })
    expect(RELAY_DEFAULTS).toEqual({ maxReservations: 256, reservationTtlMs: 3_600_000, connectionDurationMs: 120_000, connectionBytes: 4_194_304, maxInboundHopStreams: 64 })
  })

  it('refuse what is not a sensible whole number, naming the flag', () => {
    expect(() => relayLimitsFromFlags({ 'relay-max-reservations': '0' })).toThrow(/--relay-max-reservations must be an integer >= 1/)
    expect(() => relayLimitsFromFlags({ 'relay-limit-bytes': '1e3' })).toThrow(/--relay-limit-bytes/)
    expect(() => relayLimitsFromFlags({ 'relay-limit-ms': 'soon' })).toThrow(/--relay-limit-ms must be an integer >= 1000, got "soon"/)
    expect(() => relayLimitsFromFlags({ 'relay-reservation-ttl-ms': '2.5' })).toThrow(/--relay-reservation-ttl-ms/)
    // A slot that lapses before the client refreshes it, or an allowance smaller than one full session frame each way.
    expect(() => relayLimitsFromFlags({ 'relay-reservation-ttl-ms': '10000' })).toThrow(/--relay-reservation-ttl-ms must be an integer >= 60000/)
    expect(() => relayLimitsFromFlags({ 'relay-limit-bytes': '131072' })).toThrow(/--relay-limit-bytes must be an integer >= 1048576/)
  })
})
