/**
 * The phase roles end to end against moto: an in-process relay, the agent as a process from
 * dist/ in AWS mode (base credentials from the environment, roles created with tags through
 * the SDK), the vendor CLI and the customer's `uplink-agent grant|revoke` as processes.
 *
 * What it proves: every customer refusal reaches the engineer with its code (exit 255); a
 * grant lets the real `aws sts get-caller-identity` run as the Operate role under the
 * engineer's session name; the base credentials never reach the command; a revoke from
 * another process ends a running command; the relay lists the appliance in AWS mode.
 *
 * Needs `npx tsc -p tsconfig.json` first (it runs dist/).
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startE2eMoto } from '../helpers/moto.js';
import { adminClient, createAppliance, startRelay, tempDir, waitFor } from '../helpers/cluster.js';
import { ACCOUNT, createPhaseRoles, iso } from '../agent/phases/aws-fixture.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const AGENT_MAIN = join(ROOT, 'dist/agent/main.js');
const CLI_MAIN = join(ROOT, 'dist/relay/cli/main.js');
const ENGINEER = 'alice@vendor.example';
const HOUR = 3_600_000;

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], env: Record<string, string>, onStdout?: (all: string) => void): { child: ChildProcess; done: Promise<Ran> } {
  const child = spawn(process.execPath, [file, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
    onStdout?.(stdout);
  });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const done = new Promise<Ran>((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
  return { child, done };
}

/** A weekday name three days from now: a window on it is certainly not open now. */
function dayAfterTomorrowPlusOne(): string {
  return ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'][(new Date().getUTCDay() + 3) % 7]!;
}

