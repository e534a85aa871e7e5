/**
 * The agent process is killed (SIGKILL) mid-apply and restarted on the same state dir: the
 * relay records the deployment as `interrupted` (never succeeded), the deployment's own log
 * says what the agent found and did, and the next deployment succeeds. Two ways to die:
 * only the agent (its terraform lives on as an orphan), and the agent together with its
 * terraform (a container or cgroup kill), which leaves terraform's local lock info behind.
 */
import t, { type Test } from 'tap';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { ADMIN_TOKEN, adminClient, createAppliance, startRelay, waitFor, type Enrolled } from '../../helpers/cluster.js';
import { startAgentProcess, type Proc } from '../../helpers/processes.js';
import { requireTools } from '../../helpers/tools.js';
import { deploy, deployAgentExtras, getDeployment, newKey, readLog, uploadRelease, waitEnded, waitStatus } from '../../helpers/deployments.js';
import type { Relay } from '../../../relay/server.js';

const LOCK_INFO = ['deploy', 'state', '.terraform.tfstate.lock.info'];

interface Journal {
  deploymentId: string;
  phase: string;
  toolPid: number | null;
  workDir: string;
}

function journal(stateDir: string): Journal | null {
  try {
    return JSON.parse(readFileSync(join(stateDir, 'deploy', 'current.json'), 'utf8')) as Journal;
  } catch {
    return null;
  }
}

/** Whether `pid` is a live (not zombie) process working in `dir` (a unique extraction directory). */
function runsIn(pid: number, dir: string): boolean {
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
    return state !== 'Z' && readlinkSync(`/proc/${pid}/cwd`) === dir;
  } catch {
    return false;
  }
}

async function killed(p: Proc): Promise<void> {
  const exited = new Promise<NodeJS.Signals | null>((resolve) => p.child.once('exit', (_code, sig) => resolve(sig)));
  p.child.kill('SIGKILL');
  if ((await exited) !== 'SIGKILL') throw new Error('the agent did not die of SIGKILL');
}

/** Start a `long-apply` release and wait until terraform is inside the apply's local-exec; returns the journal entry. */
async function applyUnderWay(relay: Relay, client: ReturnType<typeof adminClient>, stateDir: string, version: string): Promise<{ id: string; entry: Journal }> {
  const d = await deploy(client, 'acme-prod', version);
  await waitStatus(client, d.id, 'running');
  await waitFor(async () => /terraform_data\.slow \(local-exec\): Executing/.test(await readLog(relay.url, ADMIN_TOKEN, d.id)), 60_000, 'apply under way');
  const entry = journal(stateDir);
  if (!entry || entry.deploymentId !== d.id || entry.phase !== 'apply' || !entry.toolPid) throw new Error(`journal does not show the apply: ${JSON.stringify(entry)}`);
  return { id: d.id, entry };
}

async function restart(t: Test, relay: Relay, app: Enrolled, stateDir: string, config: Record<string, unknown>): Promise<ReturnType<typeof startAgentProcess>> {
  await waitFor(() => relay.gateway.get(app.applianceId) === undefined, 10_000, 'the relay saw the agent go');
  const agent = startAgentProcess(t, relay.url, app.enrollmentToken, config, { stateDir });
  await waitFor(() => relay.gateway.get(app.applianceId) !== undefined, 60_000, 'the restarted agent connected');
  return agent;
}

