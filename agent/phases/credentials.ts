/**
 * PhaseAccess: the one place the agent gets AWS credentials for a request.
 *
 * `open()` checks the customer's approval first (role tags read with the SteadyState role,
 * or local state), then assumes the phase role with a RoleSessionName and session tags naming
 * the engineer, the request and the operation, for no longer than the approval window.
 * Sessions are re-checked periodically and on change notifications: a revoke or a window
 * that closes ends them ('ended' event) and their credential files stop handing anything out.
 *
 * Credential scopes: each request gets its own AssumeRole (so CloudTrail attributes every
 * call to one engineer and one request); agent-internal SDK use (telemetry collection, tag
 * reads) shares one cached session per phase named after the agent.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { AssumeRoleCommand, STSClient, type STSClientConfig } from '@aws-sdk/client-sts';
import { IAMClient } from '@aws-sdk/client-iam';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import {
  assertApproved, cachedTagReader, errorView, iamRoleTagReader, parseIsoInstant,
  type ApprovalView, type PhaseMode, type RoleTagReader,
} from './approval.js';
import { awsError } from './aws-errors.js';
import { parsePhaseConfig, STS_MIN_DURATION_SECONDS, type AwsPhaseConfig, type PhaseConfig } from './config.js';
import { isPhase, phaseForOperation, systemClock, type Clock, type Operation, type Phase } from './phase.js';
import { PhaseSession, type AssumedCredentials, type PhaseCredentialProvider, type SessionHost } from './phase-session.js';
import { ApprovalSource, asUplinkError } from './approval-source.js';
import { createSessionFiles, emptyAwsFile, removeSessionFiles, writeSessionFile } from './session-files.js';
import { roleSessionName, sessionTags } from './session-name.js';

export { formatPhaseSummary } from './summary.js';
export type { ApprovalView } from './approval.js';
export { PhaseSession } from './phase-session.js';
export type { PhaseCredentialProvider, PhaseCredentialIdentity, SessionEnd } from './phase-session.js';

/** Limits on request fields that come from the relay. */
export const PHASE_REQUEST_LIMITS = {
  maxActorLength: 256,
  maxRequestIdLength: 128,
} as const;

/** Whose credentials call STS, for error messages. */
const BASE_CALLER = "the agent's base credentials (its task role)";
const STEADY_CALLER = 'the SteadyState role';
/** The actor recorded for credentials the agent uses on its own behalf. */
export const AGENT_ACTOR = 'uplink-agent';

type BaseCredentials = NonNullable<STSClientConfig['credentials']>;

export interface PhaseAccessOptions {
  /** The phase section of the agent config (parsed again here, so raw input is fine). */
  config: PhaseConfig | unknown;
  /** The agent's state directory: session files and local access state live under it. */
  stateDir: string;
  /** credential_process command prefix, e.g. [process.execPath, '/app/dist/agent/main.js', 'credentials']; `--session-file F` is appended. */
  credentialProcessCommand: readonly string[];
  /** Base credentials for STS; default: the SDK default chain (on ECS, the task role). */
  baseCredentials?: BaseCredentials;
  clock?: Clock;
  logger?: Logger;
  /** Run `recheck()` every recheckIntervalSeconds (default true). Tests drive it by hand. */
  autoRecheck?: boolean;
}

const optionsSchema = z.strictObject({
  config: z.unknown(),
  stateDir: z.string().min(1),
  credentialProcessCommand: z.array(z.string().min(1)).min(1),
  baseCredentials: z.custom<BaseCredentials>((v) => typeof v === 'function' || (typeof v === 'object' && v !== null)).optional(),
  clock: z.custom<Clock>((v) => typeof v === 'function').optional(),
  logger: z.custom<Logger>((v) => typeof v === 'object' && v !== null).optional(),
  autoRecheck: z.boolean().optional(),
});

