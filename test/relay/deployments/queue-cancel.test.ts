/**
 * One deployment at a time per appliance: a second one queues and starts after the first
 * ended; cancel ends a queued one at once and stops a running apply (SIGINT on the agent).
 */
import t from 'tap';
import { ADMIN_TOKEN, adminClient, createAppliance, startAgent, startRelay, waitFor } from '../../helpers/cluster.js';
import { requireTools } from '../../helpers/tools.js';
import { deploy, deployAgentExtras, getDeployment, newKey, readLog, uploadRelease, waitEnded, waitStatus } from '../../helpers/deployments.js';

const tools = requireTools(['terraform']);

t.test('two deployments queue in order; cancel stops a running apply', tools, async (t) => {
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const key = newKey();
  const app = await createAppliance(client, 'acme-prod');
  await startAgent(t, relay, app, deployAgentExtras([key]));
  await uploadRelease(client, key, 'slow', '1.0.0', 'acme-prod');
  await uploadRelease(client, key, 'basic', '2.0.0', 'acme-prod');

  const first = await deploy(client, 'acme-prod', '1.0.0');
  const second = await deploy(client, 'acme-prod', '2.0.0');
  await waitStatus(client, first.id, 'running');
  t.equal((await getDeployment(client, second.id)).status, 'queued', 'second waits while the first runs');
  const a = await waitEnded(client, first.id);
  const b = await waitEnded(client, second.id);
  t.equal(a.status, 'succeeded');
  t.equal(b.status, 'succeeded');
  t.ok(Date.parse(b.startedAt!) >= Date.parse(a.endedAt!), 'second started after the first ended');

  // Cancel: a queued one ends at once, a running one gets SIGINT on the agent.
  await uploadRelease(client, key, 'slow', '3.0.0', 'acme-prod');
  const running = await deploy(client, 'acme-prod', '3.0.0');
  const queued = await deploy(client, 'acme-prod', '3.0.0');
  await waitStatus(client, running.id, 'running');
  await waitFor(async () => /terraform_data\.slow: Creating/.test(await readLog(relay.url, ADMIN_TOKEN, running.id)), 30_000, 'apply under way');
  await client.call('POST', `/v1/deployments/${queued.id}/cancel`);
  t.equal((await getDeployment(client, queued.id)).status, 'cancelled');
  await client.call('POST', `/v1/deployments/${running.id}/cancel`);
  const cancelled = await waitEnded(client, running.id);
  t.equal(cancelled.status, 'cancelled');
  t.equal(cancelled.error?.code, 'UPLINK_ERR_DEPLOY_CANCELLED');
  await t.rejects(client.call('POST', `/v1/deployments/${running.id}/cancel`), { code: 'UPLINK_ERR_CONFLICT' });
});