t.test('agent kill -9 during apply, then a clean next deploy', requireTools(['terraform']), async (t) => {
  const top = t; // agents restarted in a subtest must outlive it
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const key = newKey();
  const app = await createAppliance(client, 'acme-prod');
  const config = { ...deployAgentExtras([key]), reconnect: { initialDelayMs: 50, maxDelayMs: 200 } };
  let agent = startAgentProcess(t, relay.url, app.enrollmentToken, config);
  const stateDir = agent.stateDir;
  await waitFor(() => relay.gateway.get(app.applianceId) !== undefined, 60_000, 'agent connected');
  await uploadRelease(client, key, 'long-apply', '1.0.0', 'acme-prod');
  await uploadRelease(client, key, 'basic', '2.0.0', 'acme-prod');
  await uploadRelease(client, key, 'long-apply', '3.0.0', 'acme-prod');
  await uploadRelease(client, key, 'basic', '4.0.0', 'acme-prod');

  await t.test('only the agent dies: its terraform is an orphan', async (t) => {
    const { id, entry } = await applyUnderWay(relay, client, stateDir, '1.0.0');
    await killed(agent);
    t.equal((await getDeployment(client, id)).status, 'running', 'the relay cannot know yet: the agent may come back');
    agent = await restart(top, relay, app, stateDir, config);
    const ended = await waitEnded(client, id, 90_000);
    t.equal(ended.status, 'interrupted', 'interrupted, never succeeded');
    t.equal(ended.error?.code, 'UPLINK_ERR_DEPLOY_INTERRUPTED');
    t.equal(ended.outputs, null);
    const log = await readLog(relay.url, ADMIN_TOKEN, id);
    t.match(log, /\n\[uplink-agent\] the agent stopped during terraform apply \(started [^)]+\); this deployment is interrupted, never succeeded\n/, 'the log says what happened');
    t.notMatch(log, /Apply complete!/);
    t.equal(log, readFileSync(join(stateDir, 'deploy', id, 'log'), 'utf8'), 'the relay holds the agent log, recovery lines included');
    t.ok(log.includes(`[uplink-agent] its terraform process (pid ${entry.toolPid}, step apply) was still running and has been stopped: SIGINT, then SIGKILL to its process group\n`), 'the orphan was found and stopped');
    t.notOk(runsIn(entry.toolPid!, entry.workDir), 'no terraform of the interrupted deployment runs any more');
    t.equal(journal(stateDir), null, 'journal cleared');
    t.notOk(existsSync(join(stateDir, ...LOCK_INFO)), 'no lock info left');
    t.match(agent.stderr(), /deployment was interrupted by an agent stop/);

    const next = await deploy(client, 'acme-prod', '2.0.0');
    const done = await waitEnded(client, next.id, 90_000);
    t.equal(done.status, 'succeeded', 'the next deployment works');
    t.same(done.outputs?.marker, { value: 'hello-i-acme-prod', type: 'string', sensitive: false });
  });

  await t.test('the agent and its terraform die together: a stale lock is removed and explained', async (t) => {
    const { id, entry } = await applyUnderWay(relay, client, stateDir, '3.0.0');
    const lockInfo = join(stateDir, ...LOCK_INFO);
    t.ok(existsSync(lockInfo), 'terraform holds the state lock during apply');
    const lockId = (JSON.parse(readFileSync(lockInfo, 'utf8')) as { ID: string }).ID;
    await killed(agent);
    process.kill(-entry.toolPid!, 'SIGKILL'); // terraform's own process group, as a cgroup kill would
    await waitFor(() => !runsIn(entry.toolPid!, entry.workDir), 10_000, 'terraform gone');
    t.ok(existsSync(lockInfo), 'the killed terraform left its lock info behind');

    agent = await restart(top, relay, app, stateDir, config);
    const ended = await waitEnded(client, id, 90_000);
    t.equal(ended.status, 'interrupted', 'interrupted, never succeeded');
    t.equal(ended.error?.code, 'UPLINK_ERR_DEPLOY_INTERRUPTED');
    const log = await readLog(relay.url, ADMIN_TOKEN, id);
    t.match(log, /\[uplink-agent\] the agent stopped during terraform apply/);
    t.ok(log.includes(`[uplink-agent] removed the stale state lock ${lockId} (${lockInfo}) it left: `), 'the deployment log names the lock it removed and why');
    t.notMatch(log, /was still running and has been stopped/, 'there was no orphan to stop');
    t.notOk(existsSync(lockInfo), 'the stale lock info is gone');
    await waitFor(() => /removed a stale state lock/.test(agent.stderr()), 5000, 'agent log line');
    t.match(agent.stderr(), new RegExp(`"lock":\\{[^}]*"ID":"${lockId}"`), "the agent's own log shows the removed lock");

    const next = await deploy(client, 'acme-prod', '4.0.0');
    const done = await waitEnded(client, next.id, 90_000);
    t.equal(done.status, 'succeeded', 'the next deployment works');
    t.notMatch(await readLog(relay.url, ADMIN_TOKEN, next.id), /Error acquiring the state lock/);
  });

  const { deployments } = await client.call<{ deployments: { version: string; status: string }[] }>('GET', '/v1/appliances/acme-prod/deployments');
  t.same(deployments.map((d) => [d.version, d.status]), [['1.0.0', 'interrupted'], ['2.0.0', 'succeeded'], ['3.0.0', 'interrupted'], ['4.0.0', 'succeeded']]);
});
