/**
 * Text written by jobs (commands, file names, error messages, log lines)
 * reaches the submitter's terminal through the CLI. Terminal control
 * sequences in it could rewrite the screen, hide lines, set the window
 * title, or on some terminals write to the clipboard or files; Unicode
 * direction overrides can make text read differently than it is. Both are
 * shown as visible escapes instead.
 *
 * Names and messages are always escaped. Log lines keep colour (SGR) codes
 * and carriage returns, which progress bars use, and are passed through
 * untouched when the destination is not a terminal (a file or a pipe gets
 * the job's bytes as they were).
 */

// C0 controls but tab and newline, DEL, C1 controls, bidi embeddings/overrides/isolates.
const UNSAFE_NAME = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g
const UNSAFE_LOG = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g
/** Select Graphic Rendition: colours and bold only. */
const SGR = /\u001b\[[0-9;]{0,32}m/g

const visible = (c: string): string => {
  const code = c.codePointAt(0)!
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u{${code.toString(16)}}`
}

/** A job name, command, file name or message on one line: every control character escaped (newlines too). */
export function safeName (text: string): string {
  return text.replace(UNSAFE_NAME, visible)
}

/** A log line for a terminal: colour codes and \r kept, every other control sequence escaped. */
export function safeLogLine (text: string): string {
  const parts = text.split(SGR)
  const colours = text.match(SGR) ?? []
  let out = ''
  for (let i = 0; i < parts.length; i++) {
    out += parts[i]!.replace(UNSAFE_LOG, visible)
    if (i < colours.length) out += colours[i]!
  }
  return out
}

/** Log text for `stream`: escaped for a terminal, as it was for a file or pipe. */
export function logFor (stream: NodeJS.WriteStream, text: string): string {
  return stream.isTTY === true ? safeLogLine(text) : text
}
