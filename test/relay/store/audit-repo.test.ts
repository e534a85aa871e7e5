import t, { type Test } from 'tap';
import { PGliteDb, PostgresDb, type Db } from '../../../relay/store/db.js';
import { migrate } from '../../../relay/store/migrate.js';
import { MIGRATIONS } from '../../../relay/store/migrations/index.js';
import { AuditRepo } from '../../../relay/store/audit-repo.js';
import { GENESIS_HASH, verifyChain } from '../../../shared/audit/chain.js';
import type { AuditInput } from '../../../shared/audit/event.js';
import { freshDatabase } from '../../helpers/pg.js';

const T0 = new Date('2031-02-03T04:05:06.789Z');
const ev = (i: number, appliance = 'acme-prod', extra: Partial<AuditInput> = {}): AuditInput => ({
  actor: `vendor:eng${i}`, appliance, operation: 'sql', outcome: 'ok', phase: 'operate', requestId: `req-${i}`, target: 'main',
  start: new Date(T0.getTime() - 1500), end: T0, bytesIn: 12, bytesOut: 2 ** 40 + i, detail: { rows: i, nested: { sqlstate: null, list: [1, 'two'] } },
  ...extra,
});

type Backend = { name: string; open(t: Test): Promise<{ db: Db; url?: string } | undefined> };

// One database per backend for the whole file: PGlite takes seconds to start. Each subtest
// resets the tables through `fresh()`.
const BACKENDS: Backend[] = [
  {
    name: 'pglite',
    async open(t) {
      const db = await PGliteDb.open(); // in memory: the quickest start
      t.teardown(() => db.close());
      return { db };
    },
  },
  {
    name: 'postgres',
    async open(t) {
      const url = await freshDatabase(t, 'uplink_audit');
      if (!url) return undefined;
      const db = new PostgresDb(url);
      t.teardown(() => db.close());
      return { db, url };
    },
  },
];

