import t from 'tap';
import { chmod, mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCredentialProcess } from '../../../agent/phases/credential-process.js';
import { writeSessionFile } from '../../../agent/phases/session-files.js';
import { stateDir } from './aws-fixture.js';

const NOW = Date.parse('2026-11-28T10:00:00Z');

async function run(argv: string[], now = NOW): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runCredentialProcess(argv, { stdout: { write: (s: string) => { out += s; return true; } }, stderr: { write: (s: string) => { err += s; return true; } } }, () => now);
  return { code, out, err };
}

const active = {
  version: 1 as const, state: 'active' as const, phase: 'deploy', roleArn: 'arn:aws:iam::123456789012:role/D', sessionName: 'a+r',
  accessKeyId: 'ASIAEXAMPLE', secretAccessKey: 'secret', sessionToken: 'token', expiration: '2026-11-28T11:00:00.000Z',
};

t.test('prints the credential_process JSON, Expiration capped at the window end', async (t) => {
  const dir = await stateDir(t);
  const file = join(dir, 'session.json');
  await writeSessionFile(file, active);
  const r = await run(['--session-file', file]);
  t.equal(r.code, 0);
  t.equal(r.err, '');
  t.same(JSON.parse(r.out), { Version: 1, AccessKeyId: 'ASIAEXAMPLE', SecretAccessKey: 'secret', SessionToken: 'token', Expiration: '2026-11-28T11:00:00.000Z' });
  await writeSessionFile(file, { ...active, notAfter: '2026-11-28T10:30:00.000Z' });
  t.equal(JSON.parse((await run(['--session-file', file])).out).Expiration, '2026-11-28T10:30:00.000Z');
  const late = await run(['--session-file', file], Date.parse('2026-11-28T10:30:00Z'));
  t.same([late.code, late.out], [1, '']);
  t.match(late.err, /UPLINK_ERR_WINDOW_EXPIRED: the deploy approval window for arn:aws:iam::123456789012:role\/D closed at 2026-11-28T10:30:00.000Z/);
  const stale = await run(['--session-file', file.replace('session', 'x')]);
  t.match(stale.err, /session is over/);
  await writeSessionFile(file, active);
  const expired = await run(['--session-file', file], Date.parse('2026-11-28T11:00:00Z'));
  t.same([expired.code, expired.out], [1, '']);
  t.match(expired.err, /UPLINK_ERR_PHASE_SESSION_ENDED.*is the agent running/);
});

t.test('an ended session says why', async (t) => {
  const dir = await stateDir(t);
  const file = join(dir, 'session.json');
  await writeSessionFile(file, { version: 1, state: 'ended', phase: 'operate', code: 'UPLINK_ERR_PHASE_NOT_APPROVED', reason: 'Operate is not approved: OperateAccess=disabled', endedAt: '2026-11-28T09:00:00.000Z' });
  const r = await run(['--session-file', file]);
  t.equal(r.code, 1);
  t.equal(r.out, '');
  t.equal(r.err, 'uplink-agent credentials: UPLINK_ERR_PHASE_NOT_APPROVED: the operate session ended at 2026-11-28T09:00:00.000Z: Operate is not approved: OperateAccess=disabled\n');
});

t.test('refuses files it must not trust', async (t) => {
  const dir = await stateDir(t);
  const file = join(dir, 'session.json');
  await writeSessionFile(file, active);
  await chmod(file, 0o644);
  t.match((await run(['--session-file', file])).err, /accessible to other users \(mode 644\)/);
  await chmod(file, 0o600);
  const link = join(dir, 'link.json');
  await symlink(file, link);
  t.match((await run(['--session-file', link])).err, /not a regular file/);
  await mkdir(join(dir, 'd'));
  t.match((await run(['--session-file', join(dir, 'd')])).err, /not a regular file/);
  const big = join(dir, 'big.json');
  await writeFile(big, 'x'.repeat(70_000), { mode: 0o600 });
  t.match((await run(['--session-file', big])).err, /larger than 65536 bytes/);
  const bad = join(dir, 'bad.json');
  await writeFile(bad, '{"version":1', { mode: 0o600 });
  t.match((await run(['--session-file', bad])).err, /not valid JSON/);
  await writeFile(bad, JSON.stringify({ ...active, extra: true }), { mode: 0o600 });
  t.match((await run(['--session-file', bad])).err, /not a phase session file/);
  await writeFile(bad, JSON.stringify({ ...active, expiration: 'soon' }), { mode: 0o600 });
  t.match((await run(['--session-file', bad])).err, /no valid expiration/);
  for (const r of [await run(['--session-file', link]), await run(['--session-file', big])]) t.equal(r.out, '', 'nothing on stdout when refusing');
});

t.test('usage and help', async (t) => {
  t.equal((await run([])).code, 2);
  t.match((await run(['--bogus'])).err, /Unknown option/);
  t.equal((await run(['positional'])).code, 2);
  const help = await run(['--help']);
  t.equal(help.code, 0);
  t.match(help.out, /Usage: uplink-agent credentials --session-file FILE/);
});
