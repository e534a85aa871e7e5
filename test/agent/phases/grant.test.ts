import t from 'tap';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ListRoleTagsCommand } from '@aws-sdk/client-iam';
import { startMoto } from '../../helpers/moto.js';
import { AccessControl, CHANGE_MARKER, touchChangeMarker, watchAccessChanges, type AccessAuditEvent } from '../../../agent/phases/grant.js';
import { BASE_CREDENTIALS, createPhaseRoles, manualClock, stateDir } from './aws-fixture.js';

const moto = await startMoto(t);
const NOW = Date.parse('2026-11-28T10:00:00.250Z');

if (moto) {
  t.test('AWS mode: grant and revoke write exactly the approval tags', async (t) => {
    const roles = await createPhaseRoles(t, moto, { deploy: { DeployAccessReason: 'old reason', Team: 'platform' } });
    const dir = await stateDir(t);
    const audit: AccessAuditEvent[] = [];
    const control = new AccessControl({ config: roles.config, stateDir: dir, credentials: BASE_CREDENTIALS, clock: () => NOW, audit: async (e) => { audit.push(e); } });
    t.teardown(() => control.close());
    const tags = async () => Object.fromEntries(((await roles.iam.send(new ListRoleTagsCommand({ RoleName: roles.names.deploy }))).Tags ?? []).map((x) => [x.Key, x.Value]));
    t.equal(await control.whoAmI('fallback'), 'arn:aws:sts::123456789012:user/moto', 'actor is the caller identity');

    const result = await control.grant('deploy', 2 * 3600_000, undefined, 'arn:aws:iam::123456789012:user/carol');
    t.same(result, { phase: 'deploy', mode: 'aws', access: 'enabled', until: '2026-11-28T12:00:00Z', role: (roles.config.aws.roles as Record<string, string>).deploy });
    t.same(await tags(), { Team: 'platform', DeployAccess: 'enabled', DeployAccessUntil: '2026-11-28T12:00:00Z', DeployAccessGrantedBy: 'arn:aws:iam::123456789012:user/carol' }, 'a stale reason is removed; other tags untouched');

    await control.grant('deploy', 30 * 60_000, 'release 1.2; <urgent>', 'carol', { access: 'scheduled' });
    t.match(await tags(), { DeployAccess: 'scheduled', DeployAccessUntil: '2026-11-28T10:30:00Z', DeployAccessReason: 'release 1.2- -urgent-' });

    await control.revoke('deploy', 'carol');
    t.same(await tags(), { Team: 'platform', DeployAccess: 'disabled', DeployAccessGrantedBy: 'carol' });
    t.same(audit.map((e) => [e.type, e.access, e.until ?? null, e.mode]), [
      ['phase.grant', 'enabled', '2026-11-28T12:00:00Z', 'aws'], ['phase.grant', 'scheduled', '2026-11-28T10:30:00Z', 'aws'], ['phase.revoke', 'disabled', null, 'aws'],
    ]);
    t.ok((await stat(join(dir, CHANGE_MARKER))).isFile(), 'the change marker is touched');
  });
}

t.test('limits and bad input', async (t) => {
  const dir = await stateDir(t);
  const control = new AccessControl({ config: {}, stateDir: dir, audit: async () => undefined });
  await t.rejects(control.grant('deploy', 30_000, undefined, 'x'), { code: 'UPLINK_ERR_USAGE', message: /between 1m and 7d/ });
  await t.rejects(control.grant('deploy', 8 * 86_400_000, undefined, 'x'), { code: 'UPLINK_ERR_USAGE' });
  await t.rejects(control.grant('deploy', NaN, undefined, 'x'), { code: 'UPLINK_ERR_USAGE' });
  await t.rejects(control.grant('deploy', 3600_000, 'r'.repeat(257), 'x'), { code: 'UPLINK_ERR_USAGE', message: /256/ });
  await t.rejects(control.grant('install' as never, 3600_000, undefined, 'x'), { code: 'UPLINK_ERR_USAGE' });
  await t.rejects(control.revoke('steadyState' as never, 'x'), { code: 'UPLINK_ERR_USAGE' });
  t.throws(() => new AccessControl({ config: {}, audit: async () => undefined }), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /state directory/ });
  const failing = new AccessControl({ config: {}, stateDir: dir, audit: async () => { throw new Error('disk full'); } });
  await t.rejects(failing.revoke('operate', 'x'), { code: 'UPLINK_ERR_INTERNAL', message: /operate access was revoked, but the audit event could not be recorded: disk full/ });
  t.match(JSON.parse(await readFile(join(dir, 'access.json'), 'utf8')), { phases: { operate: { access: 'disabled' } } }, 'the revoke itself happened');
});

