import { randomFillSync } from 'node:crypto'

/**
 * Random bytes drawn from one 4 KiB buffer filled at a time: every job takes
 * two 16-byte draws (its id and its fencing token), and one `randomBytes`
 * call per draw cost about 35 µs of coordinator time each on the benchmark
 * machine, about 1.5% of its time under load (docs/performance.md, change 11).
 * Node's own `randomUUID` batches the same way.
 */
const pool = Buffer.alloc(4096)
let poolOffset = pool.length

function random16 (): Buffer {
  if (poolOffset + 16 > pool.length) { randomFillSync(pool); poolOffset = 0 }
  const out = Buffer.from(pool.subarray(poolOffset, poolOffset + 16))
  // Drawn bytes never stay behind in the pool.
  pool.fill(0, poolOffset, poolOffset + 16)
  poolOffset += 16
  return out
}

/**
 * A UUIDv7: time-ordered, so job ids sort by submission time and the
 * primary-key index stays append-mostly.
 */
export function uuidv7 (nowMs: number): string {
  const b = random16()
  let ms = BigInt(nowMs)
  for (let i = 5; i >= 0; i--) { b[i] = Number(ms & 0xffn); ms >>= 8n }
  b[6] = (b[6]! & 0x0f) | 0x70
  b[8] = (b[8]! & 0x3f) | 0x80
  const h = b.toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

/** A fresh, unguessable fencing token for one attempt (128 bits, hex). */
export function newFencingToken (): string {
  return random16().toString('hex')
}
