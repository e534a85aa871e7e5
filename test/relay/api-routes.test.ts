/** Vendor API: tokens (create, list, revoke), scopes, and the appliance routes' refusals. */
import t from 'tap';
import { ApiClient } from '../../relay/cli/api-client.js';
import { adminClient, createAppliance, startRelay } from '../helpers/cluster.js';

t.test('tokens and scopes', async (t) => {
  const relay = await startRelay(t);
  const admin = adminClient(t, relay);
  const as = (token: string) => {
    const c = new ApiClient({ url: relay.url, token });
    t.teardown(() => c.close());
    return c;
  };

  const created = await admin.call<{ id: string; name: string; scopes: string[]; token: string; createdBy: string }>('POST', '/v1/tokens', { name: 'ci-reader', scopes: ['read', 'read'] });
  t.match(created.token, /^uplk_/);
  t.same(created.scopes, ['read'], 'duplicates folded');
  t.equal(created.createdBy, 'bootstrap-admin');
  const reader = as(created.token);
  await createAppliance(admin, 'api-a');

  t.test('a read token reads but cannot create or administer', async (t) => {
    const list = await reader.call<{ appliances: { name: string; connected: boolean }[] }>('GET', '/v1/appliances');
    t.same(list.appliances.map((a) => [a.name, a.connected]), [['api-a', false]]);
    t.equal((await reader.call<{ name: string }>('GET', '/v1/whoami')).name, 'ci-reader');
    await t.rejects(reader.call('POST', '/v1/appliances', { name: 'x', customer: 'c', instanceId: 'i-x' }), { code: 'UPLINK_ERR_FORBIDDEN' });
    await t.rejects(reader.call('GET', '/v1/tokens'), { code: 'UPLINK_ERR_FORBIDDEN' });
    await t.rejects(reader.call('POST', '/v1/appliances/api-a/revoke'), { code: 'UPLINK_ERR_FORBIDDEN' });
    await t.rejects(reader.openOp('api-a', 'exec', { command: 'true' }), { code: 'UPLINK_ERR_FORBIDDEN' });
    const raw = await fetch(`${relay.url}/v1/appliances`, { method: 'POST', headers: { authorization: `Bearer ${created.token}` }, body: '{}' });
    t.equal(raw.status, 403);
    t.equal(((await raw.json()) as { code: string }).code, 'UPLINK_ERR_FORBIDDEN');
  });

  t.test('list shows tokens without their values; revoke by id gives 401 afterwards', async (t) => {
    const tokens = (await admin.call<{ tokens: Record<string, unknown>[] }>('GET', '/v1/tokens')).tokens;
    t.same(tokens.map((x) => [x.name, x.scopes, x.revokedAt]), [['bootstrap-admin', ['admin'], null], ['ci-reader', ['read'], null]]);
    t.notOk(JSON.stringify(tokens).includes(created.token), 'values never listed');
    t.same(await admin.call('DELETE', `/v1/tokens/${created.id}`), { revoked: created.id });
    await t.rejects(reader.call('GET', '/v1/appliances'), { code: 'UPLINK_ERR_UNAUTHENTICATED' });
    const raw = await fetch(`${relay.url}/v1/appliances`, { headers: { authorization: `Bearer ${created.token}` } });
    t.equal(raw.status, 401);
    await t.rejects(reader.openOp('api-a', 'exec', { command: 'true' }), { code: 'UPLINK_ERR_UNAUTHENTICATED' });
    await t.rejects(admin.call('DELETE', `/v1/tokens/${created.id}`), { code: 'UPLINK_ERR_NOT_FOUND' });
  });

  t.test('bad requests', async (t) => {
    await t.rejects(admin.call('POST', '/v1/tokens', { name: 'x', scopes: ['root'] }), { code: 'UPLINK_ERR_BAD_REQUEST' });
    await t.rejects(admin.call('POST', '/v1/tokens', { name: 'x', scopes: [] }), { code: 'UPLINK_ERR_BAD_REQUEST' });
    await t.rejects(admin.call('POST', '/v1/tokens', { name: 'x y', scopes: ['read'] }), { code: 'UPLINK_ERR_BAD_REQUEST' });
    await t.rejects(admin.call('POST', '/v1/tokens', { name: 'x', scopes: ['read'], admin: true }), { code: 'UPLINK_ERR_BAD_REQUEST' });
    await t.rejects(admin.call('POST', '/v1/appliances', { name: 'Bad_Name', customer: 'c', instanceId: 'i' }), { code: 'UPLINK_ERR_BAD_REQUEST' });
    await t.rejects(admin.call('POST', '/v1/appliances', { name: 'api-a', customer: 'c', instanceId: 'i' }), { code: 'UPLINK_ERR_CONFLICT' });
    await t.rejects(admin.call('POST', '/v1/appliances', { name: 'ok-name', customer: 'c', instanceId: 'i', tokenTtlSeconds: 5 }), { code: 'UPLINK_ERR_BAD_REQUEST' });
    await t.rejects(admin.call('GET', '/v1/appliances/nope'), { code: 'UPLINK_ERR_NOT_FOUND' });
    await t.rejects(admin.call('POST', '/v1/appliances/api-a/revoke'), { code: 'UPLINK_ERR_CONFLICT' }, 'no key to revoke yet');
    await t.rejects(admin.call('GET', '/v1/nothing-here'), { code: 'UPLINK_ERR_NOT_FOUND' });
    const noAuth = await fetch(`${relay.url}/v1/appliances`);
    t.equal(noAuth.status, 401);
    const garbage = await fetch(`${relay.url}/v1/tokens`, { method: 'POST', headers: { authorization: 'Bearer test-admin-token-0123456789', 'content-type': 'application/json' }, body: '{not json' });
    t.equal(garbage.status, 400);
    const huge = await fetch(`${relay.url}/v1/tokens`, { method: 'POST', headers: { authorization: 'Bearer test-admin-token-0123456789', 'content-type': 'application/json' }, body: JSON.stringify({ name: 'x'.repeat(2 * 1024 * 1024) }) });
    t.equal(huge.status, 413);
  });
});
