/**
 * Agent configuration: environment variables for the essentials (UPLINK_RELAY_URL,
 * UPLINK_ENROLLMENT_TOKEN, UPLINK_STATE_DIR, UPLINK_RELAY_CA, UPLINK_RELAY_PIN) and an
 * optional JSON file (UPLINK_CONFIG) for everything else. One strict schema: unknown keys are
 * rejected and the error names the field. docs/configuration.md documents every key.
 */
import { z } from 'zod';
import { UplinkError } from '../shared/errors.js';
import { isLoopback, readJsonFile, validateConfig } from '../shared/config-validate.js';
import { phaseConfigFromEnv, phaseConfigSchema } from './phases/config.js';
import { forwardConfigSchema } from './ops/forward-policy.js';
import { sqlOperationSchema } from './ops/sql.js';
import { sqlTargetsSchema } from './ops/sql-targets.js';
import { kubeTargetsSchema } from './ops/kube-target.js';
import { telemetryConfigSchema } from './telemetry/config.js';

const KiB = 1024;
const MiB = 1024 * KiB;

const execSchema = z
  .strictObject({
    enabled: z.boolean().default(true),
    /** Variables copied from the agent's own environment into commands (never AWS_*). */
    inheritEnv: z.array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/)).default(['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'USER', 'SHELL']),
    defaultTimeoutMs: z.number().int().min(0).default(0),
    maxTimeoutMs: z.number().int().min(1000).default(24 * 3_600_000),
    /** SIGTERM first; SIGKILL after this grace when a timeout or cancel ends a command. */
    killGraceMs: z.number().int().min(0).max(60_000).default(5_000),
    maxArgs: z.number().int().min(1).default(4096),
    maxEnvVars: z.number().int().min(0).default(256),
  })
  .prefault({});

/** `uplink shell` PTY sessions (agent/ops/shell.ts). 0 disables a limit. */
const shellSchema = z
  .strictObject({
    enabled: z.boolean().default(true),
    idleTimeoutMs: z.number().int().min(0).max(2_147_483_647).default(30 * 60_000),
    maxDurationMs: z.number().int().min(0).max(2_147_483_647).default(8 * 3_600_000),
    /** Shell program; default the inherited SHELL, else /bin/bash, else /bin/sh. */
    shell: z.string().min(1).optional(),
  })
  .prefault({});

export const agentConfigSchema = z.strictObject({
  relayUrl: z.url(),
  stateDir: z.string().min(1),
  /** SSM SecureString holding the identity (agent/identity-ssm.ts); the state dir copy is then a cache. Also UPLINK_IDENTITY_SSM_PARAMETER. */
  identitySsmParameter: z.string().regex(/^[a-zA-Z0-9_./-]{1,2048}$/, 'must be an SSM parameter name').optional(),
  enrollmentToken: z.string().min(1).optional(),
  /** PEM file of the CA that signs the relay's certificate (else the system roots). */
  relayCaFile: z.string().min(1).optional(),
  /** base64 SHA-256 of the relay certificate's SubjectPublicKeyInfo; connection refused otherwise. */
  relayPin: z.string().regex(/^(sha256\/)?[A-Za-z0-9+/]{43}=$/).optional(),
  /** Permit http:// / ws:// to a non-loopback relay (only behind a TLS-terminating proxy you trust). */
  allowInsecureRelay: z.boolean().default(false),
  reconnect: z
    .strictObject({
      initialDelayMs: z.number().int().min(10).default(500),
      maxDelayMs: z.number().int().min(100).default(60_000),
      /** A connection that lasted this long resets the backoff. */
      stableAfterMs: z.number().int().min(0).default(10_000),
      connectTimeoutMs: z.number().int().min(100).default(15_000),
    })
    .prefault({}),
  heartbeat: z
    .strictObject({
      /** Used until the relay announces its own interval at connect. */
      intervalMs: z.number().int().min(100).default(15_000),
      missedIntervals: z.number().int().min(2).max(10).default(3),
    })
    .prefault({}),
  limits: z
    .strictObject({
      maxConcurrentStreams: z.number().int().min(1).max(100_000).default(1024),
      maxSpecBytes: z.number().int().min(KiB).max(MiB).default(64 * KiB),
      maxFrameBytes: z.number().int().min(KiB).max(64 * MiB).default(MiB),
      maxWebSocketMessageBytes: z.number().int().min(64 * KiB).max(64 * MiB).default(4 * MiB),
      h2SessionMemoryMiB: z.number().int().min(1).max(1024).default(32),
    })
    .prefault({}),
  operations: z.strictObject({ exec: execSchema, shell: shellSchema, kube: z.strictObject({ enabled: z.boolean().default(true) }).prefault({}), forward: forwardConfigSchema, sql: sqlOperationSchema }).prefault({}),
  /** Databases `uplink sql` may query, by name (agent/ops/sql-targets.ts). */
  sqlTargets: sqlTargetsSchema.default({}),
  /** Kubernetes clusters `uplink kubectl` may reach (agent/ops/kube.ts). */
  kube: z.strictObject({ targets: kubeTargetsSchema.default({}) }).prefault({}),
  /** Phase roles (AWS mode). Absent: local mode, phases decided by `local`. */
  aws: phaseConfigSchema.shape.aws,
  /** Local-mode phase decisions (demo, development). */
  local: phaseConfigSchema.shape.local,
  /** Collectors, OTLP receiver and disk spool (agent/telemetry/config.ts). */
  telemetry: telemetryConfigSchema.prefault({}),
  /** Vendor release keys this agent accepts (`uplink release keygen` prints them); also UPLINK_RELEASE_KEYS. */
  releaseKeys: z.array(z.strictObject({ id: z.string().regex(/^[0-9a-f]{16}$/), publicKey: z.string().min(1).max(128) })).max(32).default([]),
  /** Deployments (agent/deploy/deploy-service.ts). */
  deploy: z
    .strictObject({
      /** Explicit tofu/terraform binary; absent: tofu, else terraform, on PATH. */
      terraformPath: z.string().min(1).optional(),
      /** Largest deploy request from the relay (the base64 release is most of it). */
      maxRequestBytes: z.number().int().min(64 * KiB).max(1024 * MiB).default(96 * MiB),
    })
    .prefault({}),
});