t.test('local mode: access.json written atomically, private, repaired by a new grant', async (t) => {
  const dir = await stateDir(t);
  const clock = manualClock(NOW);
  const audit: AccessAuditEvent[] = [];
  const control = new AccessControl({ config: {}, stateDir: dir, clock: clock.now, audit: async (e) => { audit.push(e); } });
  await control.grant('operate', 3600_000, 'debugging', 'dev');
  await control.grant('deploy', 600_000, undefined, 'dev');
  const file = join(dir, 'access.json');
  t.equal((await stat(file)).mode & 0o777, 0o600);
  t.same(JSON.parse(await readFile(file, 'utf8')), {
    version: 1,
    phases: {
      operate: { access: 'enabled', until: '2026-11-28T11:00:00Z', actor: 'dev', at: '2026-11-28T10:00:00.250Z', reason: 'debugging' },
      deploy: { access: 'enabled', until: '2026-11-28T10:10:00Z', actor: 'dev', at: '2026-11-28T10:00:00.250Z' },
    },
  });
  await writeFile(file, 'garbage');
  await control.revoke('deploy', 'dev');
  t.same(JSON.parse(await readFile(file, 'utf8')).phases, { deploy: { access: 'disabled', actor: 'dev', at: '2026-11-28T10:00:00.250Z' } });
  t.equal(audit.length, 3);
  t.same(audit[0], { type: 'phase.grant', phase: 'operate', actor: 'dev', mode: 'local', access: 'enabled', until: '2026-11-28T11:00:00Z', at: '2026-11-28T10:00:00.250Z', reason: 'debugging' });
});

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 25));
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
}

t.test('watchAccessChanges: fs.watch, polling fallback, one call per change', async (t) => {
  const dir = await stateDir(t);
  await touchChangeMarker(dir); // an old change before the agent started is not news
  for (const mode of [{ fsWatch: true, pollIntervalMs: 60_000 }, { fsWatch: false, pollIntervalMs: 20 }]) {
    let calls = 0;
    const w = watchAccessChanges(dir, () => { calls++; }, mode);
    await new Promise((r) => setTimeout(r, 100));
    t.equal(calls, 0, `${JSON.stringify(mode)}: nothing at start`);
    await touchChangeMarker(dir);
    await waitFor(() => calls === 1, 'first change');
    await writeFile(join(dir, 'unrelated'), 'x');
    await new Promise((r) => setTimeout(r, 100));
    t.equal(calls, 1, 'other files and duplicate events do not count');
    await touchChangeMarker(dir);
    await waitFor(() => calls === 2, 'second change');
    w.close();
    await touchChangeMarker(dir);
    await new Promise((r) => setTimeout(r, 100));
    t.equal(calls, 2, 'closed: no more calls');
  }
  const errors: unknown[] = [];
  const w = watchAccessChanges(dir, () => { throw new Error('boom'); }, { fsWatch: false, pollIntervalMs: 20, onError: (e) => errors.push(e) });
  await new Promise((r) => setTimeout(r, 60));
  await touchChangeMarker(dir);
  await waitFor(() => errors.length === 1, 'error callback');
  w.close();
  const missing = watchAccessChanges(join(dir, 'does-not-exist'), () => undefined, { pollIntervalMs: 20 });
  missing.close();
  t.pass('a missing directory falls back to polling without throwing');
});
