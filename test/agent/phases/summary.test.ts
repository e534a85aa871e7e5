/**
 * agent/phases/summary.ts: the short times and one-line phase states shown by
 * `uplink-agent access` and the vendor's appliance list, with fixed clocks on both sides of
 * midnight (UTC), so that what a run prints does not depend on the hour it runs at.
 */
import t from 'tap';
import { describeView, formatPhaseSummary, shortTime } from '../../../agent/phases/summary.js';
import type { ApprovalView } from '../../../agent/phases/approval.js';

const view = (over: Partial<ApprovalView>): ApprovalView => ({
  phase: 'deploy',
  state: 'open',
  mode: 'aws',
  reason: 'r',
  role: 'arn:aws:iam::123456789012:role/UplinkDeploy',
  tag: 'DeployAccess',
  checkedAt: '2026-11-29T22:52:19.954Z',
  ...over,
} as ApprovalView);

t.test('shortTime: the time alone on the same day, the date too on another', async (t) => {
  t.equal(shortTime('2026-11-29T23:59:59.000Z', '2026-11-29T22:52:19.954Z'), '23:59Z');
  t.equal(shortTime('2026-11-30T00:22:19.954Z', '2026-11-29T22:52:19.954Z'), '2026-11-30 00:22Z', 'after midnight');
  t.equal(shortTime('2026-11-28T23:00:00.000Z', '2026-11-29T00:10:00.000Z'), '2026-11-28 23:00Z', 'before midnight');
  t.equal(shortTime('2026-11-29T14:00:00+02:00', '2026-11-29T22:52:19.954Z'), '12:00Z', 'offsets are shown in UTC');
  t.equal(shortTime('soon', '2026-11-29T22:52:19.954Z'), 'soon', 'text that is not a time is shown as it is');
});

t.test('describeView: open, expired, outside the window, and codes without a short form', async (t) => {
  t.equal(describeView(view({ until: '2026-11-30T00:22:00.000Z' })), 'open until 2026-11-30 00:22Z');
  t.equal(describeView(view({ until: '2026-11-29T23:22:00.000Z' })), 'open until 23:22Z');
  t.equal(describeView(view({})), 'open');
  t.equal(describeView(view({ state: 'closed', code: 'UPLINK_ERR_WINDOW_EXPIRED', until: '2026-11-29T21:00:00.000Z' })), 'closed (expired 21:00Z)');
  t.equal(
    describeView(view({ state: 'closed', code: 'UPLINK_ERR_OUTSIDE_MAINTENANCE_WINDOW', nextOpen: '2026-12-01T02:00:00.000Z' })),
    'closed (outside maintenance window, next 2026-12-01 02:00Z)',
  );
  t.equal(describeView(view({ state: 'closed', code: 'UPLINK_ERR_PHASE_NOT_APPROVED' })), 'closed (not approved)');
  t.equal(describeView(view({ state: 'closed', code: 'UPLINK_ERR_INTERNAL' as ApprovalView['code'] })), 'closed (UPLINK_ERR_INTERNAL)');
  t.equal(describeView(view({ state: 'closed' })), 'closed (closed)');
});

t.test('formatPhaseSummary: phases in their fixed order; local mode is marked', async (t) => {
  const aws = formatPhaseSummary({
    operate: view({ phase: 'operate', state: 'closed', code: 'UPLINK_ERR_PHASE_NOT_APPROVED' }),
    deploy: view({ until: '2026-11-29T23:30:00.000Z' }),
  });
  t.equal(aws, 'deploy: open until 23:30Z; operate: closed (not approved)');
  t.equal(formatPhaseSummary({ install: view({ phase: 'install', mode: 'local' }) }), 'install: open [local mode]');
  t.equal(formatPhaseSummary({}), '');
});
