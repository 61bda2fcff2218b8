#!/usr/bin/env node
// Runs the whole suite with vitest and ends with the line CI reads:
// "N passed, N failed" (from the JSON reporter's totals).
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const dir = mkdtempSync(join(tmpdir(), 'rgrid-test-'))
const report = join(dir, 'report.json')
const vitest = join('node_modules', 'vitest', 'vitest.mjs')
const child = spawn(process.execPath, [vitest, 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...process.argv.slice(2)], { stdio: 'inherit' })
child.on('exit', (code, signal) => {
  let passed = 0
  let failed = 0
  try {
    const r = JSON.parse(readFileSync(report, 'utf8'))
    passed = r.numPassedTests
    failed = r.numFailedTests
    // A file that failed to load has no test results of its own: count it once.
    for (const file of r.testResults ?? []) {
      if (file.status === 'failed' && (file.assertionResults ?? []).length === 0) failed++
    }
  } catch (err) {
    console.error(`could not read the test report: ${err.message}`)
    failed = Math.max(failed, 1)
  }
  rmSync(dir, { recursive: true, force: true })
  const ok = code === 0 && failed === 0
  if (!ok && failed === 0) failed = 1
  console.log(`${passed} passed, ${failed} failed`)
  process.exit(ok ? 0 : (code ?? (signal != null ? 1 : 1)))
})
