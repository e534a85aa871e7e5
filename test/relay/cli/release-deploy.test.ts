/**
 * The release and deploy commands of the vendor CLI binary (dist/) against an in-process
 * relay and agent: exact exit statuses, error codes and --json output of `release keygen`,
 * `release create`, `releases`, `deploy` (with --follow on success and failure),
 * `deployments`, `deploy logs` and `deploy cancel`, and --help on each.
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ADMIN_TOKEN, adminClient, createAppliance, startAgent, startRelay, tempDir, waitFor } from '../../helpers/cluster.js';
import { STACKS, readLog, waitEnded, waitStatus } from '../../helpers/deployments.js';
import { DIST } from '../../helpers/processes.js';
import { requireTools } from '../../helpers/tools.js';
import type { Relay } from '../../../relay/server.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    // Async on purpose: the relay under test runs in this process's event loop.
    execFile(process.execPath, [join(DIST, 'relay/cli/main.js'), ...args], { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
  });
}

function cliFor(t: Test, relay: Relay | null) {
  const cfgHome = tempDir(t);
  return (args: string[]) => run(args, { UPLINK_URL: relay?.url ?? 'http://127.0.0.1:1', UPLINK_TOKEN: ADMIN_TOKEN, XDG_CONFIG_HOME: cfgHome });
}

/** `error CODE: …` on stderr with the exit status; the one-line JSON form with --json. */
function refused(t: Test, r: Run, exit: number, code: string, json = false): void {
  t.equal(r.code, exit, `exit ${exit}: ${r.stderr.trim()}`);
  if (json) t.equal((JSON.parse(r.stderr) as { error: { code: string } }).error.code, code);
  else t.match(r.stderr, new RegExp(`^error ${code}: `));
  t.equal(r.stdout, '', 'nothing on stdout');
}

t.test('release keygen: mode 0600, public key and id printed, --json, refusals', async (t) => {
  const dir = tempDir(t);
  const cli = cliFor(t, null); // keygen never talks to a relay
  const out = join(dir, 'release.key');
  const made = await cli(['release', 'keygen', '--out', out]);
  t.equal(made.code, 0, made.stderr);
  t.equal(statSync(out).mode & 0o777, 0o600, 'the key file is 0600');
  const file = JSON.parse(readFileSync(out, 'utf8')) as { keyId: string; publicKey: string; secretKey: string };
  t.equal(made.stdout, `Wrote release key ${file.keyId} to ${out} (keep it secret).\nCustomers pin it in the agent's releaseKeys:\n${JSON.stringify({ id: file.keyId, publicKey: file.publicKey })}\n`);
  t.notOk(made.stdout.includes(file.secretKey), 'the secret key is not printed');

  const jsonOut = join(dir, 'json.key');
  const asJson = await cli(['release', 'keygen', '--out', jsonOut, '--json']);
  t.equal(asJson.code, 0, asJson.stderr);
  const jsonFile = JSON.parse(readFileSync(jsonOut, 'utf8')) as { keyId: string; publicKey: string };
  t.equal(asJson.stdout, `${JSON.stringify({ id: jsonFile.keyId, publicKey: jsonFile.publicKey })}\n`, 'one JSON line: {id, publicKey}');
  t.equal(statSync(jsonOut).mode & 0o777, 0o600);
  t.not(jsonFile.keyId, file.keyId, 'a new key each time');

  const before = readFileSync(out, 'utf8');
  refused(t, await cli(['release', 'keygen', '--out', out]), 1, 'UPLINK_ERR_CONFLICT');
  t.equal(readFileSync(out, 'utf8'), before, 'an existing key is never overwritten');
  refused(t, await cli(['release', 'keygen', '--out', out, '--json']), 1, 'UPLINK_ERR_CONFLICT', true);
  refused(t, await cli(['release', 'keygen']), 2, 'UPLINK_ERR_USAGE');
  refused(t, await cli(['release', 'keygen', join(dir, 'positional.key')]), 2, 'UPLINK_ERR_USAGE');
  refused(t, await cli(['release', 'keygen', '--out', join(dir, 'no-such-dir', 'k')]), 1, 'UPLINK_ERR_RELEASE_KEY_INVALID');
});

