/**
 * Customer approval: is a phase open right now, and until when?
 *
 * In AWS mode the state lives in tags on the customer's phase roles (DeployAccess =
 * enabled | disabled | scheduled, DeployAccessUntil = ISO-8601), read with ListRoleTags
 * under the SteadyState role. In local mode it comes from the `local` config section
 * overridden by `<stateDir>/access.json`. Evaluation is a pure function of those inputs and
 * the clock, so the rules below are tested without AWS.
 *
 * Rules (deploy and operate):
 * - access tag missing, `disabled` or unrecognised        -> UPLINK_ERR_PHASE_NOT_APPROVED
 * - `enabled`: open until the Until tag; in AWS mode Until is required (approval is
 *   time-bounded) and a missing or malformed Until counts as not approved
 * - Until in the past (enabled or scheduled)              -> UPLINK_ERR_WINDOW_EXPIRED
 * - `scheduled`: open inside a configured maintenance window, else
 *   UPLINK_ERR_OUTSIDE_MAINTENANCE_WINDOW (with the next opening)
 * SteadyState is open unless the config disables it or its role carries
 * SteadyStateAccess=disabled (UPLINK_ERR_PHASE_DISABLED). Install is not gated: the customer
 * runs install actions themselves.
 */
import { ListRoleTagsCommand, type IAMClient } from '@aws-sdk/client-iam';
import { UplinkError, type ErrorCode } from '../../shared/errors.js';
import { awsError } from './aws-errors.js';
import { phaseTags, phaseTitle, type Clock, type Phase } from './phase.js';
import type { MaintenanceSchedule } from './schedule.js';

/** Where an approval decision came from. */
export type PhaseMode = 'aws' | 'local';

/** The approval state of one phase, as `uplink-agent access` and the relay see it. */
export interface ApprovalView {
  phase: Phase;
  state: 'open' | 'closed';
  mode: PhaseMode;
  /** One sentence a human can act on. */
  reason: string;
  /** The refusal code when closed. */
  code?: ErrorCode;
  /** Open: when access ends (absent = no end). Expired: when it ended. */
  until?: string;
  /** Scheduled and closed: when the next maintenance window opens. */
  nextOpen?: string;
  /** The role ARN (AWS mode) or "local". */
  role: string;
  /** The tag or setting that decided (e.g. "DeployAccess", "local.deploy", "access.json:deploy"). */
  tag: string;
  /** When the decision was made. */
  checkedAt: string;
}

/** The raw approval setting of one phase, from tags or from local state. */
export interface AccessSetting {
  /** `enabled | disabled | scheduled`, anything else counts as not approved. */
  access?: string | undefined;
  /** ISO-8601 end of the approval. */
  until?: string | undefined;
}

export interface EvaluateInput {
  phase: Phase;
  mode: PhaseMode;
  role: string;
  /** Name of the setting that holds `access` (tag name or local key), for messages. */
  accessSource: string;
  /** Name of the setting that holds `until`. */
  untilSource: string;
  setting: AccessSetting;
  schedule: MaintenanceSchedule;
  /** Whether `enabled` needs an Until (AWS mode: yes). */
  requireUntil: boolean;
  /** SteadyState switched off in config (only read for steadyState). */
  steadyStateEnabled: boolean;
  now: number;
}

const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})$/;

/** Parse a strict ISO-8601 instant with an explicit offset; undefined if malformed. */
export function parseIsoInstant(text: string | undefined): number | undefined {
  if (text === undefined || !ISO_8601.test(text)) return undefined;
  const t = Date.parse(text);
  return Number.isFinite(t) ? t : undefined;
}

const iso = (t: number): string => new Date(t).toISOString();

