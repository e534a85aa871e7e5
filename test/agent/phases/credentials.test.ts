import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdir, readFile, stat, writeFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startMoto } from '../../helpers/moto.js';
import { needTools } from '../../helpers/tools.js';
import { PhaseAccess, formatPhaseSummary, type PhaseSession, type SessionEnd } from '../../../agent/phases/credentials.js';
import { AccessControl, type AccessAuditEvent } from '../../../agent/phases/grant.js';
import { childEnvironment } from '../../../agent/phases/child-env.js';
import { runCredentialProcess } from '../../../agent/phases/credential-process.js';
import { ACCOUNT, BASE_CREDENTIALS, REGION, createPhaseRoles, credentialCommand, iso, manualClock, stateDir } from './aws-fixture.js';

const run = promisify(execFile);

const moto = await startMoto(t);

/** Run credential_process in-process against a session file (real clock unless given). */
async function credentialProcess(file: string, now?: () => number): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runCredentialProcess(['--session-file', file], { stdout: { write: (s: string) => { out += s; return true; } }, stderr: { write: (s: string) => { err += s; return true; } } }, now);
  return { code, out, err };
}

function sessionFile(s: PhaseSession): string {
  return join(s.env.AWS_CONFIG_FILE!, '..', 'session.json');
}

if (moto) {
  t.test('closed, expired, disabled and out-of-schedule windows are refused with their codes', async (t) => {
    const clock = manualClock();
    const now = clock.now();
    const roles = await createPhaseRoles(t, moto, { deploy: { DeployAccess: 'disabled' } }, { maintenanceWindows: ['Daily 00:00-00:01 UTC'], steadyState: { enabled: true } });
    const dir = await stateDir(t);
    const access = new PhaseAccess({ config: roles.config, stateDir: dir, credentialProcessCommand: credentialCommand(), baseCredentials: BASE_CREDENTIALS, clock: clock.now, autoRecheck: false });
    t.teardown(() => access.close());
    const deployArn = (roles.config.aws.roles as Record<string, string>).deploy!;
    const operateArn = (roles.config.aws.roles as Record<string, string>).operate!;
    const req = { phase: 'deploy' as const, actor: 'alice@vendor.com', requestId: 'r-1', operation: 'deploy.apply' as const };

    await t.rejects(access.open(req), { code: 'UPLINK_ERR_PHASE_NOT_APPROVED', message: new RegExp(`role ${deployArn} has DeployAccess=disabled`), details: { role: deployArn, tag: 'DeployAccess' } }, 'disabled');
    await t.rejects(access.open({ ...req, phase: 'operate', operation: 'shell' }), { code: 'UPLINK_ERR_PHASE_NOT_APPROVED', message: new RegExp(`role ${operateArn} has no OperateAccess tag`) }, 'closed: no tag at all');

    await roles.tag('deploy', { DeployAccess: 'enabled', DeployAccessUntil: iso(now - 60_000) });
    await t.rejects(access.open(req), { code: 'UPLINK_ERR_WINDOW_EXPIRED', details: { role: deployArn, tag: 'DeployAccessUntil', until: iso(now - 60_000) } }, 'expired');

    // A one-minute daily window that is not open at the test's (fake) time of day.
    clock.set(Date.parse(`${iso(now).slice(0, 10)}T12:00:00Z`));
    await roles.tag('deploy', { DeployAccess: 'scheduled', DeployAccessUntil: iso(clock.now() + 7 * 86_400_000) });
    await t.rejects(access.open(req), { code: 'UPLINK_ERR_OUTSIDE_MAINTENANCE_WINDOW', message: /Daily 00:00-00:01 UTC/, details: { nextOpen: `${iso(clock.now() + 86_400_000).slice(0, 10)}T00:00:00.000Z` } }, 'out of schedule');

    await roles.tag('steadyState', { SteadyStateAccess: 'disabled' });
    await t.rejects(access.open({ ...req, phase: 'steadyState', operation: 'telemetry' }), { code: 'UPLINK_ERR_PHASE_DISABLED', message: /SteadyStateAccess=disabled/ }, 'SteadyState disabled by tag');
    await t.rejects(access.internalCredentials('steadyState')(), { code: 'UPLINK_ERR_PHASE_DISABLED' }, 'internal use is refused too');

    await t.rejects(access.open({ ...req, operation: 'shell' }), { code: 'UPLINK_ERR_BAD_REQUEST', message: /does not run in the deploy phase/ }, 'operation/phase mismatch');
    await t.rejects(access.open({ ...req, actor: 'x'.repeat(300) }), { code: 'UPLINK_ERR_BAD_REQUEST' });

    const states = await access.state();
    t.equal(formatPhaseSummary(states), 'install: open; steadyState: closed (disabled); deploy: closed (outside maintenance window, next 00:00Z); operate: closed (not approved)'.replace('next 00:00Z', `next ${iso(clock.now() + 86_400_000).slice(0, 10)} 00:00Z`));
    t.same(await readdir(join(dir, 'phase-sessions')).catch(() => []), [], 'refusals leave no session files behind');

    const off = new PhaseAccess({ config: { ...roles.config, aws: { ...roles.config.aws, steadyState: { enabled: false } } }, stateDir: dir, credentialProcessCommand: credentialCommand(), baseCredentials: BASE_CREDENTIALS, autoRecheck: false });
    t.teardown(() => off.close());
    await t.rejects(off.open({ ...req, phase: 'steadyState', operation: 'telemetry' }), { code: 'UPLINK_ERR_PHASE_DISABLED', details: { tag: 'aws.steadyState.enabled' } }, 'SteadyState disabled in config');
  });

  t.test('an open session: session name, duration bounded by the window, child env without base credentials, real aws CLI', async (t) => {
    if (!needTools(t, ['aws'])) return;
    const roles = await createPhaseRoles(t, moto, {}, { externalId: 'customer-42' });
    const until = Date.now() + 30 * 60_000;
    await roles.tag('operate', { OperateAccess: 'enabled', OperateAccessUntil: iso(until) });
    const dir = await stateDir(t);
    const access = new PhaseAccess({ config: roles.config, stateDir: dir, credentialProcessCommand: credentialCommand(), baseCredentials: BASE_CREDENTIALS, autoRecheck: false });
    t.teardown(() => access.close());

    const session = await access.open({ phase: 'operate', actor: 'alice@vendor.com', requestId: 'req-7f3a', operation: 'exec' });
    t.equal(session.mode, 'aws');
    t.equal(session.sessionName, 'alice@vendor.com+req-7f3a');
    t.equal(session.approval.until, iso(until));
    t.same(Object.keys(session.env).sort(), ['AWS_CONFIG_FILE', 'AWS_DEFAULT_REGION', 'AWS_EC2_METADATA_DISABLED', 'AWS_REGION', 'AWS_SDK_LOAD_CONFIG', 'AWS_SHARED_CREDENTIALS_FILE']);

    // File modes: private directory, private files.
    const file = sessionFile(session);
    t.equal((await stat(join(file, '..'))).mode & 0o777, 0o700);
    for (const f of ['config', 'credentials', 'session.json']) t.equal((await stat(join(file, '..', f))).mode & 0o777, 0o600, f);
    t.equal(await readFile(session.env.AWS_SHARED_CREDENTIALS_FILE!, 'utf8'), '');
    const written = JSON.parse(await readFile(file, 'utf8'));
    t.equal(written.notAfter, iso(until));
    // DurationSeconds = seconds until the window closes (30 min < 1 h maximum): STS expiry lands near it.
    t.ok(Math.abs(Date.parse(written.expiration) - until) < 60_000, `STS expiration ${written.expiration} is about the window end ${iso(until)}`);

    // The parent looks like an ECS task with base credentials everywhere they can hide.
    const home = join(dir, 'home');
    await mkdir(join(home, '.aws'), { recursive: true });
    await writeFile(join(home, '.aws', 'credentials'), '[default]\naws_access_key_id = BASEKEYFROMHOME\naws_secret_access_key = BASESECRETFROMHOME\n');
    const parentEnv = {
      PATH: process.env.PATH, HOME: home,
      AWS_ACCESS_KEY_ID: 'BASEKEY', AWS_SECRET_ACCESS_KEY: 'BASESECRET', AWS_SESSION_TOKEN: 'BASETOKEN', AWS_PROFILE: 'base',
      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: '/v2/credentials/abc', AWS_CONTAINER_AUTHORIZATION_TOKEN: 'tok',
      AWS_WEB_IDENTITY_TOKEN_FILE: '/var/run/token', AWS_ROLE_ARN: 'arn:aws:iam::123456789012:role/Task', ECS_CONTAINER_METADATA_URI_V4: 'http://169.254.170.2/v4/x',
      aws_access_key_id: 'lowercase-too',
    };
    const env = childEnvironment(parentEnv, session.env);
    const { stdout: envDump } = await run('env', [], { env });
    t.notMatch(envDump, /BASE|\/v2\/credentials|lowercase-too|AWS_PROFILE|AWS_ROLE_ARN|ECS_CONTAINER_METADATA/, 'no base credential reaches the child');
    t.match(envDump, /AWS_CONFIG_FILE=/);

    const { stdout } = await run('aws', ['sts', 'get-caller-identity', '--output', 'json'], { env });
    const identity = JSON.parse(stdout);
    t.equal(identity.Arn, `arn:aws:sts::123456789012:assumed-role/${roles.names.operate}/alice@vendor.com+req-7f3a`, 'the CLI runs as the Operate role, named after the engineer and the request');

    // In-agent SDK use gets the same session.
    const creds = await session.awsCredentials()();
    t.equal(creds.accessKeyId, written.accessKeyId);
    t.equal(creds.expiration?.toISOString(), new Date(Math.min(Date.parse(written.expiration), until)).toISOString(), 'never beyond the window');

    await session.close();
    await t.rejects(stat(join(file, '..')), { code: 'ENOENT' }, 'close deletes the session directory');
    await t.rejects(session.awsCredentials()(), { code: 'UPLINK_ERR_PHASE_SESSION_ENDED' });
  });

  t.test('credentials are refreshed across an expiry in a long session, and stop when the window closes', async (t) => {
    const clock = manualClock();
    const start = clock.now();
    const roles = await createPhaseRoles(t, moto, {}, { sessionDurationMaxSeconds: 900, refreshBeforeExpirySeconds: 300, recheckIntervalSeconds: 15 });
    const until = start + 40 * 60_000;
    await roles.tag('deploy', { DeployAccess: 'enabled', DeployAccessUntil: iso(until) });
    const dir = await stateDir(t);
    const access = new PhaseAccess({ config: roles.config, stateDir: dir, credentialProcessCommand: credentialCommand(), baseCredentials: BASE_CREDENTIALS, clock: clock.now, autoRecheck: false });
    t.teardown(() => access.close());
    const session = await access.open({ phase: 'deploy', actor: 'ci-bot', requestId: 'apply-1', operation: 'deploy.apply' });
    const ended: SessionEnd[] = [];
    session.on('ended', (e) => ended.push(e));
    const file = sessionFile(session);
    const first = session.currentAccessKeyId;

    clock.advance(5 * 60_000);
    await access.recheck();
    t.equal(session.currentAccessKeyId, first, 'not yet due (10 min left > 5 min margin)');

    clock.advance(5 * 60_000 + 1000); // 10 min in: 5 min left, inside the refresh margin
    await access.recheck();
    const second = session.currentAccessKeyId;
    t.not(second, first, 'refreshed before expiry');
    t.equal(JSON.parse(await readFile(file, 'utf8')).accessKeyId, second, 'the child credential file was rewritten');
    t.equal((await credentialProcess(file)).code, 0);

    clock.advance(11 * 60_000); // 21 min: second set due
    await access.recheck();
    t.not(session.currentAccessKeyId, second, 'refreshed again');

    clock.set(until - 60_000);
    await access.recheck();
    t.ok(session.active, 'still open one minute before the end');
    t.equal(ended.length, 0);

    clock.set(until);
    await access.recheck();
    t.notOk(session.active);
    t.equal(ended.length, 1);
    t.equal(ended[0]!.code, 'UPLINK_ERR_WINDOW_EXPIRED');
    const refused = await credentialProcess(file);
    t.equal(refused.code, 1);
    t.match(refused.err, /UPLINK_ERR_WINDOW_EXPIRED/);
    await t.rejects(session.awsCredentials()(), { code: 'UPLINK_ERR_PHASE_SESSION_ENDED' });
    t.same(access.openSessions(), []);
    await access.close();
    await t.rejects(stat(join(file, '..')), { code: 'ENOENT' }, 'closing the agent deletes the files of ended sessions too');
  });

  t.test('a window shorter than 900 s: STS minimum asked, credentials cut at the window end', async (t) => {
    const clock = manualClock();
    const roles = await createPhaseRoles(t, moto);
    const until = Math.floor(clock.now() / 1000) * 1000 + 5 * 60_000;
    await roles.tag('operate', { OperateAccess: 'enabled', OperateAccessUntil: iso(until) });
    const dir = await stateDir(t);
    const access = new PhaseAccess({ config: roles.config, stateDir: dir, credentialProcessCommand: credentialCommand(), baseCredentials: BASE_CREDENTIALS, clock: clock.now, autoRecheck: false });
    t.teardown(() => access.close());
    const session = await access.open({ phase: 'operate', actor: 'bob', requestId: 'r-2', operation: 'kube' });
    const file = sessionFile(session);
    const written = JSON.parse(await readFile(file, 'utf8'));
    t.ok(Date.parse(written.expiration) - Date.now() > 14 * 60_000, 'assumed for the 900 s STS minimum');
    const printed = await credentialProcess(file);
    t.equal(printed.code, 0);
    t.equal(JSON.parse(printed.out).Expiration, iso(until), 'the child is told the credentials expire at the window end');
    const late = await credentialProcess(file, () => until);
    t.equal(late.code, 1, 'after the window end the credential process refuses even before the agent re-checks');
    t.match(late.err, /UPLINK_ERR_WINDOW_EXPIRED.*closed at/);
    clock.set(until);
    await t.rejects(session.awsCredentials()(), { code: 'UPLINK_ERR_PHASE_SESSION_ENDED' });
    t.equal(session.endedWith?.code, 'UPLINK_ERR_WINDOW_EXPIRED');
  });

  t.test('grant then revoke changes what is allowed within one request', async (t) => {
    const roles = await createPhaseRoles(t, moto);
    const dir = await stateDir(t);
    const audit: AccessAuditEvent[] = [];
    const control = new AccessControl({ config: roles.config, stateDir: dir, credentials: BASE_CREDENTIALS, audit: async (e) => { audit.push(e); } });
    t.teardown(() => control.close());
    const access = new PhaseAccess({ config: roles.config, stateDir: dir, credentialProcessCommand: credentialCommand(), baseCredentials: BASE_CREDENTIALS, autoRecheck: false });
    t.teardown(() => access.close());
    const req = { phase: 'operate' as const, actor: 'alice', requestId: 'shell-1', operation: 'shell' as const };

    await t.rejects(access.open(req), { code: 'UPLINK_ERR_PHASE_NOT_APPROVED' });
    await control.grant('operate', 2 * 3600_000, 'incident 42', 'arn:aws:iam::123456789012:user/carol');
    const session = await access.open(req);
    t.ok(session.active, 'granted: the same request now succeeds');
    const ended = new Promise<SessionEnd>((resolve) => session.once('ended', resolve));

    await control.revoke('operate', 'arn:aws:iam::123456789012:user/carol');
    await access.accessChanged();
    const end = await ended;
    t.equal(end.code, 'UPLINK_ERR_PHASE_NOT_APPROVED', 'revoke ends the open Operate session');
    const refused = await credentialProcess(sessionFile(session));
    t.equal(refused.code, 1);
    t.match(refused.err, /UPLINK_ERR_PHASE_NOT_APPROVED.*OperateAccess=disabled/);
    await t.rejects(access.open({ ...req, requestId: 'shell-2' }), { code: 'UPLINK_ERR_PHASE_NOT_APPROVED' }, 'and refuses new ones');
    t.same(audit.map((e) => [e.type, e.phase, e.reason]), [['phase.grant', 'operate', 'incident 42'], ['phase.revoke', 'operate', undefined]]);
  });

  t.test('a role that does not exist', async (t) => {
    const dir = await stateDir(t);
    const missing = `arn:aws:iam::${ACCOUNT}:role/DoesNotExist`;
    const access = new PhaseAccess({
      config: { aws: { region: REGION, endpoint: moto.endpoint, roles: { install: missing, steadyState: missing, deploy: missing, operate: missing } } },
      stateDir: dir, credentialProcessCommand: ['x'], baseCredentials: BASE_CREDENTIALS, autoRecheck: false,
    });
    t.teardown(() => access.close());
    // moto lets anyone assume a missing role, so the tag read is where it shows.
    await t.rejects(access.open({ phase: 'deploy', actor: 'a', requestId: 'r', operation: 'deploy.plan' }), {
      code: 'UPLINK_ERR_AWS_ROLE_NOT_FOUND', message: new RegExp(`role ${missing} does not exist`), details: { action: 'iam:ListRoleTags' },
    });
  });
  t.test('internal credentials are cached per phase', async (t) => {
    const clock = manualClock();
    const roles = await createPhaseRoles(t, moto, {}, { sessionDurationMaxSeconds: 900, refreshBeforeExpirySeconds: 300 });
    const dir = await stateDir(t);
    const access = new PhaseAccess({ config: roles.config, stateDir: dir, credentialProcessCommand: credentialCommand(), baseCredentials: BASE_CREDENTIALS, clock: clock.now, autoRecheck: false });
    t.teardown(() => access.close());
    const provider = access.internalCredentials('steadyState');
    const a = await provider();
    const b = await access.internalCredentials('steadyState')();
    t.equal(b.accessKeyId, a.accessKeyId, 'cached');
    clock.advance(601_000);
    t.not((await provider()).accessKeyId, a.accessKeyId, 'refreshed when due');
    await t.rejects(access.internalCredentials('deploy')(), { code: 'UPLINK_ERR_PHASE_NOT_APPROVED' }, 'gated phases are checked for internal use too');
  });
}

