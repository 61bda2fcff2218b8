/** The one source of time. Tests inject their own. */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now: () => number
}

/** Wall-clock time from `Date.now()`. */
export const systemClock: Clock = { now: () => Date.now() }
