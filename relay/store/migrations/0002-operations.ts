/**
 * Operations: the relay's hash-chained audit log and session recordings metadata.
 *
 * audit_events is one chain for the whole relay (all appliances), so that deleting an
 * appliance's events is as visible as editing them. Appends lock the one-row audit_head
 * (SELECT ... FOR UPDATE) so that replicas sharing the database extend one chain; the head
 * also records the last seq and hash, which lets verification notice rows cut off the end.
 * `appliance` is plain text, not a foreign key: audit rows must outlive the appliance.
 * Times are timestamptz holding millisecond values, which round-trip exactly to the ISO
 * strings that were hashed.
 */
export const m0002Operations = {
  id: '0002-operations',
  sql: `
CREATE TABLE audit_head (
  id smallint PRIMARY KEY CHECK (id = 1),
  seq bigint NOT NULL,
  hash text NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '${'0'.repeat(64)}');

CREATE TABLE audit_events (
  seq bigint PRIMARY KEY CHECK (seq > 0),
  time timestamptz NOT NULL,
  actor text NOT NULL,
  appliance text NOT NULL,
  operation text NOT NULL,
  phase text,
  request_id text,
  target text,
  start_at timestamptz,
  end_at timestamptz,
  outcome text NOT NULL,
  bytes_in bigint NOT NULL,
  bytes_out bigint NOT NULL,
  detail jsonb NOT NULL,
  prev_hash text NOT NULL,
  hash text NOT NULL
);
CREATE INDEX audit_events_appliance ON audit_events (appliance, seq);
CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_request ON audit_events (request_id) WHERE request_id IS NOT NULL;

CREATE TABLE sessions (
  id text PRIMARY KEY,
  appliance_id text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('shell', 'exec', 'kube-exec')),
  actor text NOT NULL,
  request_id text,
  started_at timestamptz NOT NULL DEFAULT now(),
  ended_at timestamptz,
  exit_code integer,
  complete boolean NOT NULL DEFAULT false,
  incomplete_reason text,
  bytes bigint NOT NULL DEFAULT 0,
  width integer,
  height integer
);
CREATE INDEX sessions_appliance ON sessions (appliance_id, started_at);

CREATE TABLE session_chunks (
  session_id text NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
  seq bigint NOT NULL,
  data bytea NOT NULL,
  PRIMARY KEY (session_id, seq)
);
`,
};
