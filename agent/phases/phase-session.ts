/**
 * One phase session: the credentials one request (a deployment, a shell, an exec) runs
 * with, from `PhaseAccess.open()` until `close()`.
 *
 * Contract for the caller:
 * - spawn children with `childEnvironment(process.env, session.env)`;
 * - use `awsCredentials()` for SDK clients inside the agent;
 * - listen for 'ended' (access revoked, window closed, role no longer assumable) and stop
 *   the work: the session hands out no credentials after it;
 * - always call `close()` when the request finishes (it deletes the credential files).
 */
import { EventEmitter } from 'node:events';
import { UplinkError, type ErrorCode } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import type { ApprovalView, PhaseMode } from './approval.js';
import type { Clock, Operation, Phase } from './phase.js';
import { removeSessionFiles, writeSessionFile, type SessionPaths } from './session-files.js';

/** Credentials from one AssumeRole call, with the agent's bookkeeping. */
export interface AssumedCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  /** Expiration as STS reported it (what SDKs and the CLI compare with). */
  stsExpiration: number;
  /** Expiry on the agent's clock (request time + DurationSeconds): refresh decisions use it, so clock skew with AWS cannot starve a refresh. */
  localExpiresAt: number;
  /** The approval window end: no credentials are handed out from then on. */
  notAfter?: number;
}

/** An AWS SDK credential identity (structurally the SDK's AwsCredentialIdentity). */
export interface PhaseCredentialIdentity {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}

/** An AWS SDK credentials provider (structurally the SDK's AwsCredentialIdentityProvider). */
export type PhaseCredentialProvider = () => Promise<PhaseCredentialIdentity>;

/** Why a session ended. */
export interface SessionEnd {
  code: ErrorCode;
  reason: string;
  at: string;
}

/** What a session needs from PhaseAccess. */
export interface SessionHost {
  readonly clock: Clock;
  readonly refreshBeforeMs: number;
  readonly logger: Logger;
  /** AssumeRole again for this session (same session name and tags), sized to the window. */
  reassume(session: PhaseSession, view: ApprovalView): Promise<AssumedCredentials>;
  /** The session ended (`closed` false) or was closed (`closed` true). */
  forget(session: PhaseSession, closed?: boolean): void;
}

export interface PhaseSessionInit {
  id: string;
  mode: PhaseMode;
  phase: Phase;
  actor: string;
  requestId: string;
  operation: Operation;
  approval: ApprovalView;
  env: Record<string, string>;
  roleArn?: string;
  sessionName?: string;
  paths?: SessionPaths;
  credentials?: AssumedCredentials;
}

export interface PhaseSessionEvents {
  ended: [SessionEnd];
}

export class PhaseSession extends EventEmitter<PhaseSessionEvents> {
  readonly id: string;
  readonly mode: PhaseMode;
  readonly phase: Phase;
  readonly actor: string;
  readonly requestId: string;
  readonly operation: Operation;
  /** The assumed role (AWS mode). */
  readonly roleArn: string | undefined;
  /** The RoleSessionName CloudTrail shows (AWS mode). */
  readonly sessionName: string | undefined;
  /** Environment additions for child processes: region and the credential_process config, never the agent's own credentials. */
  readonly env: Readonly<Record<string, string>>;

  private currentApproval: ApprovalView;
  private creds: AssumedCredentials | undefined;
  private readonly paths: SessionPaths | undefined;
  private readonly host: SessionHost;
  private end: SessionEnd | undefined;
  private closed = false;
  /** File writes are serialised so an 'ended' write can never be overtaken by a refresh. */
  private writes: Promise<void> = Promise.resolve();
  private refreshing: Promise<void> | undefined;

  constructor(host: SessionHost, init: PhaseSessionInit) {
    super();
    this.host = host;
    this.id = init.id;
    this.mode = init.mode;
    this.phase = init.phase;
    this.actor = init.actor;
    this.requestId = init.requestId;
    this.operation = init.operation;
    this.roleArn = init.roleArn;
    this.sessionName = init.sessionName;
    this.env = Object.freeze({ ...init.env });
    this.currentApproval = init.approval;
    this.paths = init.paths;
    this.creds = init.credentials;
  }

  /** The approval this session runs under (updated by each re-check). */
  get approval(): ApprovalView {
    return this.currentApproval;
  }

  /** Why the session ended, once it has. */
  get endedWith(): SessionEnd | undefined {
    return this.end;
  }

  get active(): boolean {
    return !this.end && !this.closed;
  }

  /** Credentials currently handed out (tests and diagnostics; children read them via credential_process). */
  get currentAccessKeyId(): string | undefined {
    return this.creds?.accessKeyId;
  }

  private refusal(): UplinkError {
    if (this.end) return new UplinkError('UPLINK_ERR_PHASE_SESSION_ENDED', `the ${this.phase} session ${this.sessionName ?? this.id} ended: ${this.end.reason}`, { details: { endedCode: this.end.code, endedAt: this.end.at } });
    return new UplinkError('UPLINK_ERR_PHASE_SESSION_ENDED', `the ${this.phase} session ${this.sessionName ?? this.id} is closed`);
  }