t.test('local mode: decided by config and access.json, no AWS credentials, says so', async (t) => {
  const dir = await stateDir(t);
  const access = new PhaseAccess({ config: { local: { operate: 'enabled' } }, stateDir: dir, credentialProcessCommand: ['unused'], autoRecheck: false });
  t.teardown(() => access.close());
  t.equal(access.mode, 'local');
  const session = await access.open({ phase: 'operate', actor: 'dev', requestId: 'r1', operation: 'exec' });
  t.equal(session.mode, 'local');
  t.equal(session.approval.mode, 'local');
  t.same(Object.keys(session.env).sort(), ['AWS_CONFIG_FILE', 'AWS_EC2_METADATA_DISABLED', 'AWS_SHARED_CREDENTIALS_FILE']);
  t.equal(await readFile(session.env.AWS_CONFIG_FILE!, 'utf8'), '');
  await t.rejects(session.awsCredentials()(), { code: 'UPLINK_ERR_AWS_UNAVAILABLE', message: /local mode/ });
  await t.rejects(access.open({ phase: 'deploy', actor: 'dev', requestId: 'r2', operation: 'deploy.plan' }), { code: 'UPLINK_ERR_PHASE_NOT_APPROVED', details: { mode: 'local', tag: 'local.deploy' } });
  t.match(formatPhaseSummary(await access.state()), /\[local mode\]$/);

  const control = new AccessControl({ config: { local: { operate: 'enabled' } }, stateDir: dir, audit: async () => undefined });
  await control.revoke('operate', 'dev');
  const ended = new Promise<SessionEnd>((resolve) => session.once('ended', resolve));
  await access.accessChanged();
  t.equal((await ended).code, 'UPLINK_ERR_PHASE_NOT_APPROVED');
  t.throws(() => new PhaseAccess({ config: {}, stateDir: dir, credentialProcessCommand: ['x'], bogus: 1 } as never), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /bogus/ });
  await access.close();
  await t.rejects(access.open({ phase: 'install', actor: 'dev', requestId: 'r3', operation: 'install' }), { code: 'UPLINK_ERR_PHASE_SESSION_ENDED' });
});
