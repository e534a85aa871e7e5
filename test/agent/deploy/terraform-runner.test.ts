import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { cp, mkdtemp, readFile, readdir, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Writable } from 'node:stream';
import { TerraformRunner, LOCAL_BACKEND_FILE, type OutputChunk, type TerraformRunnerOptions } from '../../../agent/deploy/terraform-runner.js';
import { DeployJournal } from '../../../agent/deploy/deploy-journal.js';
import { extractRelease } from '../../../agent/deploy/extract.js';
import { verifyRelease } from '../../../agent/deploy/verify-release.js';
import { createRelease } from '../../../shared/release/create-release.js';
import { generateReleaseKey, parseReleaseKey, pinnedKeyOf } from '../../../shared/release/release-key.js';
import { createLogger } from '../../../shared/logger.js';
import { needTools } from '../../helpers/tools.js';
import { tsLoaderArgs } from '../../helpers/ts-loader.js';

const STACKS = fileURLToPath(new URL('../../fixtures/stacks/', import.meta.url));
const CHILD = fileURLToPath(new URL('../../fixtures/deploy-child.ts', import.meta.url));
const key = parseReleaseKey(generateReleaseKey());
const creds = { accessKeyId: 'AKIAEXAMPLE', secretAccessKey: 'secret-example', sessionToken: 'session-example', region: 'eu-west-1' };

let shared = '';
t.before(async () => {
  shared = await mkdtemp(join(tmpdir(), 'uplink-tf-shared-'));
  await mkdir(join(shared, 'plugins'));
  await mkdir(join(shared, 'home'));
});
t.teardown(() => rm(shared, { recursive: true, force: true }));

