import t from 'tap';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { assertApproved, cachedTagReader, evaluateApproval, parseIsoInstant, roleNameFromArn, type EvaluateInput } from '../../../agent/phases/approval.js';
import { ApprovalSource } from '../../../agent/phases/approval-source.js';
import { parsePhaseConfig } from '../../../agent/phases/config.js';
import { writeLocalGrant } from '../../../agent/phases/local-grants.js';
import { MaintenanceSchedule } from '../../../agent/phases/schedule.js';
import { stateDir } from './aws-fixture.js';

const ROLE = 'arn:aws:iam::123456789012:role/UplinkDeploy';
const NOW = Date.parse('2026-11-28T10:00:00Z'); // a Saturday

function input(over: Partial<EvaluateInput> = {}): EvaluateInput {
  return {
    phase: 'deploy', mode: 'aws', role: ROLE, accessSource: 'DeployAccess', untilSource: 'DeployAccessUntil',
    setting: {}, schedule: new MaintenanceSchedule([]), requireUntil: true, steadyStateEnabled: true, now: NOW, ...over,
  };
}

t.test('deploy/operate refusals carry their code and name role, tag and time', async (t) => {
  const cases: Array<[Partial<EvaluateInput>, string, string, RegExp]> = [
    [{}, 'UPLINK_ERR_PHASE_NOT_APPROVED', 'DeployAccess', /no DeployAccess tag/],
    [{ setting: { access: 'disabled' } }, 'UPLINK_ERR_PHASE_NOT_APPROVED', 'DeployAccess', /DeployAccess=disabled/],
    [{ setting: { access: 'Enabled', until: '2026-11-28T12:00:00Z' } }, 'UPLINK_ERR_PHASE_NOT_APPROVED', 'DeployAccess', /DeployAccess="Enabled"/],
    [{ setting: { access: 'enabled' } }, 'UPLINK_ERR_PHASE_NOT_APPROVED', 'DeployAccessUntil', /no DeployAccessUntil; approval must be time-bounded/],
    [{ setting: { access: 'enabled', until: 'tomorrow' } }, 'UPLINK_ERR_PHASE_NOT_APPROVED', 'DeployAccessUntil', /"tomorrow", which is not an ISO-8601/],
    [{ setting: { access: 'enabled', until: '2026-11-28T09:59:59Z' } }, 'UPLINK_ERR_WINDOW_EXPIRED', 'DeployAccessUntil', /expired at 2026-11-28T09:59:59.000Z/],
    [{ setting: { access: 'enabled', until: '2026-11-28T10:00:00Z' } }, 'UPLINK_ERR_WINDOW_EXPIRED', 'DeployAccessUntil', /expired/],
    [{ setting: { access: 'scheduled' } }, 'UPLINK_ERR_PHASE_NOT_APPROVED', 'DeployAccess', /lists no maintenance windows/],
    [{ setting: { access: 'scheduled' }, schedule: MaintenanceSchedule.parse(['Sat 02:00-06:00 UTC']) }, 'UPLINK_ERR_OUTSIDE_MAINTENANCE_WINDOW', 'DeployAccess', /next window opens at 2026-12-05T02:00:00.000Z/],
    [{ setting: { access: 'scheduled', until: '2026-11-28T09:00:00Z' }, schedule: MaintenanceSchedule.parse(['Sat 02:00-12:00 UTC']) }, 'UPLINK_ERR_WINDOW_EXPIRED', 'DeployAccessUntil', /expired/],
  ];
  for (const [over, code, tag, reason] of cases) {
    const v = evaluateApproval(input(over));
    t.equal(v.state, 'closed', JSON.stringify(over.setting));
    t.equal(v.code, code);
    t.equal(v.tag, tag);
    t.match(v.reason, reason);
    if (code !== 'UPLINK_ERR_PHASE_NOT_APPROVED' || v.tag !== 'DeployAccessUntil') t.match(v.reason, ROLE);
    t.throws(() => assertApproved(v), { code, details: { phase: 'deploy', role: ROLE, tag } });
  }
  const outside = evaluateApproval(input({ setting: { access: 'scheduled' }, schedule: MaintenanceSchedule.parse(['Sat 02:00-06:00 UTC']) }));
  t.equal(outside.nextOpen, '2026-12-05T02:00:00.000Z');
  t.throws(() => assertApproved(outside), { code: 'UPLINK_ERR_OUTSIDE_MAINTENANCE_WINDOW', details: { nextOpen: '2026-12-05T02:00:00.000Z' } }, 'details carry the next opening');
});

t.test('open states and their end', async (t) => {
  const enabled = evaluateApproval(input({ setting: { access: 'enabled', until: '2026-11-28T14:00:00+01:00' } }));
  t.match(enabled, { state: 'open', until: '2026-11-28T13:00:00.000Z', mode: 'aws', role: ROLE });
  t.equal(assertApproved(enabled), enabled);
  const scheduled = evaluateApproval(input({ setting: { access: 'scheduled' }, schedule: MaintenanceSchedule.parse(['Sat 08:00-12:00 UTC']) }));
  t.match(scheduled, { state: 'open', until: '2026-11-28T12:00:00.000Z' }, 'open until the window closes');
  const capped = evaluateApproval(input({ setting: { access: 'scheduled', until: '2026-11-28T11:00:00Z' }, schedule: MaintenanceSchedule.parse(['Sat 08:00-12:00 UTC']) }));
  t.equal(capped.until, '2026-11-28T11:00:00.000Z', 'or until the approval ends, whichever is first');
  const local = evaluateApproval(input({ mode: 'local', role: 'local', requireUntil: false, setting: { access: 'enabled' } }));
  t.match(local, { state: 'open', mode: 'local' });
  t.equal(local.until, undefined, 'local config enabled has no end');
});

