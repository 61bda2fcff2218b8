/**
 * Bytes <-> messages. Every message on the wire is UTF-8 JSON validated by
 * its schema. Decoding never throws anything but {@link DecodeError}.
 */
import type { z } from 'zod'
import { LIMITS } from './limits.js'
import {
  announcementSchema, coordinatorFrameSchema, heartbeatTopicSchema, jobSpecSchema, nodeFrameSchema,
  type Announcement, type CoordinatorFrame, type HeartbeatTopicMessage, type JobSpec, type NodeFrame
} from './schemas.js'

/** Why a message was rejected. */
export type DecodeErrorReason = 'oversized' | 'encoding' | 'syntax' | 'schema'

/** A message that is too large, not UTF-8 JSON, or does not match its schema. */
export class DecodeError extends Error {
  override readonly name = 'DecodeError'
  constructor (
    readonly what: string,
    readonly reason: DecodeErrorReason,
    /** Dotted path of the first offending field, when the schema rejected it. */
    readonly field: string | null,
    detail: string
  ) {
    super(`invalid ${what}: ${field != null ? `${field}: ` : ''}${detail}`)
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true })
const encoder = new TextEncoder()

/** Formats a zod issue path as `a.b[2].c`. */
function formatPath (path: ReadonlyArray<PropertyKey>): string | null {
  if (path.length === 0) return null
  let out = ''
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`
    else out += out === '' ? String(p) : `.${String(p)}`
  }
  return out
}

/**
 * What no schema may see: a string with a lone UTF-16 surrogate (JSON can
 * spell one as `\ud800`; PostgreSQL's jsonb refuses it, and it is no text),
 * and a `__proto__` key (zod's records drop it silently, so a variable
 * would vanish instead of being refused). Walks without recursion, so deep
 * nesting cannot overflow the stack; stops after `maxNodes` values.
 */
function illFormed (value: unknown, maxNodes = 1_000_000): { field: string | null, detail: string } | null {
  const stack: unknown[] = [value]
  let seen = 0
  while (stack.length > 0) {
    const v = stack.pop()
    if (++seen > maxNodes) return { field: null, detail: 'too many values' }
    if (typeof v === 'string') {
      if (!v.isWellFormed()) return { field: null, detail: 'a string holds a lone UTF-16 surrogate (not text)' }
    } else if (Array.isArray(v)) {
      for (const item of v) stack.push(item)
    } else if (v != null && typeof v === 'object') {
      for (const key of Object.keys(v)) {
        if (key === '__proto__') return { field: key, detail: '"__proto__" is not allowed as a key' }
        if (!key.isWellFormed()) return { field: null, detail: 'a key holds a lone UTF-16 surrogate (not text)' }
        stack.push((v as Record<string, unknown>)[key])
      }
    }
  }
  return null
}

/** Validates an already-parsed value against a schema. */
export function validate<S extends z.ZodType> (schema: S, value: unknown, what: string): z.output<S> {
  const bad = illFormed(value)
  if (bad != null) throw new DecodeError(what, 'schema', bad.field, bad.detail)
  const parsed = schema.safeParse(value)
  if (parsed.success) return parsed.data
  const issue = parsed.error.issues[0]
  // An unknown key's issue sits on the enclosing object; name the key itself.
  const path = issue == null ? null : issue.code === 'unrecognized_keys' && issue.keys[0] != null ? [...issue.path, issue.keys[0]] : issue.path
  throw new DecodeError(what, 'schema', path != null ? formatPath(path) : null, issue?.message ?? 'does not match schema')
}

/** Decodes UTF-8 JSON bytes with a size limit, then validates them. */
export function decodeBytes<S extends z.ZodType> (schema: S, bytes: Uint8Array, maxBytes: number, what: string): z.output<S> {
  if (bytes.byteLength > maxBytes) {
    throw new DecodeError(what, 'oversized', null, `${bytes.byteLength} bytes exceeds the limit of ${maxBytes}`)
  }
  let text: string
  try {
    text = utf8.decode(bytes)
  } catch {
    throw new DecodeError(what, 'encoding', null, 'not valid UTF-8')
  }
  return decodeText(schema, text, maxBytes, what)
}

/** Parses JSON text with a size limit, then validates it. */
export function decodeText<S extends z.ZodType> (schema: S, text: string, maxBytes: number, what: string): z.output<S> {
  // A UTF-16 code unit takes at most 3 UTF-8 bytes; check cheaply first.
  if (text.length > maxBytes || (text.length * 3 > maxBytes && encoder.encode(text).byteLength > maxBytes)) {
    throw new DecodeError(what, 'oversized', null, `exceeds the limit of ${maxBytes} bytes`)
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new DecodeError(what, 'syntax', null, `not valid JSON (${(err as Error).message})`)
  }
  return validate(schema, value, what)
}

/** Encodes a message as UTF-8 JSON. */
export function encode (message: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(message))
}

export const decodeJobSpec = (value: unknown): JobSpec => validate(jobSpecSchema, value, 'job spec')
export const decodeAnnouncement = (bytes: Uint8Array): Announcement =>
  decodeBytes(announcementSchema, bytes, LIMITS.announcementBytes, 'announcement')
export const decodeHeartbeatTopic = (bytes: Uint8Array): HeartbeatTopicMessage =>
  decodeBytes(heartbeatTopicSchema, bytes, LIMITS.heartbeatBytes, 'heartbeat')
export const decodeNodeFrame = (bytes: Uint8Array): NodeFrame =>
  decodeBytes(nodeFrameSchema, bytes, LIMITS.sessionFrameBytes, 'session frame')
export const decodeCoordinatorFrame = (bytes: Uint8Array): CoordinatorFrame =>
  decodeBytes(coordinatorFrameSchema, bytes, LIMITS.sessionFrameBytes, 'session frame')
