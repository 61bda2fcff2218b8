/**
 * Size limits for every decoder. A message over its limit is rejected before
 * it is parsed, so an attacker cannot make us allocate a huge JSON tree.
 */
export const LIMITS = {
  /** Largest job spec accepted over HTTP or inside an award, in bytes. */
  jobSpecBytes: 64 * 1024,
  /** Largest announcement batch message, in bytes. */
  announcementBytes: 256 * 1024,
  /** Most jobs carried by one announcement message. */
  announcementJobs: 256,
  /** Most taken attempts carried by one announcement message. */
  announcementTaken: 1024,
  /** Largest heartbeat or beacon, in bytes. */
  heartbeatBytes: 16 * 1024,
  /** Largest session frame (any request or reply), in bytes. */
  sessionFrameBytes: 512 * 1024,
  /** stdout and stderr are each truncated to this many bytes in a result. */
  outputBytes: 64 * 1024,
  /** Most command arguments. */
  commandArgs: 256,
  /** Longest single command argument or env value, in characters. */
  argChars: 8 * 1024,
  /** Most env variables. */
  envVars: 128,
  /** Most labels on a job or node. */
  labels: 32,
  /** Most denied (revoked) peers listed in one coordinator beacon, newest first. */
  beaconDenied: 200,
  /** Most running attempts listed in one heartbeat. */
  heartbeatRunning: 256,
  /** Most open jobs returned by one pull. */
  pullJobs: 256,
  /** Most input files of one job. */
  inputFiles: 64,
  /** Most output patterns of one job, and most files one attempt may upload. */
  outputFiles: 256,
  /** Longest work-dir path or output pattern, in characters. */
  pathChars: 1024,
  /** Longest input URL, in characters. */
  urlChars: 4096,
  /** Longest live log line, in characters; longer lines are cut into pieces. */
  logLineChars: 8192,
  /** Longest a `standby` may wait for an award before the coordinator answers it empty, in ms. */
  standbyWaitMs: 120_000,
  /** Most lines in one `log` frame (the frame size limit also applies). */
  logBatchLines: 1000
} as const
