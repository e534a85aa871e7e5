/**
 * Deployments: signed releases as uploaded by the vendor, the deployment queue, and each
 * deployment's terraform output as append-only chunks.
 *
 * deployment_logs is keyed by (deployment_id, byte offset): a follower resumes from the
 * last offset it saw, and the scheduler re-fetching a tail from the agent after a restart
 * can insert the same chunk twice without harm (ON CONFLICT DO NOTHING). `seq` gives the
 * queue its order independent of clock resolution.
 */
export const m0003Deployments = {
  id: '0003-deployments',
  sql: `
CREATE TABLE releases (
  id text PRIMARY KEY,
  version text NOT NULL,
  appliance text NOT NULL,
  manifest jsonb NOT NULL,
  signature text NOT NULL,
  archive bytea NOT NULL,
  size bigint NOT NULL,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (version, appliance)
);

CREATE TABLE deployments (
  id text PRIMARY KEY,
  seq bigserial NOT NULL,
  appliance_id text NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
  release_id text NOT NULL REFERENCES releases(id),
  action text NOT NULL CHECK (action IN ('apply', 'plan', 'destroy')),
  allow_downgrade boolean NOT NULL DEFAULT false,
  status text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
  cancel_requested boolean NOT NULL DEFAULT false,
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  ended_at timestamptz,
  outputs jsonb,
  error jsonb
);
CREATE INDEX deployments_appliance ON deployments (appliance_id, seq);

CREATE TABLE deployment_logs (
  deployment_id text NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
  "offset" bigint NOT NULL,
  data bytea NOT NULL,
  PRIMARY KEY (deployment_id, "offset")
);
`,
};
