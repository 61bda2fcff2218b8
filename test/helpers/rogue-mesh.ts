/**
 * A whole mesh in separate processes plus a rogue host joined to it, as
 * adversarial and protocol tests start them: one call in beforeAll, one in
 * afterAll.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { beforeAll, afterAll } from 'vitest'
import { LocalMesh, type LocalMeshOptions } from '../../dist/cli/local-mesh.js'
import type { RGridHost } from '../../common/p2p.js'
import { startRogue } from './rogue.js'

export interface MeshWithRogue {
  mesh: LocalMesh
  rogue: RGridHost
  /** Stops the rogue and the mesh and removes the data directory; safe after a failed start. */
  stop: () => Promise<void>
}

/** Starts the mesh (waiting for all its nodes to hold sessions), then the rogue. */
export async function startMeshWithRogue (prefix: string, options: Omit<LocalMeshOptions, 'dataDir'> & { nodes: number }): Promise<MeshWithRogue> {
  const dataDir = mkdtempSync(join(tmpdir(), prefix))
  const mesh = new LocalMesh({ dataDir, ...options })
  let rogue: RGridHost | null = null
  const stop = async (): Promise<void> => {
    await rogue?.stop()
    await mesh.stop()
    rmSync(dataDir, { recursive: true, force: true })
  }
  try {
    await mesh.start()
    await mesh.waitForNodes(options.nodes)
    rogue = await startRogue(mesh)
  } catch (err) {
    await stop()
    throw err
  }
  return { mesh, rogue, stop }
}

/**
 * For a test file: starts the mesh and the rogue before its tests (handing
 * them to `ready`) and stops both after them.
 */
export function meshWithRogueForFile (prefix: string, options: Omit<LocalMeshOptions, 'dataDir'> & { nodes: number }, ready: (env: MeshWithRogue) => void): void {
  let env: MeshWithRogue | undefined
  beforeAll(async () => {
    env = await startMeshWithRogue(prefix, options)
    ready(env)
  })
  afterAll(async () => {
    await env?.stop()
  })
}
