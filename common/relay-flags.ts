/**
 * The relay flags shared by rgrid-bootstrap and rgrid-coordinator, and their
 * parsing into {@link RelayLimits}. Pure: the CLIs pass in what they parsed.
 */
import { RELAY_DEFAULTS, type RelayLimits } from './relay.js'
import { LIMITS } from '../protocol/limits.js'

export const RELAY_FLAGS = {
  'relay-max-reservations': { type: 'string' },
  'relay-reservation-ttl-ms': { type: 'string' },
  'relay-limit-ms': { type: 'string' },
  'relay-limit-bytes': { type: 'string' }
} as const

export const RELAY_HELP = `  --relay-max-reservations N
                      relay slots held at once for nodes behind NAT  [${RELAY_DEFAULTS.maxReservations}]
  --relay-reservation-ttl-ms MS
                      how long a slot lasts before the node refreshes it [${RELAY_DEFAULTS.reservationTtlMs}]
  --relay-limit-ms MS longest a relayed connection stays open        [${RELAY_DEFAULTS.connectionDurationMs}]
  --relay-limit-bytes N
                      most bytes one relayed connection carries     [${RELAY_DEFAULTS.connectionBytes}]
`

type RelayFlagValues = Partial<Record<keyof typeof RELAY_FLAGS, string | undefined>>

/** The limits the flags ask for; throws an Error naming the bad flag. */
export function relayLimitsFromFlags (values: RelayFlagValues): RelayLimits {
  const limits: RelayLimits = {}
  const int = (flag: keyof typeof RELAY_FLAGS, min: number): number | undefined => {
    const text = values[flag]
    if (text == null) return undefined
    const n = Number(text)
    if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${flag} must be an integer >= ${min}, got ${JSON.stringify(text)}`)
    return n
  }
  const maxReservations = int('relay-max-reservations', 1)
  // Clients refresh a slot no sooner than every 30 s: a shorter life would lapse while advertised.
  const reservationTtlMs = int('relay-reservation-ttl-ms', 60_000)
  const connectionDurationMs = int('relay-limit-ms', 1_000)
  // One full session frame each way must fit, or a session through the relay could never deliver it.
  const connectionBytes = int('relay-limit-bytes', 2 * LIMITS.sessionFrameBytes)
  if (maxReservations != null) limits.maxReservations = maxReservations
  if (reservationTtlMs != null) limits.reservationTtlMs = reservationTtlMs
  if (connectionDurationMs != null) limits.connectionDurationMs = connectionDurationMs
  if (connectionBytes != null) limits.connectionBytes = connectionBytes
  return limits
}
