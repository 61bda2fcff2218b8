/** Runs `task` `total` times with at most `concurrency` runs in flight; rejects with the first failure. */
export async function concurrently (total: number, concurrency: number, task: () => Promise<void>): Promise<void> {
  let started = 0
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, async () => {
    while (started < total) { started++; await task() }
  }))
}
