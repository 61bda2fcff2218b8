/** Watching job processes from tests: whether one still runs, and waiting with a deadline. */
import { readFileSync } from 'node:fs'

/** A pid counts as gone once it no longer exists or is a zombie nobody reaped yet. */
export function isAlive (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false // no such process
  }
}

/** Polls `check` every 20 ms until it holds; throws naming `what` after `ms`. */
export async function eventually (check: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}