/** Decide whether a phase is open. Pure: no I/O. */
export function evaluateApproval(input: EvaluateInput): ApprovalView {
  const { phase, mode, role, setting, now } = input;
  const title = phaseTitle(phase);
  const base = { phase, mode, role, checkedAt: iso(now) };
  const closed = (code: ErrorCode, tag: string, reason: string, extra: Partial<ApprovalView> = {}): ApprovalView => ({
    ...base, state: 'closed', code, tag, reason, ...extra,
  });
  const where = mode === 'aws' ? `role ${role}` : 'local mode';

  if (phase === 'install') {
    return { ...base, state: 'open', tag: '-', reason: 'Install is not gated by approval; the customer runs install actions' };
  }
  if (phase === 'steadyState') {
    if (!input.steadyStateEnabled) {
      return closed('UPLINK_ERR_PHASE_DISABLED', input.accessSource, `SteadyState (telemetry collection) is disabled by the customer in the agent config (${input.accessSource}=false)`);
    }
    if (setting.access === 'disabled') {
      return closed('UPLINK_ERR_PHASE_DISABLED', input.accessSource, `SteadyState (telemetry collection) is disabled by the customer: ${where} has ${input.accessSource}=disabled`);
    }
    return { ...base, state: 'open', tag: input.accessSource, reason: 'SteadyState is on' };
  }

  const access = setting.access;
  const untilText = setting.until;
  const until = parseIsoInstant(untilText);
  const grantHint = `the customer can approve with "uplink-agent grant ${phase} --for 2h"`;

  if (access === undefined) {
    return closed('UPLINK_ERR_PHASE_NOT_APPROVED', input.accessSource, `${title} is not approved: ${where} has no ${input.accessSource} tag (checked ${iso(now)}); ${grantHint}`);
  }
  if (access !== 'enabled' && access !== 'scheduled') {
    const what = access === 'disabled' ? `${input.accessSource}=disabled` : `${input.accessSource}="${access}" (expected enabled, disabled or scheduled)`;
    return closed('UPLINK_ERR_PHASE_NOT_APPROVED', input.accessSource, `${title} is not approved: ${where} has ${what} (checked ${iso(now)}); ${grantHint}`);
  }
  if (untilText !== undefined && until === undefined) {
    return closed('UPLINK_ERR_PHASE_NOT_APPROVED', input.untilSource, `${title} is not approved: ${where} has ${input.untilSource}="${untilText}", which is not an ISO-8601 time such as 2026-05-01T14:00:00Z (checked ${iso(now)})`);
  }
  if (until !== undefined && until <= now) {
    return closed('UPLINK_ERR_WINDOW_EXPIRED', input.untilSource, `${title} approval expired at ${iso(until)}: ${where} has ${input.untilSource}=${untilText} (now ${iso(now)}); ${grantHint}`, { until: iso(until) });
  }

  if (access === 'enabled') {
    if (until === undefined && input.requireUntil) {
      return closed('UPLINK_ERR_PHASE_NOT_APPROVED', input.untilSource, `${title} is not approved: ${where} has ${input.accessSource}=enabled but no ${input.untilSource}; approval must be time-bounded (checked ${iso(now)}); ${grantHint}`);
    }
    return {
      ...base, state: 'open', tag: input.accessSource,
      reason: until === undefined ? `${title} is enabled (${where}, no end time)` : `${title} is approved until ${iso(until)} (${where}, ${input.untilSource})`,
      ...(until === undefined ? {} : { until: iso(until) }),
    };
  }

  // scheduled
  const windows = input.schedule.windows.map((w) => w.text).join(', ');
  if (input.schedule.empty) {
    return closed('UPLINK_ERR_PHASE_NOT_APPROVED', input.accessSource, `${title} is not approved: ${where} has ${input.accessSource}=scheduled but the agent config lists no maintenance windows (checked ${iso(now)})`);
  }
  const closesAt = input.schedule.closesAt(now);
  if (closesAt === undefined) {
    const next = input.schedule.nextOpen(now)!;
    const nextText = until !== undefined && until <= next.getTime() ? `no window opens before the approval ends at ${iso(until)}` : `the next window opens at ${next.toISOString()}`;
    return closed(
      'UPLINK_ERR_OUTSIDE_MAINTENANCE_WINDOW',
      input.accessSource,
      `${title} is approved only inside maintenance windows (${windows}): ${where} has ${input.accessSource}=scheduled; now ${iso(now)} is outside them and ${nextText}`,
      { nextOpen: next.toISOString() },
    );
  }
  const end = until !== undefined ? Math.min(until, closesAt.getTime()) : closesAt.getTime();
  return { ...base, state: 'open', tag: input.accessSource, until: iso(end), reason: `${title} is open in a maintenance window until ${iso(end)} (${where}, ${input.accessSource}=scheduled)` };
}

