/**
 * The agent binary as a real process: it opens no listening socket of any kind, and when it
 * is killed with SIGKILL the relay notices within the heartbeat bound and says so.
 */
import t from 'tap';
import { ApiClient } from '../../relay/cli/api-client.js';
import { ADMIN_TOKEN, waitFor } from '../helpers/cluster.js';
import { listeningInodes, socketInodes, startAgentProcess, startRelayProcess } from '../helpers/processes.js';

const HEARTBEAT_MS = 200;
const MISSED = 3;

t.test('agent process: no listening socket; kill -9 shows disconnected within the heartbeat bound', async (t) => {
  const relay = await startRelayProcess(t, { config: { heartbeat: { intervalMs: HEARTBEAT_MS, missedIntervals: MISSED } } });
  const client = new ApiClient({ url: relay.url, token: ADMIN_TOKEN });
  t.teardown(() => client.close());
  const created = await client.call<{ enrollmentToken: string }>('POST', '/v1/appliances', { name: 'proc-a', customer: 'acme', instanceId: 'i-proc' });
  const agent = startAgentProcess(t, relay.url, created.enrollmentToken, { local: { operate: 'enabled' } });
  const connected = async () => (await client.call<{ connected: boolean }>('GET', '/v1/appliances/proc-a')).connected;
  await waitFor(connected, 60_000, 'agent process connected');

  const mine = socketInodes(agent.pid);
  t.ok(mine.size >= 1, 'the agent holds its outbound socket');
  const listening = listeningInodes();
  const owned = [...mine].filter((inode) => listening.has(inode)).map((inode) => listening.get(inode));
  t.same(owned, [], 'no LISTEN socket (tcp, tcp6 or unix) is owned by the agent');
  // The check itself can see listeners: the relay's own port is one.
  const relayOwned = [...socketInodes(relay.pid)].filter((inode) => listening.has(inode));
  t.ok(relayOwned.length >= 1, 'the same check finds the relay listening');

  agent.child.kill('SIGKILL');
  const killedAt = Date.now();
  await waitFor(async () => !(await connected()), 30_000, 'relay shows the agent disconnected');
  const tookMs = Date.now() - killedAt;
  t.comment(`disconnected after ${tookMs} ms (heartbeat bound ${(MISSED + 1) * HEARTBEAT_MS} ms plus scheduling)`);
  const metrics = await (await fetch(`${relay.url}/metrics`)).text();
  t.match(metrics, /\nuplink_agents_connected 0\n/);
});
