/**
 * The OpenAPI 3.1 description of HTTP API v1, served at `/v1/openapi.json`.
 * Request bodies come from the same zod schemas that validate requests, so
 * the document cannot drift from what the server accepts; a test checks that
 * every route the server has is described.
 */
import { z } from 'zod'
import { jobSpecSchema, uploadRequestSchema } from '../protocol/schemas.js'

type Json = Record<string, unknown>

const schemaOf = (s: z.ZodType): Json => {
  const { $schema: _drop, ...rest } = z.toJSONSchema(s, { io: 'input', unrepresentable: 'any', target: 'draft-2020-12' }) as Json
  return rest
}

const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` })
const json = (schema: Json, description: string): Json => ({ description, content: { 'application/json': { schema } } })
const errors = (...statuses: number[]): Json => Object.fromEntries(statuses.map(s => [String(s), { $ref: `#/components/responses/E${s}` }]))
const idParam = { name: 'id', in: 'path', required: true, schema: { type: 'string', format: 'uuid' }, description: 'job id' }

const attempt = {
  type: 'object',
  properties: {
    number: { type: 'integer' }, node: { type: 'string' }, state: { type: 'string', enum: ['claimed', 'running', 'succeeded', 'failed', 'cancelled', 'lost', 'released'] },
    awardedAt: { type: 'integer' }, startedAt: { type: ['integer', 'null'] }, finishedAt: { type: ['integer', 'null'] }
  }
}

