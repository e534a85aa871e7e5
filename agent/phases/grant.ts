/**
 * `grant` and `revoke`: the customer opening and closing Deploy and Operate.
 *
 * AWS mode writes the approval tags on the phase role with the customer's own credentials
 * (the SDK default chain of the shell running the CLI, never the agent's task role, which
 * must not be able to approve itself). Local mode writes `<stateDir>/access.json`. Both
 * record an audit event and touch `<stateDir>/access.changed`, which the running agent
 * watches (`watchAccessChanges`) so a revoke ends open sessions at once; the agent's
 * periodic re-check covers a CLI run elsewhere (a laptop) within recheckIntervalSeconds.
 */
import { randomBytes } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { WINDOW_START_SLACK_MS, closeTrustWindow, revokeOlderSessions, setTrustWindow } from './trust-window.js';
import { IAMClient, TagRoleCommand, UntagRoleCommand, type IAMClientConfig } from '@aws-sdk/client-iam';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { UplinkError } from '../../shared/errors.js';
import { formatDuration } from '../../shared/duration.js';
import { roleNameFromArn } from './approval.js';
import { awsError } from './aws-errors.js';
import { parsePhaseConfig, type PhaseConfig } from './config.js';
import { writeLocalGrant } from './local-grants.js';
import { isGrantablePhase, phaseTags, systemClock, type Clock, type GrantablePhase } from './phase.js';
import { ensurePrivateDir, writePrivateFile } from './private-files.js';
import { sanitizeTagValue } from './session-name.js';

export const CHANGE_MARKER = 'access.changed';

export const GRANT_DEFAULTS = {
  /** Longest approval one grant may give. */
  maxGrantSeconds: 7 * 86_400,
  /** Shortest: anything under a minute is a typo. */
  minGrantSeconds: 60,
  /** Longest --reason accepted (IAM tag values hold 256 characters). */
  maxReasonLength: 256,
  /** Polling interval of watchAccessChanges when fs.watch is unavailable or misses events. */
  pollIntervalMs: 2_000,
} as const;

/** One audit record of an access change. */
export interface AccessAuditEvent {
  type: 'phase.grant' | 'phase.revoke';
  phase: GrantablePhase;
  actor: string;
  mode: 'aws' | 'local';
  /** The role whose tags changed (AWS mode). */
  role?: string;
  access?: 'enabled' | 'scheduled' | 'disabled';
  until?: string;
  reason?: string;
  at: string;
}

export type AuditSink = (event: AccessAuditEvent) => Promise<void>;

type CustomerCredentials = NonNullable<IAMClientConfig['credentials']>;

export interface AccessControlOptions {
  config: PhaseConfig | unknown;
  /** The agent's state directory (local state, change marker). Optional in AWS mode when the CLI runs off the agent host. */
  stateDir?: string;
  audit: AuditSink;
  /** The customer's credentials; default: the SDK default chain of this shell. */
  credentials?: CustomerCredentials;
  clock?: Clock;
}

export interface GrantOptions {
  /** `scheduled`: open only in the configured maintenance windows until the end. Default `enabled`. */
  access?: 'enabled' | 'scheduled';
}

export interface GrantResult {
  phase: GrantablePhase;
  mode: 'aws' | 'local';
  access: 'enabled' | 'scheduled' | 'disabled';
  until?: string;
  role?: string;
}

export class AccessControl {
  readonly config: PhaseConfig;
  readonly mode: 'aws' | 'local';
  private readonly stateDir: string | undefined;
  private readonly audit: AuditSink;
  private readonly clock: Clock;
  private readonly iam: IAMClient | undefined;
  private readonly sts: STSClient | undefined;