for (const backend of BACKENDS) {
  t.test(backend.name, async (t) => {
    const opened = await backend.open(t);
    if (!opened) return;
    const { db, url } = opened;
    t.same(await migrate(db), MIGRATIONS.map((m) => m.id), 'every migration applied once, in order');

    const open = async (_t: Test): Promise<{ db: Db; repo: AuditRepo }> => {
      await db.exec(`TRUNCATE audit_events, session_chunks, sessions; UPDATE audit_head SET seq = 0, hash = '${GENESIS_HASH}'`);
      let tick = 0;
      return { db, repo: new AuditRepo(db, {}, () => new Date(T0.getTime() + tick++)) };
    };

    t.test('migration creates the audit, sessions and session_chunks tables', async (t) => {
      const env = await open(t);
      const { rows } = await env.db.query<{ table_name: string }>(
        "SELECT table_name FROM information_schema.tables WHERE table_name IN ('audit_events', 'audit_head', 'sessions', 'session_chunks') ORDER BY table_name",
      );
      t.same(rows.map((r) => r.table_name), ['audit_events', 'audit_head', 'session_chunks', 'sessions']);
      await env.db.query("INSERT INTO sessions (id, appliance_id, kind, actor, width, height) VALUES ('s1', 'a1', 'shell', 'alice', 80, 24)");
      await env.db.query("INSERT INTO session_chunks (session_id, seq, data) VALUES ('s1', 1, '\\x6869'::bytea)");
      await t.rejects(env.db.query("INSERT INTO sessions (id, appliance_id, kind, actor) VALUES ('s2', 'a1', 'telnet', 'x')"), { code: 'UPLINK_ERR_STORE' });
      await env.db.query("DELETE FROM sessions WHERE id = 's1'");
      t.equal((await env.db.query('SELECT * FROM session_chunks')).rows.length, 0, 'chunks go with their session');
      t.same(await env.repo.head(), { seq: 0, hash: GENESIS_HASH });
      t.same(await migrate(env.db), [], 'idempotent');
    });

    t.test('append, list and verify round-trip exactly', async (t) => {
      const env = await open(t);
      const a = await env.repo.append(ev(1));
      const b = await env.repo.append(ev(2, 'other', { outcome: 'denied', phase: null, target: null, start: null, end: null, detail: {} }));
      const c = await env.repo.append(ev(3));
      t.match(a, { seq: 1, time: '2031-02-03T04:05:06.789Z', start: '2031-02-03T04:05:05.289Z', bytesOut: 2 ** 40 + 1 });
      const listed = await env.repo.list();
      t.same(listed, [a, b, c], 'stored values come back exactly as sealed');
      t.same(verifyChain(listed), { ok: true, count: 3, lastSeq: 3, lastHash: c.hash });
      t.same(await env.repo.list({ appliance: 'acme-prod' }), [a, c]);
      t.same(await env.repo.list({ appliance: 'other' }), [b]);
      t.same(await env.repo.list({ afterSeq: 1, limit: 1 }), [b]);
      t.same(await env.repo.list({ since: new Date(T0.getTime() + 2) }), [c]);
      t.same(await env.repo.verify(), { ok: true, count: 3, lastSeq: 3, lastHash: c.hash, head: { seq: 3, hash: c.hash } });
      await t.rejects(env.repo.list({ limit: 0 }), { code: 'UPLINK_ERR_BAD_REQUEST' });
      await t.rejects(env.repo.append(ev(4, 'acme-prod', { actor: 'x'.repeat(2000) })), { code: 'UPLINK_ERR_AUDIT_EVENT_INVALID' });
      t.same(await env.repo.head(), { seq: 3, hash: c.hash }, 'a refused event leaves no trace');
    });

    t.test('list caps the limit at listMaxLimit; verify pages through long chains', async (t) => {
      const env = await open(t);
      const repo = new AuditRepo(env.db, { listMaxLimit: 4, verifyPageSize: 3 });
      for (let i = 1; i <= 10; i++) await repo.append(ev(i));
      t.equal((await repo.list({ limit: 100 })).length, 4);
      t.match(await repo.verify(), { ok: true, count: 10, lastSeq: 10 });
      t.throws(() => new AuditRepo(env.db, { listMaxLimt: 3 } as never), { code: 'UPLINK_ERR_CONFIG_INVALID' });
    });

    t.test('tampering in SQL is caught at the right seq', async (t) => {
      const env = await open(t);
      for (let i = 1; i <= 6; i++) await env.repo.append(ev(i));

      await env.db.query("UPDATE audit_events SET actor = 'vendor:mallory' WHERE seq = 3");
      t.match(await env.repo.verify(), { ok: false, count: 2, firstBadSeq: 3, reason: 'hash-mismatch' }, 'edited actor');
      await env.db.query("UPDATE audit_events SET actor = 'vendor:eng3' WHERE seq = 3");
      t.match(await env.repo.verify(), { ok: true, count: 6 }, 'restored');

      await env.db.query("UPDATE audit_events SET detail = '{\"rows\": 999}'::jsonb WHERE seq = 5");
      t.match(await env.repo.verify(), { ok: false, firstBadSeq: 5, reason: 'hash-mismatch' }, 'edited detail');
      await env.db.query(`UPDATE audit_events SET detail = '{"rows": 5, "nested": {"sqlstate": null, "list": [1, "two"]}}'::jsonb WHERE seq = 5`);
      t.match(await env.repo.verify(), { ok: true }, 'jsonb key order does not matter');

      await env.db.query("UPDATE audit_events SET time = time + interval '1 second' WHERE seq = 2");
      t.match(await env.repo.verify(), { ok: false, firstBadSeq: 2, reason: 'hash-mismatch' }, 'edited time');
      await env.db.query("UPDATE audit_events SET time = time - interval '1 second' WHERE seq = 2");

      const row4 = (await env.db.query('SELECT * FROM audit_events WHERE seq = 4')).rows[0]!;
      await env.db.query('DELETE FROM audit_events WHERE seq = 4');
      t.match(await env.repo.verify(), { ok: false, count: 3, firstBadSeq: 5, reason: 'seq-mismatch' }, 'deleted row');
      const cols = Object.keys(row4);
      await env.db.query(
        `INSERT INTO audit_events (${cols.join(', ')}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(', ')})`,
        cols.map((k) => (k === 'detail' ? JSON.stringify(row4[k]) : row4[k])),
      );
      t.match(await env.repo.verify(), { ok: true, count: 6 }, 'reinserted');

      await env.db.query('DELETE FROM audit_events WHERE seq = 6');
      t.match(await env.repo.verify(), { ok: false, count: 5, firstBadSeq: 6, reason: 'head-mismatch', message: /removed from the end/ }, 'cut off the end');
      await env.db.query('UPDATE audit_head SET seq = 5, hash = (SELECT hash FROM audit_events WHERE seq = 5)');
      t.match(await env.repo.verify(), { ok: true, count: 5 }, 'only a matching head edit hides a cut (the agent copy still shows it)');

      await env.db.query('UPDATE audit_events SET seq = seq + 100 WHERE seq = 2');
      t.match(await env.repo.verify(), { ok: false, count: 1, firstBadSeq: 3, reason: 'seq-mismatch' }, 'moved row');
    });

    t.test('concurrent appends keep one gap-free chain', async (t) => {
      const env = await open(t);
      const writers: AuditRepo[] = [env.repo];
      if (backend.name === 'postgres') {
        // A second pool stands in for a second relay replica on the same database.
        const replica = new PostgresDb(url!);
        t.teardown(() => replica.close());
        writers.push(new AuditRepo(replica));
      }
      await Promise.all(Array.from({ length: 60 }, (_, i) => writers[i % writers.length]!.append(ev(i, `app-${i % 3}`))));
      const all = await env.repo.list({ limit: 1000 });
      t.same(all.map((r) => r.seq), Array.from({ length: 60 }, (_, i) => i + 1));
      t.match(await env.repo.verify(), { ok: true, count: 60, lastSeq: 60 });
    });

    t.test('append joins a caller transaction and rolls back with it', async (t) => {
      const env = await open(t);
      await t.rejects(
        env.db.transaction(async (tx) => {
          await new AuditRepo(tx).append(ev(1));
          throw new Error('caller failed');
        }),
      );
      t.same(await env.repo.head(), { seq: 0, hash: GENESIS_HASH });
      t.equal((await env.repo.list()).length, 0);
      await env.db.transaction((tx) => new AuditRepo(tx).append(ev(2)));
      t.match(await env.repo.verify(), { ok: true, count: 1 });
    });
  });
}
