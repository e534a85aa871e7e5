/**
 * shell end to end through an in-process relay and agent: a real PTY, output, typed input,
 * window size at start and on resize, exit status, idle timeout, refusals, and the agent's
 * own audit event.
 */
import t from 'tap';
import type { Duplex } from 'node:stream';
import { adminClient, createAppliance, startAgent, startRelay, waitFor } from '../../helpers/cluster.js';
import { collect, readFrames } from '../../helpers/exec-client.js';
import { CHANNEL, encodeControl, encodeFrame, parseControl, type ControlMessage, type Frame } from '../../../shared/frames.js';
import { readAuditLog, auditLogPath } from '../../../agent/audit-log.js';
import type { UplinkError } from '../../../shared/errors.js';

/** An open shell: everything the terminal showed so far, and the exit frame when it came. */
function terminal(duplex: Duplex) {
  let screen = '';
  let exit: Extract<ControlMessage, { type: 'exit' }> | undefined;
  let ended = false;
  const decoder = readFrames(duplex, (f: Frame) => {
    if (f.channel === CHANNEL.stdout) screen += f.payload.toString('utf8');
    else if (f.channel === CHANNEL.control) {
      const m = parseControl(f.payload);
      if (m.type === 'exit') exit = m;
    }
  });
  decoder.on('end', () => (ended = true));
  return {
    get screen() {
      return screen;
    },
    get exit() {
      return exit;
    },
    type: (text: string) => duplex.write(encodeFrame(CHANNEL.stdin, text)),
    resize: (cols: number, rows: number) => duplex.write(encodeControl({ type: 'resize', cols, rows })),
    waitFor: (re: RegExp) => waitFor(() => re.test(screen), 10_000, `screen to match ${re}`),
    ended: () => waitFor(() => ended, 10_000, 'shell stream to end'),
  };
}

t.test('shell', async (t) => {
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'shell-a');
  const agent = await startAgent(t, relay, enrolled, { local: { operate: 'enabled' }, operations: { shell: { shell: '/bin/sh' } } });

  t.test('--command runs through the shell; its output and exit status come back', async (t) => {
    const r = await collect(await client.openOp('shell-a', 'shell', { command: 'echo hi; exit 4', cols: 80, rows: 24 }));
    t.equal(r.stdout, 'hi\r\n', 'a terminal turns \\n into \\r\\n');
    t.equal(r.stderr, '');
    t.same(r.exit, { type: 'exit', code: 4, signal: null });
  });

  t.test('interactive: the window size from the spec, typed input, resize, exit', async (t) => {
    const term = terminal(await client.openOp('shell-a', 'shell', { cols: 101, rows: 33, term: 'xterm' }));
    term.type('stty size; echo "T=$TERM"\n');
    await term.waitFor(/\b33 101\r\n/);
    await term.waitFor(/T=xterm\r\n/);
    term.resize(120, 40);
    term.type('stty size\n');
    await term.waitFor(/\b40 120\r\n/);
    term.type('echo $((6*7)); exit 5\n');
    await term.ended();
    t.match(term.screen, /\b42\r\n/);
    t.same(term.exit, { type: 'exit', code: 5, signal: null });
  });

  t.test('a resize outside the limits is refused and the shell goes on', async (t) => {
    const term = terminal(await client.openOp('shell-a', 'shell', { cols: 80, rows: 24 }));
    term.resize(0, 24);
    term.resize(5000, 24);
    term.type('stty size; exit 0\n');
    await term.ended();
    t.match(term.screen, /\b24 80\r\n/);
    t.same(term.exit, { type: 'exit', code: 0, signal: null });
  });

  t.test('Ctrl-C is a byte: the remote line discipline interrupts the foreground program', async (t) => {
    const term = terminal(await client.openOp('shell-a', 'shell', { cols: 80, rows: 24 }));
    term.type('sleep 30; echo not-interrupted\n');
    await waitFor(() => term.screen.includes('sleep 30'), 10_000, 'echo of the command');
    term.type('\u0003');
    term.type('echo after=$?\n');
    await term.waitFor(/after=130\r\n/);
    term.type('exit\n');
    await term.ended();
    t.notMatch(term.screen, /\r\nnot-interrupted\r\n/, 'the echo of the line is there, the output of the echo is not');
  });

  t.test('bad specs are refused before a shell starts', async (t) => {
    for (const spec of [{ cols: 0, rows: 24 }, { cols: 80, rows: 24, extra: 1 }, { command: '', cols: 80, rows: 24 }, { cols: 80, rows: 24, term: 'x;rm' }]) {
      await t.rejects(client.openOp('shell-a', 'shell', spec), { code: 'UPLINK_ERR_BAD_REQUEST' }, JSON.stringify(spec));
    }
  });

  t.test('the agent audit log has one event per shell, with outcome and bytes', async (t) => {
    const events = [];
    for await (const e of readAuditLog(auditLogPath(agent.cfg.stateDir))) if (e.operation === 'shell') events.push(e);
    const cmd = events.find((e) => e.target === 'echo hi; exit 4');
    t.ok(cmd, 'the --command shell is there');
    t.equal(cmd?.outcome, 'error');
    t.equal(cmd?.phase, 'operate');
    t.equal(cmd?.actor, 'bootstrap-admin');
    t.same(cmd?.detail, { exitCode: 4, signal: null, reason: 'exited' });
    t.equal(cmd?.bytesOut, 4);
    t.ok(events.some((e) => e.target === '(interactive)' && e.outcome === 'error' && (e.detail as { exitCode: number }).exitCode === 5));
  });
});

