/** Appliances, enrollment, API tokens, handshake nonces, relay replicas and agent presence. */
export const m0001Foundation = {
  id: '0001-foundation',
  sql: `
CREATE TABLE appliances (
  id text PRIMARY KEY,
  name text NOT NULL UNIQUE,
  customer text NOT NULL,
  instance_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  public_key text,
  key_id text,
  enrolled_at timestamptz,
  key_revoked_at timestamptz,
  agent_version text,
  last_seen_at timestamptz,
  last_remote_address text,
  phase_summary jsonb
);

CREATE TABLE enrollment_tokens (
  token_hash text PRIMARY KEY,
  appliance_id text NOT NULL REFERENCES appliances(id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  used_at timestamptz
);
CREATE INDEX enrollment_tokens_appliance ON enrollment_tokens (appliance_id);

CREATE TABLE api_tokens (
  id text PRIMARY KEY,
  name text NOT NULL,
  scopes text[] NOT NULL,
  token_hash text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text,
  revoked_at timestamptz,
  last_used_at timestamptz
);

CREATE TABLE auth_nonces (
  nonce text PRIMARY KEY,
  appliance_id text NOT NULL,
  expires_at timestamptz NOT NULL
);
CREATE INDEX auth_nonces_expiry ON auth_nonces (expires_at);

CREATE TABLE relay_instances (
  id text PRIMARY KEY,
  advertise_url text,
  started_at timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE presence (
  appliance_id text PRIMARY KEY REFERENCES appliances(id) ON DELETE CASCADE,
  relay_id text NOT NULL,
  connection_id text NOT NULL,
  connected_at timestamptz NOT NULL,
  remote_address text,
  agent_version text
);
CREATE INDEX presence_relay ON presence (relay_id);
`,
};
