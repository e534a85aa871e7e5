/**
 * The agent's identity kept in an SSM Parameter Store SecureString, for containers whose
 * state directory does not survive a restart (ECS on Fargate: the packaging sets
 * UPLINK_IDENTITY_SSM_PARAMETER and grants the task role ssm:GetParameter/PutParameter on
 * that one parameter). The parameter is the source of truth; `<stateDir>/identity.json` is
 * a cache that also carries `enrolledAt` once the relay accepted the key.
 *
 * Creation uses `Overwrite=false`: if two tasks start at once, one PutParameter wins and the
 * other reads the winner back, so both agents share one key instead of racing two
 * enrollments. The calls use the agent's base credentials (the task role), never a phase
 * role: the identity exists before any phase is approved.
 */
import { GetParameterCommand, ParameterNotFound, PutParameterCommand, ParameterAlreadyExists, SSMClient, type SSMClientConfig } from '@aws-sdk/client-ssm';
import { z } from 'zod';
import { UplinkError } from '../shared/errors.js';
import type { AgentIdentity } from './identity-store.js';

/** Bounds on the parameter and what it holds. */
export const IDENTITY_SSM_LIMITS = {
  /** SSM parameter names: 1-2048 characters of [a-zA-Z0-9_.-/]. */
  maxNameLength: 2048,
  /** A standard-tier parameter holds 4 KiB; an identity is well under 1 KiB. */
  maxValueBytes: 4096,
} as const;

export const SSM_PARAMETER_NAME = /^[a-zA-Z0-9_./-]{1,2048}$/;

/**
 * Where an identity lives besides the state directory. `create` stores `id` unless one is
 * already there, and returns the one that is stored (the caller's or an earlier winner's).
 */
export interface RemoteIdentityStore {
  /** Human-readable location for logs and messages. */
  readonly location: string;
  load(): Promise<AgentIdentity | undefined>;
  create(id: AgentIdentity): Promise<AgentIdentity>;
}

const identitySchema = z.strictObject({
  applianceId: z.string().min(1).max(64),
  relayHost: z.string().min(1).max(300),
  publicKey: z.string().min(1).max(128),
  secretKey: z.string().min(1).max(256),
  keyId: z.string().min(1).max(128),
  createdAt: z.string().max(64),
  enrolledAt: z.string().max(64).nullable(),
});

export interface SsmIdentityStoreOptions {
  parameterName: string;
  /** Region and endpoint; default: the SDK's (AWS_REGION, AWS_ENDPOINT_URL). */
  region?: string;
  endpoint?: string;
  /** Base credentials; default: the SDK default chain (on ECS, the task role). */
  credentials?: SSMClientConfig['credentials'];
}

function unavailable(action: string, name: string, err: unknown): UplinkError {
  const e = err as { name?: string; message?: string };
  return new UplinkError('UPLINK_ERR_IDENTITY_STORE_UNAVAILABLE', `${action} on SSM parameter ${name} failed with the agent's base credentials: ${e.name ?? 'Error'}: ${e.message ?? String(err)}`, {
    cause: err,
    details: { parameter: name, action },
  });
}

/** The SSM-backed store. The client is created per call and destroyed after: it is used twice per start. */
export function ssmIdentityStore(opts: SsmIdentityStoreOptions): RemoteIdentityStore {
  const name = opts.parameterName;
  if (!SSM_PARAMETER_NAME.test(name)) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `UPLINK_IDENTITY_SSM_PARAMETER "${name.slice(0, 80)}" is not an SSM parameter name (1-${IDENTITY_SSM_LIMITS.maxNameLength} characters of a-z A-Z 0-9 _ . - /)`);
  }
  const client = (): SSMClient =>
    new SSMClient({
      ...(opts.region ? { region: opts.region } : {}),
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
    });

  const parse = (value: string | undefined): AgentIdentity => {
    if (value === undefined || Buffer.byteLength(value) > IDENTITY_SSM_LIMITS.maxValueBytes) {
      throw new UplinkError('UPLINK_ERR_IDENTITY_STORE_UNAVAILABLE', `SSM parameter ${name} is empty or over ${IDENTITY_SSM_LIMITS.maxValueBytes} bytes; it does not hold an uplink identity`);
    }
    let json: unknown;
    try {
      json = JSON.parse(value);
    } catch {
      throw new UplinkError('UPLINK_ERR_IDENTITY_STORE_UNAVAILABLE', `SSM parameter ${name} is not JSON; it does not hold an uplink identity`);
    }
    const r = identitySchema.safeParse(json);
    if (!r.success) throw new UplinkError('UPLINK_ERR_IDENTITY_STORE_UNAVAILABLE', `SSM parameter ${name} does not hold an uplink identity (${r.error.issues.map((i) => i.path.join('.') || i.message).join(', ')})`);
    return r.data;
  };

  const load = async (): Promise<AgentIdentity | undefined> => {
    const ssm = client();
    try {
      const out = await ssm.send(new GetParameterCommand({ Name: name, WithDecryption: true }));
      return parse(out.Parameter?.Value);
    } catch (err) {
      if (err instanceof ParameterNotFound || (err as { name?: string }).name === 'ParameterNotFound') return undefined;
      if (err instanceof UplinkError) throw err;
      throw unavailable('ssm:GetParameter', name, err);
    } finally {
      ssm.destroy();
    }
  };

  return {
    location: `ssm:${name}`,
    load,
    async create(id) {
      const value = JSON.stringify(id);
      const ssm = client();
      try {
        await ssm.send(new PutParameterCommand({ Name: name, Value: value, Type: 'SecureString', Overwrite: false, Description: 'uplink-agent identity (Ed25519 key); do not share' }));
        return id;
      } catch (err) {
        if (!(err instanceof ParameterAlreadyExists) && (err as { name?: string }).name !== 'ParameterAlreadyExists') throw unavailable('ssm:PutParameter', name, err);
      } finally {
        ssm.destroy();
      }
      // Another agent created it first: use its identity, not ours.
      const winner = await load();
      if (!winner) throw new UplinkError('UPLINK_ERR_IDENTITY_STORE_UNAVAILABLE', `SSM parameter ${name} exists but cannot be read back`);
      return winner;
    },
  };
}

/**
 * Merge what the parameter holds with the local cache: the cache wins only for the same
 * key (it may know `enrolledAt`); a different key in the cache is stale and replaced. An
 * identity from the parameter with no enrollment on record, started without a token, is
 * marked 'unconfirmed' so the connection tries the key before asking for enrollment.
 */
export function reconcileIdentity(remote: AgentIdentity, cached: AgentIdentity | undefined, haveToken: boolean): AgentIdentity {
  if (cached && cached.keyId === remote.keyId && cached.applianceId === remote.applianceId) return cached;
  if (remote.enrolledAt === null && !haveToken) return { ...remote, enrolledAt: 'unconfirmed' };
  return remote;
}
