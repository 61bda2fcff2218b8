/**
 * Files through which programs started together hand each other what they
 * only know once running (an address, a join token): docker-compose starts
 * the bootstrap peer, the coordinator and the nodes from one file, with a
 * shared volume between them. Used by the CLI entry points only.
 */
import { readFile, rename, writeFile } from 'node:fs/promises'

/** Writes atomically, so a reader never sees half a line. */
export async function writeHandoff (path: string, text: string, mode = 0o644): Promise<void> {
  await writeFile(path + '.tmp', text.trim() + '\n', { mode })
  await rename(path + '.tmp', path)
}

/** Waits for the file to exist and be non-empty, polling until the deadline. @throws Error naming the file. */
export async function readHandoff (path: string, timeoutMs: number, signal?: AbortSignal): Promise<string> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      const text = (await readFile(path, 'utf8')).trim()
      if (text !== '') return text
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    if (Date.now() > deadline) throw new Error(`${path} did not appear within ${Math.round(timeoutMs / 1000)} s`)
    if (signal?.aborted === true) throw new Error(`stopped while waiting for ${path}`)
    await new Promise(resolve => setTimeout(resolve, 200))
  }
}