t.test('release create and releases', async (t) => {
  const relay = await startRelay(t);
  const cli = cliFor(t, relay);
  const dir = tempDir(t);
  const key = join(dir, 'release.key');
  t.equal((await cli(['release', 'keygen', '--out', key])).code, 0);
  const keyId = (JSON.parse(readFileSync(key, 'utf8')) as { keyId: string }).keyId;

  const one = await cli(['release', 'create', `${STACKS}basic`, '--version', '1.0.0', '--appliance', 'acme-prod', '--key', key]);
  t.equal(one.code, 0, one.stderr);
  t.match(one.stdout, new RegExp(`^Uploaded release 1\\.0\\.0 for acme-prod \\(\\d+ bytes, 1 files, key ${keyId}\\): rel_[0-9a-f]{16}\\n$`));
  const all = await cli(['release', 'create', `${STACKS}basic`, '--version', '1.1.0', '--all', '--key', key, '--notes', 'for everyone', '--json']);
  t.equal(all.code, 0, all.stderr);
  const allView = JSON.parse(all.stdout) as Record<string, unknown>;
  t.match(allView, { version: '1.1.0', appliance: '*', keyId, notes: 'for everyone', createdBy: 'bootstrap-admin' });
  t.match(allView.id, /^rel_[0-9a-f]{16}$/);

  // Refusals: usage errors exit 2 before anything is read or sent; the rest exit 1.
  const base = ['release', 'create', `${STACKS}basic`];
  refused(t, await cli([...base, '--appliance', 'acme-prod', '--key', key]), 2, 'UPLINK_ERR_USAGE');
  t.match((await cli([...base, '--appliance', 'acme-prod', '--key', key])).stderr, /needs --version/);
  refused(t, await cli([...base, '--version', '2.0.0', '--appliance', 'acme-prod']), 2, 'UPLINK_ERR_USAGE');
  const both = await cli([...base, '--version', '2.0.0', '--appliance', 'acme-prod', '--all', '--key', key]);
  refused(t, both, 2, 'UPLINK_ERR_USAGE');
  t.match(both.stderr, /give exactly one of --appliance NAME or --all/);
  refused(t, await cli([...base, '--version', '2.0.0', '--key', key]), 2, 'UPLINK_ERR_USAGE');
  refused(t, await cli(['release', 'create', '--version', '2.0.0', '--all', '--key', key]), 2, 'UPLINK_ERR_USAGE');
  refused(t, await cli([...base, `${STACKS}slow`, '--version', '2.0.0', '--all', '--key', key]), 2, 'UPLINK_ERR_USAGE');
  refused(t, await cli([...base, '--version', '2.0.0', '--all', '--key', key, '--bogus']), 2, 'UPLINK_ERR_USAGE');
  const missingKey = await cli([...base, '--version', '2.0.0', '--all', '--key', join(dir, 'absent.key')]);
  refused(t, missingKey, 1, 'UPLINK_ERR_RELEASE_KEY_INVALID');
  t.match(missingKey.stderr, /cannot read key file/);
  refused(t, await cli([...base, '--version', '2.0.0', '--all', '--key', join(dir, 'absent.key'), '--json']), 1, 'UPLINK_ERR_RELEASE_KEY_INVALID', true);
  chmodSync(key, 0o644);
  const open = await cli([...base, '--version', '2.0.0', '--all', '--key', key]);
  refused(t, open, 1, 'UPLINK_ERR_RELEASE_KEY_INVALID');
  t.match(open.stderr, /permissions 0644 are too open; run chmod 600/);
  chmodSync(key, 0o600);
  refused(t, await cli([...base, '--version', '1.0.0', '--appliance', 'acme-prod', '--key', key]), 1, 'UPLINK_ERR_CONFLICT');
  refused(t, await cli([...base, '--version', 'not a version', '--all', '--key', key]), 2, 'UPLINK_ERR_USAGE');

  const listed = await cli(['releases', '--json']);
  t.equal(listed.code, 0, listed.stderr);
  const releases = JSON.parse(listed.stdout) as Array<{ version: string; appliance: string; notes: string | null; keyId: string; size: number }>;
  t.same(releases.map((r) => [r.version, r.appliance, r.notes, r.keyId]), [['1.0.0', 'acme-prod', null, keyId], ['1.1.0', '*', 'for everyone', keyId]], 'only the two uploads, in order');
  t.ok(releases.every((r) => r.size > 0));
  const table = await cli(['releases']);
  t.equal(table.code, 0);
  t.match(table.stdout, /^VERSION\s+APPLIANCE\s+SIZE\s+KEY\s+CREATED\s+BY\n1\.0\.0\s+acme-prod\s+\d+\s+\S+\s+.+bootstrap-admin\n1\.1\.0\s+\*\s+/);
  refused(t, await cli(['releases', 'extra']), 2, 'UPLINK_ERR_USAGE');
});

