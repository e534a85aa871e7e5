/**
 * relay/presence-writer.ts on both store backends: connections that arrive together are
 * written in one statement per table, a disconnect never loses to a queued presence write,
 * and a failed batch is logged without stopping the ones after it.
 */
import t from 'tap';
import { Writable } from 'node:stream';
import { createLogger } from '../../shared/logger.js';
import { PresenceWriter } from '../../relay/presence-writer.js';
import type { Presence } from '../../relay/store/presence-repo.js';
import type { Store } from '../../relay/store/store.js';
import { eachBackend } from '../helpers/store-backends.js';

const T = new Date('2031-05-06T07:08:09.000Z');

function capture() {
  const raw: string[] = [];
  const log = createLogger('test', { level: 'info', destination: new Writable({ write(chunk, _enc, cb) { raw.push(String(chunk)); cb(); } }) as never });
  return { log, lines: () => raw.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) };
}

/** The store with setMany / recordSeenMany calls counted (the real statements still run). */
function counted(store: Store, failFirst = false) {
  const calls = { setMany: [] as number[], recordSeenMany: [] as number[] };
  let fail = failFirst;
  const presence = Object.create(store.presence) as Store['presence'];
  presence.setMany = async (list) => {
    calls.setMany.push(list.length);
    if (fail) {
      fail = false;
      throw new Error('store unavailable');
    }
    return store.presence.setMany(list);
  };
  const appliances = Object.create(store.appliances) as Store['appliances'];
  appliances.recordSeenMany = async (list) => {
    calls.recordSeenMany.push(list.length);
    return store.appliances.recordSeenMany(list);
  };
  return { store: { presence, appliances }, calls };
}

const presenceOf = (applianceId: string, connectionId: string, remote: string | null = '10.1.1.1'): Presence => ({
  applianceId,
  relayId: 'rly-w',
  connectionId,
  connectedAt: T,
  remoteAddress: remote,
  agentVersion: '2.0.0',
});

eachBackend(t, async (t, store) => {
  await store.presence.registerRelay('rly-w', null, T);
  const apps = await Promise.all([1, 2, 3, 4].map((i) => store.appliances.create({ name: `pw-${i}`, customer: 'acme', instanceId: `i-pw-${i}` })));
  const live = async () => (await store.presence.listLive(T, 30_000)).map((p) => [p.applianceId, p.connectionId]).sort();

  t.test('connections in one tick are one statement per table; a later batch queues behind', async (t) => {
    const { log } = capture();
    const c = counted(store);
    const w = new PresenceWriter(c.store, log);
    w.connected(presenceOf(apps[0]!.id, 'c-1'), { agentVersion: '2.0.0', remoteAddress: '10.1.1.1', at: T });
    w.connected(presenceOf(apps[1]!.id, 'c-2', null), { agentVersion: '2.0.1', remoteAddress: null, at: T });
    w.connected(presenceOf(apps[2]!.id, 'c-3'), { agentVersion: '2.0.2', remoteAddress: '10.1.1.3', at: T });
    await w.flush();
    t.same(c.calls, { setMany: [3], recordSeenMany: [3] });
    t.same(await live(), [[apps[0]!.id, 'c-1'], [apps[1]!.id, 'c-2'], [apps[2]!.id, 'c-3']].sort());
    const second = await store.appliances.byId(apps[1]!.id);
    t.equal(second!.agentVersion, '2.0.1');
    t.equal(second!.lastRemoteAddress, null, 'a null address is stored as null');
    t.equal(second!.lastSeenAt!.toISOString(), T.toISOString());
    t.same(await store.presence.listLive(T, 30_000).then((l) => l.find((p) => p.applianceId === apps[1]!.id)?.remoteAddress), null);
  });

  t.test('nothing new to say about the agent: presence is written, the appliance row is not', async (t) => {
    const { log } = capture();
    const c = counted(store);
    const w = new PresenceWriter(c.store, log);
    const row = await store.appliances.byId(apps[2]!.id);
    w.connected(presenceOf(apps[2]!.id, 'c-same'));
    await w.flush();
    t.same(c.calls, { setMany: [1], recordSeenMany: [0] });
    t.same((await live()).filter(([id]) => id === apps[2]!.id), [[apps[2]!.id, 'c-same']]);
    t.same(await store.appliances.byId(apps[2]!.id), row);
  });

  t.test('a reconnect in the same batch: the later connection wins', async (t) => {
    const { log } = capture();
    const w = new PresenceWriter(store, log);
    w.connected(presenceOf(apps[3]!.id, 'c-old'), { agentVersion: '1.0.0', remoteAddress: '10.0.0.1', at: T });
    w.connected(presenceOf(apps[3]!.id, 'c-new'), { agentVersion: '1.0.1', remoteAddress: '10.0.0.2', at: T });
    await w.flush();
    t.same((await live()).filter(([id]) => id === apps[3]!.id), [[apps[3]!.id, 'c-new']]);
    t.equal((await store.appliances.byId(apps[3]!.id))!.agentVersion, '1.0.1');
  });

  t.test('a disconnect right after the connect, in the same tick, leaves no presence row', async (t) => {
    const { log } = capture();
    const w = new PresenceWriter(store, log);
    const left = new Date(T.getTime() + 5000);
    w.connected(presenceOf(apps[0]!.id, 'c-short'), { agentVersion: '2.0.0', remoteAddress: '10.1.1.1', at: T });
    await w.disconnected(apps[0]!.id, 'c-short', left);
    t.same((await live()).filter(([id]) => id === apps[0]!.id), []);
    t.equal((await store.appliances.byId(apps[0]!.id))!.lastSeenAt!.toISOString(), left.toISOString());
  });

  t.test('a failed batch is logged; the next batch is written', async (t) => {
    const { log, lines } = capture();
    const c = counted(store, true);
    const w = new PresenceWriter(c.store, log);
    w.connected(presenceOf(apps[1]!.id, 'c-fail'), { agentVersion: '3.0.0', remoteAddress: null, at: T });
    await w.flush();
    const err = lines().find((l) => l.msg === 'cannot record presence');
    t.same([err?.err, err?.agents], ['Error: store unavailable', 1]);
    w.connected(presenceOf(apps[1]!.id, 'c-after'), { agentVersion: '3.0.1', remoteAddress: null, at: T });
    await w.flush();
    t.same(c.calls.setMany, [1, 1]);
    t.same((await live()).filter(([id]) => id === apps[1]!.id), [[apps[1]!.id, 'c-after']]);
  });

  t.test('touchLastSeen covers more ids than one statement takes', async (t) => {
    const many = [...Array.from({ length: 2500 }, (_, i) => `apl_missing_${i}`), ...apps.map((a) => a.id)]; // the real ones in the third statement
    const at = new Date(T.getTime() + 60_000);
    await store.appliances.touchLastSeen(many, at);
    for (const a of apps) t.equal((await store.appliances.byId(a.id))!.lastSeenAt!.toISOString(), at.toISOString());
  });
});
