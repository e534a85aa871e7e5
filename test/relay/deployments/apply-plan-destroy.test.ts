/**
 * Deployments end to end (relay on PGlite, scheduler, tunnel, local-mode agent, real terraform):
 * apply, plan and destroy store status, redacted outputs and the byte-exact log; both audit
 * logs record every step.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ADMIN_TOKEN, adminClient, createAppliance, startAgent, startRelay } from '../../helpers/cluster.js';
import { requireTools } from '../../helpers/tools.js';
import { deploy, deployAgentExtras, newKey, readLog, uploadRelease, waitEnded } from '../../helpers/deployments.js';

const tools = requireTools(['terraform']);

t.test('apply, plan and destroy store status, outputs and the full log', tools, async (t) => {
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const key = newKey();
  const app = await createAppliance(client, 'acme-prod');
  const agent = await startAgent(t, relay, app, deployAgentExtras([key]));
  await uploadRelease(client, key, 'basic', '1.0.0', 'acme-prod');

  const applied = await waitEnded(client, (await deploy(client, 'acme-prod', '1.0.0')).id);
  t.equal(applied.status, 'succeeded');
  t.equal(applied.error, null);
  t.same(applied.outputs?.marker, { value: 'hello-i-acme-prod', type: 'string', sensitive: false });
  t.equal(applied.outputs?.token?.value, null, 'sensitive output redacted before it left the agent');
  t.equal(applied.outputs?.token?.redacted, true);
  const log = await readLog(relay.url, ADMIN_TOKEN, applied.id);
  t.match(log, /Apply complete! Resources: 1 added, 0 changed, 0 destroyed\./);
  t.equal(log, readFileSync(join(agent.cfg.stateDir, 'deploy', applied.id, 'log'), 'utf8'), 'relay log is byte-identical to the agent copy');
  t.equal(await readLog(relay.url, ADMIN_TOKEN, applied.id, 10), log.slice(10), 'resumes by byte offset');

  const plan = await waitEnded(client, (await deploy(client, 'acme-prod', '1.0.0', { action: 'plan' })).id);
  t.equal(plan.status, 'succeeded');
  t.equal(plan.action, 'plan');
  t.match(await readLog(relay.url, ADMIN_TOKEN, plan.id), /No changes\./);

  const destroyed = await waitEnded(client, (await deploy(client, 'acme-prod', '1.0.0', { action: 'destroy' })).id);
  t.equal(destroyed.status, 'succeeded');
  t.match(await readLog(relay.url, ADMIN_TOKEN, destroyed.id), /Apply complete! Resources: 0 added, 0 changed, 1 destroyed\./);

  const { deployments } = await client.call<{ deployments: { id: string }[] }>('GET', '/v1/appliances/acme-prod/deployments');
  t.same(deployments.map((d) => d.id), [applied.id, plan.id, destroyed.id]);

  const audit = readFileSync(join(agent.cfg.stateDir, 'audit', 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { operation: string; outcome: string });
  t.same(
    audit.filter((e) => e.operation.startsWith('deploy.')).map((e) => `${e.operation}:${e.outcome}`),
    ['deploy.apply:started', 'deploy.apply:ok', 'deploy.plan:started', 'deploy.plan:ok', 'deploy.destroy:started', 'deploy.destroy:ok'],
    "agent's audit log",
  );
  const relayAudit = await relay.store.db.query<{ operation: string; outcome: string }>(`SELECT operation, outcome FROM audit_events WHERE operation LIKE 'deploy.%' ORDER BY seq`);
  t.same(
    relayAudit.rows.map((e) => `${e.operation}:${e.outcome}`),
    ['deploy.request:ok', 'deploy.start:started', 'deploy.end:ok', 'deploy.request:ok', 'deploy.start:started', 'deploy.end:ok', 'deploy.request:ok', 'deploy.start:started', 'deploy.end:ok'],
    "relay's audit chain",
  );
});