/** A request for phase credentials. */
export interface PhaseRequest {
  phase: Phase;
  /** The vendor engineer (or automation) the relay authenticated. */
  actor: string;
  requestId: string;
  operation: Operation;
}

export interface PhaseAccessEvents {
  'session-ended': [PhaseSession];
}

/** A cached assumed-role session with single-flight refresh. */
class RoleCache {
  private current: AssumedCredentials | undefined;
  private pending: Promise<AssumedCredentials> | undefined;

  constructor(private readonly fetch: () => Promise<AssumedCredentials>, private readonly clock: Clock, private readonly refreshBeforeMs: number) {}

  async get(): Promise<AssumedCredentials> {
    const c = this.current;
    const now = this.clock();
    if (c && now < c.localExpiresAt - this.refreshBeforeMs && (c.notAfter === undefined || now < c.notAfter)) return c;
    this.pending ??= this.fetch()
      .then((next) => { this.current = next; return next; })
      .finally(() => { this.pending = undefined; });
    return this.pending;
  }

  clear(): void {
    this.current = undefined;
  }
}

const asIdentity = (c: AssumedCredentials) => ({
  accessKeyId: c.accessKeyId,
  secretAccessKey: c.secretAccessKey,
  sessionToken: c.sessionToken,
  expiration: new Date(c.notAfter !== undefined ? Math.min(c.stsExpiration, c.notAfter) : c.stsExpiration),
});

export class PhaseAccess extends EventEmitter<PhaseAccessEvents> implements SessionHost {
  readonly mode: PhaseMode;
  readonly config: PhaseConfig;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly refreshBeforeMs: number;
  private readonly stateDir: string;
  private readonly credentialProcessCommand: readonly string[];
  private readonly source: ApprovalSource;
  private readonly aws: AwsPhaseConfig | undefined;
  private readonly sts: STSClient | undefined;
  private readonly iam: IAMClient | undefined;
  private readonly tags: (RoleTagReader & { invalidate(): void }) | undefined;
  private readonly internal = new Map<Phase, RoleCache>();
  /** Sessions still handing out credentials (re-checked and refreshed). */
  private readonly sessions = new Set<PhaseSession>();
  /** Every session not yet closed, ended or not: close() deletes their files. */
  private readonly owned = new Set<PhaseSession>();
  private readonly timer: NodeJS.Timeout | undefined;
  private recheckRunning: Promise<void> | undefined;
  private recheckAgain = false;
  private closed = false;

