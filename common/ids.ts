import { randomBytes } from 'node:crypto'

/**
 * A UUIDv7: time-ordered, so job ids sort by submission time and the
 * primary-key index stays append-mostly.
 */
export function uuidv7 (nowMs: number): string {
  const b = randomBytes(16)
  let ms = BigInt(nowMs)
  for (let i = 5; i >= 0; i--) { b[i] = Number(ms & 0xffn); ms >>= 8n }
  b[6] = (b[6]! & 0x0f) | 0x70
  b[8] = (b[8]! & 0x3f) | 0x80
  const h = b.toString('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

/** A fresh, unguessable fencing token for one attempt (128 bits, hex). */
export function newFencingToken (): string {
  return randomBytes(16).toString('hex')
}