export type AgentConfig = z.output<typeof agentConfigSchema>;

export interface AgentEnv {
  [name: string]: string | undefined;
  UPLINK_RELAY_URL?: string | undefined;
  UPLINK_ENROLLMENT_TOKEN?: string | undefined;
  UPLINK_STATE_DIR?: string | undefined;
  UPLINK_CONFIG?: string | undefined;
  UPLINK_RELAY_CA?: string | undefined;
  UPLINK_RELAY_PIN?: string | undefined;
  UPLINK_IDENTITY_SSM_PARAMETER?: string | undefined;
  UPLINK_RELEASE_KEYS?: string | undefined;
  UPLINK_INSTANCE_ID?: string | undefined;
}

/** Merge the config file (if any) with the environment (env wins), validate, freeze. */
export function loadAgentConfig(env: AgentEnv = process.env): Readonly<AgentConfig> {
  const file = env.UPLINK_CONFIG ? readJsonFile(env.UPLINK_CONFIG) : {};
  if (!file || typeof file !== 'object' || Array.isArray(file)) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'UPLINK_CONFIG must hold a JSON object');
  const merged: Record<string, unknown> = { ...(file as Record<string, unknown>) };
  if (env.UPLINK_RELAY_URL) merged.relayUrl = env.UPLINK_RELAY_URL;
  if (env.UPLINK_STATE_DIR) merged.stateDir = env.UPLINK_STATE_DIR;
  if (env.UPLINK_ENROLLMENT_TOKEN) merged.enrollmentToken = env.UPLINK_ENROLLMENT_TOKEN;
  if (env.UPLINK_RELAY_CA) merged.relayCaFile = env.UPLINK_RELAY_CA;
  if (env.UPLINK_RELAY_PIN) merged.relayPin = env.UPLINK_RELAY_PIN;
  if (env.UPLINK_IDENTITY_SSM_PARAMETER) merged.identitySsmParameter = env.UPLINK_IDENTITY_SSM_PARAMETER;
  if (env.UPLINK_INSTANCE_ID) merged.telemetry = { ...((merged.telemetry as Record<string, unknown> | undefined) ?? {}), instanceId: env.UPLINK_INSTANCE_ID };
  if (env.UPLINK_RELEASE_KEYS) merged.releaseKeys = [...((merged.releaseKeys as unknown[] | undefined) ?? []), ...releaseKeysFromEnv(env.UPLINK_RELEASE_KEYS)];
  const phases = phaseConfigFromEnv(env, { ...(merged.aws !== undefined ? { aws: merged.aws } : {}), ...(merged.local !== undefined ? { local: merged.local } : {}) });
  if (phases.aws) merged.aws = phases.aws;
  merged.local = phases.local;
  if (merged.relayUrl === undefined) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'UPLINK_RELAY_URL is required (e.g. https://relay.vendor.example)');
  if (merged.stateDir === undefined) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'UPLINK_STATE_DIR is required (a writable directory kept across restarts)');
  const cfg = validateConfig(agentConfigSchema, merged, env.UPLINK_CONFIG ? `agent config (${env.UPLINK_CONFIG} + env)` : 'agent config (env)');
  const url = new URL(cfg.relayUrl);
  if (!['https:', 'wss:', 'http:', 'ws:'].includes(url.protocol)) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `relayUrl: unsupported scheme ${url.protocol} (use https://)`);
  }
  const plain = url.protocol === 'http:' || url.protocol === 'ws:';
  if (plain && !isLoopback(url.hostname.replace(/^\[|\]$/g, '')) && !cfg.allowInsecureRelay) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `relayUrl: plain ${url.protocol}// to ${url.hostname} is refused; use https:// (or allowInsecureRelay behind a trusted TLS proxy)`);
  }
  return cfg;
}

/** UPLINK_RELEASE_KEYS: a JSON array of {id, publicKey}; the schema checks each entry. */
function releaseKeysFromEnv(text: string): unknown[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (!Array.isArray(parsed)) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'UPLINK_RELEASE_KEYS must be a JSON array of {"id","publicKey"}');
  return parsed;
}

/** The WebSocket URL of the relay's agent endpoint. */
export function agentConnectUrl(relayUrl: string, path: string): URL {
  const url = new URL(relayUrl);
  url.protocol = url.protocol === 'https:' || url.protocol === 'wss:' ? 'wss:' : 'ws:';
  url.pathname = url.pathname.replace(/\/$/, '') + path;
  url.search = '';
  return url;
}