t.test('deploy, deployments, deploy logs, deploy cancel', requireTools(['terraform']), async (t) => {
  const relay = await startRelay(t);
  const cli = cliFor(t, relay);
  const client = adminClient(t, relay);
  const dir = tempDir(t);
  const key = join(dir, 'release.key');
  const pinned = JSON.parse((await cli(['release', 'keygen', '--out', key, '--json'])).stdout) as { id: string; publicKey: string };
  const app = await createAppliance(client, 'acme-prod');
  await startAgent(t, relay, app, { local: { deploy: 'enabled' }, releaseKeys: [pinned] });
  const upload = async (stack: string, version: string) => t.equal((await cli(['release', 'create', `${STACKS}${stack}`, '--version', version, '--appliance', 'acme-prod', '--key', key])).code, 0, `upload ${version}`);
  await upload('basic', '1.0.0');
  await upload('failing', '2.0.0');
  await upload('slow', '3.0.0');
  await upload('long-apply', '4.0.0');

  // --follow: the output streams, the exit status is the outcome.
  const ok = await cli(['deploy', 'acme-prod', '1.0.0', '--follow']);
  t.equal(ok.code, 0, ok.stderr);
  const okId = /^deployment (dep_[0-9a-f]{16}) queued: apply 1\.0\.0 on acme-prod\n/.exec(ok.stderr)?.[1] ?? '';
  t.ok(okId, 'the queued line names the deployment');
  t.match(ok.stdout, /Apply complete! Resources: 1 added, 0 changed, 0 destroyed\./);
  t.equal(ok.stdout, await readLog(relay.url, ADMIN_TOKEN, okId), 'stdout is exactly the log');
  t.match(ok.stderr, new RegExp(`\\ndeployment ${okId} succeeded\\n$`));

  const bad = await cli(['deploy', 'acme-prod', '2.0.0', '--follow']);
  t.equal(bad.code, 1, 'a failed deployment exits 1');
  const badId = /^deployment (dep_[0-9a-f]{16}) queued/.exec(bad.stderr)?.[1] ?? '';
  t.match(bad.stdout, /provisioning failed/);
  t.match(bad.stderr, new RegExp(`\\ndeployment ${badId} failed: UPLINK_ERR_DEPLOY_FAILED: terraform apply exited with 1\\n$`));

  const plan = await cli(['deploy', 'acme-prod', '1.0.0', '--plan', '--json']);
  t.equal(plan.code, 0, plan.stderr);
  const planned = JSON.parse(plan.stdout) as { id: string; action: string; status: string; appliance: string; version: string };
  t.match(planned, { action: 'plan', status: 'queued', appliance: 'acme-prod', version: '1.0.0' });
  t.equal((await waitEnded(client, planned.id)).status, 'succeeded');

  // Logs of an ended deployment: without --follow exit 0 whatever the outcome; with it, the outcome.
  const logs = await cli(['deploy', 'logs', badId]);
  t.equal(logs.code, 0);
  t.equal(logs.stdout, await readLog(relay.url, ADMIN_TOKEN, badId));
  t.equal(logs.stderr, '');
  const logsFollow = await cli(['deploy', 'logs', badId, '--follow']);
  t.equal(logsFollow.code, 1);
  t.equal(logsFollow.stdout, logs.stdout);
  t.match(logsFollow.stderr, new RegExp(`^deployment ${badId} failed: UPLINK_ERR_DEPLOY_FAILED`));
  t.equal((await cli(['deploy', 'logs', okId, '--follow'])).code, 0);

  // Cancel: a running apply.
  const slow = await cli(['deploy', 'acme-prod', '3.0.0', '--json']);
  t.equal(slow.code, 0, slow.stderr);
  const slowId = (JSON.parse(slow.stdout) as { id: string }).id;
  await waitStatus(client, slowId, 'running');
  await waitFor(async () => /terraform_data\.slow: Creating/.test(await readLog(relay.url, ADMIN_TOKEN, slowId)), 60_000, 'apply under way');
  const following = cli(['deploy', 'logs', slowId, '--follow']);
  const cancel = await cli(['deploy', 'cancel', slowId]);
  t.equal(cancel.code, 0, cancel.stderr);
  t.equal(cancel.stdout, `deployment ${slowId}: cancelling\n`);
  const followed = await following;
  t.equal(followed.code, 1, 'following a cancelled deployment exits 1');
  t.match(followed.stderr, new RegExp(`deployment ${slowId} cancelled: UPLINK_ERR_DEPLOY_CANCELLED: `));
  t.equal((await waitEnded(client, slowId)).status, 'cancelled');
  refused(t, await cli(['deploy', 'cancel', slowId]), 1, 'UPLINK_ERR_CONFLICT');
  refused(t, await cli(['deploy', 'cancel', slowId, '--json']), 1, 'UPLINK_ERR_CONFLICT', true);
  refused(t, await cli(['deploy', 'cancel', 'dep_0000000000000000']), 1, 'UPLINK_ERR_NOT_FOUND');

  // Cancel: a queued one ends at once (--json shows it). The blocker's apply takes 15 s, so it
  // is still running after the two CLI calls below even on a loaded machine (5 s was not).
  const blocker = await cli(['deploy', 'acme-prod', '4.0.0', '--json']);
  const blockerId = (JSON.parse(blocker.stdout) as { id: string }).id;
  const queued = JSON.parse((await cli(['deploy', 'acme-prod', '1.0.0', '--json'])).stdout) as { id: string };
  await waitStatus(client, blockerId, 'running');
  const cancelQueued = await cli(['deploy', 'cancel', queued.id, '--json']);
  t.equal(cancelQueued.code, 0, cancelQueued.stderr);
  t.match(JSON.parse(cancelQueued.stdout), { id: queued.id, status: 'cancelled' });
  t.equal((await cli(['deploy', 'cancel', blockerId])).code, 0);
  await waitEnded(client, blockerId);

  const listed = await cli(['deployments', 'acme-prod', '--json']);
  t.equal(listed.code, 0, listed.stderr);
  const deployments = JSON.parse(listed.stdout) as Array<{ id: string; version: string; action: string; status: string; error: { code: string } | null }>;
  t.same(
    deployments.map((d) => [d.version, d.action, d.status, d.error?.code ?? null]),
    [
      ['1.0.0', 'apply', 'succeeded', null],
      ['2.0.0', 'apply', 'failed', 'UPLINK_ERR_DEPLOY_FAILED'],
      ['1.0.0', 'plan', 'succeeded', null],
      ['3.0.0', 'apply', 'cancelled', 'UPLINK_ERR_DEPLOY_CANCELLED'],
      ['4.0.0', 'apply', 'cancelled', 'UPLINK_ERR_DEPLOY_CANCELLED'],
      ['1.0.0', 'apply', 'cancelled', 'UPLINK_ERR_DEPLOY_CANCELLED'],
    ],
  );
  t.same(deployments.map((d) => d.id).slice(0, 2), [okId, badId]);
  const table = await cli(['deployments', 'acme-prod']);
  t.match(table.stdout, new RegExp(`^ID\\s+VERSION\\s+ACTION\\s+STATUS\\s+CREATED\\s+BY\\s+ERROR\\n${okId}\\s+1\\.0\\.0\\s+apply\\s+succeeded\\s+`));

  // Refusals.
  refused(t, await cli(['deploy', 'acme-prod']), 2, 'UPLINK_ERR_USAGE');
  refused(t, await cli(['deploy', 'acme-prod', '1.0.0', '--plan', '--destroy']), 2, 'UPLINK_ERR_USAGE');
  refused(t, await cli(['deploy', 'acme-prod', '9.9.9']), 1, 'UPLINK_ERR_NOT_FOUND');
  refused(t, await cli(['deploy', 'no-such', '1.0.0', '--json']), 1, 'UPLINK_ERR_NOT_FOUND', true);
  refused(t, await cli(['deployments']), 2, 'UPLINK_ERR_USAGE');
  refused(t, await cli(['deployments', 'no-such']), 1, 'UPLINK_ERR_NOT_FOUND');
  refused(t, await cli(['deploy', 'logs']), 2, 'UPLINK_ERR_USAGE');
  refused(t, await cli(['deploy', 'logs', 'dep_0000000000000000']), 1, 'UPLINK_ERR_NOT_FOUND');
  refused(t, await cli(['deploy', 'cancel']), 2, 'UPLINK_ERR_USAGE');
});