t.test('install is never gated; SteadyState can be disabled by config or tag', async (t) => {
  t.equal(evaluateApproval(input({ phase: 'install' })).state, 'open');
  t.equal(evaluateApproval(input({ phase: 'steadyState', accessSource: 'SteadyStateAccess' })).state, 'open', 'on by default, no tag needed');
  const off = evaluateApproval(input({ phase: 'steadyState', steadyStateEnabled: false, accessSource: 'aws.steadyState.enabled' }));
  t.match(off, { state: 'closed', code: 'UPLINK_ERR_PHASE_DISABLED', tag: 'aws.steadyState.enabled' });
  const tagged = evaluateApproval(input({ phase: 'steadyState', accessSource: 'SteadyStateAccess', setting: { access: 'disabled' } }));
  t.match(tagged, { state: 'closed', code: 'UPLINK_ERR_PHASE_DISABLED' });
  t.match(tagged.reason, /SteadyStateAccess=disabled/);
});

t.test('ISO-8601 parsing is strict', async (t) => {
  t.equal(parseIsoInstant('2026-11-28T10:00:00Z'), NOW);
  t.equal(parseIsoInstant('2026-11-28T11:00+01:00'), NOW);
  t.equal(parseIsoInstant('2026-11-28T10:00:00.123456789Z'), NOW + 123);
  for (const bad of ['2026-11-28', '2026-11-28T10:00:00', 'Sat Nov 28 2026', '1764324000', '', undefined]) t.equal(parseIsoInstant(bad), undefined, String(bad));
  t.equal(roleNameFromArn('arn:aws:iam::123456789012:role/a/b/Name'), 'Name');
});

t.test('tag cache: ttl 0 reads every time; ttl > 0 until invalidated', async (t) => {
  let reads = 0;
  let now = 0;
  const reader = async () => { reads++; return { DeployAccess: `v${reads}` }; };
  const none = cachedTagReader(reader, 0, () => now);
  await none(ROLE);
  await none(ROLE);
  t.equal(reads, 2);
  const cached = cachedTagReader(reader, 5000, () => now);
  t.same(await cached(ROLE), { DeployAccess: 'v3' });
  now = 4999;
  t.same(await cached(ROLE), { DeployAccess: 'v3' });
  now = 5000;
  t.same(await cached(ROLE), { DeployAccess: 'v4' });
  cached.invalidate();
  t.same(await cached(ROLE), { DeployAccess: 'v5' });
});

t.test('local mode: config, then access.json overrides; a damaged file refuses', async (t) => {
  const dir = await stateDir(t);
  let now = NOW;
  const source = new ApprovalSource({ config: parsePhaseConfig({ local: { deploy: 'enabled', steadyState: false } }), stateDir: dir, clock: () => now });
  const s1 = await source.state();
  t.match(s1.deploy, { state: 'open', mode: 'local', tag: 'local.deploy' });
  t.match(s1.operate, { state: 'closed', code: 'UPLINK_ERR_PHASE_NOT_APPROVED', tag: 'local.operate' });
  t.match(s1.steadyState, { state: 'closed', code: 'UPLINK_ERR_PHASE_DISABLED' });
  t.match(s1.install, { state: 'open' });

  await writeLocalGrant(dir, 'operate', { access: 'enabled', until: '2026-11-28T12:00:00Z', actor: 'ops', at: '2026-11-28T10:00:00Z' });
  await writeLocalGrant(dir, 'deploy', { access: 'disabled', actor: 'ops', at: '2026-11-28T10:00:00Z' });
  const s2 = await source.state();
  t.match(s2.operate, { state: 'open', until: '2026-11-28T12:00:00.000Z', tag: 'access.json:operate' });
  t.match(s2.deploy, { state: 'closed', code: 'UPLINK_ERR_PHASE_NOT_APPROVED', tag: 'access.json:deploy' }, 'a revoke overrides the config');
  now = Date.parse('2026-11-28T12:00:00Z');
  t.match((await source.state()).operate, { state: 'closed', code: 'UPLINK_ERR_WINDOW_EXPIRED' });

  await writeFile(join(dir, 'access.json'), '{"version":1,"phases":{"deploy":{"access":"enabled"');
  const s3 = await source.state();
  t.match(s3.deploy, { state: 'closed', code: 'UPLINK_ERR_CONFIG_INVALID' }, 'damaged file: fail closed even though config says enabled');
  await t.rejects(source.approval('deploy'), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /not valid JSON/ });
  await writeFile(join(dir, 'access.json'), JSON.stringify({ version: 1, phases: { deploy: { access: 'enabled', actor: 'x', at: 'y', extra: 1 } } }));
  await t.rejects(source.approval('deploy'), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /malformed/ });
  await writeFile(join(dir, 'access.json'), 'x'.repeat(70 * 1024));
  await t.rejects(source.approval('deploy'), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /over the 65536-byte limit/ });
  t.same((await source.approval('install')).state, 'open', 'install does not read the file');
});