t.test('phase roles through uplink exec against moto', async (t) => {
  const moto = await startE2eMoto(t, [AGENT_MAIN, CLI_MAIN]);
  if (!moto) return;

  const roles = await createPhaseRoles(t, moto, {}, { maintenanceWindows: [`${dayAfterTomorrowPlusOne()} 02:00-03:00 UTC`] });
  const relay = await startRelay(t, { config: { phases: { refreshIntervalSeconds: 300 } } });
  const admin = adminClient(t, relay);
  const enrolled = await createAppliance(admin, 'acme-aws');
  const { token } = await admin.call<{ token: string }>('POST', '/v1/tokens', { name: ENGINEER, scopes: ['operate', 'read'] });

  const dir = tempDir(t, 'uplink-e2e-');
  const stateDir = join(dir, 'state');
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const configFile = join(dir, 'agent.json');
  writeFileSync(configFile, JSON.stringify(roles.config));
  // The agent's base credentials (its "task role") are moto's test keys in the environment.
  const agentEnv = { PATH: process.env.PATH ?? '', HOME: dir, UPLINK_STATE_DIR: stateDir, UPLINK_CONFIG: configFile, UPLINK_LOG_LEVEL: 'warn', ...moto.env };
  const agent = run(AGENT_MAIN, ['run'], { ...agentEnv, UPLINK_RELAY_URL: relay.url, UPLINK_ENROLLMENT_TOKEN: enrolled.enrollmentToken });
  t.teardown(async () => {
    if (agent.child.exitCode === null) {
      agent.child.kill('SIGTERM');
      await agent.done;
    }
  });
  await waitFor(() => relay.gateway.get(enrolled.applianceId) !== undefined || agent.child.exitCode !== null, 60_000, 'agent connected');
  t.equal(agent.child.exitCode, null, 'the agent is running');

  const cliEnv = { PATH: process.env.PATH ?? '', HOME: dir, XDG_CONFIG_HOME: join(dir, 'xdg'), UPLINK_URL: relay.url, UPLINK_TOKEN: token };
  const uplink = (args: string[], onStdout?: (all: string) => void) => run(CLI_MAIN, args, cliEnv, onStdout);
  const exec = async (...cmd: string[]) => uplink(['exec', 'acme-aws', '--no-stdin', '--', ...cmd]).done;
  const refused = async (code: string, what: string) => {
    const r = await exec('true');
    t.equal(r.code, 255, `${what}: exit 255`);
    t.match(r.stderr, new RegExp(`^error ${code}: `, 'm'), `${what}: ${r.stderr.trim()}`);
  };

  await t.test('refusals carry the customer\'s reason', async (t) => {
    await refused('UPLINK_ERR_PHASE_NOT_APPROVED', 'no OperateAccess tag (closed)');
    await roles.tag('operate', { OperateAccess: 'disabled' });
    await refused('UPLINK_ERR_PHASE_NOT_APPROVED', 'OperateAccess=disabled');
    await roles.tag('operate', { OperateAccess: 'enabled', OperateAccessUntil: iso(Date.now() - HOUR) });
    await refused('UPLINK_ERR_WINDOW_EXPIRED', 'OperateAccessUntil in the past');
    await roles.tag('operate', { OperateAccess: 'scheduled', OperateAccessUntil: iso(Date.now() + HOUR) });
    await refused('UPLINK_ERR_OUTSIDE_MAINTENANCE_WINDOW', 'scheduled, outside the window');
    await roles.untag('operate', ['OperateAccess', 'OperateAccessUntil']);
    t.end();
  });

  await t.test('after a grant the command runs as the Operate role under the engineer\'s name, without the base credentials', async (t) => {
    const grant = await run(AGENT_MAIN, ['grant', 'operate', '--for', '1h', '--reason', 'e2e'], agentEnv).done;
    t.equal(grant.code, 0, grant.stderr);
    // Two requests at once (each its own phase session): the machine may be slow.
    const [r, envOut] = await Promise.all([exec('aws', 'sts', 'get-caller-identity', '--output', 'json'), exec('env')]);
    t.equal(r.code, 0, r.stderr);
    t.notMatch(r.stderr, /phases: local mode/, 'AWS mode is not announced as local');
    const id = JSON.parse(r.stdout) as { Account: string; Arn: string };
    t.equal(id.Account, ACCOUNT);
    t.match(id.Arn, new RegExp(`^arn:aws:sts::${ACCOUNT}:assumed-role/${roles.names.operate}/alice@vendor\\.example\\+`));

    t.equal(envOut.code, 0, envOut.stderr);
    t.notMatch(envOut.stdout, /^AWS_ACCESS_KEY_ID=/m, 'no base access key');
    t.notMatch(envOut.stdout, /^AWS_SECRET_ACCESS_KEY=/m, 'no base secret');
    t.notMatch(envOut.stdout, /testing/, 'the base key value appears nowhere');
    t.match(envOut.stdout, /^AWS_CONFIG_FILE=/m, 'the command gets the session config instead');

    // The relay lists the appliance's phases in AWS mode (the grant woke its poll).
    type Row = { name: string; phases: { mode: string; summary: string } | null };
    let row: Row | undefined;
    await waitFor(async () => {
      const { appliances } = await admin.call<{ appliances: Row[] }>('GET', '/v1/appliances');
      row = appliances.find((a) => a.name === 'acme-aws');
      return row?.phases?.summary.includes('operate: open until') === true;
    }, 30_000, 'operate open in the appliance list');
    t.equal(row!.phases!.mode, 'aws');
    t.match(row!.phases!.summary, /^install: open; steadyState: open; deploy: closed \(not approved\); operate: open until (\d{4}-\d{2}-\d{2} )?\d{2}:\d{2}Z$/);
    t.end();
  });

  await t.test('a revoke from another process ends a running command and refuses the next', async (t) => {
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const long = uplink(['exec', 'acme-aws', '--no-stdin', '--', 'sh', '-c', 'echo started; exec sleep 30'], (out) => {
      if (out.includes('started\n')) started();
    });
    await Promise.race([running, long.done]);
    const revoke = await run(AGENT_MAIN, ['revoke', 'operate'], agentEnv).done;
    t.equal(revoke.code, 0, revoke.stderr);
    const r = await long.done;
    t.equal(r.code, 143, `ended by SIGTERM (stderr: ${r.stderr.trim()})`);
    await refused('UPLINK_ERR_PHASE_NOT_APPROVED', 'after revoke');
    t.end();
  });
});
