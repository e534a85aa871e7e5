import t from 'tap';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startPtySession, type PtySession, type PtySessionOptions } from '../../../agent/ops/pty-session.js';

const PATH = '/usr/local/bin:/usr/bin:/bin';

/** Start a session and collect every output byte until exit. */
function run(opts: PtySessionOptions): { session: PtySession; output: () => Buffer; done: Promise<{ out: Buffer; exit: Awaited<PtySession['exit']> }> } {
  const session = startPtySession(opts);
  const chunks: Buffer[] = [];
  session.onData((c) => chunks.push(c));
  const output = (): Buffer => Buffer.concat(chunks);
  return { session, output, done: session.exit.then((exit) => ({ out: output(), exit })) };
}

/** Resolve once the collected output contains `needle`. */
async function waitFor(output: () => Buffer, needle: string, limitMs = 10_000): Promise<void> {
  const started = Date.now();
  while (!output().includes(needle)) {
    if (Date.now() - started > limitMs) throw new Error(`timed out waiting for ${JSON.stringify(needle)}; got ${JSON.stringify(output().toString('latin1'))}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test('output bytes arrive exactly as the program wrote them', async (t) => {
  const { done } = run({ file: 'printf', args: ['\\000\\377\\342\\202\\254 ok\\n'], env: { PATH } });
  const { out, exit } = await done;
  // The tty's ONLCR turns \n into \r\n; every other byte, including NUL and 0xff, is untouched.
  t.same([...out], [0x00, 0xff, 0xe2, 0x82, 0xac, 0x20, 0x6f, 0x6b, 0x0d, 0x0a]);
  t.same(exit, { exitCode: 0, signal: null, reason: 'exited' });
});

t.test('exit status 3 is propagated', async (t) => {
  const { exit } = await run({ file: '/bin/sh', args: ['-c', 'exit 3'] }).done;
  t.same(exit, { exitCode: 3, signal: null, reason: 'exited' });
});

t.test('death by signal reports the signal name and no exit code', async (t) => {
  const { exit } = await run({ file: '/bin/sh', args: ['-c', 'kill -TERM $$'] }).done;
  t.same(exit, { exitCode: null, signal: 'SIGTERM', reason: 'exited' });
});

t.test('the environment is only what the caller passed, plus TERM and PWD', async (t) => {
  const cwd = mkdtempSync(path.join(tmpdir(), 'uplink-pty-'));
  t.teardown(() => rmSync(cwd, { recursive: true, force: true }));
  process.env.UPLINK_PTY_TEST_LEAK = 'must-not-appear';
  t.teardown(() => delete process.env.UPLINK_PTY_TEST_LEAK);
  const { out } = await run({ file: '/usr/bin/env', env: { FOO: 'bar baz' }, cwd }).done;
  const lines = out.toString('utf8').split('\r\n').filter(Boolean).sort();
  t.same(lines, [`FOO=bar baz`, `PWD=${cwd}`, 'TERM=xterm-256color']);

  const custom = await run({ file: '/usr/bin/env', env: { TERM: 'vt100' }, term: 'screen-256color', cwd }).done;
  t.match(custom.out.toString('utf8'), /^TERM=screen-256color\r$/m, 'the client TERM wins over env.TERM');
  t.throws(() => startPtySession({ file: '/usr/bin/env', term: 'xterm\nEVIL=1' }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
});

t.test('default shell: env.SHELL, else /bin/bash, else /bin/sh', async (t) => {
  const viaShell = await run({ env: { SHELL: '/bin/sh' }, args: ['-c', 'echo "shell=$0"'] }).done;
  t.match(viaShell.out.toString(), /shell=\/bin\/sh\r\n/);
  const fallback = await run({ env: {}, args: ['-c', 'echo "shell=$0"'] }).done;
  t.match(fallback.out.toString(), /shell=\/bin\/(bash|sh)\r\n/);
  const broken = await run({ env: { SHELL: '/nonexistent/shell' }, args: ['-c', 'echo "shell=$0"'] }).done;
  t.notMatch(broken.out.toString(), /nonexistent/, 'an unusable SHELL is skipped');
});

t.test('unusable program or directory is UPLINK_ERR_EXEC_SPAWN, before anything runs', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'uplink-pty-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const notExec = path.join(dir, 'script.sh');
  writeFileSync(notExec, '#!/bin/sh\necho hi\n');
  chmodSync(notExec, 0o644);
  const cases: Array<[PtySessionOptions, string]> = [
    [{ file: '/nonexistent/prog' }, 'ENOENT'],
    [{ file: notExec }, 'EACCES'],
    [{ file: dir }, 'EACCES'],
    [{ file: 'no-such-command-uplink', env: { PATH } }, 'ENOENT'],
    [{ file: '/bin/sh', cwd: path.join(dir, 'missing') }, 'ENOENT'],
    [{ file: '/bin/sh', cwd: notExec }, 'ENOTDIR'],
  ];
  for (const [opts, errno] of cases) {
    t.throws(() => startPtySession(opts), { code: 'UPLINK_ERR_EXEC_SPAWN', details: { errno } }, JSON.stringify(opts));
  }
});

t.test('options are validated: unknown keys and bad limits are rejected by name', async (t) => {
  t.throws(() => startPtySession({ file: '/bin/sh', idleTimeout: 5 } as unknown as PtySessionOptions), {
    code: 'UPLINK_ERR_CONFIG_INVALID',
  });
  t.throws(() => startPtySession({ file: '/bin/sh', maxDurationMs: -1 }), { code: 'UPLINK_ERR_CONFIG_INVALID', details: { field: 'maxDurationMs' } });
  t.throws(() => startPtySession({ file: '/bin/sh', cols: 0, rows: 24 }), { code: 'UPLINK_ERR_PTY_SIZE_INVALID' });
  t.throws(() => startPtySession({ file: '/bin/sh', cols: 80, rows: 1001 }), { code: 'UPLINK_ERR_PTY_SIZE_INVALID' });
});

t.test('resize is seen by the program, and bad sizes are refused', async (t) => {
  const { session, output, done } = run({ file: '/bin/sh', args: ['-c', 'stty size; read x; stty size'], cols: 80, rows: 24 });
  await waitFor(output, '24 80\r\n');
  for (const [c, r] of [[0, 10], [10, 0], [1001, 10], [10, 1001], [1.5, 10], [Number.NaN, 10], [Infinity, 10]] as const) {
    t.throws(() => session.resize(c, r), { code: 'UPLINK_ERR_PTY_SIZE_INVALID' }, `${c}x${r}`);
  }
  session.resize(132, 43);
  t.equal(session.cols, 132);
  t.equal(session.rows, 43);
  session.write(Buffer.from('\r'));
  const { out, exit } = await done;
  t.match(out.toString(), /43 132\r\n$/);
  t.equal(exit.exitCode, 0);
  t.doesNotThrow(() => session.resize(100, 30), 'resize after exit is ignored');
  t.doesNotThrow(() => session.write(Buffer.from('late')), 'write after exit is ignored');
});

t.test('input reaches the program and its echo comes back', async (t) => {
  const { session, output, done } = run({ file: '/bin/sh', args: ['-c', 'read line; echo "got:$line"; exit 0'] });
  session.write(Buffer.from('héllo\r', 'utf8'));
  const { out } = await done;
  t.match(out.toString('utf8'), /got:héllo\r\n/);
  t.ok(output().length > 0);
});

t.test('idle timeout: notice, SIGHUP to the group, reason idle-timeout', async (t) => {
  const { done } = run({ file: '/bin/sh', args: ['-c', 'sleep 30 & wait'], idleTimeoutMs: 300 });
  const { out, exit } = await done;
  t.match(out.toString(), /\[uplink\] no input or output for 300ms; closing the session\.\r\n/);
  t.same(exit, { exitCode: null, signal: 'SIGHUP', reason: 'idle-timeout' });
});

t.test('activity keeps an idle session alive', async (t) => {
  // Output every 50 ms for ~1 s against a 600 ms idle limit: the limit must never trip.
  const { done } = run({ file: '/bin/sh', args: ['-c', 'i=0; while [ $i -lt 20 ]; do echo tick; sleep 0.05; i=$((i+1)); done'], idleTimeoutMs: 600 });
  const { out, exit } = await done;
  t.same(exit, { exitCode: 0, signal: null, reason: 'exited' });
  t.notMatch(out.toString(), /\[uplink\]/);
});

t.test('max duration ends even a busy session', async (t) => {
  const { done } = run({ file: '/bin/sh', args: ['-c', 'while :; do echo busy; sleep 0.02; done'], maxDurationMs: 300, idleTimeoutMs: 0 });
  const { out, exit } = await done;
  t.match(out.toString(), /\[uplink\] maximum session length 300ms reached; closing the session\.\r\n/);
  t.same(exit, { exitCode: null, signal: 'SIGHUP', reason: 'max-duration' });
});

t.test('a program that ignores SIGHUP is SIGKILLed after the grace period', async (t) => {
  const { session, output, done } = run({ file: '/bin/sh', args: ['-c', "trap '' HUP; echo ready; sleep 30"], killGraceMs: 200 });
  await waitFor(output, 'ready');
  session.kill();
  const { exit } = await done;
  t.same(exit, { exitCode: null, signal: 'SIGKILL', reason: 'terminated' });
  t.throws(() => session.kill('SIGNOPE' as NodeJS.Signals), { code: 'UPLINK_ERR_BAD_REQUEST' });
});

t.test('kill(signal) sends that signal to the whole process group', async (t) => {
  // The grandchild shares the group; if only the shell were signalled, wait would keep it alive.
  const { session, output, done } = run({ file: '/bin/sh', args: ['-c', 'sleep 30 & echo started; wait'] });
  await waitFor(output, 'started');
  session.kill('SIGTERM');
  const { exit } = await done;
  t.same(exit, { exitCode: null, signal: 'SIGTERM', reason: 'terminated' });
});

t.test('pause stops reading so the program blocks; resume delivers every byte', async (t) => {
  const total = 1_000_000;
  const { session, output, done } = run({ file: '/bin/sh', args: ['-c', `head -c ${total} /dev/zero | tr '\\000' a; printf END`] });
  session.pause();
  let settled = false;
  void session.exit.then(() => (settled = true));
  await new Promise((r) => setTimeout(r, 300));
  t.ok(output().length < total, `paused after ${output().length} bytes`);
  t.notOk(settled, 'the program cannot finish while its output is not read');
  session.resume();
  const { out, exit } = await done;
  t.equal(out.length, total + 3);
  t.equal(out.subarray(-3).toString(), 'END');
  t.same(exit, { exitCode: 0, signal: null, reason: 'exited' });
});

t.test('a program that writes a lot and exits at once loses no output', async (t) => {
  // Linux may report end-of-file on the pty before the last few KB are readable, and
  // node-pty gives up on the pty 200 ms after exit; both used to cut the tail.
  const total = 300_000;
  for (let i = 0; i < 6; i++) {
    const { out, exit } = await run({ file: '/bin/sh', args: ['-c', `head -c ${total} /dev/zero | tr '\\000' b; printf END`] }).done;
    t.equal(out.length, total + 3, `run ${i}: every byte`);
    t.equal(out.subarray(-3).toString(), 'END', `run ${i}: the tail`);
    t.equal(exit.exitCode, 0);
  }
});

t.test('unsubscribed listeners receive nothing more', async (t) => {
  const session = startPtySession({ file: '/bin/sh', args: ['-c', 'echo one; read x; echo two'] });
  const seen: Buffer[] = [];
  const all: Buffer[] = [];
  const off = session.onData((c) => seen.push(c));
  session.onData((c) => all.push(c));
  while (!Buffer.concat(all).includes('one')) await new Promise((r) => setTimeout(r, 10));
  off();
  session.write(Buffer.from('\r'));
  await session.exit;
  t.notMatch(Buffer.concat(seen).toString(), /two/);
  t.match(Buffer.concat(all).toString(), /two/);
});
