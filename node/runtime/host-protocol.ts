/** Messages between the node and its process-runtime host (IPC, structured clone). */
import type { JobSpec } from '../../protocol/schemas.js'
import type { RunOutcome } from './types.js'

export type HostRequest =
  /** `live`: forward output as it is produced (`output` replies). */
  | { type: 'run', id: number, jobId: string, attempt: number, spec: JobSpec, workDir: string, live: boolean }
  | { type: 'cancel', id: number }

export type HostReply =
  | { type: 'ready' }
  | { type: 'started', id: number, at: number, pid: number | null }
  | { type: 'output', id: number, stream: 'stdout' | 'stderr', data: Uint8Array }
  | { type: 'outcome', id: number, outcome: RunOutcome }
  | { type: 'failed', id: number, message: string }
