/**
 * 500 concurrent execs on one agent, all through one relay: each must exit 0 with its own
 * output, and no stream may be left open. The relay runs on PostgreSQL when one answers
 * (the pool serves the 500 token checks in parallel) and on PGlite otherwise.
 */
import t from 'tap';
import { adminClient, createAppliance, startAgent, startRelay, waitFor } from '../../helpers/cluster.js';
import { runExec } from '../../helpers/exec-client.js';
import { freshDatabase } from '../../helpers/pg.js';

const CONCURRENT = 500;

t.test(`${CONCURRENT} concurrent execs on one agent`, async (t) => {
  const databaseUrl = await freshDatabase(t, 'uplink_exec500');
  const relay = await startRelay(t, { ...(databaseUrl ? { databaseUrl } : {}), config: { heartbeat: { intervalMs: 200 } } });
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'exec-many');
  await startAgent(t, relay, enrolled, { local: { operate: 'enabled' } });
  const results = await Promise.allSettled(
    Array.from({ length: CONCURRENT }, (_, i) => runExec(client, 'exec-many', { command: 'echo', args: [`job-${i}`] })),
  );
  const failures = results
    .map((r, i) => (r.status === 'rejected' ? `${i}: ${(r.reason as { code?: string }).code}` : r.value.stdout === `job-${i}\n` && r.value.exit?.code === 0 && r.value.stderr === '' ? null : `${i}: ${JSON.stringify(r.value)}`))
    .filter((x) => x !== null);
  t.same(failures, [], 'every exec exited 0 with its own output');
  // A stream's 'close' follows the last frame by a tick or so; every one of them must come.
  await waitFor(() => relay.gateway.get(enrolled.applianceId)?.streamsOpenFor('exec') === 0, 20_000, 'every stream closed');
  t.pass('every stream closed');
  t.same((await relay.metrics.disconnections.get()).values, [], 'the agent never dropped');
});
