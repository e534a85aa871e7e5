/**
 * Relay configuration: defaults, one strict schema, and the merge of config file, flags and
 * environment (flags win over env, env over file). Every key is documented in
 * docs/configuration.md.
 */
import { z } from 'zod';
import { UplinkError } from '../shared/errors.js';
import { isLoopback, validateConfig } from '../shared/config-validate.js';
import { relayTelemetrySchema } from './telemetry/telemetry-config.js';

const KiB = 1024;
const MiB = 1024 * KiB;

export const relayConfigSchema = z.strictObject({
  listen: z.strictObject({ host: z.string().min(1), port: z.number().int().min(0).max(65535) }),
  dataDir: z.string().min(1).optional(),
  databaseUrl: z.string().min(1).optional(),
  tls: z.strictObject({ certFile: z.string().min(1), keyFile: z.string().min(1) }).optional(),
  insecureHttp: z.boolean().default(false),
  insecureHttpAny: z.boolean().default(false),
  /** URL agents and the CLI use to reach this relay; defaults to the listen address. */
  publicUrl: z.url().optional(),
  /** A stable id for this replica; random per process when omitted. */
  relayId: z.string().regex(/^[a-zA-Z0-9_.-]{1,64}$/).optional(),
  auth: z
    .strictObject({
      clockSkewMs: z.number().int().min(1000).max(3_600_000).default(300_000),
      enrollmentTokenTtlMs: z.number().int().min(60_000).max(30 * 86_400_000).default(86_400_000),
    })
    .prefault({}),
  heartbeat: z
    .strictObject({
      intervalMs: z.number().int().min(100).max(300_000).default(15_000),
      /** A peer silent for this many intervals is dead. */
      missedIntervals: z.number().int().min(2).max(10).default(3),
    })
    .prefault({}),
  presence: z
    .strictObject({
      relayHeartbeatMs: z.number().int().min(100).default(10_000),
      staleAfterMs: z.number().int().min(300).default(30_000),
    })
    .prefault({}),
  limits: z
    .strictObject({
      maxAgents: z.number().int().min(1).default(20_000),
      maxStreamsPerAgent: z.number().int().min(1).max(100_000).default(1024),
      maxSpecBytes: z.number().int().min(1 * KiB).max(1 * MiB).default(64 * KiB),
      maxJsonBodyBytes: z.number().int().min(1 * KiB).max(64 * MiB).default(1 * MiB),
      maxFrameBytes: z.number().int().min(1 * KiB).max(64 * MiB).default(1 * MiB),
      maxWebSocketMessageBytes: z.number().int().min(64 * KiB).max(64 * MiB).default(4 * MiB),
      /** Upper bound of memory nghttp2 may buffer per agent session before refusing streams. */
      h2SessionMemoryMiB: z.number().int().min(1).max(1024).default(32),
      handshakeTimeoutMs: z.number().int().min(100).default(10_000),
      /** Largest release archive `POST /v1/releases` accepts (the agent has its own limit too). */
      maxReleaseBytes: z.number().int().min(1 * KiB).max(1024 * MiB).default(64 * MiB),
    })
    .prefault({}),
  /** Session recordings (relay/recordings/recorder.ts). */
  recordings: z
    .strictObject({
      enabled: z.boolean().default(true),
      /** Record keystrokes ("i" events) too: off by default, input holds typed passwords. */
      recordInput: z.boolean().default(false),
      /** Size of one stored chunk of asciicast text (session_chunks row). */
      chunkBytes: z.number().int().min(1 * KiB).max(16 * MiB).default(256 * KiB),
    })
    .prefault({}),
  shutdown: z.strictObject({ drainTimeoutMs: z.number().int().min(0).default(10_000) }).prefault({}),
  /** Telemetry export (relay/telemetry/telemetry-config.ts); no sinks = no pulls. */
  telemetry: relayTelemetrySchema,
  /** Phase state per appliance (relay/phase-summary.ts): re-read at least this often; changes arrive sooner by long poll. */
  phases: z.strictObject({ refreshIntervalSeconds: z.number().int().min(1).max(300).default(60) }).prefault({}),
});

export type RelayConfig = z.output<typeof relayConfigSchema>;

/** Validate, then enforce the rules that span several keys. */
export function loadRelayConfig(input: unknown): Readonly<RelayConfig> {
  const cfg = validateConfig(relayConfigSchema, input, 'relay config');
  if (cfg.dataDir && cfg.databaseUrl) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'relay config: give either dataDir (PGlite) or databaseUrl (PostgreSQL), not both');
  }
  if (cfg.tls && cfg.insecureHttp) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'relay config: tls and insecureHttp are mutually exclusive');
  }
  if (!cfg.tls && !cfg.insecureHttp) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'relay config: TLS is required: give --tls-cert and --tls-key, or --insecure-http for local use');
  }
  if (cfg.insecureHttp && !isLoopback(cfg.listen.host) && !cfg.insecureHttpAny) {
    throw new UplinkError(
      'UPLINK_ERR_CONFIG_INVALID',
      `relay config: --insecure-http only listens on loopback; ${cfg.listen.host} needs --insecure-http-any as well`,
    );
  }
  if (cfg.presence.staleAfterMs <= cfg.presence.relayHeartbeatMs) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'relay config: presence.staleAfterMs must exceed presence.relayHeartbeatMs');
  }
  return cfg;
}