  /**
   * A credentials provider for AWS SDK clients inside the agent. It refreshes when due and
   * refuses (UPLINK_ERR_PHASE_SESSION_ENDED) once the session ended or the window closed.
   */
  awsCredentials(): PhaseCredentialProvider {
    return async () => {
      if (this.mode === 'local') {
        throw new UplinkError('UPLINK_ERR_AWS_UNAVAILABLE', `the agent runs in local mode: no AWS credentials exist for the ${this.phase} phase`);
      }
      if (!this.active) throw this.refusal();
      await this.refreshIfDue();
      const c = this.creds;
      if (!this.active || !c) throw this.refusal();
      if (c.notAfter !== undefined && this.host.clock() >= c.notAfter) {
        await this.endWith('UPLINK_ERR_WINDOW_EXPIRED', `the ${this.phase} approval window closed at ${new Date(c.notAfter).toISOString()}`);
        throw this.refusal();
      }
      const expiration = c.notAfter !== undefined ? Math.min(c.stsExpiration, c.notAfter) : c.stsExpiration;
      return { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, sessionToken: c.sessionToken, expiration: new Date(expiration) };
    };
  }

  /** Apply a fresh approval decision (called by PhaseAccess on every re-check). */
  async applyApproval(view: ApprovalView): Promise<void> {
    if (!this.active) return;
    if (view.state === 'closed') {
      await this.endWith(view.code ?? 'UPLINK_ERR_PHASE_NOT_APPROVED', view.reason);
      return;
    }
    const previous = this.currentApproval.until;
    this.currentApproval = view;
    if (this.creds && view.until !== previous) {
      // The customer extended or shortened the window: move the cut-off and republish.
      const { notAfter: _previousCutOff, ...rest } = this.creds;
      this.creds = view.until ? { ...rest, notAfter: Date.parse(view.until) } : rest;
      await this.publish();
    }
    await this.refreshIfDue();
  }

  /**
   * Re-assume when the credentials come within `refreshBefore` of expiry, unless the window
   * closes before they expire anyway (new ones could not be handed out past it).
   */
  async refreshIfDue(): Promise<void> {
    const c = this.creds;
    if (!this.active || !c || this.mode !== 'aws') return;
    const now = this.host.clock();
    if (c.notAfter !== undefined && now >= c.notAfter) {
      await this.endWith('UPLINK_ERR_WINDOW_EXPIRED', `the ${this.phase} approval window closed at ${new Date(c.notAfter).toISOString()}`);
      return;
    }
    const due = now >= c.localExpiresAt - this.host.refreshBeforeMs;
    const windowOutlives = c.notAfter === undefined || c.localExpiresAt < c.notAfter;
    if (!due || !windowOutlives) return;
    this.refreshing ??= this.refresh().finally(() => { this.refreshing = undefined; });
    await this.refreshing;
  }

  private async refresh(): Promise<void> {
    try {
      const next = await this.host.reassume(this, this.currentApproval);
      if (!this.active) return;
      this.creds = next;
      await this.publish();
      this.host.logger.debug({ phase: this.phase, session: this.sessionName, expires: new Date(next.stsExpiration).toISOString() }, 'phase credentials refreshed');
    } catch (err) {
      const code = err instanceof UplinkError ? err.code : 'UPLINK_ERR_INTERNAL';
      if (code === 'UPLINK_ERR_AWS_UNAVAILABLE' && this.creds && this.host.clock() < this.creds.localExpiresAt) {
        // Transient: the current credentials are still valid; the next re-check retries.
        this.host.logger.warn({ phase: this.phase, session: this.sessionName, err: (err as Error).message }, 'phase credential refresh failed; will retry');
        return;
      }
      await this.endWith(code, err instanceof Error ? err.message : String(err));
    }
  }

  private async publish(): Promise<void> {
    const c = this.creds;
    const paths = this.paths;
    if (!c || !paths || !this.roleArn || !this.sessionName) return;
    const content = {
      version: 1 as const,
      state: 'active' as const,
      phase: this.phase,
      roleArn: this.roleArn,
      sessionName: this.sessionName,
      accessKeyId: c.accessKeyId,
      secretAccessKey: c.secretAccessKey,
      sessionToken: c.sessionToken,
      expiration: new Date(c.stsExpiration).toISOString(),
      ...(c.notAfter !== undefined ? { notAfter: new Date(c.notAfter).toISOString() } : {}),
    };
    this.writes = this.writes.then(async () => {
      if (this.active) await writeSessionFile(paths.session, content);
    });
    await this.writes;
  }

  /**
   * End the session: stop refreshing, replace the credentials file with the reason (so a
   * child's next credential_process call says why), emit 'ended'. Idempotent.
   */
  async endWith(code: ErrorCode, reason: string): Promise<void> {
    if (!this.active) return;
    const end: SessionEnd = { code, reason, at: new Date(this.host.clock()).toISOString() };
    this.end = end;
    this.creds = undefined;
    this.host.forget(this);
    const paths = this.paths;
    if (paths) {
      this.writes = this.writes.then(() =>
        writeSessionFile(paths.session, { version: 1, state: 'ended', phase: this.phase, code, reason, endedAt: end.at }).catch((err: unknown) => {
          this.host.logger.error({ phase: this.phase, err: (err as Error).message }, 'could not mark the phase session ended');
        }),
      );
      await this.writes;
    }
    this.host.logger.info({ phase: this.phase, session: this.sessionName, request: this.requestId, code }, 'phase session ended');
    this.emit('ended', end);
  }

  /** Stop refreshing and delete the session's files. Idempotent; emits nothing. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.creds = undefined;
    this.host.forget(this, true);
    await this.writes.catch(() => undefined);
    if (this.paths) await removeSessionFiles(this.paths);
  }
}
