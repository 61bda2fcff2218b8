/**
 * Schema of the embedded SQLite store, as numbered migrations.
 *
 * The SQL lives in strings rather than `.sql` files so the compiled package
 * needs no asset copying and importing this module does no file I/O.
 * Applied migrations are never edited: a schema change is a new entry.
 *
 * Conventions: times are integer epoch milliseconds; JSON columns hold
 * `JSON.stringify` text; booleans are 0/1 integers. The CHECK constraints
 * repeat the state unions of `types.ts` so a bug in the store cannot persist a
 * state the rest of the coordinator does not know.
 */

export interface SqliteMigration {
  /** Strictly increasing; the order in which migrations apply. */
  id: number
  name: string
  /** One or more statements, run inside the migrator's transaction (no BEGIN/COMMIT here). */
  sql: string
}

export const SQLITE_MIGRATIONS: ReadonlyArray<SqliteMigration> = [
  {
    id: 1,
    name: 'initial schema',
    sql: `
CREATE TABLE jobs (
  id         TEXT    NOT NULL PRIMARY KEY,
  state      TEXT    NOT NULL CHECK (state IN ('announced', 'claimed', 'running', 'succeeded', 'failed', 'cancelled')),
  spec       TEXT    NOT NULL,
  attempt    INTEGER NOT NULL CHECK (attempt >= 1),
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) STRICT;
-- openJobs scans announced jobs oldest first; listJobs filters by state, newest first.
CREATE INDEX jobs_state_created ON jobs (state, created_at);
CREATE INDEX jobs_created ON jobs (created_at);

CREATE TABLE attempts (
  job_id           TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  number           INTEGER NOT NULL CHECK (number >= 1),
  node             TEXT    NOT NULL,
  token            TEXT    NOT NULL,
  state            TEXT    NOT NULL CHECK (state IN ('claimed', 'running', 'succeeded', 'failed', 'cancelled', 'lost')),
  awarded_at       INTEGER NOT NULL,
  started_at       INTEGER,
  finished_at      INTEGER,
  lease_expires_at INTEGER NOT NULL,
  PRIMARY KEY (job_id, number)
) STRICT;

CREATE TABLE results (
  job_id           TEXT    NOT NULL PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
  attempt          INTEGER NOT NULL,
  outcome          TEXT    NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'cancelled')),
  exit_code        INTEGER,
  stdout           TEXT    NOT NULL,
  stderr           TEXT    NOT NULL,
  stdout_truncated INTEGER NOT NULL CHECK (stdout_truncated IN (0, 1)),
  stderr_truncated INTEGER NOT NULL CHECK (stderr_truncated IN (0, 1)),
  started_at       INTEGER,
  finished_at      INTEGER NOT NULL,
  error            TEXT
) STRICT;

CREATE TABLE nodes (
  peer_id       TEXT    NOT NULL PRIMARY KEY,
  capacity      TEXT    NOT NULL,
  first_seen_at INTEGER NOT NULL,
  last_seen_at  INTEGER NOT NULL
) STRICT;

-- AUTOINCREMENT so a seq is never reused, even after the newest events are deleted.
CREATE TABLE job_events (
  seq     INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id  TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  at      INTEGER NOT NULL,
  type    TEXT    NOT NULL,
  actor   TEXT    NOT NULL,
  attempt INTEGER,
  detail  TEXT    NOT NULL
) STRICT;
CREATE INDEX job_events_job_seq ON job_events (job_id, seq);
`
  },
  {
    id: 2,
    name: 'leases',
    sql: `
-- Named leases, e.g. the right to run the coordinator's background loops.
-- A lease whose expires_at has passed is free for anyone to take.
CREATE TABLE leases (
  name       TEXT    NOT NULL PRIMARY KEY,
  holder     TEXT    NOT NULL,
  expires_at INTEGER NOT NULL
) STRICT;
`
  },
  {
    id: 3,
    name: 'attempt limits and backoff',
    sql: `
-- How many attempts a job gets before it ends failed (from spec.maxAttempts),
-- and the time before which a re-announced job is not offered (backoff).
ALTER TABLE jobs ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1);
ALTER TABLE jobs ADD COLUMN not_before INTEGER NOT NULL DEFAULT 0;
-- Jobs submitted before this migration: take the limit from their spec where it is a usable integer.
UPDATE jobs SET max_attempts = json_extract(spec, '$.maxAttempts')
WHERE json_type(spec, '$.maxAttempts') = 'integer' AND json_extract(spec, '$.maxAttempts') >= 1;
`
  },
  {
    id: 4,
    name: 'live attempts by lease expiry',
    sql: `
-- expiredAttempts: the claimed and running attempts, earliest lease expiry first
-- (ties by job id and number). Partial: finished attempts, the bulk of the table,
-- are not in it. Every change that ends an attempt's hold (recordResult, cancel,
-- rescheduleAttempt) also moves attempts.state out of claimed/running.
CREATE INDEX attempts_live_lease ON attempts (lease_expires_at, job_id, number)
  WHERE state IN ('claimed', 'running');
`
  },
  {
    id: 5,
    name: 'released attempts',
    sql: `
-- attempts.state may be 'released': the node handed the attempt back (a drain on shutdown).
-- A CHECK constraint cannot be altered in SQLite, so the table is rebuilt: same columns in the
-- same order, same key and foreign key (ON DELETE CASCADE), STRICT, only the state CHECK grows.
-- Foreign keys stay on: no table references attempts, so dropping it deletes no parent rows,
-- and the copied rows reference the same jobs as before.
CREATE TABLE attempts_new (
  job_id           TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  number           INTEGER NOT NULL CHECK (number >= 1),
  node             TEXT    NOT NULL,
  token            TEXT    NOT NULL,
  state            TEXT    NOT NULL CHECK (state IN ('claimed', 'running', 'succeeded', 'failed', 'cancelled', 'lost', 'released')),
  awarded_at       INTEGER NOT NULL,
  started_at       INTEGER,
  finished_at      INTEGER,
  lease_expires_at INTEGER NOT NULL,
  PRIMARY KEY (job_id, number)
) STRICT;
INSERT INTO attempts_new (job_id, number, node, token, state, awarded_at, started_at, finished_at, lease_expires_at)
  SELECT job_id, number, node, token, state, awarded_at, started_at, finished_at, lease_expires_at FROM attempts;
-- Drops attempts_live_lease (migration 4) with the table; no trigger or view uses attempts.
DROP TABLE attempts;
ALTER TABLE attempts_new RENAME TO attempts;
CREATE INDEX attempts_live_lease ON attempts (lease_expires_at, job_id, number)
  WHERE state IN ('claimed', 'running');
`
  },
  {
    id: 6,
    name: 'result artifacts',
    sql: `
-- The files an attempt uploaded (path, size, sha256, content type), as a JSON array,
-- written with the result in the same conditional insert: only the attempt whose
-- token was current can record any.
ALTER TABLE results ADD COLUMN artifacts TEXT NOT NULL DEFAULT '[]';
`
  },
  {
    id: 7,
    name: 'live job logs',
    sql: `
-- How many log lines the job has stored so far, across its attempts: appendLogs numbers its
-- new lines after it and checks the per-job cap against it, in the same transaction as its
-- compare-and-set on the job row, so no count over job_logs is needed. 0 for existing jobs.
ALTER TABLE jobs ADD COLUMN log_lines INTEGER NOT NULL DEFAULT 0;
-- The live output lines themselves, numbered 1, 2, ... per job in arrival order (across
-- attempts). The primary key is also listLogs' index (job_id = ? AND line > ? ORDER BY line),
-- and makes a duplicate line number impossible even if the count above were ever wrong.
CREATE TABLE job_logs (
  job_id  TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  line    INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  stream  TEXT    NOT NULL CHECK (stream IN ('stdout', 'stderr')),
  at      INTEGER NOT NULL,
  text    TEXT    NOT NULL,
  PRIMARY KEY (job_id, line)
) STRICT;
`
  },
  {
    id: 8,
    name: 'jobs by batch',
    sql: `
-- listJobs({batch}): the jobs of one batch (spec.batch, set by \`rgrid run --batch\`), newest first.
-- Partial: most jobs have no batch and stay out of the index.
CREATE INDEX jobs_batch ON jobs (json_extract(spec, '$.batch'), created_at DESC, id DESC)
  WHERE json_extract(spec, '$.batch') IS NOT NULL;
`
  },
  {
    id: 9,
    name: 'join tokens',
    sql: `
-- Tokens that admit a node to the mesh. id is public (it names the token in listings and
-- revocations); of the secret only its sha256 (64 lower-case hex digits) is kept, so a copy of
-- the database does not let anyone join. expires_at NULL: never expires. revoked_at is set
-- once, by the first revocation, and never cleared. No index beyond the primary key: tokens
-- are few and listJoinTokens reads them all.
CREATE TABLE join_tokens (
  id            TEXT    NOT NULL PRIMARY KEY,
  secret_sha256 TEXT    NOT NULL CHECK (length(secret_sha256) = 64 AND secret_sha256 NOT GLOB '*[^0-9a-f]*'),
  created_at    INTEGER NOT NULL,
  expires_at    INTEGER,
  revoked_at    INTEGER,
  note          TEXT    NOT NULL DEFAULT ''
) STRICT;
`
  },
  {
    id: 10,
    name: 'cloud events',
    sql: `
-- What the provisioner did to cloud servers and why (created, create-failed, draining, deleted, adopted):
-- the servers themselves are the Cloud API's truth; this is the record of decisions.
CREATE TABLE cloud_events (
  seq         INTEGER PRIMARY KEY AUTOINCREMENT,
  at          INTEGER NOT NULL,
  type        TEXT    NOT NULL CHECK (type IN ('created', 'create-failed', 'draining', 'deleted', 'adopted')),
  server_id   INTEGER,
  server_name TEXT    NOT NULL,
  reason      TEXT    NOT NULL,
  detail      TEXT    NOT NULL DEFAULT '{}'
) STRICT;
CREATE INDEX cloud_events_server ON cloud_events (server_id, seq);
`
  },
  {
    id: 11,
    name: 'api keys, job owners and secrets, settings, peer bindings',
    sql: `
-- Submitter API keys. id is public (it names the key and owns its jobs); of the secret only its
-- sha256 is kept. Names may repeat. revoked_at is set once, by the first revocation.
CREATE TABLE api_keys (
  id            TEXT    NOT NULL PRIMARY KEY,
  name          TEXT    NOT NULL,
  secret_sha256 TEXT    NOT NULL,
  admin         INTEGER NOT NULL CHECK (admin IN (0, 1)),
  created_at    INTEGER NOT NULL,
  revoked_at    INTEGER
) STRICT;
-- The API key that submitted the job (NULL: submitted to an open coordinator), and the job's
-- sealed secret environment: ciphertext the coordinator made, which the store never interprets.
ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN secret_env TEXT;
-- createJob's per-owner cap counts an owner's unfinished jobs; listJobs({owner}) lists them.
-- Partial: jobs without an owner stay out of the index (owner = ? implies owner IS NOT NULL).
CREATE INDEX jobs_owner_state ON jobs (owner, state, created_at) WHERE owner IS NOT NULL;
-- Mesh-wide settings: the first value written for a name is the one every coordinator uses.
CREATE TABLE settings (
  name  TEXT NOT NULL PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;
-- Which join token admitted each peer, fixed at first contact: revoking the token finds its peers.
CREATE TABLE peer_bindings (
  peer_id  TEXT    NOT NULL PRIMARY KEY,
  token_id TEXT    NOT NULL,
  bound_at INTEGER NOT NULL
) STRICT;
CREATE INDEX peer_bindings_token ON peer_bindings (token_id, bound_at, peer_id);
`
  }
]
