/**
 * One-line and table renderings of the phase states, for `uplink-agent access` and for the
 * vendor's appliance list ("deploy: open until 14:00Z; operate: closed").
 */
import type { ApprovalView } from './approval.js';
import { PHASES, type Phase } from './phase.js';

const SHORT_CODE: Record<string, string> = {
  UPLINK_ERR_PHASE_NOT_APPROVED: 'not approved',
  UPLINK_ERR_WINDOW_EXPIRED: 'expired',
  UPLINK_ERR_OUTSIDE_MAINTENANCE_WINDOW: 'outside maintenance window',
  UPLINK_ERR_PHASE_DISABLED: 'disabled',
  UPLINK_ERR_AWS_ACCESS_DENIED: 'AWS access denied',
  UPLINK_ERR_AWS_ROLE_NOT_FOUND: 'role not found',
  UPLINK_ERR_AWS_UNAVAILABLE: 'AWS unavailable',
};

/** "14:00Z" on the day of `ref`, "2026-05-02 14:00Z" on another day. */
export function shortTime(isoText: string, ref: string): string {
  const t = new Date(isoText);
  if (Number.isNaN(t.getTime())) return isoText;
  const full = t.toISOString();
  const hm = `${full.slice(11, 16)}Z`;
  return full.slice(0, 10) === ref.slice(0, 10) ? hm : `${full.slice(0, 10)} ${hm}`;
}

/** "open until 14:00Z", "closed (expired 13:00Z)", "closed (outside maintenance window, next 2026-05-02 02:00Z)". */
export function describeView(v: ApprovalView): string {
  if (v.state === 'open') return v.until ? `open until ${shortTime(v.until, v.checkedAt)}` : 'open';
  const why = SHORT_CODE[v.code ?? ''] ?? (v.code ?? 'closed');
  const extra = v.code === 'UPLINK_ERR_WINDOW_EXPIRED' && v.until
    ? ` ${shortTime(v.until, v.checkedAt)}`
    : v.nextOpen ? `, next ${shortTime(v.nextOpen, v.checkedAt)}` : '';
  return `closed (${why}${extra})`;
}

/**
 * "install: open; steadyState: open; deploy: open until 14:00Z; operate: closed (not approved)",
 * with " [local mode]" appended when the decisions were made without AWS.
 */
export function formatPhaseSummary(states: Partial<Record<Phase, ApprovalView>>): string {
  const views = PHASES.map((p) => states[p]).filter((v): v is ApprovalView => v !== undefined);
  const text = views.map((v) => `${v.phase}: ${describeView(v)}`).join('; ');
  return views.some((v) => v.mode === 'local') ? `${text} [local mode]` : text;
}
