/**
 * exec end to end through an in-process relay and agent: channels kept apart, stdin,
 * exit codes, signals, timeout, spawn errors, bad specs, and many at once.
 */
import t from 'tap';
import { adminClient, createAppliance, startAgent, startRelay } from '../../helpers/cluster.js';
import { runExec } from '../../helpers/exec-client.js';
import { encodeControl } from '../../../shared/frames.js';

const OPERATE = { local: { operate: 'enabled' }, operations: { exec: { killGraceMs: 200 } } };

t.test('exec', async (t) => {
  const relay = await startRelay(t, { config: { heartbeat: { intervalMs: 200 } } });
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'exec-a');
  await startAgent(t, relay, enrolled, OPERATE);

  t.test('stdout and stderr stay separate; exit code passes through', async (t) => {
    const r = await runExec(client, 'exec-a', { command: 'sh', args: ['-c', 'echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 7'] });
    t.equal(r.stdout, 'out1\nout2\n');
    t.equal(r.stderr, 'err1\nerr2\n');
    t.same(r.exit, { type: 'exit', code: 7, signal: null });
  });

  t.test('no shell: arguments are passed as is', async (t) => {
    const r = await runExec(client, 'exec-a', { command: 'printf', args: ['%s|', '$HOME', 'a b', ';rm -rf /'] });
    t.equal(r.stdout, '$HOME|a b|;rm -rf /|');
    t.equal(r.exit?.code, 0);
  });

  t.test('stdin reaches the command and EOF ends it', async (t) => {
    const r = await runExec(client, 'exec-a', { command: 'sh', args: ['-c', 'wc -c; cat >/dev/null; echo done'] }, { stdin: 'hello stdin\n' });
    t.equal(r.stdout.trim().split(/\s+/).join(' '), '12 done');
    t.same(r.exit, { type: 'exit', code: 0, signal: null });
  });

  t.test('env and cwd from the spec; AWS_* of the agent never leaks', async (t) => {
    process.env.AWS_SECRET_ACCESS_KEY = 'agent-secret';
    t.teardown(() => delete process.env.AWS_SECRET_ACCESS_KEY);
    const r = await runExec(client, 'exec-a', { command: 'sh', args: ['-c', 'echo "$FOO:$(pwd):${AWS_SECRET_ACCESS_KEY:-none}"'], env: { FOO: 'bar' }, cwd: '/tmp' });
    t.equal(r.stdout, 'bar:/tmp:none\n');
  });

  t.test('a forwarded signal ends the command; exit names the signal', async (t) => {
    const r = await runExec(client, 'exec-a', { command: 'sh', args: ['-c', 'echo ready; exec sleep 30'] }, {
      onFirstOutput: (d) => d.write(encodeControl({ type: 'signal', signal: 'SIGTERM' })),
    });
    t.equal(r.stdout, 'ready\n');
    t.same(r.exit, { type: 'exit', code: null, signal: 'SIGTERM' });
  });

  t.test('a signal that is not forwardable is ignored', async (t) => {
    const r = await runExec(client, 'exec-a', { command: 'sh', args: ['-c', 'echo ready; read x; echo after'] }, {
      onFirstOutput: (d) => d.write(encodeControl({ type: 'signal', signal: 'SIGSEGV' })),
    });
    t.equal(r.stdout, 'ready\nafter\n');
    t.equal(r.exit?.code, 0);
  });

  t.test('timeout: the command is killed and the exit says why', async (t) => {
    const r = await runExec(client, 'exec-a', { command: 'sleep', args: ['30'], timeoutMs: 300 });
    t.same(r.exit, { type: 'exit', code: null, signal: 'SIGTERM', reason: 'timeout' });
  });

  t.test('timeout escalates to SIGKILL when SIGTERM is ignored', async (t) => {
    const r = await runExec(client, 'exec-a', { command: 'sh', args: ['-c', "trap '' TERM; echo armed; while :; do sleep 0.05; done"], timeoutMs: 300 });
    t.equal(r.stdout, 'armed\n');
    t.same(r.exit, { type: 'exit', code: null, signal: 'SIGKILL', reason: 'timeout' });
  });

  t.test('a missing command and a bad spec are refused before the upgrade', async (t) => {
    await t.rejects(runExec(client, 'exec-a', { command: '/no/such/binary' }), { code: 'UPLINK_ERR_EXEC_SPAWN' });
    await t.rejects(runExec(client, 'exec-a', { command: 'true', shell: true }), { code: 'UPLINK_ERR_BAD_REQUEST' });
    await t.rejects(runExec(client, 'exec-a', { command: '' }), { code: 'UPLINK_ERR_BAD_REQUEST' });
    await t.rejects(runExec(client, 'exec-a', { command: 'true', env: { 'BAD-NAME': 'x' } }), { code: 'UPLINK_ERR_BAD_REQUEST' });
    await t.rejects(runExec(client, 'no-such-appliance', { command: 'true' }), { code: 'UPLINK_ERR_NOT_FOUND' });
  });

});

t.test('exec refused when the customer has not enabled Operate', async (t) => {
  const relay = await startRelay(t, { config: { heartbeat: { intervalMs: 200 } } });
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'exec-off');
  await startAgent(t, relay, enrolled);
  const err = await runExec(client, 'exec-off', { command: 'true' }).then(() => undefined, (e: { code?: string }) => e.code);
  t.match(err, /^UPLINK_ERR_(PHASE|OPERATE|ACCESS|APPROVAL)/);
});
