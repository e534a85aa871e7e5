import t from 'tap';
import { eachBackend } from '../../helpers/store-backends.js';
import { hashSecret } from '../../../relay/store/tokens-repo.js';

const NOW = new Date('2031-05-06T07:08:09.000Z');
const LATER = new Date(NOW.getTime() + 3_600_000);

eachBackend(t, async (t, store) => {
  const repo = store.appliances;

  t.test('create, lookup and duplicate names', async (t) => {
    const a = await repo.create({ name: 'alpha', customer: 'acme', instanceId: 'i-alpha' });
    t.match(a.id, /^apl_[0-9a-f]{16}$/);
    t.equal(a.publicKey, null);
    t.equal((await repo.byName('alpha'))?.id, a.id);
    t.equal((await repo.byId(a.id))?.name, 'alpha');
    t.equal(await repo.byName('nope'), undefined);
    const b = await repo.create({ name: 'alpha-2', customer: 'acme', instanceId: 'i-alpha-2' });
    t.same((await repo.byIds([b.id, 'apl_ffffffffffffffff', a.id, b.id])).map((x) => x?.name), ['alpha-2', undefined, 'alpha', 'alpha-2'], 'byIds: in the order asked, repeats and unknown ids included');
    t.same(await repo.byIds([]), []);
    await t.rejects(repo.create({ name: 'alpha', customer: 'other', instanceId: 'i-x' }), { code: 'UPLINK_ERR_CONFLICT' });
  });

  t.test('enrollment: good, reused, expired, another appliance, unknown', async (t) => {
    const a = await repo.create({ name: 'enr-a', customer: 'acme', instanceId: 'i-a' });
    const b = await repo.create({ name: 'enr-b', customer: 'acme', instanceId: 'i-b' });
    await repo.addEnrollmentToken(a.id, hashSecret('tok-a'), LATER);
    await repo.addEnrollmentToken(a.id, hashSecret('tok-a-expired'), NOW);
    const input = { publicKey: 'pk-a', keyId: 'kid-a', now: NOW };
    t.same(await repo.enroll({ ...input, tokenHash: hashSecret('tok-a'), claimedApplianceId: b.id }), { ok: false, reason: 'wrong_appliance' });
    const ok = await repo.enroll({ ...input, tokenHash: hashSecret('tok-a'), claimedApplianceId: a.id });
    t.equal(ok.ok, true);
    if (ok.ok) {
      t.equal(ok.appliance.publicKey, 'pk-a');
      t.equal(ok.appliance.keyId, 'kid-a');
      t.equal(ok.appliance.enrolledAt?.toISOString(), NOW.toISOString());
    }
    t.same(await repo.enroll({ ...input, tokenHash: hashSecret('tok-a'), claimedApplianceId: a.id }), { ok: false, reason: 'used' });
    t.same(await repo.enroll({ ...input, tokenHash: hashSecret('tok-a-expired'), claimedApplianceId: a.id }), { ok: false, reason: 'expired' });
    t.same(await repo.enroll({ ...input, tokenHash: hashSecret('never-issued'), claimedApplianceId: a.id }), { ok: false, reason: 'invalid' });
    t.equal((await repo.byId(b.id))?.publicKey, null, 'the other appliance was not touched');
  });

  t.test('enrollment race: two concurrent enrolls with one token, exactly one succeeds', async (t) => {
    const a = await repo.create({ name: 'race', customer: 'acme', instanceId: 'i-race' });
    await repo.addEnrollmentToken(a.id, hashSecret('tok-race'), LATER);
    const results = await Promise.all(
      ['pk-1', 'pk-2', 'pk-3'].map((pk) => repo.enroll({ tokenHash: hashSecret('tok-race'), claimedApplianceId: a.id, publicKey: pk, keyId: pk, now: NOW })),
    );
    const oks = results.filter((r) => r.ok);
    t.equal(oks.length, 1);
    t.same(results.filter((r) => !r.ok).map((r) => (r.ok ? '' : r.reason)), ['used', 'used']);
    const winner = oks[0]!;
    t.equal((await repo.byId(a.id))?.publicKey, winner.ok ? winner.appliance.publicKey : 'none');
  });

  t.test('revoke, re-enroll clears revocation, seen bookkeeping', async (t) => {
    const a = await repo.create({ name: 'rev', customer: 'acme', instanceId: 'i-rev' });
    const fresh = await repo.create({ name: 'rev-unenrolled', customer: 'acme', instanceId: 'i-ru' });
    await repo.revokeKey(fresh.id, NOW);
    t.equal((await repo.byId(fresh.id))?.keyRevokedAt, null, 'no key, nothing to revoke');
    await repo.addEnrollmentToken(a.id, hashSecret('tok-rev-1'), LATER);
    await repo.addEnrollmentToken(a.id, hashSecret('tok-rev-2'), LATER);
    t.equal((await repo.enroll({ tokenHash: hashSecret('tok-rev-1'), claimedApplianceId: a.id, publicKey: 'k1', keyId: 'k1', now: NOW })).ok, true);
    await repo.revokeKey(a.id, NOW);
    t.equal((await repo.byId(a.id))?.keyRevokedAt?.toISOString(), NOW.toISOString());
    t.equal((await repo.enroll({ tokenHash: hashSecret('tok-rev-2'), claimedApplianceId: a.id, publicKey: 'k2', keyId: 'k2', now: NOW })).ok, true);
    const after = await repo.byId(a.id);
    t.equal(after?.keyRevokedAt, null);
    t.equal(after?.publicKey, 'k2');
    await repo.recordSeenMany([{ id: a.id, agentVersion: '9.9.9', remoteAddress: '10.0.0.1', at: NOW }]);
    await repo.touchLastSeen([a.id], LATER);
    await repo.touchLastSeen([], LATER);
    const seen = await repo.byId(a.id);
    t.equal(seen?.agentVersion, '9.9.9');
    t.equal(seen?.lastRemoteAddress, '10.0.0.1');
    t.equal(seen?.lastSeenAt?.toISOString(), LATER.toISOString());
    t.ok((await repo.list()).map((x) => x.name).includes('rev'));
  });
});
