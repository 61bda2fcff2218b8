/**
 * Masks job secrets (`secretEnv` values) in text that leaves the node: live
 * log lines and the result's stdout and stderr. Values shorter than
 * {@link MIN_MASKED_CHARS} are left alone: masking every "1" or "on" would
 * garble the output and reveal the secret's value by where it is missing.
 */
export const MIN_MASKED_CHARS = 4
export const MASK = '***'

/** A masker for one job's secrets; identity when there are none. */
export function secretMasker (secretEnv: Record<string, string> | undefined): (text: string) => string {
  const values = [...new Set(Object.values(secretEnv ?? {}))].filter(v => v.length >= MIN_MASKED_CHARS)
  if (values.length === 0) return text => text
  // Longest first, so a secret containing another is masked whole.
  values.sort((a, b) => b.length - a.length)
  return text => {
    let out = text
    for (const v of values) if (out.includes(v)) out = out.split(v).join(MASK)
    return out
  }
}
