/**
 * Masks job secrets (`secretEnv` values) in text that leaves the node: live
 * log lines and the result's stdout and stderr. Values shorter than
 * {@link MIN_MASKED_CHARS} are left alone: masking every "1" or "on" would
 * garble the output and reveal the secret's value by where it is missing.
 */
export const MIN_MASKED_CHARS = 4
export const MASK = '***'

/** Masks whole secrets in a text; `longest` is the longest masked value (0: nothing to mask). */
export type Masker = ((text: string) => string) & {
  longest: number
  /**
   * For output kept from its tail (the head was cut off): also masks the
   * end of a secret the cut left at the start (3 characters or more).
   */
  cutHead: (text: string) => string
}

/** A masker for one job's secrets; identity when there are none. */
export function secretMasker (secretEnv: Record<string, string> | undefined): Masker {
  const values = [...new Set(Object.values(secretEnv ?? {}))].filter(v => v.length >= MIN_MASKED_CHARS)
  // Longest first, so a secret containing another is masked whole.
  values.sort((a, b) => b.length - a.length)
  const mask = (text: string): string => {
    let out = text
    for (const v of values) if (out.includes(v)) out = out.split(v).join(MASK)
    return out
  }
  const cutHead = (text: string): string => {
    const masked = mask(text)
    for (const v of values) {
      for (let k = Math.min(v.length - 1, masked.length); k >= 3; k--) {
        if (masked.startsWith(v.slice(-k))) return MASK + masked.slice(k)
      }
    }
    return masked
  }
  return Object.assign(mask, { longest: values[0]?.length ?? 0, cutHead })
}
