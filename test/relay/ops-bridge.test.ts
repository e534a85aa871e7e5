/**
 * Bad input against a running relay with two agents: unknown paths, garbage upgrades,
 * garbage and oversized frames, a client that never reads, peers vanishing mid-stream.
 * Each gets a clear error or is cut off, and the other agent keeps working throughout.
 */
import t, { type Test } from 'tap';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { adminClient, createAppliance, startAgent, startRelay, waitFor } from '../helpers/cluster.js';
import { collect, runExec } from '../helpers/exec-client.js';
import { dialRaw } from '../helpers/raw-agent.js';
import { encodeFrame } from '../../shared/frames.js';

const AGENT = { local: { operate: 'enabled' }, operations: { exec: { killGraceMs: 200 } } };

function rawHttp(url: string, text: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = net.connect(Number(u.port), u.hostname, () => s.write(text));
    let got = '';
    s.on('data', (c) => (got += c.toString('latin1')));
    s.on('error', () => resolve(got));
    s.on('close', () => resolve(got));
  });
}

t.test('bad input', async (t) => {
  const relay = await startRelay(t, { config: { heartbeat: { intervalMs: 200 }, limits: { maxFrameBytes: 64 * 1024 } } });
  const client = adminClient(t, relay);
  const victim = await createAppliance(client, 'victim');
  const bystander = await createAppliance(client, 'bystander');
  const victimAgent = await startAgent(t, relay, victim, { ...AGENT, limits: { maxFrameBytes: 64 * 1024 } });
  await startAgent(t, relay, bystander, AGENT);
  const bystanderWorks = async (t: Test, what: string) => {
    const r = await runExec(client, 'bystander', { command: 'echo', args: ['still here'] });
    t.same([r.stdout, r.exit?.code], ['still here\n', 0], `the other agent execs fine after: ${what}`);
  };

  t.test('unknown paths and garbage upgrades', async (t) => {
    for (const path of ['/v1/nope', '/v1/appliances/victim/launch-missiles', '/v1/appliances/UPPER/exec']) {
      const r = await dialRaw(relay.url, {}, path);
      t.same(r.ok ? 'open' : [r.status, r.code], [404, 'UPLINK_ERR_NOT_FOUND'], path);
    }
    const garbage = await rawHttp(relay.url, '\x16\x03\x01garbage that is not HTTP\r\n\r\n');
    t.match(garbage, /^HTTP\/1\.1 400 /);
    const noKey = await rawHttp(relay.url, `GET /v1/appliances/victim/exec HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nAuthorization: Bearer test-admin-token-0123456789\r\n\r\n`);
    t.match(noKey, /^HTTP\/1\.1 4\d\d /, 'an upgrade without the WebSocket headers is refused');
    const badSpec = await rawHttp(relay.url, `GET /v1/appliances/victim/exec HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer test-admin-token-0123456789\r\nx-uplink-spec: !!!not-base64-json\r\n\r\n`);
    t.match(badSpec, /^HTTP\/1\.1 400 [^]*UPLINK_ERR_BAD_REQUEST/);
    await bystanderWorks(t, 'garbage upgrades');
  });

  t.test('a client that opens streams and never reads, then vanishes', async (t) => {
    const stuck: Duplex[] = [];
    for (let i = 0; i < 3; i++) {
      const d = await client.openOp('victim', 'exec', { command: 'sh', args: ['-c', 'exec yes uplink-flood'] });
      d.pause(); // never read: backpressure must hold the command, not fill the relay
      d.on('error', () => {});
      stuck.push(d);
    }
    await waitFor(() => relay.gateway.get(victim.applianceId)?.streamsOpenFor('exec') === 3, 30_000, 'three streams open');
    await bystanderWorks(t, 'three non-reading clients');
    for (const d of stuck) d.destroy();
    await waitFor(() => relay.gateway.get(victim.applianceId)?.streamsOpenFor('exec') === 0, 20_000, 'the relay closed every abandoned stream');
    t.pass('abandoned streams closed');
    const r = await runExec(client, 'victim', { command: 'echo', args: ['ok'] });
    t.equal(r.stdout, 'ok\n', 'the victim agent itself still works');
  });

  t.test('garbage frame from the client: the command is ended, with a reason', async (t) => {
    const r = await runExec(client, 'victim', { command: 'sleep', args: ['30'] }, { onOpen: (d) => d.write(Buffer.from([9, 0, 0, 0, 1, 0])) });
    t.same(r.exit, { type: 'exit', code: null, signal: 'SIGTERM', reason: 'protocol-error' });
    await bystanderWorks(t, 'garbage frame');
  });

  // These two once crashed the relay: the stock ws stream failed each buffer of a write to a
  // closing WebSocket, Node's JSStreamSocket finished one write twice and hit an internal
  // assertion. shared/ws-stream.ts acknowledges every write exactly once.
  t.test('oversized frame from the client is refused before buffering', async (t) => {
    const r = await runExec(client, 'victim', { command: 'cat' }, { onOpen: (d) => d.write(encodeFrame(0, Buffer.alloc(64 * 1024 + 1))) });
    t.equal(r.exit?.reason, 'protocol-error');
    await bystanderWorks(t, 'oversized frame');
  });

  t.test('the agent vanishes mid-stream: the client sees the end without an exit status', async (t) => {
    const d = await client.openOp('victim', 'exec', { command: 'sh', args: ['-c', 'echo begun; exec sleep 30'] });
    const r = await collect(d, { onFirstOutput: () => void victimAgent.stop() });
    t.equal(r.stdout, 'begun\n');
    t.equal(r.exit, undefined, 'no exit frame: the CLI reports the tunnel closed');
    await waitFor(() => relay.gateway.get(victim.applianceId) === undefined, 10_000, 'victim gone');
    await t.rejects(runExec(client, 'victim', { command: 'true' }), { code: 'UPLINK_ERR_AGENT_OFFLINE' });
    await bystanderWorks(t, 'an agent vanishing mid-stream');
  });
});
