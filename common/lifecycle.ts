/**
 * Process lifecycle for the CLI entry points: the first SIGINT/SIGTERM starts
 * a graceful stop bounded by a named timeout; a second signal, or the
 * timeout, exits forcefully.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util'
import type { Logger } from './log.js'

export interface Stoppable {
  stop: () => Promise<void>
}

export interface ShutdownOptions {
  /** How long a graceful stop may take before the process exits anyway. @default 15000 */
  gracefulStopMs?: number
}

export function stopOnSignals (service: Stoppable, log: Logger, options: ShutdownOptions = {}): void {
  const gracefulStopMs = options.gracefulStopMs ?? 15_000
  let stopping = false
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn('second signal: exiting now', { signal })
      process.exit(130)
    }
    stopping = true
    log.info('stopping', { signal, gracefulStopMs })
    const timer = setTimeout(() => {
      log.error('graceful stop timed out: exiting', { gracefulStopMs })
      process.exit(1)
    }, gracefulStopMs)
    timer.unref()
    service.stop().then(() => {
      log.info('stopped')
      process.exit(0)
    }, (err: unknown) => {
      log.error('stop failed', { error: String(err) })
      process.exit(1)
    })
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
}

/** Prints a one-line error for a bad command line and exits 2. */
export function usageError (program: string, message: string): never {
  process.stderr.write(`${program}: ${message}\nTry '${program} --help'.\n`)
  process.exit(2)
}

/**
 * A rejection nobody handled is a bug, but one that must not take a
 * coordinator or node down with every job it holds: log it loudly, count it
 * (the count is in the log line), and carry on.
 */
export function logUnhandledRejections (log: Logger): void {
  let count = 0
  process.on('unhandledRejection', (reason: unknown) => {
    count++
    log.error('unhandled promise rejection (a bug; please report it)', { count, error: reason instanceof Error ? (reason.stack ?? reason.message) : String(reason) })
  })
}

/** parseArgs, with a bad command line reported by {@link usageError}. */
export function parseArgsOrExit<T extends ParseArgsConfig> (program: string, config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config)
  } catch (err) {
    usageError(program, (err as Error).message)
  }
}