  constructor(opts: AccessControlOptions) {
    this.config = parsePhaseConfig(opts.config);
    this.mode = this.config.aws ? 'aws' : 'local';
    this.stateDir = opts.stateDir;
    this.audit = opts.audit;
    this.clock = opts.clock ?? systemClock;
    if (typeof this.audit !== 'function') throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'AccessControl needs an audit function');
    if (this.mode === 'local' && !this.stateDir) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'local mode needs the agent state directory (UPLINK_STATE_DIR)');
    const aws = this.config.aws;
    if (aws) {
      const client = { region: aws.region, ...(aws.endpoint ? { endpoint: aws.endpoint } : {}), ...(opts.credentials ? { credentials: opts.credentials } : {}) };
      this.iam = new IAMClient(client);
      this.sts = new STSClient(client);
    }
  }

  /** Who is running the CLI: the caller ARN in AWS mode, the OS user in local mode. */
  async whoAmI(fallback: string): Promise<string> {
    if (!this.sts) return fallback;
    try {
      return (await this.sts.send(new GetCallerIdentityCommand({}))).Arn ?? fallback;
    } catch (err) {
      throw awsError(err, { action: 'sts:GetCallerIdentity', role: '-', caller: 'your AWS credentials' });
    }
  }

  /** Open a phase for `forMs` from now. */
  async grant(phase: GrantablePhase, forMs: number, reason: string | undefined, actor: string, opts: GrantOptions = {}): Promise<GrantResult> {
    if (!isGrantablePhase(phase)) throw new UplinkError('UPLINK_ERR_USAGE', `only deploy and operate can be granted (got "${String(phase)}")`);
    const seconds = Math.floor(forMs / 1000);
    if (!Number.isFinite(forMs) || seconds < GRANT_DEFAULTS.minGrantSeconds || seconds > GRANT_DEFAULTS.maxGrantSeconds) {
      throw new UplinkError('UPLINK_ERR_USAGE', `--for must be between ${formatDuration(GRANT_DEFAULTS.minGrantSeconds * 1000)} and ${formatDuration(GRANT_DEFAULTS.maxGrantSeconds * 1000)}`);
    }
    if (reason !== undefined && reason.length > GRANT_DEFAULTS.maxReasonLength) {
      throw new UplinkError('UPLINK_ERR_USAGE', `--reason is limited to ${GRANT_DEFAULTS.maxReasonLength} characters`);
    }
    const access = opts.access ?? 'enabled';
    const now = this.clock();
    // Whole seconds: the tag is read by people and by IAM-minded tooling.
    const until = new Date(Math.floor((now + seconds * 1000) / 1000) * 1000).toISOString().replace('.000Z', 'Z');
    const at = new Date(now).toISOString();
    let role: string | undefined;
    if (this.config.aws) {
      role = this.config.aws.roles[phase];
      const names = phaseTags(phase);
      const tags = [
        { Key: names.access, Value: access },
        { Key: names.until, Value: until },
        { Key: names.grantedBy, Value: sanitizeTagValue(actor) },
        ...(reason ? [{ Key: names.reason, Value: sanitizeTagValue(reason) }] : []),
      ];
      await this.tagRole(role, tags);
      // A reason from an earlier grant must not linger on this one.
      if (!reason) await this.untagRole(role, [names.reason]);
      // The IAM half: open the trust policy's time window to the same end time.
      await setTrustWindow(this.iam!, role, new Date(now - WINDOW_START_SLACK_MS).toISOString().replace(/\.\d{3}Z$/, 'Z'), until);
    } else {
      await writeLocalGrant(this.stateDir!, phase, { access, until, actor, at, ...(reason ? { reason } : {}) });
    }
    await this.record({ type: 'phase.grant', phase, actor, mode: this.mode, access, until, at, ...(role ? { role } : {}), ...(reason ? { reason } : {}) });
    return { phase, mode: this.mode, access, until, ...(role ? { role } : {}) };
  }

  /** Close a phase now. Disables first, then removes the end time, so there is never a moment with broader access. */
  async revoke(phase: GrantablePhase, actor: string): Promise<GrantResult> {
    if (!isGrantablePhase(phase)) throw new UplinkError('UPLINK_ERR_USAGE', `only deploy and operate can be revoked (got "${String(phase)}")`);
    const at = new Date(this.clock()).toISOString();
    let role: string | undefined;
    if (this.config.aws) {
      role = this.config.aws.roles[phase];
      const names = phaseTags(phase);
      await this.tagRole(role, [{ Key: names.access, Value: 'disabled' }, { Key: names.grantedBy, Value: sanitizeTagValue(actor) }]);
      await this.untagRole(role, [names.until, names.reason]);
      // The IAM half: close the trust window, and cut off sessions already issued.
      await closeTrustWindow(this.iam!, role);
      await revokeOlderSessions(this.iam!, role, at.replace(/\.\d{3}Z$/, 'Z'));
    } else {
      await writeLocalGrant(this.stateDir!, phase, { access: 'disabled', actor, at });
    }
    await this.record({ type: 'phase.revoke', phase, actor, mode: this.mode, access: 'disabled', at, ...(role ? { role } : {}) });
    return { phase, mode: this.mode, access: 'disabled', ...(role ? { role } : {}) };
  }

  private async tagRole(role: string, tags: Array<{ Key: string; Value: string }>): Promise<void> {
    try {
      await this.iam!.send(new TagRoleCommand({ RoleName: roleNameFromArn(role), Tags: tags }));
    } catch (err) {
      throw awsError(err, { action: 'iam:TagRole', role, caller: 'your AWS credentials' });
    }
  }

  private async untagRole(role: string, keys: string[]): Promise<void> {
    try {
      await this.iam!.send(new UntagRoleCommand({ RoleName: roleNameFromArn(role), TagKeys: keys }));
    } catch (err) {
      throw awsError(err, { action: 'iam:UntagRole', role, caller: 'your AWS credentials' });
    }
  }

  /** Notify the running agent, then audit. The access change has already happened, so a failed audit is reported loudly. */
  private async record(event: AccessAuditEvent): Promise<void> {
    if (this.stateDir) await touchChangeMarker(this.stateDir);
    try {
      await this.audit(event);
    } catch (err) {
      throw new UplinkError('UPLINK_ERR_INTERNAL', `${event.phase} access was ${event.type === 'phase.grant' ? 'granted' : 'revoked'}, but the audit event could not be recorded: ${(err as Error).message}`, { cause: err });
    }
  }

  close(): void {
    this.iam?.destroy();
    this.sts?.destroy();
  }
}

