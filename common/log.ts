/**
 * A tiny structured logger: one JSON object per line on stderr, so stdout
 * stays free for what programs promise to print there (a multiaddr, a URL).
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
const order: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 }

export interface Logger {
  debug: (msg: string, fields?: Record<string, unknown>) => void
  info: (msg: string, fields?: Record<string, unknown>) => void
  warn: (msg: string, fields?: Record<string, unknown>) => void
  error: (msg: string, fields?: Record<string, unknown>) => void
  child: (component: string) => Logger
}

export interface LoggerOptions {
  /** @default 'info' */
  level?: LogLevel
  /** Where lines go. @default process.stderr.write */
  write?: (line: string) => void
}

export function createLogger (component: string, options: LoggerOptions = {}): Logger {
  const min = order[options.level ?? 'info']
  const write = options.write ?? ((line: string) => { process.stderr.write(line) })
  const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (order[level] < min) return
    write(JSON.stringify({ t: new Date().toISOString(), level, c: component, msg, ...fields }) + '\n')
  }
  return {
    debug: (m, f) => { emit('debug', m, f) },
    info: (m, f) => { emit('info', m, f) },
    warn: (m, f) => { emit('warn', m, f) },
    error: (m, f) => { emit('error', m, f) },
    child: (c) => createLogger(`${component}.${c}`, options)
  }
}

/** A logger that drops everything, for tests and libraries. */
export const silentLogger: Logger = {
  debug: () => {}, info: () => {}, warn: () => {}, error: () => {}, child: () => silentLogger
}
