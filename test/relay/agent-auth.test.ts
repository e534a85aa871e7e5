/**
 * The agent handshake against a real relay: every refusal has its own status and code, the
 * refusals are counted in uplink_auth_failures_total{code}, and none of them disturbs the
 * relay.
 */
import t from 'tap';
import { adminClient, createAppliance, startRelay } from '../helpers/cluster.js';
import { closeRaw, dialRaw, handshakeHeaders } from '../helpers/raw-agent.js';
import { generateKeyPair } from '../../shared/identity.js';
import { newEnrollmentToken } from '../../shared/enrollment-token.js';
import { hashSecret } from '../../relay/store/tokens-repo.js';

t.test('enrollment and connect', async (t) => {
  const relay = await startRelay(t, { config: { heartbeat: { intervalMs: 200 } } });
  const client = adminClient(t, relay);
  const a = await createAppliance(client, 'auth-a');
  const b = await createAppliance(client, 'auth-b');
  const keys = generateKeyPair();

  t.test('a token for another appliance is refused and not consumed', async (t) => {
    const r = await dialRaw(relay.url, handshakeHeaders(relay.url, { mode: 'enroll', appliance: b.applianceId, enrollmentToken: a.enrollmentToken }));
    t.same(r.ok ? 'open' : [r.status, r.code], [401, 'UPLINK_ERR_ENROLL_WRONG_APPLIANCE']);
  });

  t.test('good enrollment, then signed connects', async (t) => {
    const r = await dialRaw(relay.url, handshakeHeaders(relay.url, { mode: 'enroll', appliance: a.applianceId, keys, enrollmentToken: a.enrollmentToken }));
    t.equal(r.ok, true);
    t.equal(relay.gateway.get(a.applianceId)?.info.applianceName, 'auth-a');
    await closeRaw(r);
    const c = await dialRaw(relay.url, handshakeHeaders(relay.url, { mode: 'connect', appliance: a.applianceId, keys }));
    t.equal(c.ok, true);
    await closeRaw(c);
    const view = await client.call<{ enrolled: boolean; keyId: string }>('GET', '/v1/appliances/auth-a');
    t.equal(view.enrolled, true);
  });

  t.test('a reused token is refused, even with a new key', async (t) => {
    const r = await dialRaw(relay.url, handshakeHeaders(relay.url, { mode: 'enroll', appliance: a.applianceId, enrollmentToken: a.enrollmentToken }));
    t.same(r.ok ? 'open' : [r.status, r.code], [401, 'UPLINK_ERR_ENROLL_TOKEN_USED']);
  });

  t.test('an expired token is refused', async (t) => {
    const token = newEnrollmentToken(b.applianceId);
    await relay.store.appliances.addEnrollmentToken(b.applianceId, hashSecret(token), new Date(Date.now() - 1000));
    const r = await dialRaw(relay.url, handshakeHeaders(relay.url, { mode: 'enroll', appliance: b.applianceId, enrollmentToken: token }));
    t.same(r.ok ? 'open' : [r.status, r.code], [401, 'UPLINK_ERR_ENROLL_TOKEN_EXPIRED']);
  });

  t.test('unknown and malformed tokens', async (t) => {
    const unknown = newEnrollmentToken(b.applianceId);
    const r = await dialRaw(relay.url, handshakeHeaders(relay.url, { mode: 'enroll', appliance: b.applianceId, enrollmentToken: unknown }));
    t.same(r.ok ? 'open' : [r.status, r.code], [401, 'UPLINK_ERR_ENROLL_TOKEN_INVALID']);
    const g = await dialRaw(relay.url, handshakeHeaders(relay.url, { mode: 'enroll', appliance: b.applianceId, enrollmentToken: 'garbage' }));
    t.same(g.ok ? 'open' : [g.status, g.code], [401, 'UPLINK_ERR_ENROLL_TOKEN_INVALID']);
    const none = await dialRaw(relay.url, handshakeHeaders(relay.url, { mode: 'enroll', appliance: b.applianceId }));
    t.same(none.ok ? 'open' : [none.status, none.code], [400, 'UPLINK_ERR_AUTH_MALFORMED']);
  });

  t.test('signature replay: the same signed headers twice', async (t) => {
    const headers = handshakeHeaders(relay.url, { mode: 'connect', appliance: a.applianceId, keys });
    const first = await dialRaw(relay.url, headers);
    t.equal(first.ok, true);
    await closeRaw(first);
    const again = await dialRaw(relay.url, headers);
    t.same(again.ok ? 'open' : [again.status, again.code], [401, 'UPLINK_ERR_AUTH_REPLAY']);
  });

  t.test('signature replay in parallel: handshakes checked in one batch, exactly one accepted', async (t) => {
    const headers = handshakeHeaders(relay.url, { mode: 'connect', appliance: a.applianceId, keys });
    const tries = await Promise.all([1, 2, 3, 4, 5].map(() => dialRaw(relay.url, headers)));
    t.same(tries.map((r) => (r.ok ? 'open' : r.code)).sort(), ['UPLINK_ERR_AUTH_REPLAY', 'UPLINK_ERR_AUTH_REPLAY', 'UPLINK_ERR_AUTH_REPLAY', 'UPLINK_ERR_AUTH_REPLAY', 'open']);
    for (const r of tries) if (r.ok) await closeRaw(r);
  });

  t.test('clock skew beyond the limit, either way', async (t) => {
    for (const offset of [-301_000, 301_000]) {
      const r = await dialRaw(relay.url, handshakeHeaders(relay.url, { mode: 'connect', appliance: a.applianceId, keys, timestamp: Date.now() + offset }));
      t.same(r.ok ? 'open' : [r.status, r.code], [401, 'UPLINK_ERR_AUTH_CLOCK_SKEW'], `offset ${offset}`);
    }
    const inside = await dialRaw(relay.url, handshakeHeaders(relay.url, { mode: 'connect', appliance: a.applianceId, keys, timestamp: Date.now() - 60_000 }));
    t.equal(inside.ok, true, 'one minute of skew is fine');
    await closeRaw(inside);
  });

  t.test('wrong key, unknown appliance and a signature for another relay host look the same', async (t) => {
    const wrongKey = await dialRaw(relay.url, handshakeHeaders(relay.url, { mode: 'connect', appliance: a.applianceId }));
    t.same(wrongKey.ok ? 'open' : [wrongKey.status, wrongKey.code], [401, 'UPLINK_ERR_AUTH_BAD_SIGNATURE']);
    const unknown = await dialRaw(relay.url, handshakeHeaders(relay.url, { mode: 'connect', appliance: 'apl_ffffffffffffffff', keys }));
    t.same(unknown.ok ? 'open' : [unknown.status, unknown.code], [401, 'UPLINK_ERR_AUTH_BAD_SIGNATURE']);
    const otherHost = await dialRaw(relay.url, handshakeHeaders('http://relay.other.example', { mode: 'connect', appliance: a.applianceId, keys }));
    t.same(otherHost.ok ? 'open' : [otherHost.status, otherHost.code], [401, 'UPLINK_ERR_AUTH_BAD_SIGNATURE']);
    const good = handshakeHeaders(relay.url, { mode: 'connect', appliance: a.applianceId, keys });
    const tampered = await dialRaw(relay.url, { ...good, 'x-uplink-signature': Buffer.alloc(64, 1).toString('base64') });
    t.same(tampered.ok ? 'open' : [tampered.status, tampered.code], [401, 'UPLINK_ERR_AUTH_BAD_SIGNATURE']);
  });

  t.test('malformed or missing upgrade headers', async (t) => {
    const good = handshakeHeaders(relay.url, { mode: 'connect', appliance: a.applianceId, keys });
    const cases: Record<string, string>[] = [
      {},
      { ...good, 'x-uplink-mode': 'admin' },
      { ...good, 'x-uplink-appliance': 'apl_XYZ' },
      { ...good, 'x-uplink-nonce': 'short' },
      { ...good, 'x-uplink-timestamp': '12e5' },
      { ...good, 'x-uplink-timestamp': '9'.repeat(16) },
      { ...good, 'x-uplink-public-key': 'A'.repeat(600) },
    ];
    for (const h of cases) {
      const r = await dialRaw(relay.url, h);
      t.same(r.ok ? 'open' : [r.status, r.code], [400, 'UPLINK_ERR_AUTH_MALFORMED'], JSON.stringify(Object.keys(h).length));
    }
    const noSig = { ...good };
    delete noSig['x-uplink-signature'];
    const r = await dialRaw(relay.url, noSig);
    t.same(r.ok ? 'open' : [r.status, r.code], [400, 'UPLINK_ERR_AUTH_MALFORMED']);
  });

  t.test('revoked key: refused at connect with its own code', async (t) => {
    const live = await dialRaw(relay.url, handshakeHeaders(relay.url, { mode: 'connect', appliance: a.applianceId, keys }));
    t.equal(live.ok, true);
    const closed = live.ok ? new Promise<number>((r) => live.ws.once('close', (code) => r(code))) : Promise.resolve(0);
    t.same(await client.call('POST', '/v1/appliances/auth-a/revoke'), { appliance: 'auth-a', keyId: (await client.call<{ keyId: string }>('GET', '/v1/appliances/auth-a')).keyId, revoked: true });
    t.equal(await closed, 4003, 'the live connection is cut with the revoked close code');
    const r = await dialRaw(relay.url, handshakeHeaders(relay.url, { mode: 'connect', appliance: a.applianceId, keys }));
    t.same(r.ok ? 'open' : [r.status, r.code], [403, 'UPLINK_ERR_AUTH_KEY_REVOKED']);
  });

  t.test('refusals are counted by code and the relay still serves', async (t) => {
    const metrics = await (await fetch(`${relay.url}/metrics`)).text();
    t.match(metrics, /uplink_auth_failures_total\{code="UPLINK_ERR_AUTH_REPLAY"\} 5\n/);
    t.match(metrics, /uplink_auth_failures_total\{code="UPLINK_ERR_AUTH_CLOCK_SKEW"\} 2\n/);
    t.match(metrics, /uplink_auth_failures_total\{code="UPLINK_ERR_ENROLL_TOKEN_USED"\} 1\n/);
    t.match(metrics, /uplink_auth_failures_total\{code="UPLINK_ERR_AUTH_KEY_REVOKED"\} 1\n/);
    t.equal((await fetch(`${relay.url}/healthz`)).status, 200);
  });
});
