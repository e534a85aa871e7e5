/**
 * Configuration of the phase roles: the `aws` section (AWS mode) and the `local` section
 * (local mode, used when no roles are configured: the demo and local development).
 *
 * One schema with defaults, strict objects (a misspelt key is an error naming the field),
 * validated once at start-up and then frozen. The lead embeds `phaseConfigSchema` in the
 * full agent config; `phaseConfigFromEnv` applies the environment overrides the packaging
 * (CloudFormation, Terraform, Helm) sets.
 *
 * | variable                      | overrides                 |
 * |-------------------------------|---------------------------|
 * | UPLINK_AWS_REGION             | aws.region                |
 * | UPLINK_ROLE_INSTALL_ARN       | aws.roles.install         |
 * | UPLINK_ROLE_STEADYSTATE_ARN   | aws.roles.steadyState     |
 * | UPLINK_ROLE_DEPLOY_ARN        | aws.roles.deploy          |
 * | UPLINK_ROLE_OPERATE_ARN       | aws.roles.operate         |
 * | UPLINK_AWS_EXTERNAL_ID        | aws.externalId            |
 */
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { MaintenanceWindow, SCHEDULE_LIMITS } from './schedule.js';
import type { Phase } from './phase.js';

/** STS bounds on AssumeRole DurationSeconds. */
export const STS_MIN_DURATION_SECONDS = 900;
export const STS_MAX_DURATION_SECONDS = 43_200;

/** Defaults, in one place. */
export const PHASE_CONFIG_DEFAULTS = {
  sessionDurationMaxSeconds: 3600,
  refreshBeforeExpirySeconds: 300,
  tagCacheSeconds: 0,
  recheckIntervalSeconds: 15,
  /** Upper bound for tagCacheSeconds: a revoke must not wait longer than this. */
  tagCacheMaxSeconds: 300,
} as const;

const ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/(?:[\w+=,.@-]+\/)*[\w+=,.@-]{1,64}$/;

const roleArn = z.string().regex(ROLE_ARN, 'must be an IAM role ARN such as arn:aws:iam::123456789012:role/UplinkDeploy');

const maintenanceWindow = z.string().superRefine((text, ctx) => {
  try {
    MaintenanceWindow.parse(text);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: err instanceof Error ? err.message : String(err) });
  }
});

const windows = z.array(maintenanceWindow).max(SCHEDULE_LIMITS.maxWindows).default([]);

const seconds = (min: number, max: number, def: number) => z.number().int().min(min).max(max).default(def);

/** The `aws` section: AWS mode. */
export const awsPhaseConfigSchema = z
  .strictObject({
    region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, 'must be an AWS region such as eu-west-1'),
    /** Passed as ExternalId on every AssumeRole when the trust policies require one. */
    externalId: z.string().regex(/^[\w+=,.@:/-]{2,1224}$/, 'must be 2-1224 characters of [A-Za-z0-9_+=,.@:/-]').optional(),
    roles: z.strictObject({ install: roleArn, steadyState: roleArn, deploy: roleArn, operate: roleArn }),
    /** SteadyState (telemetry) is on unless the customer turns it off. */
    steadyState: z.strictObject({ enabled: z.boolean().default(true) }).prefault({}),
    /** Windows in which a phase tagged `scheduled` is open, e.g. "Sat 02:00-06:00 UTC". */
    maintenanceWindows: windows,
    sessionDurationMaxSeconds: seconds(STS_MIN_DURATION_SECONDS, STS_MAX_DURATION_SECONDS, PHASE_CONFIG_DEFAULTS.sessionDurationMaxSeconds),
    /** Re-assume this long before the credentials expire; below the STS minimum so a fresh set is never due at once. */
    refreshBeforeExpirySeconds: seconds(30, STS_MIN_DURATION_SECONDS - 60, PHASE_CONFIG_DEFAULTS.refreshBeforeExpirySeconds),
    /** 0 reads the role tags on every request; more trades revoke latency for fewer IAM calls. */
    tagCacheSeconds: seconds(0, PHASE_CONFIG_DEFAULTS.tagCacheMaxSeconds, PHASE_CONFIG_DEFAULTS.tagCacheSeconds),
    /** How often open sessions re-check their approval and refresh credentials. */
    recheckIntervalSeconds: seconds(1, 300, PHASE_CONFIG_DEFAULTS.recheckIntervalSeconds),
    /** Custom AWS endpoint (an emulator, or a private endpoint without private DNS); also written into child config files. */
    endpoint: z.url().optional(),
  })
  .superRefine((c, ctx) => {
    if (c.recheckIntervalSeconds >= c.refreshBeforeExpirySeconds) {
      ctx.addIssue({ code: 'custom', path: ['recheckIntervalSeconds'], message: 'must be smaller than refreshBeforeExpirySeconds, or credentials could expire between two checks' });
    }
  });

