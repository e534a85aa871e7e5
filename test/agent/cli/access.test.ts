import t from 'tap';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startMoto } from '../../helpers/moto.js';
import { freePort } from '../../helpers/net.js';
import { runAccessCommand, type AccessCommandContext, type AccessCommandName } from '../../../agent/cli/access.js';
import { BASE_CREDENTIALS, createPhaseRoles, stateDir } from '../phases/aws-fixture.js';

const NOW = Date.parse('2026-11-28T10:00:00Z');

async function cli(name: AccessCommandName, argv: string[], ctx: Omit<AccessCommandContext, 'io'>): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runAccessCommand(name, argv, { ...ctx, io: { stdout: { write: (s: string) => { out += s; return true; } }, stderr: { write: (s: string) => { err += s; return true; } } } });
  return { code, out, err };
}

t.test('local mode: access, grant, revoke, with the audit file', async (t) => {
  const dir = await stateDir(t);
  const ctx = { stateDir: dir, config: {}, clock: () => NOW };
  const before = await cli('access', [], ctx);
  t.equal(before.code, 0);
  t.match(before.out, /^Mode: local/);
  t.match(before.out, /Deploy\s+closed \(not approved\)/);
  t.match(before.out, /Install\s+open/);

  const granted = await cli('grant', ['operate', '--for', '2h', '--reason', 'incident 7'], ctx);
  t.equal(granted.code, 0, granted.err);
  t.match(granted.out, /^Operate granted until 2026-11-28T12:00:00Z \(local mode\) by /);
  const json = await cli('access', ['--json'], ctx);
  const state = JSON.parse(json.out);
  t.equal(state.mode, 'local');
  t.match(state.phases.operate, { state: 'open', until: '2026-11-28T12:00:00.000Z', mode: 'local' });
  t.equal(state.summary, 'install: open; steadyState: open; deploy: closed (not approved); operate: open until 12:00Z [local mode]');

  const revoked = await cli('revoke', ['OPERATE', '--json'], ctx);
  t.equal(revoked.code, 0);
  t.match(JSON.parse(revoked.out), { phase: 'operate', access: 'disabled', mode: 'local' });
  const lines = (await readFile(join(dir, 'access-audit.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
  t.same(lines.map((l) => [l.type, l.phase, l.reason ?? null]), [['phase.grant', 'operate', 'incident 7'], ['phase.revoke', 'operate', null]]);
});

t.test('usage errors exit 2 with help; --help exits 0', async (t) => {
  const dir = await stateDir(t);
  const ctx = { stateDir: dir, config: {} };
  const cases: Array<[AccessCommandName, string[], RegExp]> = [
    ['grant', ['deploy'], /--for DURATION is required/],
    ['grant', ['deploy', '--for', 'soon'], /"soon" is not a duration/],
    ['grant', ['deploy', '--for', '10s'], /between 1m and 7d/],
    ['grant', ['install', '--for', '1h'], /"install" cannot be granted: use deploy or operate/],
    ['grant', [], /exactly one phase/],
    ['grant', ['deploy', 'operate', '--for', '1h'], /exactly one phase/],
    ['revoke', ['deploy', '--for', '1h'], /--for is only valid for grant/],
    ['access', ['deploy'], /unexpected argument/],
    ['access', ['--verbose'], /Unknown option/],
  ];
  for (const [name, argv, message] of cases) {
    const r = await cli(name, argv, ctx);
    t.equal(r.code, 2, `${name} ${argv.join(' ')}`);
    t.match(r.err, message);
    t.equal(r.out, '');
  }
  const help = await cli('grant', ['--help'], ctx);
  t.equal(help.code, 0);
  t.match(help.out, /Usage: uplink-agent grant deploy\|operate --for DURATION/);
  const badConfig = await cli('access', [], { stateDir: dir, config: { local: { deploy: 'sometimes' } } });
  t.equal(badConfig.code, 1);
  t.match(badConfig.err, /local\.deploy.*\[UPLINK_ERR_CONFIG_INVALID\]/);
});

const moto = await startMoto(t);
if (moto) {
  t.test('AWS mode: reads and writes the role tags with the customer credentials', async (t) => {
    const roles = await createPhaseRoles(t, moto);
    const dir = await stateDir(t);
    const ctx = { stateDir: dir, config: roles.config, credentials: BASE_CREDENTIALS };
    const granted = await cli('grant', ['deploy', '--for', '90m'], ctx);
    t.equal(granted.code, 0, granted.err);
    t.match(granted.out, /Deploy granted until .* \(aws mode, arn:aws:iam::123456789012:role\/UplinkDeploy-.*\) by arn:aws:sts::123456789012:user\/moto/);
    const access = await cli('access', [], ctx);
    t.match(access.out, /^Mode: aws \(region us-east-1\)/);
    // 90 minutes on may cross midnight (UTC): then the date is printed before the time.
    t.match(access.out, /Deploy\s+open until (\d{4}-\d{2}-\d{2} )?\d{2}:\d{2}Z\s+arn:aws:iam::123456789012:role\/UplinkDeploy-/);
    t.match(access.out, /Operate: Operate is not approved: role arn:aws:iam::123456789012:role\/UplinkOperate-\S+ has no OperateAccess tag.*\[UPLINK_ERR_PHASE_NOT_APPROVED\]/);
    const revoked = await cli('revoke', ['deploy'], ctx);
    t.equal(revoked.code, 0);
    t.match((await cli('access', ['--json'], ctx)).out, /"code": "UPLINK_ERR_PHASE_NOT_APPROVED"/);

    const port = await freePort();
    const down = { ...ctx, config: { aws: { ...roles.config.aws, endpoint: `http://127.0.0.1:${port}` } } };
    const failed = await cli('revoke', ['deploy'], down);
    t.equal(failed.code, 1);
    t.match(failed.err, /\[UPLINK_ERR_AWS_UNAVAILABLE\]/);
  });
}
