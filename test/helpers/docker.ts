/** Shared set-up of the Docker runtime tests: is an engine there, and the busybox test image built. */
import { execFileSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type Dockerode from 'dockerode'
import { DockerRuntime, DockerUnavailableError } from '../../node/runtime/docker.js'
import { silentLogger } from '../../common/log.js'

const BUILD_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), '..', 'images', 'build.sh')

/**
 * Null when the engine answers (and the test image is built: the script is
 * idempotent), else why the tests are skipped. With CI=true an unreachable
 * engine is an error, never a skip.
 */
export async function prepareDocker (docker: Dockerode): Promise<string | null> {
  try {
    await new DockerRuntime({ docker, apiTimeoutMs: 5000, logger: silentLogger }).start()
  } catch (err) {
    if (!(err instanceof DockerUnavailableError)) throw err
    if (process.env.CI === 'true') throw new Error(`CI=true but the Docker tests cannot run: ${err.message}`)
    console.warn(`[docker tests skipped] ${err.message}`)
    return err.message
  }
  execFileSync('bash', [BUILD_SCRIPT], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 120_000 })
  return null
}

/** Job containers of this test run still on the engine (run() removes its own, so none should be). */
export async function leftContainers (docker: Dockerode, runLabel: Record<string, string>): Promise<string[]> {
  const left = await docker.listContainers({ all: true, filters: { label: ['rgrid.job', `rgrid.test-run=${runLabel['rgrid.test-run'] ?? ''}`] } })
  return left.map(c => c.Id)
}