t.test('--help on each release and deploy command', async (t) => {
  const cli = cliFor(t, null);
  const commands: Array<[string[], string]> = [
    [['release', 'keygen'], 'Usage: uplink release keygen --out FILE [--json]'],
    [['release', 'create'], 'Usage: uplink release create DIR --version V (--appliance NAME | --all) --key FILE [--notes TEXT]'],
    [['releases'], 'Usage: uplink releases [--json]'],
    [['deploy'], 'Usage: uplink deploy APPLIANCE VERSION [--plan | --destroy] [--allow-downgrade] [--follow] [--json]'],
    [['deployments'], 'Usage: uplink deployments APPLIANCE [--json]'],
    [['deploy', 'logs'], 'Usage: uplink deploy logs ID [--follow]'],
    [['deploy', 'cancel'], 'Usage: uplink deploy cancel ID [--json]'],
  ];
  for (const [words, usage] of commands) {
    const r = await cli([...words, '--help']);
    t.equal(r.code, 0, `${words.join(' ')} --help exits 0`);
    t.ok(r.stdout.split('\n')[2]?.startsWith(usage), `${words.join(' ')} --help prints its usage`);
    t.equal(r.stderr, '');
  }
  const group = await cli(['release']);
  refused(t, group, 2, 'UPLINK_ERR_USAGE');
  t.match(group.stderr, /"release" needs a subcommand: keygen, create/);
});
