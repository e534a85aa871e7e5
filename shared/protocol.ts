/**
 * Wire constants shared by relay, agent and CLI. docs/PROTOCOL.md describes each one; a
 * change here is a protocol change.
 */

/** Protocol version spoken inside the tunnel; sent by the agent at connect. */
export const PROTOCOL_VERSION = 1;

export const PATHS = {
  agentConnect: '/v1/agent/connect',
  healthz: '/healthz',
  readyz: '/readyz',
  metrics: '/metrics',
} as const;

/**
 * HTTP/2 flow-control windows inside the tunnel. Settings only raise the per-stream window;
 * the connection window stays at the protocol's 64 KiB unless each side raises it, which
 * caps the whole tunnel at 64 KiB per round trip. Both sides raise it at session start.
 * Buffering stays bounded by each side's maxSessionMemory.
 */
export const H2_WINDOWS = {
  streamBytes: 1024 * 1024,
  connectionBytes: 16 * 1024 * 1024,
  /**
   * Largest DATA frame either side accepts (HTTP/2 default 16 KiB). Bigger frames mean fewer
   * headers, events and WebSocket messages per byte of bulk output; 64 KiB keeps a keystroke
   * queued behind one frame of a saturating transfer to well under a millisecond.
   */
  maxFrameBytes: 64 * 1024,
} as const;

/** Paths the relay requests on the agent, over HTTP/2 inside the tunnel. */
export const AGENT_PATHS = {
  info: '/v1/info',
  phases: '/v1/phases',
  exec: '/v1/ops/exec',
  shell: '/v1/ops/shell',
  forward: '/v1/ops/forward',
  sql: '/v1/ops/sql',
  kube: '/v1/ops/kube',
  kubeUpgrade: '/v1/ops/kube-upgrade',
  deployRun: '/v1/deploy/run',
  deployStatus: '/v1/deploy/status',
  deployCancel: '/v1/deploy/cancel',
  /** The relay announces the appliance name after each handshake; the agent pins it (agent/appliance-name.ts). */
  applianceName: '/v1/appliance-name',
  telemetryPull: '/v1/telemetry/pull',
  telemetryAck: '/v1/telemetry/ack',
} as const;

/** Handshake headers on the agent's WebSocket upgrade request. */
export const HANDSHAKE_HEADERS = {
  mode: 'x-uplink-mode',
  appliance: 'x-uplink-appliance',
  timestamp: 'x-uplink-timestamp',
  nonce: 'x-uplink-nonce',
  publicKey: 'x-uplink-public-key',
  signature: 'x-uplink-signature',
  enrollmentToken: 'x-uplink-enrollment-token',
  agentVersion: 'x-uplink-agent-version',
  protocol: 'x-uplink-protocol',
} as const;

/** Headers on operation requests (CLI→relay upgrade, relay→agent HTTP/2 stream). */
export const OP_HEADERS = {
  /** base64url(JSON) operation spec; bounded by limits.maxSpecBytes. */
  spec: 'x-uplink-spec',
  /** Set by the relay only: the engineer (token name) who asked. */
  actor: 'x-uplink-actor',
  requestId: 'x-uplink-request-id',
  /** Set by the agent on responses: 'aws' or 'local' (phase decision mode). */
  phaseMode: 'x-uplink-phase-mode',
} as const;

/** WebSocket close codes used between relay and agent. */
export const CLOSE_CODES = {
  normal: 1000,
  /** Relay shutting down or restarting: come back (after jittered backoff). */
  serviceRestart: 1012,
  /** Another connection for the same appliance took over. */
  replaced: 4000,
  /** The agent's key was revoked: do not come back with it. */
  revoked: 4003,
  /** Heartbeat lost. */
  heartbeatTimeout: 4008,
} as const;

export function encodeSpec(spec: unknown): string {
  return Buffer.from(JSON.stringify(spec), 'utf8').toString('base64url');
}

export function decodeSpec(value: string | string[] | undefined): unknown {
  if (typeof value !== 'string' || value.length === 0) return undefined;
  return JSON.parse(Buffer.from(value, 'base64url').toString('utf8'));
}
