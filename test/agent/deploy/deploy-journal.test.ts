import t, { type Test } from 'tap';
import { mkdtemp, readFile, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeployJournal } from '../../../agent/deploy/deploy-journal.js';

async function stateDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'uplink-journal-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const start = { deploymentId: 'dep-1', action: 'apply' as const, workDir: '/w/release-1', stateMode: 'local' as const };

t.test('begin/update/finish: the file exists exactly while a deployment runs', async (t) => {
  const dir = await stateDir(t);
  const j = new DeployJournal(dir);
  const entry = await j.begin(start);
  t.match(entry, { format: 1, deploymentId: 'dep-1', phase: 'starting', agentPid: process.pid, toolPid: null });
  await j.update({ phase: 'apply', toolPid: 4242 });
  t.match(JSON.parse(await readFile(j.currentPath, 'utf8')), { deploymentId: 'dep-1', phase: 'apply', toolPid: 4242 });
  t.same((await readdir(j.dir)).filter((n) => n.endsWith('.tmp')), [], 'no temp files left behind');
  await j.finish();
  t.same(await readdir(j.dir), [], 'removed at the end');
  t.same(await new DeployJournal(dir).recoverInterrupted(), [], 'a clean finish is not interrupted');
});

t.test('a journal left behind (kill -9) is reported as interrupted until acknowledged', async (t) => {
  const dir = await stateDir(t);
  const crashed = new DeployJournal(dir);
  await crashed.begin(start);
  await crashed.update({ phase: 'apply', toolPid: 999999 });
  // The process "dies" here: a new agent starts on the same state directory.
  const restarted = new DeployJournal(dir);
  const found = await restarted.recoverInterrupted();
  t.same(found.map((e) => [e.deploymentId, e.phase, e.toolPid]), [['dep-1', 'apply', 999999]]);
  t.same(await readdir(restarted.dir), ['interrupted'], 'current.json moved aside');
  t.same((await restarted.recoverInterrupted()).map((e) => e.deploymentId), ['dep-1'], 'reported again after another restart (at-least-once)');
  await restarted.begin({ ...start, deploymentId: 'dep-2' });
  await restarted.finish();
  await restarted.acknowledge('dep-1');
  t.same(await restarted.recoverInterrupted(), [], 'acknowledged: no longer reported');
});

t.test('one deployment at a time; ids must be file-name safe', async (t) => {
  const dir = await stateDir(t);
  const j = new DeployJournal(dir);
  await t.rejects(j.begin({ ...start, deploymentId: '../../etc/x' }), { code: 'UPLINK_ERR_BAD_REQUEST' });
  await j.begin(start);
  await t.rejects(j.begin({ ...start, deploymentId: 'dep-2' }), { code: 'UPLINK_ERR_DEPLOY_BUSY' });
  await t.rejects(new DeployJournal(dir).begin({ ...start, deploymentId: 'dep-3' }), { code: 'UPLINK_ERR_DEPLOY_BUSY' }, 'another instance sees the file');
  await t.rejects(j.recoverInterrupted(), { code: 'UPLINK_ERR_DEPLOY_BUSY' }, 'no recovery over a live run');
  await j.finish();
});

t.test('an unreadable journal is set aside, never blocks, never invents an id', async (t) => {
  const dir = await stateDir(t);
  await mkdir(join(dir, 'deploy'));
  await writeFile(join(dir, 'deploy', 'current.json'), '{"format":1,"deploymentId":');
  const j = new DeployJournal(dir);
  t.same(await j.recoverInterrupted(), []);
  const names = await readdir(j.dir);
  t.equal(names.length, 1);
  t.match(names[0], /^current\.json\.corrupt-\d+$/);
  await j.begin(start);
  await j.finish();
});
