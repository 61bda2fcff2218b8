import { describe, it, expect } from 'vitest'
import { safeLogLine, safeName } from '../../cli/terminal.js'

describe('text from jobs on a terminal', () => {
  it('names: every control character and direction override is shown, not obeyed', () => {
    expect(safeName('a\u001b]0;title\u0007b')).toBe('a\\x1b]0;title\\x07b')
    expect(safeName('line1\nline2\rx')).toBe('line1\\x0aline2\\x0dx')
    expect(safeName('\u202etxt.exe')).toBe('\\u{202e}txt.exe')
    expect(safeName('\u009b31m')).toBe('\\x9b31m')
    expect(safeName('tab\there, résumé 😀')).toBe('tab\there, résumé 😀')
  })

  it('log lines: colours and carriage returns stay, other sequences are escaped', () => {
    expect(safeLogLine('\u001b[1;31mred\u001b[0m')).toBe('\u001b[1;31mred\u001b[0m')
    expect(safeLogLine('50%\r100%')).toBe('50%\r100%')
    expect(safeLogLine('\u001b[2J\u001b]52;c;ZXZpbA==\u0007')).toBe('\\x1b[2J\\x1b]52;c;ZXZpbA==\\x07')
    expect(safeLogLine('\u001b[31m\u001b[2Jx')).toBe('\u001b[31m\\x1b[2Jx')
  })
})