const localAccess = z.enum(['enabled', 'disabled', 'scheduled']);

/** The `local` section: local mode, decided by this config plus `<stateDir>/access.json`. */
export const localPhaseConfigSchema = z.strictObject({
  deploy: localAccess.default('disabled'),
  operate: localAccess.default('disabled'),
  steadyState: z.boolean().default(true),
  maintenanceWindows: windows,
  recheckIntervalSeconds: seconds(1, 300, PHASE_CONFIG_DEFAULTS.recheckIntervalSeconds),
});

/** The phases part of the agent config. Without `aws` the agent runs in local mode. */
export const phaseConfigSchema = z.strictObject({
  aws: awsPhaseConfigSchema.optional(),
  local: localPhaseConfigSchema.prefault({}),
});

export type AwsPhaseConfig = z.infer<typeof awsPhaseConfigSchema>;
export type LocalPhaseConfig = z.infer<typeof localPhaseConfigSchema>;
export type PhaseConfig = z.infer<typeof phaseConfigSchema>;
export type LocalAccess = z.infer<typeof localAccess>;

/** The role ARN for a phase in AWS mode. */
export function roleArnFor(config: AwsPhaseConfig, phase: Phase): string {
  return config.roles[phase];
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** Validate, apply defaults, freeze. Throws UPLINK_ERR_CONFIG_INVALID naming every bad field. */
export function parsePhaseConfig(input: unknown, fieldPrefix = ''): PhaseConfig {
  const result = phaseConfigSchema.safeParse(input ?? {});
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${fieldPrefix}${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `invalid phase configuration: ${problems.join('; ')}`, { details: { problems } });
  }
  return deepFreeze(result.data);
}

const ENV_ROLES: ReadonlyArray<[string, Phase]> = [
  ['UPLINK_ROLE_INSTALL_ARN', 'install'],
  ['UPLINK_ROLE_STEADYSTATE_ARN', 'steadyState'],
  ['UPLINK_ROLE_DEPLOY_ARN', 'deploy'],
  ['UPLINK_ROLE_OPERATE_ARN', 'operate'],
];

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The phase config from a file section plus the environment overrides above (the
 * environment wins; empty variables count as unset). Setting any role variable turns on AWS
 * mode, so all four roles and the region must then be known, from either source.
 */
export function phaseConfigFromEnv(env: Readonly<Record<string, string | undefined>>, fileConfig: unknown = {}): PhaseConfig {
  if (!isRecord(fileConfig)) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'invalid phase configuration: (root): expected an object');
  }
  const get = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  };
  const merged: Record<string, unknown> = { ...fileConfig };
  const fileAws = isRecord(fileConfig.aws) ? fileConfig.aws : undefined;
  const roleOverrides = Object.fromEntries(ENV_ROLES.flatMap(([name, phase]) => (get(name) ? [[phase, get(name)]] : [])));
  const region = get('UPLINK_AWS_REGION');
  const externalId = get('UPLINK_AWS_EXTERNAL_ID');
  if (fileAws || Object.keys(roleOverrides).length > 0) {
    const aws: Record<string, unknown> = { ...fileAws };
    aws.roles = { ...(isRecord(fileAws?.roles) ? fileAws.roles : {}), ...roleOverrides };
    if (region) aws.region = region;
    if (externalId) aws.externalId = externalId;
    merged.aws = aws;
  } else if (region || externalId) {
    throw new UplinkError(
      'UPLINK_ERR_CONFIG_INVALID',
      'UPLINK_AWS_REGION or UPLINK_AWS_EXTERNAL_ID is set but no phase role is configured: set UPLINK_ROLE_INSTALL_ARN, UPLINK_ROLE_STEADYSTATE_ARN, UPLINK_ROLE_DEPLOY_ARN and UPLINK_ROLE_OPERATE_ARN (or the aws.roles section)',
    );
  }
  return parsePhaseConfig(merged);
}