export function openApiDocument (serverUrl?: string): Json {
  return {
    openapi: '3.1.0',
    info: { title: 'RGrid coordinator API', version: '1', description: 'Submit jobs, follow them, and fetch their results and outputs. Times are epoch milliseconds. Every /v1 route needs an API key (Authorization: Bearer rgk_…) unless the coordinator runs with --open or --no-api-keys; a key sees only its own jobs and uploads (admin keys see all). Answers 401 without a valid key, 403 for admin-only routes, 429 over the per-key rate or unfinished-job cap.' },
    security: [{ apiKey: [] }],
    ...(serverUrl != null ? { servers: [{ url: serverUrl }] } : {}),
    paths: {
      '/healthz': { get: { summary: 'Liveness and identity', security: [], responses: { 200: json({ type: 'object' }, '{ok, peerId, addrs}') } } },
      '/v1/stats': { get: { summary: 'Job counts by state and service counters', responses: { 200: json({ type: 'object' }, 'counters') } } },
      '/v1/cloud/events': { get: { summary: 'What the provisioner did to cloud servers and why, newest first', parameters: [{ name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } }], responses: { 200: json({ type: 'object', properties: { events: { type: 'array', items: { type: 'object' } } } }, '{events: [{seq, at, type, serverId, serverName, reason, detail}]}') } } },
      '/v1/stats/history': { get: { summary: 'Job counts sampled every 5 s for the last hour (waiting, running, finished)', responses: { 200: json({ type: 'object' }, '{samples: [{at, waiting, running, finished}]}') } } },
      '/': { get: { summary: 'Web dashboard', security: [], responses: { 200: { description: 'HTML' } } } },
      '/jobs/{id}': { get: { summary: 'Web dashboard: one job', security: [], parameters: [idParam], responses: { 200: { description: 'HTML' } } } },
      '/dashboard.js': { get: { summary: "The dashboard's script", security: [], responses: { 200: { description: 'JavaScript' } } } },
      '/v1/openapi.json': { get: { summary: 'This document', security: [], responses: { 200: json({ type: 'object' }, 'OpenAPI 3.1') } } },
      '/v1/jobs': {
        post: {
          summary: 'Submit a job',
          requestBody: { required: true, content: { 'application/json': { schema: ref('JobSpec') } } },
          responses: { 201: json(ref('JobSummary'), 'accepted; Location names the job'), ...errors(400, 401, 413, 415, 429, 503) }
        },
        get: {
          summary: 'List jobs, newest first',
          parameters: [
            { name: 'state', in: 'query', schema: { type: 'string', enum: ['announced', 'claimed', 'running', 'succeeded', 'failed', 'cancelled'] } },
            { name: 'batch', in: 'query', schema: { type: 'string' } },
            { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 1000, default: 50 } }
          ],
          responses: { 200: json({ type: 'object', properties: { jobs: { type: 'array', items: ref('JobSummary') } } }, 'jobs'), ...errors(400, 503) }
        }
      },
      '/v1/jobs/batch': {
        post: {
          summary: 'Submit up to 1000 jobs at once: all of them are created, or none (one store transaction)',
          requestBody: { required: true, content: { 'application/json': { schema: { type: 'object', required: ['jobs'], additionalProperties: false, properties: { jobs: { type: 'array', minItems: 1, maxItems: 1000, items: ref('JobSpec') } } } } } },
          responses: { 201: json({ type: 'object', properties: { jobs: { type: 'array', items: ref('JobSummary') } } }, 'created, in the order given'), ...errors(400, 401, 413, 415, 429, 503) }
        }
      },
      '/v1/jobs/{id}': { get: { summary: 'A job with its attempts and result', parameters: [idParam], responses: { 200: json(ref('Job'), 'the job'), ...errors(400, 404) } } },
      '/v1/jobs/{id}/events': { get: { summary: "The job's event log, oldest first", parameters: [idParam], responses: { 200: json({ type: 'object', properties: { events: { type: 'array', items: ref('JobEvent') } } }, 'events'), ...errors(404) } } },
      '/v1/jobs/{id}/cancel': { post: { summary: 'Cancel a job that has not ended', parameters: [idParam], responses: { 200: json(ref('JobSummary'), 'cancelled'), ...errors(404, 409) } } },
      '/v1/jobs/{id}/logs': {
        get: {
          summary: 'Live output lines; with follow=1 (or Accept: text/event-stream) a Server-Sent Events stream that resumes from Last-Event-ID',
          parameters: [idParam,
            { name: 'after', in: 'query', schema: { type: 'integer', minimum: 0, default: 0 } },
            { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 5000, default: 1000 } },
            { name: 'follow', in: 'query', schema: { type: 'string', enum: ['1', 'true'] } }],
          responses: {
            200: {
              description: 'a page of lines, or an event stream (events `log` and `end`)',
              content: {
                'application/json': { schema: { type: 'object', properties: { lines: { type: 'array', items: ref('LogLine') }, next: { type: 'integer' } } } },
                'text/event-stream': { schema: { type: 'string' } }
              }
            },
            ...errors(400, 404)
          }
        }
      },
      '/v1/jobs/{id}/explain': { get: { summary: 'Why the job is where it is, node by node', parameters: [idParam], responses: { 200: json({ type: 'object', properties: { summary: { type: 'string' }, next: { type: 'string' }, nodes: { type: 'array' } } }, 'explanation'), ...errors(404) } } },
      '/v1/jobs/{id}/artifacts': { get: { summary: 'Output files of the recorded result, with presigned download URLs', parameters: [idParam], responses: { 200: json({ type: 'object', properties: { artifacts: { type: 'array', items: ref('ArtifactLink') } } }, 'artifacts'), ...errors(404) } } },
      '/v1/uploads': {
        post: {
          summary: 'Where to PUT an input file; url is null when that content is stored already',
          requestBody: { required: true, content: { 'application/json': { schema: ref('UploadRequest') } } },
          responses: {
            201: json(ref('UploadGrant'), 'PUT the file to url'),
            200: json(ref('UploadGrant'), 'already stored (url null)'),
            ...errors(400, 413, 503)
          }
        }
      },
      '/v1/nodes': { get: { summary: 'Nodes the coordinator knows', responses: { 200: json({ type: 'object', properties: { nodes: { type: 'array', items: { type: 'object' } } } }, 'nodes') } } },
      '/objects/{key}': {
        get: { summary: 'Embedded object store: download through a signed URL (served as an attachment)', security: [], parameters: [{ name: 'key', in: 'path', required: true, schema: { type: 'string' } }], responses: { 200: { description: 'the bytes' }, ...errors(403, 404) } },
        put: { summary: 'Embedded object store: upload through a signed URL (exact size and sha256)', security: [], parameters: [{ name: 'key', in: 'path', required: true, schema: { type: 'string' } }], responses: { 200: { description: 'stored' }, ...errors(400, 403, 413) } }
      },
      '/metrics': { get: { summary: 'Prometheus metrics (admin keys)', responses: { 200: { description: 'text exposition format', content: { 'text/plain': { schema: { type: 'string' } } } } } } }
    },
    components: {
      securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', description: 'rgk_<id>_<secret> from rgrid-coordinator key create' } },
      schemas: {
        JobSpec: schemaOf(jobSpecSchema),
        UploadRequest: schemaOf(uploadRequestSchema),
        UploadGrant: { type: 'object', properties: { object: { type: 'string' }, url: { type: ['string', 'null'] }, expiresAt: { type: ['integer', 'null'] } } },
        JobSummary: { type: 'object', properties: { id: { type: 'string' }, state: { type: 'string' }, attempt: { type: 'integer' }, spec: ref('JobSpec'), createdAt: { type: 'integer' }, updatedAt: { type: 'integer' } } },
        Job: {
          type: 'object',
          properties: {
            id: { type: 'string' }, state: { type: 'string' }, spec: ref('JobSpec'), createdAt: { type: 'integer' }, updatedAt: { type: 'integer' },
            attempts: { type: 'array', items: attempt },
            result: { oneOf: [{ type: 'null' }, { type: 'object', description: 'outcome, exitCode, stdout, stderr (last 64 KiB each), error {code, message, retryable}, artifacts' }] }
          }
        },
        JobEvent: { type: 'object', properties: { seq: { type: 'integer' }, at: { type: 'integer' }, type: { type: 'string' }, actor: { type: 'string' }, attempt: { type: ['integer', 'null'] }, detail: { type: 'object' } } },
        LogLine: { type: 'object', properties: { line: { type: 'integer' }, attempt: { type: 'integer' }, stream: { type: 'string', enum: ['stdout', 'stderr'] }, at: { type: 'integer' }, text: { type: 'string' } } },
        ArtifactLink: { type: 'object', properties: { path: { type: 'string' }, size: { type: 'integer' }, sha256: { type: 'string' }, contentType: { type: 'string' }, url: { type: 'string' } } },
        Error: { type: 'object', properties: { error: { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' } }, required: ['code', 'message'] } } }
      },
      responses: Object.fromEntries([[400, 'invalid request; the message names the field'], [401, 'no valid API key (WWW-Authenticate: Bearer)'], [403, 'an admin-only route, or a bad or expired signed URL'], [429, 'over the per-key request rate (Retry-After) or the unfinished-job cap'], [404, 'no such job or route'], [409, 'conflict, e.g. cancelling a finished job'],
        [413, 'too large'], [415, 'not application/json'], [503, 'database or object store unavailable; retry (Retry-After)']]
        .map(([s, d]) => [`E${s}`, json(ref('Error'), String(d))]))
    }
  }
}
