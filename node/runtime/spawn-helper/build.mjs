#!/usr/bin/env node
// Compiles rgrid-spawn (the process runtime's posix_spawn helper) next to the
// compiled runtime, as part of `npm run build`. A machine without a C compiler
// still builds: nodes then start jobs through Node's own child_process (slower,
// same behaviour), and say so in their log.
// Environment: CC (default cc), RGRID_SPAWN_HELPER=off to skip the helper.
import { spawnSync } from 'node:child_process'
import { mkdirSync, statSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, '..', '..', '..')
const sources = ['rgrid-spawn.c', 'spawn-util.c'].map(f => join(here, f))
const inputs = [...sources, join(here, 'spawn-util.h')]
const target = join(root, 'dist', 'node', 'runtime', 'spawn-helper', 'rgrid-spawn')

function mtime (path) {
  try { return statSync(path).mtimeMs } catch (err) {
    if (err.code === 'ENOENT') return -1
    throw err
  }
}

if (process.env.RGRID_SPAWN_HELPER === 'off') {
  rmSync(target, { force: true })
  console.error('rgrid-spawn: skipped (RGRID_SPAWN_HELPER=off); the process runtime uses Node\'s child_process')
  process.exit(0)
}
if (mtime(target) >= Math.max(...inputs.map(mtime))) process.exit(0)

mkdirSync(dirname(target), { recursive: true })
const cc = process.env.CC ?? 'cc'
const res = spawnSync(cc, ['-O2', '-Wall', '-Wextra', '-o', target, ...sources], { stdio: ['ignore', 'inherit', 'inherit'] })
if (res.error != null || res.status !== 0) {
  rmSync(target, { force: true })
  const why = res.error != null ? res.error.message : `${cc} exited with ${res.status}`
  console.error(`rgrid-spawn: not built (${why}); the process runtime will use Node's child_process, which costs more CPU per job. Install a C compiler (Debian: gcc libc6-dev) and rebuild for the faster path.`)
}
