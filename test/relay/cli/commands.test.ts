/**
 * The vendor CLI binary (dist/) against an in-process relay: exit statuses and --json output
 * of the appliances and token commands, and errors as `error CODE: message` or JSON. Also
 * the relay binary refusing --insecure-http on a non-loopback address.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { ADMIN_TOKEN, startRelay, tempDir } from '../../helpers/cluster.js';
import { DIST } from '../../helpers/processes.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(bin: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    // Async on purpose: the relay under test runs in this process's event loop.
    execFile(process.execPath, [join(DIST, bin), ...args], { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
  });
}

t.test('uplink appliances / token commands', async (t) => {
  const relay = await startRelay(t);
  const cfgHome = tempDir(t);
  const env = (token: string) => ({ UPLINK_URL: relay.url, UPLINK_TOKEN: token, XDG_CONFIG_HOME: cfgHome });
  const cli = (args: string[], token = ADMIN_TOKEN) => run('relay/cli/main.js', args, env(token));

  const created = await cli(['appliance', 'create', 'cli-a', '--customer', 'acme', '--instance-id', 'i-cli', '--json']);
  t.equal(created.code, 0, created.stderr);
  const app = JSON.parse(created.stdout) as { appliance: { name: string }; enrollmentToken: string };
  t.equal(app.appliance.name, 'cli-a');
  t.match(app.enrollmentToken, /^uplenr\.apl_[0-9a-f]{16}\./);

  const list = await cli(['appliances', '--json']);
  t.equal(list.code, 0);
  t.same((JSON.parse(list.stdout) as { name: string; connected: boolean; enrolled: boolean }[]).map((a) => [a.name, a.connected, a.enrolled]), [['cli-a', false, false]]);
  const table = await cli(['appliances']);
  t.match(table.stdout, /^NAME\s+CUSTOMER\s+INSTANCE\s+STATE/);
  t.match(table.stdout, /\ncli-a\s+acme\s+i-cli\s+not enrolled/);

  const tok = await cli(['token', 'create', 'ci-reader', '--scope', 'read', '--json']);
  t.equal(tok.code, 0, tok.stderr);
  const reader = JSON.parse(tok.stdout) as { token: string; scopes: string[]; name: string };
  t.same([reader.name, reader.scopes], ['ci-reader', ['read']]);
  const tokens = await cli(['token', 'list', '--json']);
  t.same((JSON.parse(tokens.stdout) as { name: string }[]).map((x) => x.name), ['bootstrap-admin', 'ci-reader']);

  const forbidden = await cli(['appliance', 'create', 'cli-b', '--customer', 'acme', '--instance-id', 'i-b'], reader.token);
  t.equal(forbidden.code, 1);
  t.match(forbidden.stderr, /^error UPLINK_ERR_FORBIDDEN: /);
  const forbiddenJson = await cli(['appliance', 'create', 'cli-b', '--customer', 'acme', '--instance-id', 'i-b', '--json'], reader.token);
  t.equal(forbiddenJson.code, 1);
  t.equal((JSON.parse(forbiddenJson.stderr) as { error: { code: string } }).error.code, 'UPLINK_ERR_FORBIDDEN');

  const revoked = await cli(['token', 'revoke', 'ci-reader', '--json']);
  t.equal(revoked.code, 0);
  t.same(JSON.parse(revoked.stdout), { revoked: 'ci-reader' });
  const after = await cli(['appliances'], reader.token);
  t.equal(after.code, 1);
  t.match(after.stderr, /^error UPLINK_ERR_UNAUTHENTICATED: /);
  const all = await cli(['token', 'list', '--all', '--json']);
  t.same((JSON.parse(all.stdout) as { name: string; revokedAt: string | null }[]).map((x) => [x.name, x.revokedAt !== null]), [['bootstrap-admin', false], ['ci-reader', true]]);

  const missing = await cli(['appliance', 'revoke', 'no-such']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /^error UPLINK_ERR_NOT_FOUND: /);
  const usage = await cli(['token', 'revoke']);
  t.equal(usage.code, 2);
  t.match(usage.stderr, /UPLINK_ERR_USAGE/);
  const unreachable = await run('relay/cli/main.js', ['appliances'], { UPLINK_URL: 'http://127.0.0.1:1', UPLINK_TOKEN: ADMIN_TOKEN, XDG_CONFIG_HOME: cfgHome });
  t.equal(unreachable.code, 1);
  t.match(unreachable.stderr, /^error UPLINK_ERR_RELAY_UNREACHABLE: /);
});

t.test('uplink-relay refuses --insecure-http on a non-loopback address', async (t) => {
  const dir = tempDir(t);
  const r = await run('relay/main.js', ['serve', '--listen', '0.0.0.0:0', '--insecure-http', '--data-dir', join(dir, 'd')], { UPLINK_BOOTSTRAP_TOKEN: ADMIN_TOKEN });
  t.equal(r.code, 1);
  t.match(r.stderr, /error UPLINK_ERR_CONFIG_INVALID: .*--insecure-http-any/);
  const j = await run('relay/main.js', ['serve', '--listen', '0.0.0.0:0', '--insecure-http', '--data-dir', join(dir, 'd'), '--json'], { UPLINK_BOOTSTRAP_TOKEN: ADMIN_TOKEN });
  t.equal(j.code, 1);
  t.equal((JSON.parse(j.stderr.trim().split('\n').pop()!) as { error: { code: string } }).error.code, 'UPLINK_ERR_CONFIG_INVALID');
});
