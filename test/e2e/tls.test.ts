/**
 * Both hops over TLS, as in production: a relay serving HTTPS with its own certificate, an
 * agent dialling wss:// and trusting it through `relayCaFile` (UPLINK_RELAY_CA) or pinning its
 * key (`relayPin`, UPLINK_RELAY_PIN), and a forward from the vendor's client through the relay
 * to a TCP service next to the agent. Checks that bytes arrive intact, that the agent and the
 * client send the zero WebSocket mask over wss (shared/ws-mask.ts), and that an agent which cannot
 * trust the relay, or finds another key than the pinned one, stays out with the reason.
 * The masking keys the clients put on their frames are read as the frames are built.
 */
import t, { type Test } from 'tap';
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { adminClient, agentConfig, createAppliance, startAgent, startRelay, tempDir, waitFor, ADMIN_TOKEN, type Enrolled } from '../helpers/cluster.js';
import * as wsLib from 'ws';
import { selfSignedCert } from '../helpers/tls.js';
import { readFrames } from '../helpers/exec-client.js';
import { CHANNEL, encodeControl, writeFrame, type Frame } from '../../shared/frames.js';
import { ApiClient } from '../../relay/cli/api-client.js';
import { Agent } from '../../agent/agent.js';
import { silentLogger } from '../../shared/logger.js';
import type { Relay } from '../../relay/server.js';
import { join } from 'node:path';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function tlsRelay(t: Test): Promise<{ relay: Relay; certFile: string; pin: string }> {
  const { certFile, keyFile } = selfSignedCert(tempDir(t, 'uplink-tls-'));
  const relay = await startRelay(t, { config: { insecureHttp: false, tls: { certFile, keyFile } } });
  const spki = new X509Certificate(readFileSync(certFile)).publicKey.export({ type: 'spki', format: 'der' });
  return { relay, certFile, pin: `sha256/${createHash('sha256').update(spki).digest('base64')}` };
}

/** A TCP service that sends back the SHA-256 of everything it received once the client ends its side. */
async function hashServer(t: Test): Promise<number> {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    const h = createHash('sha256');
    s.on('data', (c: Buffer) => h.update(c));
    s.on('end', () => s.end(h.digest('hex')));
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as AddressInfo).port;
}

/** Start an agent that is not expected to connect; resolves once it recorded an error. */
async function agentThatFails(t: Test, relay: Relay, enrolled: Enrolled, extra: Record<string, unknown>): Promise<Agent> {
  const stateDir = join(tempDir(t, 'uplink-agent-'), 'state');
  const agent = new Agent(agentConfig(relay, stateDir, enrolled.enrollmentToken, extra), silentLogger);
  await agent.start();
  t.teardown(() => agent.stop());
  await waitFor(() => agent.connection!.status.lastError !== null, 10_000, 'the agent to record why it cannot connect');
  return agent;
}

/** Every masking key a WebSocket client in this process puts on a frame, from now until teardown. */
function recordMasks(t: Test): Buffer[] {
  const keys: Buffer[] = [];
  // ws's frame builder (not in its type declarations): both clients' frames pass through it.
  const sender = (wsLib as unknown as { Sender: { frame(data: unknown, options: { mask?: boolean }): Buffer[] } }).Sender;
  const frame = sender.frame;
  sender.frame = (data, options) => {
    const out = frame(data, options);
    if (options.mask) {
      const head = out[0]!;
      const len = head[1]! & 0x7f;
      const at = len === 127 ? 10 : len === 126 ? 4 : 2;
      keys.push(Buffer.from(head.subarray(at, at + 4)));
    }
    return out;
  };
  t.teardown(() => void (sender.frame = frame));
  return keys;
}

t.test('a forward over TLS on both hops carries 3 MiB intact, under the zero mask', async (t) => {
  const masks = recordMasks(t);
  const { relay, certFile } = await tlsRelay(t);
  t.match(relay.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  const port = await hashServer(t);
  const admin = new ApiClient({ url: relay.url, token: ADMIN_TOKEN, caFile: certFile });
  t.teardown(() => admin.close());
  const enrolled = await createAppliance(admin, 'tls-fwd');
  await startAgent(t, relay, enrolled, { relayCaFile: certFile, local: { operate: 'enabled' }, operations: { forward: { allow: [{ name: 'hash', cidrs: ['127.0.0.1/32'], ports: [port] }] } } });

  const duplex: Duplex = await admin.openOp('tls-fwd', 'forward', { host: '127.0.0.1', port });
  let answer = '';
  let ended = false;
  readFrames(duplex, (f: Frame) => {
    if (f.channel === CHANNEL.stdout) answer += f.payload.toString('utf8');
  }).on('end', () => (ended = true));
  const sent = randomBytes(3 * 1024 * 1024);
  for (let at = 0; at < sent.length; at += 100_000) writeFrame(duplex, CHANNEL.stdin, sent.subarray(at, at + 100_000));
  duplex.write(encodeControl({ type: 'eof' }));
  await waitFor(() => ended || answer.length >= 64, 20_000, 'the digest from the service');
  t.equal(answer.slice(0, 64), sha(sent), 'the service received every byte, in order');
  // The agent's tunnel and the client's operation socket are the only WebSocket clients here.
  t.ok(masks.length > 10, `${masks.length} client frames seen`);
  t.equal(masks.filter((k) => k.readUInt32BE(0) !== 0).length, 0, 'every one with the zero key');
});

t.test('the agent pins the relay key: the right pin connects, another is refused with its code', async (t) => {
  const { relay, certFile, pin } = await tlsRelay(t);
  const admin = new ApiClient({ url: relay.url, token: ADMIN_TOKEN, caFile: certFile });
  t.teardown(() => admin.close());
  await startAgent(t, relay, await createAppliance(admin, 'tls-pin-ok'), { relayCaFile: certFile, relayPin: pin });
  t.pass('connected with the pinned key');

  const wrong = `sha256/${createHash('sha256').update('another key').digest('base64')}`;
  const refused = await createAppliance(admin, 'tls-pin-wrong');
  const agent = await agentThatFails(t, relay, refused, { relayCaFile: certFile, relayPin: wrong });
  t.equal(agent.connection!.status.connected, false);
  t.equal(agent.connection!.status.lastError?.code, 'UPLINK_ERR_TLS_PIN_MISMATCH');
  t.match(agent.connection!.status.lastError?.message, `pinned ${wrong}`);
  t.equal(relay.gateway.get(refused.applianceId), undefined, 'the relay never saw it');
});

t.test('an agent that does not trust the relay certificate stays out', async (t) => {
  const { relay, certFile } = await tlsRelay(t);
  const admin = new ApiClient({ url: relay.url, token: ADMIN_TOKEN, caFile: certFile });
  t.teardown(() => admin.close());
  const enrolled = await createAppliance(admin, 'tls-untrusted');
  const agent = await agentThatFails(t, relay, enrolled, {});
  t.equal(agent.connection!.status.connected, false);
  t.match(agent.connection!.status.lastError?.message, /self-signed certificate/);
  t.equal(relay.gateway.get(enrolled.applianceId), undefined);
  // The vendor's client without the CA is refused the same way.
  const blind = adminClient(t, relay);
  await t.rejects(blind.call('GET', '/v1/appliances'), { code: 'UPLINK_ERR_RELAY_UNREACHABLE' });
});