  constructor(options: PhaseAccessOptions) {
    super();
    const parsed = optionsSchema.safeParse(options);
    if (!parsed.success) {
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `invalid PhaseAccess options: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    }
    const opts = parsed.data;
    this.config = parsePhaseConfig(opts.config);
    this.stateDir = opts.stateDir;
    this.credentialProcessCommand = [...opts.credentialProcessCommand];
    this.clock = opts.clock ?? systemClock;
    this.logger = (opts.logger ?? silentLogger).child({ component: 'phases' });
    this.aws = this.config.aws;
    this.mode = this.aws ? 'aws' : 'local';
    this.refreshBeforeMs = (this.aws?.refreshBeforeExpirySeconds ?? 0) * 1000;
    if (this.aws) {
      const client = { region: this.aws.region, ...(this.aws.endpoint ? { endpoint: this.aws.endpoint } : {}) };
      this.sts = new STSClient({ ...client, ...(opts.baseCredentials ? { credentials: opts.baseCredentials } : {}) });
      // Tags are read with the SteadyState role, never with the base credentials: the task
      // role needs nothing but sts:AssumeRole on the four roles.
      const steady = this.aws.roles.steadyState;
      const tagReaderCreds = new RoleCache(
        () => this.assume(steady, roleSessionName(AGENT_ACTOR, 'approval-check'), { actor: AGENT_ACTOR, requestId: 'approval-check', operation: 'approval-check' }, this.aws!.sessionDurationMaxSeconds, undefined),
        this.clock,
        this.refreshBeforeMs,
      );
      this.iam = new IAMClient({ ...client, credentials: async () => asIdentity(await tagReaderCreds.get()) });
      this.tags = cachedTagReader(iamRoleTagReader(this.iam, STEADY_CALLER), this.aws.tagCacheSeconds * 1000, this.clock);
    }
    this.source = new ApprovalSource({ config: this.config, stateDir: this.stateDir, tags: this.tags, clock: this.clock });
    const intervalMs = (this.aws?.recheckIntervalSeconds ?? this.config.local.recheckIntervalSeconds) * 1000;
    if (opts.autoRecheck !== false) {
      this.timer = setInterval(() => { void this.recheck(); }, intervalMs);
      this.timer.unref();
    }
  }

  /** The customer's current decision for one phase. Throws only when it cannot be read. */
  async approval(phase: Phase): Promise<ApprovalView> {
    return this.source.approval(phase);
  }

  /** All four phases, for `uplink-agent access` and the appliance list. Never throws: read failures show as closed with their code. */
  async state(): Promise<Record<Phase, ApprovalView>> {
    this.tags?.invalidate();
    return this.source.state();
  }

  private validateRequest(req: PhaseRequest): void {
    const bad = (msg: string) => new UplinkError('UPLINK_ERR_BAD_REQUEST', msg);
    if (!isPhase(req.phase)) throw bad(`unknown phase "${String(req.phase)}"`);
    if (phaseForOperation(req.operation) !== req.phase) throw bad(`operation "${req.operation}" does not run in the ${req.phase} phase`);
    if (typeof req.actor !== 'string' || req.actor.trim().length === 0 || req.actor.length > PHASE_REQUEST_LIMITS.maxActorLength) {
      throw bad(`actor must be 1-${PHASE_REQUEST_LIMITS.maxActorLength} characters`);
    }
    if (typeof req.requestId !== 'string' || req.requestId.length === 0 || req.requestId.length > PHASE_REQUEST_LIMITS.maxRequestIdLength) {
      throw bad(`requestId must be 1-${PHASE_REQUEST_LIMITS.maxRequestIdLength} characters`);
    }
  }

  /**
   * Open a session for one request: refuse with the customer's reason when the phase is
   * closed (UPLINK_ERR_PHASE_NOT_APPROVED, _WINDOW_EXPIRED, _OUTSIDE_MAINTENANCE_WINDOW,
   * _PHASE_DISABLED, or an AWS error), otherwise assume the role for this request.
   */
  async open(req: PhaseRequest): Promise<PhaseSession> {
    if (this.closed) throw new UplinkError('UPLINK_ERR_PHASE_SESSION_ENDED', 'the agent is shutting down; no new phase sessions');
    this.validateRequest(req);
    const view = assertApproved(await this.approval(req.phase));
    const id = randomBytes(8).toString('hex');
    const base = { id, phase: req.phase, actor: req.actor, requestId: req.requestId, operation: req.operation, approval: view };
    let session: PhaseSession;
    if (!this.aws) {
      const empty = await emptyAwsFile(this.stateDir);
      session = new PhaseSession(this, {
        ...base, mode: 'local',
        env: { AWS_CONFIG_FILE: empty, AWS_SHARED_CREDENTIALS_FILE: empty, AWS_EC2_METADATA_DISABLED: 'true' },
      });
    } else {
      const roleArn = this.aws.roles[req.phase];
      const sessionName = roleSessionName(req.actor, req.requestId);
      const paths = await createSessionFiles(this.stateDir, { credentialProcessCommand: this.credentialProcessCommand, region: this.aws.region, endpoint: this.aws.endpoint });
      try {
        const credentials = await this.assumeForView(roleArn, sessionName, req, view);
        session = new PhaseSession(this, {
          ...base, mode: 'aws', roleArn, sessionName, paths, credentials,
          env: {
            AWS_REGION: this.aws.region,
            AWS_DEFAULT_REGION: this.aws.region,
            AWS_CONFIG_FILE: paths.config,
            AWS_SHARED_CREDENTIALS_FILE: paths.credentials,
            // Go SDK v1 tools read AWS_CONFIG_FILE only with this set.
            AWS_SDK_LOAD_CONFIG: '1',
            // Never fall back to the instance role if the config file is ignored.
            AWS_EC2_METADATA_DISABLED: 'true',
          },
        });
        await writeSessionFile(paths.session, {
          version: 1, state: 'active', phase: req.phase, roleArn, sessionName,
          accessKeyId: credentials.accessKeyId, secretAccessKey: credentials.secretAccessKey, sessionToken: credentials.sessionToken,
          expiration: new Date(credentials.stsExpiration).toISOString(),
          ...(credentials.notAfter !== undefined ? { notAfter: new Date(credentials.notAfter).toISOString() } : {}),
        });
      } catch (err) {
        await removeSessionFiles(paths);
        throw err;
      }
    }
    this.sessions.add(session);
    this.owned.add(session);
    session.once('ended', () => this.emit('session-ended', session));
    this.logger.info({ phase: req.phase, mode: this.mode, request: req.requestId, actor: req.actor, session: session.sessionName, until: view.until }, 'phase session opened');
    return session;
  }

  /**
   * Credentials for the agent's own SDK clients in a phase (telemetry collection under
   * SteadyState), cached per phase, approval checked on every (re)assume.
   */
  internalCredentials(phase: Phase): PhaseCredentialProvider {
    return async () => {
      if (!this.aws) throw new UplinkError('UPLINK_ERR_AWS_UNAVAILABLE', `the agent runs in local mode: no AWS credentials exist for the ${phase} phase`);
      let cache = this.internal.get(phase);
      if (!cache) {
        const req = { actor: AGENT_ACTOR, requestId: `internal-${phase}`, operation: 'internal' };
        cache = new RoleCache(async () => {
          const view = assertApproved(await this.approval(phase));
          return this.assumeForView(this.aws!.roles[phase], roleSessionName(AGENT_ACTOR, req.requestId), req, view);
        }, this.clock, this.refreshBeforeMs);
        this.internal.set(phase, cache);
      }
      return asIdentity(await cache.get());
    };
  }

  /** SessionHost: assume again for a session being refreshed. */
  async reassume(session: PhaseSession, view: ApprovalView): Promise<AssumedCredentials> {
    const fresh = assertApproved(await this.approval(session.phase));
    return this.assumeForView(session.roleArn ?? view.role, session.sessionName ?? roleSessionName(session.actor, session.requestId), session, fresh);
  }

  /** SessionHost: a session ended (stop re-checking it) or closed (forget it entirely). */
  forget(session: PhaseSession, closed = false): void {
    this.sessions.delete(session);
    if (closed) this.owned.delete(session);
  }

  /** Sessions still handing out credentials. */
  openSessions(): PhaseSession[] {
    return [...this.sessions];
  }

  /**
   * DurationSeconds = min(config maximum, seconds until the window closes), floored at STS's
   * 900-second minimum. When the window closes in under 900 s we still ask for 900 s (STS
   * allows nothing shorter) but record the window end as `notAfter`: from then on neither the
   * credential file nor awsCredentials() hands the credentials out, and the session ends. The
   * credentials already in a child's memory stay valid at AWS until their expiry, at most
   * 15 minutes; the customer guide explains IAM's "revoke active sessions" for a hard cut.
   */
  private async assumeForView(roleArn: string, sessionName: string, req: { actor: string; requestId: string; operation: string }, view: ApprovalView): Promise<AssumedCredentials> {
    const now = this.clock();
    const notAfter = parseIsoInstant(view.until);
    let seconds = this.aws!.sessionDurationMaxSeconds;
    if (notAfter !== undefined) seconds = Math.min(seconds, Math.floor((notAfter - now) / 1000));
    seconds = Math.max(seconds, STS_MIN_DURATION_SECONDS);
    return this.assume(roleArn, sessionName, req, seconds, notAfter);
  }

  private async assume(roleArn: string, sessionName: string, req: { actor: string; requestId: string; operation: string }, durationSeconds: number, notAfter: number | undefined): Promise<AssumedCredentials> {
    const requestedAt = this.clock();
    let out;
    try {
      out = await this.sts!.send(new AssumeRoleCommand({
        RoleArn: roleArn,
        RoleSessionName: sessionName,
        DurationSeconds: durationSeconds,
        Tags: sessionTags(req),
        ...(this.aws!.externalId ? { ExternalId: this.aws!.externalId } : {}),
      }));
    } catch (err) {
      throw awsError(err, { action: 'sts:AssumeRole', role: roleArn, caller: BASE_CALLER });
    }
    const c = out.Credentials;
    if (!c?.AccessKeyId || !c.SecretAccessKey || !c.SessionToken || !c.Expiration) {
      throw new UplinkError('UPLINK_ERR_AWS_UNAVAILABLE', `sts:AssumeRole on ${roleArn} returned incomplete credentials`, { details: { role: roleArn, action: 'sts:AssumeRole' } });
    }
    return {
      accessKeyId: c.AccessKeyId,
      secretAccessKey: c.SecretAccessKey,
      sessionToken: c.SessionToken,
      stsExpiration: c.Expiration.getTime(),
      localExpiresAt: requestedAt + durationSeconds * 1000,
      ...(notAfter !== undefined ? { notAfter } : {}),
    };
  }

  /**
   * Re-read the approval of every phase with open sessions or cached internal credentials,
   * end what is no longer approved, extend or shorten windows, refresh credentials due for
   * it. Runs on a timer and after `accessChanged()`. Calls made while one runs coalesce into
   * one more run, so a change notification is never lost.
   */
  async recheck(): Promise<void> {
    if (this.recheckRunning) {
      this.recheckAgain = true;
      return this.recheckRunning;
    }
    this.recheckRunning = (async () => {
      do {
        this.recheckAgain = false;
        await this.recheckOnce();
      } while (this.recheckAgain && !this.closed);
    })().finally(() => { this.recheckRunning = undefined; });
    return this.recheckRunning;
  }

  private async recheckOnce(): Promise<void> {
    this.tags?.invalidate();
    const phases = new Set<Phase>([...[...this.sessions].map((s) => s.phase), ...this.internal.keys()]);
    for (const phase of phases) {
      let view: ApprovalView;
      try {
        view = await this.approval(phase);
      } catch (err) {
        const e = asUplinkError(err);
        if (e.code === 'UPLINK_ERR_AWS_UNAVAILABLE') {
          // Transient: sessions keep what they have; notAfter still cuts them at the window end.
          this.logger.warn({ phase, err: e.message }, 'approval re-check failed; keeping sessions until the next check');
          for (const s of this.sessionsOf(phase)) await s.refreshIfDue();
          continue;
        }
        // The role can no longer be read or is gone: fail closed.
        view = errorView(phase, this.mode, this.aws ? this.aws.roles[phase] : 'local', e, this.clock());
      }
      if (view.state === 'closed') this.internal.get(phase)?.clear();
      for (const s of this.sessionsOf(phase)) await s.applyApproval(view);
    }
  }

  private sessionsOf(phase: Phase): PhaseSession[] {
    return [...this.sessions].filter((s) => s.phase === phase);
  }

  /** Something changed the access state (grant/revoke marker): drop caches and re-check now. */
  async accessChanged(): Promise<void> {
    this.tags?.invalidate();
    for (const c of this.internal.values()) c.clear();
    await this.recheck();
  }

  /** Stop the timer and close every session (deleting their files). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.recheckRunning?.catch(() => undefined);
    await Promise.all([...this.owned].map((s) => s.close()));
    this.sts?.destroy();
    this.iam?.destroy();
  }
}
