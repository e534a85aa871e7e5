/**
 * The relay restarts mid-apply: the agent keeps applying, reconnects to the new relay (same
 * data dir, same port), and the scheduler re-attaches by log offset, records the final
 * state and the complete log, byte-identical to the agent's own copy.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ADMIN_TOKEN, adminClient, createAppliance, startAgent, startRelay, tempDir, waitFor } from '../../helpers/cluster.js';
import { requireTools } from '../../helpers/tools.js';
import { deploy, deployAgentExtras, newKey, readLog, uploadRelease, waitEnded, waitStatus } from '../../helpers/deployments.js';

t.test('relay restart during apply: the apply continues and the relay recovers state and log', requireTools(['terraform']), async (t) => {
  const dataDir = join(tempDir(t, 'uplink-relay-'), 'data');
  const first = await startRelay(t, { dataDir });
  const port = Number(new URL(first.url).port);
  const client = adminClient(t, first);
  const key = newKey();
  const app = await createAppliance(client, 'acme-prod');
  const agent = await startAgent(t, first, app, { ...deployAgentExtras([key]), reconnect: { initialDelayMs: 50, maxDelayMs: 200 } });
  await uploadRelease(client, key, 'slow', '1.0.0', 'acme-prod');
  const d = await deploy(client, 'acme-prod', '1.0.0');
  await waitStatus(client, d.id, 'running');
  await waitFor(async () => /terraform_data\.slow: Creating/.test(await readLog(first.url, ADMIN_TOKEN, d.id)), 60_000, 'apply under way');
  await first.close();

  const second = await startRelay(t, { dataDir, config: { listen: { host: '127.0.0.1', port } } });
  t.equal(second.url, first.url, 'same address');
  const client2 = adminClient(t, second);
  const ended = await waitEnded(client2, d.id, 90_000);
  t.equal(ended.status, 'succeeded', 'the apply was not cancelled by the restart');
  t.same(ended.outputs?.done, { value: 'i-acme-prod', type: 'string', sensitive: false });
  const log = await readLog(second.url, ADMIN_TOKEN, d.id);
  t.match(log, /Apply complete! Resources: 1 added, 0 changed, 0 destroyed\./);
  t.equal(log, readFileSync(join(agent.cfg.stateDir, 'deploy', d.id, 'log'), 'utf8'), 'complete log, no gap and no duplicate');
  const { rows } = await second.store.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM audit_events WHERE operation = 'deploy.end' AND request_id = $1`, [d.id]);
  t.equal(rows[0]!.n, 1, 'the end is audited once');
});
