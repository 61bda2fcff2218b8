/**
 * Schema of the PostgreSQL store, as numbered migrations.
 *
 * The same tables and columns as the SQLite store (migrations/sqlite.ts), and
 * the same migration ids, so "schema version 2" means the same thing on both
 * backends. Applied migrations are never edited: a schema change is a new
 * entry, here and in migrations/sqlite.ts.
 *
 * Conventions: times are BIGINT epoch milliseconds (the store parses int8 as
 * JS numbers; epoch ms fit in 2^53); JSON columns are JSONB; booleans are
 * BOOLEAN; ids are TEXT with the "C" collation, so they sort byte by byte as
 * in SQLite whatever the database's locale (peer ids mix upper and lower
 * case). The CHECK constraints repeat the state unions of `types.ts`, as in
 * SQLite.
 */

export interface PostgresMigration {
  /** Strictly increasing; the order in which migrations apply. */
  id: number
  name: string
  /** One or more statements, run inside the migrator's transaction (no BEGIN/COMMIT here). */
  sql: string
}

export const POSTGRES_MIGRATIONS: ReadonlyArray<PostgresMigration> = [
  {
    id: 1,
    name: 'initial schema',
    sql: `
CREATE TABLE jobs (
  id         TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
  state      TEXT    NOT NULL CHECK (state IN ('announced', 'claimed', 'running', 'succeeded', 'failed', 'cancelled')),
  spec       JSONB   NOT NULL,
  attempt    INTEGER NOT NULL CHECK (attempt >= 1),
  created_at BIGINT  NOT NULL,
  updated_at BIGINT  NOT NULL
);
-- openJobs scans announced jobs oldest first; listJobs filters by state, newest first.
CREATE INDEX jobs_state_created ON jobs (state, created_at);
CREATE INDEX jobs_created ON jobs (created_at);

CREATE TABLE attempts (
  job_id           TEXT    COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  number           INTEGER NOT NULL CHECK (number >= 1),
  node             TEXT    NOT NULL,
  token            TEXT    NOT NULL,
  state            TEXT    NOT NULL CHECK (state IN ('claimed', 'running', 'succeeded', 'failed', 'cancelled', 'lost')),
  awarded_at       BIGINT  NOT NULL,
  started_at       BIGINT,
  finished_at      BIGINT,
  lease_expires_at BIGINT  NOT NULL,
  PRIMARY KEY (job_id, number)
);

CREATE TABLE results (
  job_id           TEXT    COLLATE "C" NOT NULL PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
  attempt          INTEGER NOT NULL,
  outcome          TEXT    NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'cancelled')),
  exit_code        INTEGER,
  stdout           TEXT    NOT NULL,
  stderr           TEXT    NOT NULL,
  stdout_truncated BOOLEAN NOT NULL,
  stderr_truncated BOOLEAN NOT NULL,
  started_at       BIGINT,
  finished_at      BIGINT  NOT NULL,
  error            JSONB
);

CREATE TABLE nodes (
  peer_id       TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
  capacity      JSONB  NOT NULL,
  first_seen_at BIGINT NOT NULL,
  last_seen_at  BIGINT NOT NULL
);

-- A sequence never hands out a number twice, like SQLite's AUTOINCREMENT.
-- seq is drawn when the row is inserted, not at commit. The events of one
-- job's state changes still come in commit order, because each is inserted
-- by the statement that holds the job row's lock; only appended events and
-- stale-report events, which take no lock, can interleave differently.
CREATE TABLE job_events (
  seq     BIGSERIAL PRIMARY KEY,
  job_id  TEXT    COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  at      BIGINT  NOT NULL,
  type    TEXT    NOT NULL,
  actor   TEXT    NOT NULL,
  attempt INTEGER,
  detail  JSONB   NOT NULL
);
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
  name       TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
  holder     TEXT   NOT NULL,
  expires_at BIGINT NOT NULL
);
`
  },
  {
    id: 3,
    name: 'attempt limits and backoff',
    sql: `
-- How many attempts a job gets before it ends failed (from spec.maxAttempts),
-- and the time before which a re-announced job is not offered (backoff).
-- Constant defaults: adding the columns does not rewrite the table.
ALTER TABLE jobs
  ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
  ADD COLUMN not_before   BIGINT  NOT NULL DEFAULT 0;
-- Jobs submitted before this migration: take the limit from their spec where it is a usable integer.
UPDATE jobs SET max_attempts = (spec->>'maxAttempts')::integer
-- (The pattern admits only integers 1..999999999, so the cast cannot fail.)
WHERE jsonb_typeof(spec->'maxAttempts') = 'number' AND (spec->>'maxAttempts') ~ '^[1-9][0-9]{0,8}$';
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
-- Built inside the migrator's transaction (not CONCURRENTLY): writes to attempts wait while it builds.
CREATE INDEX attempts_live_lease ON attempts (lease_expires_at, job_id, number)
  WHERE state IN ('claimed', 'running');
`
  },
  {
    id: 5,
    name: 'released attempts',
    sql: `
-- attempts.state may be 'released': the node handed the attempt back (a drain on shutdown).
-- The state CHECK of migration 1 is unnamed: PostgreSQL named it attempts_state_check.
-- One ALTER: the wider CHECK is checked against every row (a scan) under its ACCESS EXCLUSIVE lock;
-- rows and indexes are kept.
ALTER TABLE attempts
  DROP CONSTRAINT attempts_state_check,
  ADD CONSTRAINT attempts_state_check CHECK (state IN ('claimed', 'running', 'succeeded', 'failed', 'cancelled', 'lost', 'released'));
`
  },
  {
    id: 6,
    name: 'result artifacts',
    sql: `
-- The files an attempt uploaded (path, size, sha256, content type), as a JSON array,
-- written with the result in the same conditional insert: only the attempt whose
-- token was current can record any. A constant default: no table rewrite.
ALTER TABLE results ADD COLUMN artifacts JSONB NOT NULL DEFAULT '[]'::jsonb;
`
  },
  {
    id: 7,
    name: 'live job logs',
    sql: `
-- How many log lines the job has stored so far, across its attempts: appendLogs numbers its
-- new lines after it and checks the per-job cap against it in the same statement that locks
-- the job row for its compare-and-set, so concurrent appends get disjoint line numbers and no
-- count over job_logs is needed. A constant default (0 for existing jobs): no table rewrite.
ALTER TABLE jobs ADD COLUMN log_lines BIGINT NOT NULL DEFAULT 0;
-- The live output lines themselves, numbered 1, 2, ... per job in arrival order (across
-- attempts). The primary key is also listLogs' index (job_id = $1 AND line > $2 ORDER BY line),
-- and makes a duplicate line number impossible even if the count above were ever wrong.
-- text cannot hold U+0000: the store replaces it with U+FFFD, as in results.stdout.
CREATE TABLE job_logs (
  job_id  TEXT    COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  line    INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  stream  TEXT    NOT NULL CHECK (stream IN ('stdout', 'stderr')),
  at      BIGINT  NOT NULL,
  text    TEXT    NOT NULL,
  PRIMARY KEY (job_id, line)
);
`
  },
  {
    id: 8,
    name: 'jobs by batch',
    sql: `
-- listJobs({batch}): the jobs of one batch (spec.batch, set by \`rgrid run --batch\`), newest first.
-- Partial: most jobs have no batch and stay out of the index. Built inside the migration
-- transaction (not CONCURRENTLY): writes to jobs wait while it builds.
CREATE INDEX jobs_batch ON jobs ((spec->>'batch'), created_at DESC, id DESC)
  WHERE spec ? 'batch';
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
-- are few and listJoinTokens reads them all. id is "C" like the other keys, so listJoinTokens'
-- tie-break on id sorts byte by byte as in SQLite.
CREATE TABLE join_tokens (
  id            TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
  secret_sha256 TEXT   NOT NULL CHECK (secret_sha256 ~ '^[0-9a-f]{64}$'),
  created_at    BIGINT NOT NULL,
  expires_at    BIGINT,
  revoked_at    BIGINT,
  note          TEXT   NOT NULL DEFAULT ''
);
`
  },
  {
    id: 10,
    name: 'cloud events',
    sql: `
-- What the provisioner did to cloud servers and why (created, create-failed, draining, deleted, adopted):
-- the servers themselves are the Cloud API's truth; this is the record of decisions.
CREATE TABLE cloud_events (
  seq         BIGSERIAL PRIMARY KEY,
  at          BIGINT  NOT NULL,
  type        TEXT    NOT NULL CHECK (type IN ('created', 'create-failed', 'draining', 'deleted', 'adopted')),
  server_id   BIGINT,
  server_name TEXT    NOT NULL,
  reason      TEXT    NOT NULL,
  detail      JSONB   NOT NULL DEFAULT '{}'::jsonb
);
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
  id            TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
  name          TEXT    COLLATE "C" NOT NULL,
  secret_sha256 TEXT    NOT NULL,
  admin         BOOLEAN NOT NULL,
  created_at    BIGINT  NOT NULL,
  revoked_at    BIGINT
);
-- The API key that submitted the job (NULL: submitted to an open coordinator), and the job's
-- sealed secret environment: ciphertext the coordinator made, which the store never interprets.
-- Nullable without defaults: adding the columns does not rewrite the table.
ALTER TABLE jobs
  ADD COLUMN owner      TEXT COLLATE "C",
  ADD COLUMN secret_env TEXT;
-- createJob's per-owner cap counts an owner's unfinished jobs; listJobs({owner}) lists them.
-- Partial: jobs without an owner stay out of the index (owner = $1 implies owner IS NOT NULL).
-- Built inside the migration transaction (not CONCURRENTLY): writes to jobs wait while it builds.
CREATE INDEX jobs_owner_state ON jobs (owner, state, created_at) WHERE owner IS NOT NULL;
-- Mesh-wide settings: the first value written for a name is the one every coordinator uses.
CREATE TABLE settings (
  name  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  value TEXT NOT NULL
);
-- Which join token admitted each peer, fixed at first contact: revoking the token finds its peers.
CREATE TABLE peer_bindings (
  peer_id  TEXT   COLLATE "C" NOT NULL PRIMARY KEY,
  token_id TEXT   COLLATE "C" NOT NULL,
  bound_at BIGINT NOT NULL
);
CREATE INDEX peer_bindings_token ON peer_bindings (token_id, bound_at, peer_id);
`
  }
]
