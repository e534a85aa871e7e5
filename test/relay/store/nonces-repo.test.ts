import t from 'tap';
import { eachBackend } from '../../helpers/store-backends.js';

eachBackend(t, async (t, store) => {
  const repo = store.nonces;
  const use = async (nonce: string, applianceId: string, expiresAt: Date) => (await repo.useMany([{ nonce, applianceId, expiresAt }]))[0];
  const T = new Date('2031-05-06T07:08:09.000Z');
  t.test('a nonce is usable once, then a replay', async (t) => {
    t.equal(await use('nonce-aaaaaaaaaaaaaaaaaaaaaa', 'apl_0000000000000001', T), true);
    t.equal(await use('nonce-aaaaaaaaaaaaaaaaaaaaaa', 'apl_0000000000000001', T), false);
    t.equal(await use('nonce-aaaaaaaaaaaaaaaaaaaaaa', 'apl_0000000000000002', T), false, 'a nonce is global, not per appliance');
  });
  t.test('concurrent use of one nonce: exactly one wins', async (t) => {
    const r = await Promise.all([1, 2, 3, 4].map(() => use('nonce-race-bbbbbbbbbbbbbbbbb', 'apl_0000000000000001', T)));
    t.same(r.filter(Boolean).length, 1);
  });
  t.test('useMany: answers in order; a nonce twice in one batch or already used is a replay', async (t) => {
    await use('nonce-many-used-eeeeeeeeeeeeee', 'apl_0000000000000001', T);
    const r = await repo.useMany([
      { nonce: 'nonce-many-a-ffffffffffffffffff', applianceId: 'apl_0000000000000001', expiresAt: T },
      { nonce: 'nonce-many-used-eeeeeeeeeeeeee', applianceId: 'apl_0000000000000002', expiresAt: T },
      { nonce: 'nonce-many-b-gggggggggggggggggg', applianceId: 'apl_0000000000000002', expiresAt: T },
      { nonce: 'nonce-many-a-ffffffffffffffffff', applianceId: 'apl_0000000000000003', expiresAt: T },
    ]);
    t.same(r, [true, false, true, false]);
    t.same(await repo.useMany([]), []);
    t.equal(await use('nonce-many-b-gggggggggggggggggg', 'apl_0000000000000002', T), false);
  });
  t.test('purge drops only expired nonces', async (t) => {
    await use('nonce-old-cccccccccccccccccccc', 'apl_0000000000000001', new Date(T.getTime() - 1000));
    await use('nonce-new-dddddddddddddddddddd', 'apl_0000000000000001', new Date(T.getTime() + 1000));
    const purged = await repo.purge(T);
    t.equal(purged, 1);
    t.equal(await use('nonce-old-cccccccccccccccccccc', 'apl_0000000000000001', T), true, 'purged nonce is free again');
    t.equal(await use('nonce-new-dddddddddddddddddddd', 'apl_0000000000000001', T), false);
  });
});
