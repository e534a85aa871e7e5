/**
 * Two followers of GET /v1/deployments/:id/logs?follow=1 get terraform output while the
 * apply runs, and both end with exactly the stored log.
 */
import t from 'tap';
import { ADMIN_TOKEN, adminClient, createAppliance, startAgent, startRelay } from '../../helpers/cluster.js';
import { requireTools } from '../../helpers/tools.js';
import { deploy, deployAgentExtras, getDeployment, newKey, readLog, uploadRelease } from '../../helpers/deployments.js';

const tools = requireTools(['terraform']);

t.test('two followers see the log live and identical', tools, async (t) => {
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const key = newKey();
  const app = await createAppliance(client, 'acme-prod');
  await startAgent(t, relay, app, deployAgentExtras([key]));
  await uploadRelease(client, key, 'slow', '1.0.0', 'acme-prod');
  const d = await deploy(client, 'acme-prod', '1.0.0');

  const follow = async () => {
    const res = await fetch(`${relay.url}/v1/deployments/${d.id}/logs?offset=0&follow=1`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    t.equal(res.status, 200);
    const reader = res.body!.getReader();
    let text = '';
    let sawWhileRunning = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString('utf8');
      if (/terraform_data\.slow: Creating/.test(text) && !sawWhileRunning) sawWhileRunning = (await getDeployment(client, d.id)).status === 'running';
    }
    return { text, sawWhileRunning };
  };
  const [one, two] = await Promise.all([follow(), follow()]);
  const final = await getDeployment(client, d.id);
  t.equal(final.status, 'succeeded');
  t.ok(one.sawWhileRunning, 'follower 1 got output while the apply still ran');
  t.ok(two.sawWhileRunning, 'follower 2 got output while the apply still ran');
  const stored = await readLog(relay.url, ADMIN_TOKEN, d.id);
  t.equal(one.text, stored);
  t.equal(two.text, stored);
  t.match(stored, /Apply complete!/);
});