/** Tell a running agent that access changed (unique content, so a watcher never mistakes it for an old write). */
export async function touchChangeMarker(stateDir: string): Promise<void> {
  await ensurePrivateDir(stateDir);
  await writePrivateFile(join(stateDir, CHANGE_MARKER), `${Date.now()} ${randomBytes(8).toString('hex')}\n`);
}

export interface AccessWatcher {
  close(): void;
}

export interface WatchOptions {
  pollIntervalMs?: number;
  /** Use fs.watch in addition to polling (default true). */
  fsWatch?: boolean;
}

/**
 * Call `onChange` when grant/revoke touched the change marker. fs.watch gives immediacy;
 * polling covers file systems where it is unavailable or silent (network mounts, some
 * container overlays). Duplicate notifications for one change are suppressed by comparing
 * the marker's content. `onChange` errors are swallowed after being passed to `onError`.
 */
export function watchAccessChanges(stateDir: string, onChange: () => void | Promise<void>, opts: WatchOptions & { onError?: (err: unknown) => void } = {}): AccessWatcher {
  const marker = join(stateDir, CHANGE_MARKER);
  let last: string | undefined;
  let closed = false;
  let started = false;
  const check = async (): Promise<void> => {
    let content: string;
    try {
      content = await readFile(marker, 'utf8');
    } catch {
      content = '';
    }
    if (closed) return;
    if (!started) {
      started = true;
      last = content;
      return;
    }
    if (content === last) return;
    last = content;
    try {
      await onChange();
    } catch (err) {
      opts.onError?.(err);
    }
  };
  // Serialise checks so watch and poll cannot both fire for one change.
  let chain = check();
  const trigger = (): void => { chain = chain.then(check); };
  let watcher: FSWatcher | undefined;
  if (opts.fsWatch !== false) {
    try {
      watcher = watch(stateDir, { persistent: false }, (_event, file) => {
        if (file === null || file === CHANGE_MARKER) trigger();
      });
      watcher.on('error', () => { watcher?.close(); watcher = undefined; });
    } catch {
      watcher = undefined; // polling alone
    }
  }
  const poll = setInterval(trigger, opts.pollIntervalMs ?? GRANT_DEFAULTS.pollIntervalMs);
  poll.unref();
  return {
    close() {
      closed = true;
      clearInterval(poll);
      watcher?.close();
    },
  };
}
