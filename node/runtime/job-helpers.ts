/**
 * What the process runtime's two helper processes (rgrid-spawn and the Node
 * process host) share: running below the node's CPU priority, and not leaving
 * a job behind when the helper that started it is gone.
 */
import { getPriority, setPriority } from 'node:os'
import type { Logger } from '../../common/log.js'
import { errorMessage } from '../../common/errors.js'

/**
 * Lowers a helper's priority by `by` nice levels below the node (19 at most);
 * the jobs it starts inherit it. 0 leaves it at the node's.
 */
export function lowerPriority (pid: number | undefined, by: number, log: Logger, helper: string): void {
  if (by === 0 || pid == null) return
  try {
    setPriority(pid, Math.min(19, getPriority() + by))
  } catch (err) {
    // Raising a nice value needs no privilege; this is unexpected, and jobs still run.
    log.warn(`cannot lower the priority of ${helper}; jobs run at the node's priority`, { error: errorMessage(err) })
  }
}

/** Kills a job's whole process group whose helper died: nobody else can stop it any more. */
export function killOrphanedJob (pid: number, log: Logger): void {
  try {
    process.kill(-pid, 'SIGKILL')
  } catch (err) {
    // ESRCH: the group is already gone.
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') log.warn('could not kill an orphaned job', { pid, error: errorMessage(err) })
  }
}
