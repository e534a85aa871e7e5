/**
 * The relay process in-process: health endpoints and metrics, the one-time bootstrap token,
 * presence, graceful shutdown with an in-flight exec, and agents coming back to a relay
 * restarted on the same port without operator action.
 */
import t from 'tap';
import { join } from 'node:path';
import { loadRelayConfig } from '../../relay/config.js';
import { Relay } from '../../relay/server.js';
import { silentLogger } from '../../shared/logger.js';
import { adminClient, createAppliance, startAgent, startRelay, tempDir, waitFor } from '../helpers/cluster.js';
import { runExec } from '../helpers/exec-client.js';
import { ApiClient } from '../../relay/cli/api-client.js';

const FAST = { heartbeat: { intervalMs: 200 } };
const AGENT = { local: { operate: 'enabled' }, reconnect: { initialDelayMs: 50, maxDelayMs: 300 } };

t.test('healthz, readyz, metrics', async (t) => {
  const relay = await startRelay(t, { config: FAST });
  const client = adminClient(t, relay);
  const health = await fetch(`${relay.url}/healthz`);
  t.equal(health.status, 200);
  t.match(await health.json(), { status: 'ok', relay: relay.relayId });
  const ready = await fetch(`${relay.url}/readyz`);
  t.equal(ready.status, 200);
  t.same(await ready.json(), { status: 'ready', agents: 0, store: 'pglite' });
  const enrolled = await createAppliance(client, 'metrics-a');
  await startAgent(t, relay, enrolled, AGENT);
  const r = await runExec(client, 'metrics-a', { command: 'echo', args: ['x'] });
  t.equal(r.exit?.code, 0);
  await fetch(`${relay.url}/v1/appliances`, { headers: { authorization: 'Bearer wrong-token-000000' } });
  const res = await fetch(`${relay.url}/metrics`);
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^text\/plain/);
  const text = await res.text();
  t.match(text, /\nuplink_agents_connected 1\n/);
  t.match(text, /\n# TYPE uplink_streams_open gauge\n/);
  t.match(text, /\nuplink_streams_open\{op="exec"\} 0\n/);
  t.match(text, /\nuplink_tunnel_bytes_total\{direction="to_agent"\} [1-9]\d*\n/);
  t.match(text, /\nuplink_tunnel_bytes_total\{direction="from_agent"\} [1-9]\d*\n/);
  t.match(text, /\nuplink_auth_failures_total\{code="UPLINK_ERR_UNAUTHENTICATED"\} 1\n/);
  const closing = relay.close();
  const drainingReady = await fetch(`${relay.url}/readyz`).catch(() => undefined);
  if (drainingReady) t.equal(drainingReady.status, 503, 'draining relay is not ready');
  await closing;
});

t.test('bootstrap token: printed once when UPLINK_BOOTSTRAP_TOKEN is unset, not again on restart', async (t) => {
  const dataDir = join(tempDir(t, 'uplink-boot-'), 'data');
  const start = async () => {
    const lines: string[] = [];
    const relay = new Relay(loadRelayConfig({ listen: { host: '127.0.0.1', port: 0 }, insecureHttp: true, dataDir }), { logger: silentLogger, env: {}, announce: (l) => lines.push(l) });
    await relay.start();
    return { relay, lines };
  };
  const first = await start();
  t.equal(first.lines.length, 1);
  const m = /: (uplk_[A-Za-z0-9_-]{43})$/.exec(first.lines[0] ?? '');
  t.ok(m, 'the line carries the token');
  const c = new ApiClient({ url: first.relay.url, token: m![1]! });
  t.same((await c.call<{ scopes: string[] }>('GET', '/v1/whoami')).scopes, ['admin']);
  await c.close();
  await first.relay.close();
  const second = await start();
  t.teardown(() => second.relay.close());
  t.same(second.lines, [], 'not printed again');
  const short = new Relay(loadRelayConfig({ listen: { host: '127.0.0.1', port: 0 }, insecureHttp: true, dataDir: join(tempDir(t), 'd') }), { logger: silentLogger, env: { UPLINK_BOOTSTRAP_TOKEN: 'short' }, announce: () => {} });
  await t.rejects(short.start(), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  await short.close();
});

t.test('presence rows name this relay and since', async (t) => {
  const relay = await startRelay(t, { config: FAST });
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'presence-a');
  const before = Date.now();
  await startAgent(t, relay, enrolled, AGENT);
  await waitFor(async () => (await relay.store.presence.listLive(new Date(), 30_000)).length === 1, 10_000, 'presence row');
  const [p] = await relay.store.presence.listLive(new Date(), 30_000);
  t.equal(p?.applianceId, enrolled.applianceId);
  t.equal(p?.relayId, relay.relayId);
  t.ok(p!.connectedAt.getTime() >= before - 1000 && p!.connectedAt.getTime() <= Date.now(), 'since is the connect time');
  t.equal(p?.remoteAddress, '127.0.0.1');
  const view = await client.call<{ connected: boolean; relayId: string }>('GET', '/v1/appliances/presence-a');
  t.same([view.connected, view.relayId], [true, relay.relayId]);
});

t.test('graceful shutdown: in-flight exec finishes, agent reconnects to a new relay on the same port', async (t) => {
  const dataDir = join(tempDir(t, 'uplink-drain-'), 'data');
  const relay = await startRelay(t, { dataDir, config: { ...FAST, shutdown: { drainTimeoutMs: 20_000 } } });
  const port = Number(new URL(relay.url).port);
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'drain-a');
  const agent = await startAgent(t, relay, enrolled, AGENT);
  let closeAt = 0;
  const inflight = runExec(client, 'drain-a', { command: 'sh', args: ['-c', 'echo started; sleep 1; echo finished'] }, {
    onFirstOutput: () => {
      closeAt = Date.now();
      void relay.close();
    },
  });
  const r = await inflight;
  t.equal(r.stdout, 'started\nfinished\n');
  t.same(r.exit, { type: 'exit', code: 0, signal: null });
  await relay.close();
  const again = await startRelay(t, { dataDir, config: { ...FAST, listen: { host: '127.0.0.1', port } } });
  t.equal(again.url, relay.url);
  const stamped = await again.store.appliances.byName('drain-a');
  // The heartbeat sweep stops when the drain starts, right after the close; the exec still
  // runs a second after that, and the drain stamps last seen only once it ended.
  t.ok(stamped!.lastSeenAt!.getTime() >= closeAt + 500, 'the draining relay stamped last seen for the agents it held, at the end of the drain');
  t.equal(stamped!.lastRemoteAddress, '127.0.0.1');
  t.same((await again.store.presence.listLive(new Date(), 30_000)).filter((p) => p.relayId === relay.relayId), [], 'and took its presence rows with it');
  await waitFor(() => again.gateway.get(enrolled.applianceId) !== undefined, 20_000, 'agent back on the new relay');
  await waitFor(() => agent.connection?.status.connected === true, 10_000, 'agent reports connected');
  t.ok(agent.connection!.status.reconnects >= 1, 'it reconnected by itself');
  const c2 = adminClient(t, again);
  const after = await runExec(c2, 'drain-a', { command: 'echo', args: ['again'] });
  t.equal(after.stdout, 'again\n');
  t.equal(after.exit?.code, 0);
});
