/**
 * forward on the agent (agent/ops/forward.ts) through an in-process relay: the per-agent
 * connection limit (operations.forward.maxConnections), the customer switching forward off
 * (operations.forward.enabled), and a revoke of Operate while a connection is open. Each
 * refusal is checked by its code, and the agent's own audit log by its entries.
 */
import t, { type Test } from 'tap';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { adminClient, createAppliance, startAgent, startRelay, waitFor } from '../../helpers/cluster.js';
import { readFrames } from '../../helpers/exec-client.js';
import { CHANNEL, encodeControl, encodeFrame, parseControl, type ControlMessage, type Frame } from '../../../shared/frames.js';
import { auditLogPath, readAuditLog } from '../../../agent/audit-log.js';
import { AccessControl } from '../../../agent/phases/grant.js';
import type { ApiClient } from '../../../relay/cli/api-client.js';

/** A TCP echo server; `open` counts its live connections. */
/** An echo server; `open()` counts its connections now, `accepted()` every one it ever took (a dial that closed at once included). */
async function echoServer(t: Test): Promise<{ port: number; open: () => number; accepted: () => number }> {
  const conns = new Set<Socket>();
  let accepted = 0;
  const server = createServer({ allowHalfOpen: true }, (s) => {
    accepted++;
    conns.add(s);
    s.on('close', () => conns.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of conns) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { port: (server.address() as AddressInfo).port, open: () => conns.size, accepted: () => accepted };
}

/** One forwarded connection as the CLI sees it: bytes received, control frames, the end. */
function forwarded(duplex: Duplex) {
  let received = '';
  const controls: ControlMessage[] = [];
  let ended = false;
  const decoder = readFrames(duplex, (f: Frame) => {
    if (f.channel === CHANNEL.stdout) received += f.payload.toString('utf8');
    else if (f.channel === CHANNEL.control) controls.push(parseControl(f.payload));
  });
  decoder.on('end', () => (ended = true));
  return {
    get received() {
      return received;
    },
    controls,
    send: (text: string) => duplex.write(encodeFrame(CHANNEL.stdin, text)),
    /** Half-close our side, as the CLI does when the local client shuts down writing. */
    eof: () => duplex.write(encodeControl({ type: 'eof' })),
    until: (what: string, cond: () => boolean) => waitFor(cond, 10_000, what),
    ended: () => waitFor(() => ended, 10_000, 'forward stream to end'),
  };
}

const open = (client: ApiClient, appliance: string, port: number) => client.openOp(appliance, 'forward', { host: '127.0.0.1', port });

async function auditOf(stateDir: string) {
  const events = [];
  for await (const e of readAuditLog(auditLogPath(stateDir))) if (e.operation === 'forward') events.push(e);
  return events;
}

t.test('maxConnections: the agent refuses the connection over its limit, and counts per agent', async (t) => {
  const echo = await echoServer(t);
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const forward = { allow: [{ name: 'echo', cidrs: ['127.0.0.1/32'], ports: [echo.port] }], maxConnections: 2 };
  const agent = await startAgent(t, relay, await createAppliance(client, 'fwd-lim'), { local: { operate: 'enabled' }, operations: { forward } });
  await startAgent(t, relay, await createAppliance(client, 'fwd-lim-b'), { local: { operate: 'enabled' }, operations: { forward } });

  const a = forwarded(await open(client, 'fwd-lim', echo.port));
  const b = forwarded(await open(client, 'fwd-lim', echo.port));
  a.send('one');
  b.send('two');
  await a.until('first echo', () => a.received === 'one');
  await b.until('second echo', () => b.received === 'two');

  await t.rejects(open(client, 'fwd-lim', echo.port), {
    code: 'UPLINK_ERR_FORWARD_LIMIT',
    message: /already carries 2 forwarded connections \(operations\.forward\.maxConnections\)/,
    details: { limit: 2 },
  });
  t.equal(echo.accepted(), 2, 'the refused connection was never dialled');
  // Another agent (in this same process) has its own count.
  const other = forwarded(await open(client, 'fwd-lim-b', echo.port));
  other.send('three');
  await other.until('echo through the other agent', () => other.received === 'three');

  // A connection that ends frees its place.
  a.eof();
  await a.ended();
  t.equal(a.received, 'one', 'the echo answer before the close arrived whole');
  const c = forwarded(await open(client, 'fwd-lim', echo.port));
  c.send('four');
  await c.until('echo on the freed place', () => c.received === 'four');
  for (const f of [b, c, other]) f.eof();
  await Promise.all([b.ended(), c.ended(), other.ended()]);

  const events = await auditOf(agent.cfg.stateDir);
  const denied = events.filter((e) => e.outcome === 'denied');
  t.equal(denied.length, 1, 'one refusal in the agent audit log');
  t.same(denied[0]?.detail, { code: 'UPLINK_ERR_FORWARD_LIMIT' });
  t.equal(events.filter((e) => e.outcome === 'ok').length, 3, 'three connections carried and closed normally');
});

t.test('enabled: false refuses forward with its code, before the Operate check', async (t) => {
  const echo = await echoServer(t);
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const allow = [{ cidrs: ['127.0.0.1/32'], ports: [echo.port] }];
  // No Operate approval at all: the customer's switch is still what the vendor is told.
  const agent = await startAgent(t, relay, await createAppliance(client, 'fwd-off'), { operations: { forward: { enabled: false, allow } } });
  await t.rejects(open(client, 'fwd-off', echo.port), {
    code: 'UPLINK_ERR_OPERATION_DISABLED',
    message: /^forward is disabled by the customer on this agent \(operations\.forward\.enabled\)$/,
  });
  t.equal(echo.accepted(), 0, 'nothing was dialled');
  t.same(await auditOf(agent.cfg.stateDir), [], 'a switched-off operation leaves no forward entry');
});

t.test('a revoke of Operate closes an open forward, says why, and refuses the next', async (t) => {
  const echo = await echoServer(t);
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const local = { operate: 'enabled' };
  const agent = await startAgent(t, relay, await createAppliance(client, 'fwd-rev'), { local, operations: { forward: { allow: [{ cidrs: ['127.0.0.1/32'], ports: [echo.port] }] } } });

  const f = forwarded(await open(client, 'fwd-rev', echo.port));
  f.send('before');
  await f.until('echo before the revoke', () => f.received === 'before');
  t.equal(echo.open(), 1);

  // The customer's `uplink-agent revoke operate` on the agent host.
  const control = new AccessControl({ config: { local }, stateDir: agent.cfg.stateDir, audit: async () => undefined });
  await control.revoke('operate', 'customer-admin');
  await f.ended();
  t.same(f.controls, [{ type: 'exit', code: null, signal: null, reason: 'access-revoked' }], 'the stream ends with the reason');
  await waitFor(() => echo.open() === 0, 10_000, 'the destination connection closed');

  await t.rejects(open(client, 'fwd-rev', echo.port), { code: 'UPLINK_ERR_PHASE_NOT_APPROVED' });
  const events = await auditOf(agent.cfg.stateDir);
  t.match(events, [
    { outcome: 'error', target: `127.0.0.1:${echo.port}`, bytesIn: 6, bytesOut: 6, detail: { reason: 'access-revoked' } },
    { outcome: 'denied', detail: { code: 'UPLINK_ERR_PHASE_NOT_APPROVED' } },
  ]);
  t.equal(events.length, 2);
});