/** Throw the refusal for a closed view; return the view when open. */
export function assertApproved(view: ApprovalView): ApprovalView {
  if (view.state === 'open') return view;
  throw new UplinkError(view.code ?? 'UPLINK_ERR_PHASE_NOT_APPROVED', view.reason, {
    details: {
      phase: view.phase, mode: view.mode, role: view.role, tag: view.tag, checkedAt: view.checkedAt,
      ...(view.until ? { until: view.until } : {}), ...(view.nextOpen ? { nextOpen: view.nextOpen } : {}),
    },
  });
}

/** Build the view of an error that prevented a decision (for `access` output: never throws). */
export function errorView(phase: Phase, mode: PhaseMode, role: string, err: UplinkError, now: number): ApprovalView {
  return { phase, mode, role, state: 'closed', code: err.code, tag: phaseTags(phase).access, reason: err.message, checkedAt: iso(now) };
}

/** Limits on what is read from IAM. */
export const TAG_READ_LIMITS = {
  /** ListRoleTags pages followed at most (IAM allows 50 tags per role; 100 per page by default). */
  maxPages: 5,
  /** Tags requested per page. */
  pageSize: 100,
} as const;

/** Reads the tags of a role. */
export type RoleTagReader = (roleArn: string) => Promise<Record<string, string>>;

/** The role name (last path segment) of a role ARN. */
export function roleNameFromArn(roleArn: string): string {
  const resource = roleArn.split(':').slice(5).join(':');
  return resource.slice(resource.lastIndexOf('/') + 1);
}

/** A RoleTagReader using IAM ListRoleTags (the client carries the SteadyState credentials). */
export function iamRoleTagReader(client: IAMClient, caller: string): RoleTagReader {
  return async (roleArn) => {
    const tags: Record<string, string> = {};
    let marker: string | undefined;
    for (let page = 0; page < TAG_READ_LIMITS.maxPages; page++) {
      let out;
      try {
        out = await client.send(new ListRoleTagsCommand({ RoleName: roleNameFromArn(roleArn), MaxItems: TAG_READ_LIMITS.pageSize, ...(marker ? { Marker: marker } : {}) }));
      } catch (err) {
        throw awsError(err, { action: 'iam:ListRoleTags', role: roleArn, caller });
      }
      for (const t of out.Tags ?? []) if (t.Key !== undefined) tags[t.Key] = t.Value ?? '';
      if (!out.IsTruncated || !out.Marker) return tags;
      marker = out.Marker;
    }
    throw new UplinkError('UPLINK_ERR_AWS_UNAVAILABLE', `iam:ListRoleTags on ${roleArn} returned more than ${TAG_READ_LIMITS.maxPages} pages; refusing to read further`, {
      details: { role: roleArn, action: 'iam:ListRoleTags' },
    });
  };
}

/**
 * Cache tag reads for `ttlMs` (0 = no cache). `invalidate()` drops everything, so a change
 * marker or a periodic re-check can force fresh reads.
 */
export function cachedTagReader(reader: RoleTagReader, ttlMs: number, clock: Clock): RoleTagReader & { invalidate(): void } {
  const cache = new Map<string, { at: number; tags: Record<string, string> }>();
  const read = async (roleArn: string): Promise<Record<string, string>> => {
    const hit = cache.get(roleArn);
    if (ttlMs > 0 && hit && clock() - hit.at < ttlMs) return hit.tags;
    const tags = await reader(roleArn);
    if (ttlMs > 0) cache.set(roleArn, { at: clock(), tags });
    return tags;
  };
  return Object.assign(read, { invalidate: () => cache.clear() });
}
