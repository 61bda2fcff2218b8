/** One peer system's figures in the side-by-side benchmark. */
export interface PeerSummary { n: number, p50: number, p95: number, p99: number, max: number }
export interface PeerResult {
  system: string            // 'slurm' | 'bullmq'
  version: string
  /** The settings used, as a competent administrator would set them for throughput, for docs. */
  settings: Record<string, string>
  /** Trivial jobs per second, one job per submission. */
  throughput: { jobs: number, seconds: number, jobsPerSecond: number } | null
  /** Extra throughput figures (e.g. job arrays, bulk adds), by name. */
  extraThroughput: Record<string, { jobs: number, seconds: number, jobsPerSecond: number }>
  /** Latency figures in ms by name (e.g. 'srun true', 'enqueue→start'). */
  latencyMs: Record<string, PeerSummary>
  /** Set when the peer could not run here; figures are then null/empty. */
  skipped?: string
}
