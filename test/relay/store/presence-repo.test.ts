import t from 'tap';
import { eachBackend } from '../../helpers/store-backends.js';

const T = new Date('2031-05-06T07:08:09.000Z');
const at = (ms: number) => new Date(T.getTime() + ms);

eachBackend(t, async (t, store) => {
  const repo = store.presence;
  const a1 = await store.appliances.create({ name: 'p1', customer: 'acme', instanceId: 'i-p1' });
  const a2 = await store.appliances.create({ name: 'p2', customer: 'acme', instanceId: 'i-p2' });
  const base = { remoteAddress: '10.0.0.9', agentVersion: '1.2.3' };

  t.test('presence rows name the relay and since; a stale replica reads as disconnected', async (t) => {
    await repo.registerRelay('rly-a', 'http://a', T);
    await repo.registerRelay('rly-b', 'http://b', T);
    await repo.setMany([{ applianceId: a1.id, relayId: 'rly-a', connectionId: 'con-1', connectedAt: T, ...base }]);
    await repo.setMany([{ applianceId: a2.id, relayId: 'rly-b', connectionId: 'con-2', connectedAt: at(5), ...base }]);
    let live = await repo.listLive(at(1000), 30_000);
    t.same(
      live.map((p) => [p.applianceId, p.relayId, p.connectedAt.toISOString(), p.remoteAddress, p.agentVersion]).sort(),
      [
        [a1.id, 'rly-a', T.toISOString(), '10.0.0.9', '1.2.3'],
        [a2.id, 'rly-b', at(5).toISOString(), '10.0.0.9', '1.2.3'],
      ].sort(),
    );
    // rly-a keeps heartbeating; rly-b stops (crashed).
    await repo.heartbeatRelay('rly-a', at(40_000));
    live = await repo.listLive(at(45_000), 30_000);
    t.same(live.map((p) => p.applianceId), [a1.id]);
  });

  t.test('clear only removes the named connection; a newer one survives', async (t) => {
    await repo.setMany([{ applianceId: a1.id, relayId: 'rly-a', connectionId: 'con-3', connectedAt: at(50_000), ...base }]);
    await repo.clear(a1.id, 'con-1');
    t.same((await repo.listLive(at(50_000), 30_000)).map((p) => p.connectionId), ['con-3']);
    await repo.clear(a1.id, 'con-3');
    t.same(await repo.listLive(at(50_000), 30_000), []);
  });

  t.test('unregister drops the replica and its presence', async (t) => {
    await repo.registerRelay('rly-c', null, at(60_000));
    await repo.setMany([{ applianceId: a2.id, relayId: 'rly-c', connectionId: 'con-4', connectedAt: at(60_000), ...base }]);
    t.equal((await repo.listLive(at(60_001), 30_000)).length, 1);
    await repo.unregisterRelay('rly-c');
    t.same(await repo.listLive(at(60_001), 30_000), []);
    // Re-registering a known id refreshes it rather than failing.
    await repo.registerRelay('rly-a', 'http://a2', at(70_000));
    await repo.setMany([{ applianceId: a1.id, relayId: 'rly-a', connectionId: 'con-5', connectedAt: at(70_000), ...base }]);
    t.equal((await repo.listLive(at(71_000), 30_000))[0]?.relayId, 'rly-a');
  });
});
