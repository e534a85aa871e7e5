/**
 * agent/identity-ssm.ts against a real moto SSM: the first start creates the SecureString
 * (Overwrite=false) and the state dir copy; a later start with an empty state dir and no
 * enrollment token reads it back and connects with the same key; a second creator gets
 * the winner's identity; damaged parameters, bad names and an unreachable SSM fail with
 * exact codes.
 */
import t from 'tap';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { GetParameterCommand, PutParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { startMoto } from '../helpers/moto.js';
import { adminClient, agentConfig, createAppliance, startAgent, startRelay, tempDir, waitFor } from '../helpers/cluster.js';
import { Agent } from '../../agent/agent.js';
import { createIdentity } from '../../agent/identity-store.js';
import { reconcileIdentity, ssmIdentityStore } from '../../agent/identity-ssm.js';
import { silentLogger } from '../../shared/logger.js';

t.test('identity in SSM Parameter Store', async (t) => {
  const moto = await startMoto(t);
  if (!moto) return;
  t.teardown(() => moto.stop());
  // The agent's base credentials and endpoint come from the environment, as on ECS.
  Object.assign(process.env, moto.env);
  const ssm = new SSMClient({});
  t.teardown(() => ssm.destroy());
  // One relay for the file: PGlite start-up is the slow part.
  const relay = await startRelay(t);
  const client = adminClient(t, relay);

  await t.test('created at first start, read back by a later start with an empty state dir', async (t) => {
    const enrolled = await createAppliance(client, 'ssm-a');
    const parameter = '/uplink/ssm-a/identity';
    const first = await startAgent(t, relay, enrolled, { identitySsmParameter: parameter });

    const out = await ssm.send(new GetParameterCommand({ Name: parameter, WithDecryption: true }));
    t.equal(out.Parameter!.Type, 'SecureString');
    const stored = JSON.parse(out.Parameter!.Value!) as { applianceId: string; keyId: string; secretKey: string };
    t.equal(stored.applianceId, enrolled.applianceId);
    t.equal(stored.keyId, first.identity.keyId);
    t.equal(stored.secretKey, first.identity.secretKey);
    const cache = JSON.parse(readFileSync(join(first.cfg.stateDir, 'identity.json'), 'utf8')) as { keyId: string };
    t.equal(cache.keyId, first.identity.keyId, 'the state dir holds the cache');
    await first.stop();
    await waitFor(() => relay.gateway.get(enrolled.applianceId) === undefined, 10_000, 'first agent gone');

    // A new task: fresh state dir, no enrollment token (it was used once already).
    const second = new Agent(agentConfig(relay, join(tempDir(t), 'state'), undefined, { identitySsmParameter: parameter }), silentLogger);
    await second.start();
    t.teardown(() => second.stop());
    t.equal(second.identity.keyId, first.identity.keyId, 'same key as the first start');
    await waitFor(() => relay.gateway.get(enrolled.applianceId) !== undefined, 10_000, 'second agent connected with the stored key');
    const after = await ssm.send(new GetParameterCommand({ Name: parameter, WithDecryption: true }));
    t.equal(after.Parameter!.Version, 1, 'the parameter was never overwritten');
  });

  await t.test('a token for another appliance is refused when SSM holds an identity', async (t) => {
    const a = await createAppliance(client, 'ssm-b1');
    const b = await createAppliance(client, 'ssm-b2');
    const parameter = '/uplink/ssm-b/identity';
    await ssmIdentityStore({ parameterName: parameter }).create(createIdentity(a.applianceId, new URL(relay.url).host));
    const agent = new Agent(agentConfig(relay, join(tempDir(t), 'state'), b.enrollmentToken, { identitySsmParameter: parameter }), silentLogger);
    t.teardown(() => agent.stop());
    await t.rejects(agent.start(), { code: 'UPLINK_ERR_AGENT_STATE_MISMATCH' });
  });

  await t.test('the second creator gets the first one\'s identity (Overwrite=false)', async (t) => {
    const store = ssmIdentityStore({ parameterName: '/uplink/race/identity' });
    const winner = createIdentity('app_winner', 'relay.example:443');
    const loser = createIdentity('app_winner', 'relay.example:443');
    t.same(await store.create(winner), winner);
    t.same(await store.create(loser), winner);
    t.same(await store.load(), winner);
    t.equal(await ssmIdentityStore({ parameterName: '/uplink/absent/identity' }).load(), undefined);
  });

  await t.test('damaged parameters, bad names and an unreachable SSM', async (t) => {
    await ssm.send(new PutParameterCommand({ Name: '/uplink/damaged/a', Value: 'not json', Type: 'SecureString' }));
    await ssm.send(new PutParameterCommand({ Name: '/uplink/damaged/b', Value: JSON.stringify({ applianceId: 'x' }), Type: 'SecureString' }));
    await ssm.send(new PutParameterCommand({ Name: '/uplink/damaged/c', Value: 'x'.repeat(4097), Type: 'String', Tier: 'Advanced' }));
    for (const name of ['/uplink/damaged/a', '/uplink/damaged/b', '/uplink/damaged/c']) {
      await t.rejects(ssmIdentityStore({ parameterName: name }).load(), { code: 'UPLINK_ERR_IDENTITY_STORE_UNAVAILABLE' }, name);
    }
    t.throws(() => ssmIdentityStore({ parameterName: 'bad name with spaces' }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
    t.throws(() => ssmIdentityStore({ parameterName: '' }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
    const down = ssmIdentityStore({ parameterName: '/uplink/down', endpoint: 'http://127.0.0.1:1' });
    await t.rejects(down.load(), { code: 'UPLINK_ERR_IDENTITY_STORE_UNAVAILABLE' });
    await t.rejects(down.create(createIdentity('app_x', 'relay.example')), { code: 'UPLINK_ERR_IDENTITY_STORE_UNAVAILABLE' });
  });

  t.test('reconcile: the cache wins only for the same key', async (t) => {
    const remote = createIdentity('app_1', 'relay.example');
    const enrolledCache = { ...remote, enrolledAt: '2026-01-01T00:00:00.000Z' };
    t.same(reconcileIdentity(remote, enrolledCache, false), enrolledCache);
    const stale = createIdentity('app_1', 'relay.example');
    t.same(reconcileIdentity(remote, stale, true), remote, 'a different key in the cache is replaced');
    t.equal(reconcileIdentity(remote, undefined, false).enrolledAt, 'unconfirmed', 'no token: try the key first');
    t.equal(reconcileIdentity(remote, undefined, true).enrolledAt, null);
    t.end();
  });
});