t.test('idle timeout: a silent shell is closed with a notice', async (t) => {
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'shell-idle');
  await startAgent(t, relay, enrolled, { local: { operate: 'enabled' }, operations: { shell: { shell: '/bin/sh', idleTimeoutMs: 300 } } });
  const term = terminal(await client.openOp('shell-idle', 'shell', { cols: 80, rows: 24 }));
  await term.ended();
  t.match(term.screen, /\[uplink\] no input or output for .*; closing the session\./);
  t.equal(term.exit?.reason, 'idle-timeout');
  t.equal(term.exit?.signal, 'SIGHUP');
});

t.test('refusals: Operate not approved, shell disabled by the customer', async (t) => {
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const a = await createAppliance(client, 'shell-noop');
  const agentA = await startAgent(t, relay, a);
  const b = await createAppliance(client, 'shell-off');
  await startAgent(t, relay, b, { local: { operate: 'enabled' }, operations: { shell: { enabled: false } } });
  await t.rejects(client.openOp('shell-noop', 'shell', { cols: 80, rows: 24 }), { code: 'UPLINK_ERR_PHASE_NOT_APPROVED' });
  await t.rejects(client.openOp('shell-off', 'shell', { cols: 80, rows: 24 }), { code: 'UPLINK_ERR_OPERATION_DISABLED' });
  const denied = [];
  for await (const e of readAuditLog(auditLogPath(agentA.cfg.stateDir))) if (e.operation === 'shell') denied.push(e);
  t.equal(denied.length, 1);
  t.equal(denied[0]?.outcome, 'denied');
  t.same(denied[0]?.detail, { code: 'UPLINK_ERR_PHASE_NOT_APPROVED' });
});

t.test('unknown agent config keys under operations.shell are rejected', async (t) => {
  const { agentConfig } = await import('../../helpers/cluster.js');
  const relay = await startRelay(t);
  const err = (() => {
    try {
      agentConfig(relay, '/tmp/uplink-shell-cfg/state', undefined, { operations: { shell: { idleTimeout: 5 } } });
    } catch (e) {
      return e as UplinkError;
    }
    return undefined;
  })();
  t.equal(err?.code, 'UPLINK_ERR_CONFIG_INVALID');
  t.match(err?.message, /operations\.shell/);
});