async function tmp(t: Test, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The real path a stack takes: signed release -> verified -> extracted into a fresh work dir. */
async function prepare(t: Test, stack: string, parent: string): Promise<string> {
  const release = await createRelease(join(STACKS, stack), { version: '1.0.0', appliance: 'acme', key });
  const verified = verifyRelease({ manifest: JSON.parse(JSON.stringify(release.manifest)), signature: release.signature, archive: release.archive }, { pinnedKeys: [pinnedKeyOf(key.key)], appliance: 'acme', lastApplied: null });
  const out = await extractRelease(verified.archive, verified.manifest, { parentDir: parent });
  t.ok(out.dir.startsWith(parent));
  return out.dir;
}

function runner(stateDir: string, over: Partial<TerraformRunnerOptions> = {}): TerraformRunner {
  return new TerraformRunner({ stateDir, pluginCacheDir: join(shared, 'plugins'), homeDir: join(shared, 'home'), lockTimeout: '5s', cancelGrace: '5s', orphanGrace: '10s', ...over });
}

function collect(): { chunks: OutputChunk[]; text: () => string; onOutput: (c: OutputChunk) => void } {
  const chunks: OutputChunk[] = [];
  return { chunks, text: () => Buffer.concat(chunks.map((c) => c.data)).toString('utf8'), onOutput: (c) => chunks.push(c) };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

t.test('options are validated; a missing tool is UPLINK_ERR_DEPLOY_TOOL_MISSING', async (t) => {
  const state = await tmp(t, 'uplink-tf-state-');
  t.throws(() => new TerraformRunner({ stateDir: state, cancelGrase: '1s' } as never), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  t.throws(() => new TerraformRunner({ stateDir: state, cancelGrace: 'soon' }), { code: 'UPLINK_ERR_CONFIG_INVALID', details: { field: 'cancelGrace' } });
  t.throws(() => new TerraformRunner({ stateDir: state, extraEnv: { AWS_PROFILE: 'admin' } }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  t.throws(() => new TerraformRunner({ stateDir: state, extraEnv: { PATH: '/tmp' } }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  await t.rejects(runner(state, { binaryPath: join(state, 'no-such-terraform') }).locateBinary(), { code: 'UPLINK_ERR_DEPLOY_TOOL_MISSING' });
  await t.rejects(runner(state, { searchPath: state }).locateBinary(), { code: 'UPLINK_ERR_DEPLOY_TOOL_MISSING' });
  const bin = join(state, 'bin');
  await mkdir(bin);
  await writeFile(join(bin, 'terraform'), '#!/bin/sh\n', { mode: 0o755 });
  await writeFile(join(bin, 'tofu'), '#!/bin/sh\n', { mode: 0o755 });
  t.equal(await runner(state, { searchPath: bin }).locateBinary(), join(bin, 'tofu'), 'tofu is preferred');
  const run = runner(state, { searchPath: state }).start({ deploymentId: 'd1', action: 'apply', workDir: state, instanceId: 'i-1', credentials: creds });
  await t.rejects(run.result, { code: 'UPLINK_ERR_DEPLOY_TOOL_MISSING' });
  t.throws(() => runner(state).start({ deploymentId: 'd/1', action: 'apply', workDir: state, instanceId: 'i', credentials: creds }), { code: 'UPLINK_ERR_BAD_REQUEST' });
});

t.test('apply, plan-only and destroy with real terraform; outputs stored, sensitive ones redacted', async (t) => {
  if (!needTools(t, ['terraform'])) return;
  const state = await tmp(t, 'uplink-tf-state-');
  const parent = await tmp(t, 'uplink-tf-work-');
  const r = runner(state);

  const firstPlan = await r.start({ deploymentId: 'plan-0', action: 'plan', workDir: await prepare(t, 'basic', parent), instanceId: 'i-0abc', credentials: creds }).result;
  t.match(firstPlan, { status: 'succeeded', planHasChanges: true, outputs: null, stateMode: 'local' });
  t.notOk(await exists(r.localStatePath), 'a plan writes no state');

  const out = collect();
  const workDir = await prepare(t, 'basic', parent);
  const applied = await r.start({ deploymentId: 'apply-1', action: 'apply', workDir, instanceId: 'i-0abc', credentials: creds, onOutput: out.onOutput }).result;
  t.match(applied, { deploymentId: 'apply-1', action: 'apply', status: 'succeeded', exitCode: 0, stateMode: 'local', interrupted: [] });
  t.same(applied.outputs, {
    marker: { value: 'hello-i-0abc', type: 'string', sensitive: false },
    token: { value: null, type: 'string', sensitive: true, redacted: true },
  });
  t.match(out.text(), /Apply complete! Resources: 1 added/);
  let expected = 0;
  for (const c of out.chunks) {
    t.equal(c.offset, expected, 'offsets are contiguous');
    expected += c.data.length;
  }
  t.same([...new Set(out.chunks.map((c) => c.step))], ['init', 'plan', 'apply'], 'steps in order; output -json is captured, not streamed');
  const tfstate = JSON.parse(await readFile(r.localStatePath, 'utf8'));
  t.equal(tfstate.resources[0].instances[0].attributes.input.value, 'hello-i-0abc', 'state kept per appliance in the state dir');
  t.ok(await exists(join(workDir, LOCAL_BACKEND_FILE)));
  t.same(await readdir(join(state, 'deploy')).then((n) => n.filter((x) => x === 'current.json')), [], 'journal removed at the end');

  const noChanges = await r.start({ deploymentId: 'plan-2', action: 'plan', workDir: await prepare(t, 'basic', parent), instanceId: 'i-0abc', credentials: creds }).result;
  t.match(noChanges, { status: 'succeeded', planHasChanges: false });

  const destroyed = await r.start({ deploymentId: 'destroy-3', action: 'destroy', workDir: await prepare(t, 'basic', parent), instanceId: 'i-0abc', credentials: creds }).result;
  t.match(destroyed, { status: 'succeeded', outputs: {} });
  t.same(JSON.parse(await readFile(r.localStatePath, 'utf8')).resources, [], 'destroy emptied the state');
});

t.test('the child sees only the explicit environment', async (t) => {
  if (!needTools(t, ['terraform'])) return;
  const state = await tmp(t, 'uplink-tf-state-');
  const parent = await tmp(t, 'uplink-tf-work-');
  process.env.UPLINK_TEST_SHOULD_NOT_LEAK = 'leak';
  process.env.AWS_PROFILE = 'agent-own-profile';
  t.teardown(() => {
    delete process.env.UPLINK_TEST_SHOULD_NOT_LEAK;
    delete process.env.AWS_PROFILE;
  });
  const workDir = await prepare(t, 'env-probe', parent);
  const result = await runner(state, { extraEnv: { HTTPS_PROXY: 'http://proxy.internal:3128' } }).start({ deploymentId: 'env-1', action: 'apply', workDir, instanceId: 'i-env', credentials: creds }).result;
  t.equal(result.status, 'succeeded');
  const env = Object.fromEntries((await readFile(join(workDir, 'env-dump.txt'), 'utf8')).trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  t.match(env, {
    AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE',
    AWS_SECRET_ACCESS_KEY: 'secret-example',
    AWS_SESSION_TOKEN: 'session-example',
    AWS_REGION: 'eu-west-1',
    TF_VAR_instance_id: 'i-env',
    TF_IN_AUTOMATION: '1',
    TF_INPUT: '0',
    TF_DATA_DIR: join(workDir, '.terraform'),
    TF_PLUGIN_CACHE_DIR: join(shared, 'plugins'),
    HTTPS_PROXY: 'http://proxy.internal:3128',
  });
  t.notOk('UPLINK_TEST_SHOULD_NOT_LEAK' in env, "the agent's environment does not leak");
  t.notOk('AWS_PROFILE' in env, "the agent's own AWS settings do not leak");
});

t.test('a failing stack ends failed with the step; a stack with its own backend keeps its state', async (t) => {
  if (!needTools(t, ['terraform'])) return;
  const state = await tmp(t, 'uplink-tf-state-');
  const parent = await tmp(t, 'uplink-tf-work-');
  const r = runner(state);
  const out = collect();
  const failed = await r.start({ deploymentId: 'fail-1', action: 'apply', workDir: await prepare(t, 'failing', parent), instanceId: 'i-1', credentials: creds, onOutput: out.onOutput }).result;
  t.match(failed, { status: 'failed', step: 'apply', exitCode: 1, outputs: null, error: { code: 'UPLINK_ERR_DEPLOY_FAILED', details: { step: 'apply' } } });
  t.match(out.chunks.filter((c) => c.stream === 'stderr').map((c) => c.data.toString()).join(''), /provisioning failed/);
  t.notOk(await exists(join(state, 'deploy', 'current.json')), 'journal cleared after a failure too');

  const state2 = await tmp(t, 'uplink-tf-state-');
  const workDir = await prepare(t, 'own-backend', parent);
  const own = await runner(state2).start({ deploymentId: 'own-1', action: 'apply', workDir, instanceId: 'i-own', credentials: creds }).result;
  t.match(own, { status: 'succeeded', stateMode: 'stack', outputs: { marker: { value: 'i-own' } } });
  t.ok(await exists(join(workDir, 'own.tfstate')), "the stack's backend holds the state");
  t.notOk(await exists(join(workDir, LOCAL_BACKEND_FILE)), 'no backend override written');
  t.notOk(await exists(runner(state2).localStatePath));
});

t.test('one deployment at a time', async (t) => {
  if (!needTools(t, ['terraform'])) return;
  const state = await tmp(t, 'uplink-tf-state-');
  const parent = await tmp(t, 'uplink-tf-work-');
  const first = runner(state).start({ deploymentId: 'a', action: 'plan', workDir: await prepare(t, 'basic', parent), instanceId: 'i', credentials: creds });
  t.throws(() => runner(state).start({ deploymentId: 'b', action: 'plan', workDir: parent, instanceId: 'i', credentials: creds }), { code: 'UPLINK_ERR_DEPLOY_BUSY' });
  t.equal((await first.result).status, 'succeeded');
  const again = runner(state).start({ deploymentId: 'c', action: 'plan', workDir: await prepare(t, 'basic', parent), instanceId: 'i', credentials: creds });
  t.equal((await again.result).status, 'succeeded', 'free again once the first ended');
});

t.test('cancel: SIGINT mid-apply ends the deployment as cancelled', async (t) => {
  if (!needTools(t, ['terraform'])) return;
  const state = await tmp(t, 'uplink-tf-state-');
  const parent = await tmp(t, 'uplink-tf-work-');
  let run: ReturnType<TerraformRunner['start']> | undefined;
  const out = collect();
  run = runner(state).start({
    deploymentId: 'cancel-1', action: 'apply', workDir: await prepare(t, 'slow', parent), instanceId: 'i-1', credentials: creds,
    onOutput: (c) => {
      out.onOutput(c);
      if (c.step === 'apply' && /local-exec/.test(out.text())) run?.cancel();
    },
  });
  const result = await run.result;
  t.match(result, { status: 'cancelled', step: 'apply', error: { code: 'UPLINK_ERR_DEPLOY_CANCELLED' } });
  t.match(out.text(), /Interrupt received/, 'terraform got SIGINT and shut down gracefully');
  t.notOk(await exists(join(state, 'deploy', 'current.json')));
  run.cancel(); // idempotent after the end
  const next = await runner(state).start({ deploymentId: 'after-cancel', action: 'apply', workDir: await prepare(t, 'basic', parent), instanceId: 'i-1', credentials: creds }).result;
  t.equal(next.status, 'succeeded', 'the next deployment works');
});

t.test('a crash leaves a journal and a stale lock: the next run reports it and explains the lock removal', async (t) => {
  if (!needTools(t, ['terraform'])) return;
  const state = await tmp(t, 'uplink-tf-state-');
  const parent = await tmp(t, 'uplink-tf-work-');
  const crashed = new DeployJournal(state);
  await crashed.begin({ deploymentId: 'crashed-1', action: 'apply', workDir: parent, stateMode: 'local' });
  await crashed.update({ phase: 'apply', toolPid: 2 ** 22 + 1 }); // a pid that is not running here
  const lockInfo = join(state, 'deploy', 'state', '.terraform.tfstate.lock.info');
  await mkdir(join(state, 'deploy', 'state'), { recursive: true });
  await writeFile(lockInfo, JSON.stringify({ ID: 'stale-lock', Operation: 'OperationTypeApply', Who: 'agent@old' }));
  const lines: string[] = [];
  const logger = createLogger('test', { level: 'warn', destination: new Writable({ write(chunk, _enc, cb) { lines.push(String(chunk)); cb(); } }) as never });
  const result = await runner(state, { logger }).start({ deploymentId: 'next-1', action: 'apply', workDir: await prepare(t, 'basic', parent), instanceId: 'i-1', credentials: creds }).result;
  t.equal(result.status, 'succeeded');
  t.same(result.interrupted.map((e) => [e.deploymentId, e.phase]), [['crashed-1', 'apply']]);
  t.notOk(await exists(lockInfo));
  await sleep(50); // pino writes asynchronously
  t.ok(lines.some((l) => /removed a stale state lock/.test(l) && /stale-lock/.test(l)), 'the log explains the removal and shows the old lock');
});

t.test('kill -9 of the agent during apply: interrupted (never succeeded), then a clean next deploy', async (t) => {
  if (!needTools(t, ['terraform'])) return;
  const state = await tmp(t, 'uplink-tf-state-');
  const parent = await tmp(t, 'uplink-tf-work-');
  const workDir = await prepare(t, 'slow', parent);
  const child = spawn(process.execPath, [...tsLoaderArgs(), CHILD, state, workDir, 'dep-killed', join(shared, 'plugins'), join(shared, 'home')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<NodeJS.Signals | null>((res) => child.on('exit', (_code, sig) => res(sig)));
  const journalPath = join(state, 'deploy', 'current.json');
  let toolPid = 0;
  for (let i = 0; i < 600 && toolPid === 0; i++) {
    await sleep(50);
    const entry = await readFile(journalPath, 'utf8').then(JSON.parse, () => null);
    if (entry?.phase === 'apply' && entry.toolPid && /local-exec/.test(output)) toolPid = entry.toolPid;
  }
  t.ok(toolPid > 0, 'the child reached the apply step');
  child.kill('SIGKILL');
  t.equal(await exited, 'SIGKILL');
  t.notMatch(output, /RESULT/, 'the child never reported an outcome');

  const found = await new DeployJournal(state).recoverInterrupted();
  t.same(found.map((e) => [e.deploymentId, e.phase, e.stateMode]), [['dep-killed', 'apply', 'local']]);

  const result = await runner(state).start({ deploymentId: 'dep-next', action: 'apply', workDir: await prepare(t, 'basic', parent), instanceId: 'i-1', credentials: creds }).result;
  t.equal(result.status, 'succeeded', 'the next deployment works');
  t.same(result.interrupted.map((e) => e.deploymentId), ['dep-killed'], 'reported as interrupted, never succeeded');
  t.notOk(await exists(`/proc/${toolPid}/cwd`) && (await readFile(`/proc/${toolPid}/cmdline`, 'utf8').catch(() => '')).includes('terraform'), 'the orphaned terraform was stopped');
  t.notOk(await exists(join(state, 'deploy', 'state', '.terraform.tfstate.lock.info')), 'no lock left');
  await new DeployJournal(state).acknowledge('dep-killed');
  t.same(await new DeployJournal(state).recoverInterrupted(), []);
});
