import t, { type Test } from 'tap';
import pg from 'pg';
import { Writable } from 'node:stream';
import { createServer, type Socket } from 'node:net';
import { freshDatabase } from '../../helpers/pg.js';
import { parseSqlTargets, resolveSqlTarget, type ResolvedSqlTarget } from '../../../agent/ops/sql-targets.js';
import { runSql, type RunSqlRequest } from '../../../agent/ops/sql-runner.js';
import { renderCsv, renderJson, renderTable, type SqlEvent } from '../../../shared/sql-format.js';
import type { UplinkError } from '../../../shared/errors.js';

async function setup(t: Test, extra: Record<string, unknown> = {}): Promise<{ url: string; target: ResolvedSqlTarget; admin: pg.Client } | undefined> {
  const url = await freshDatabase(t, 'uplink_sql');
  if (!url) return undefined;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  t.teardown(() => admin.end());
  await admin.query(`CREATE TABLE people (id int PRIMARY KEY, name text, note text, born date);
    INSERT INTO people VALUES (1, 'Ada', NULL, '1815-12-10'), (2, 'Zoë "Z"', 'likes, commas', NULL), (3, '李小龍', E'two\\nlines', '1940-11-27')`);
  const config = parseSqlTargets({
    main: { engine: 'postgres', connection: { url }, ssl: { mode: 'disable' }, ...extra },
  });
  return { url, target: await resolveSqlTarget('main', config), admin };
}

function collect(): { out: Writable; text(): string; bytes(): number } {
  const chunks: string[] = [];
  let bytes = 0;
  const out = new Writable({
    decodeStrings: false,
    write(chunk: string, _e, cb) {
      chunks.push(chunk);
      bytes += Buffer.byteLength(chunk);
      cb();
    },
  });
  return { out, text: () => chunks.join(''), bytes: () => bytes };
}

async function all(req: RunSqlRequest): Promise<SqlEvent[]> {
  const evs: SqlEvent[] = [];
  for await (const ev of runSql(req)) evs.push(ev);
  return evs;
}

async function backends(admin: pg.Client): Promise<number> {
  const r = await admin.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'uplink-agent' AND datname = current_database()");
  return r.rows[0].n as number;
}

const QUERY = 'SELECT id, name, note, born FROM people ORDER BY id';

t.test('table, csv and json output against PostgreSQL: NULLs, unicode, quoting', async (t) => {
  const env = await setup(t);
  if (!env) return;
  const table = collect();
  const d = await renderTable(runSql({ target: env.target, query: QUERY }), table.out);
  t.equal(
    table.text(),
    [
      ' id |  name   |     note      |    born',
      '----+---------+---------------+------------',
      '  1 | Ada     |               | 1815-12-10',
      '  2 | Zoë "Z" | likes, commas |',
      '  3 | 李小龍  | two\\nlines    | 1940-11-27',
      '(3 rows)',
      '',
    ].join('\n'),
  );
  t.match(d, { type: 'done', command: 'SELECT', rowCount: 3, truncated: false, maxRows: 10_000 });

  const csv = collect();
  await renderCsv(runSql({ target: env.target, query: QUERY }), csv.out);
  t.equal(csv.text(), 'id,name,note,born\r\n1,Ada,,1815-12-10\r\n2,"Zoë ""Z""","likes, commas",\r\n3,李小龍,"two\nlines",1940-11-27\r\n');

  const json = collect();
  await renderJson(runSql({ target: env.target, query: QUERY }), json.out);
  t.equal(
    json.text(),
    '[\n{"id":"1","name":"Ada","note":null,"born":"1815-12-10"},\n{"id":"2","name":"Zoë \\"Z\\"","note":"likes, commas","born":null},\n{"id":"3","name":"李小龍","note":"two\\nlines","born":"1940-11-27"}\n]\n',
  );
  t.equal(await backends(env.admin), 0, 'connections closed');
});

t.test('events: column types, PostgreSQL text output for every type', async (t) => {
  const env = await setup(t);
  if (!env) return;
  const evs = await all({
    target: env.target,
    query: "SELECT 1.50::numeric AS n, true AS b, ARRAY[1,NULL]::int[] AS a, '\\x00ff'::bytea AS raw, '{\"k\": [1]}'::jsonb AS j, ''::text AS empty, NULL::text AS nothing",
  });
  t.same(evs[0], {
    type: 'columns',
    columns: [
      { name: 'n', type: 'numeric', typeOid: 1700 },
      { name: 'b', type: 'boolean', typeOid: 16 },
      { name: 'a', type: 'integer[]', typeOid: 1007 },
      { name: 'raw', type: 'bytea', typeOid: 17 },
      { name: 'j', type: 'jsonb', typeOid: 3802 },
      { name: 'empty', type: 'text', typeOid: 25 },
      { name: 'nothing', type: 'text', typeOid: 25 },
    ],
  });
  t.same(evs[1], { type: 'rows', rows: [['1.50', 't', '{1,NULL}', '\\x00ff', '{"k": [1]}', '', null]] });
  t.match(evs[2], { type: 'done', command: 'SELECT', rowCount: 1, truncated: false });
  t.equal(evs.length, 3);
});

t.test('read-only: a write without --write fails with 25006 and changes nothing', async (t) => {
  const env = await setup(t, { allowWrite: true });
  if (!env) return;
  const err = await t.rejects(all({ target: env.target, query: "INSERT INTO people VALUES (9, 'Eve')" }), { code: 'UPLINK_ERR_SQL_READ_ONLY' });
  t.match((err as unknown as UplinkError).details, { target: 'main', sqlstate: '25006', severity: 'ERROR' });
  t.equal((await env.admin.query('SELECT count(*)::int AS n FROM people')).rows[0].n, 3);
  t.equal(await backends(env.admin), 0);
});

t.test('--write is refused on a target without allowWrite, before connecting', async (t) => {
  const env = await setup(t);
  if (!env) return;
  await t.rejects(all({ target: env.target, query: "INSERT INTO people VALUES (9, 'Eve')", write: true }), {
    code: 'UPLINK_ERR_SQL_WRITE_NOT_ALLOWED',
    details: { target: 'main' },
  });
});

t.test('--write on an allowing target commits; RETURNING rows stream back', async (t) => {
  const env = await setup(t, { allowWrite: true });
  if (!env) return;
  const evs = await all({ target: env.target, query: "INSERT INTO people VALUES (9, 'Eve'), (10, 'Mal')", write: true });
  t.same(evs[0], { type: 'columns', columns: [] });
  t.match(evs[1], { type: 'done', command: 'INSERT', rowCount: 2, truncated: false });
  // A truncated RETURNING still applies the whole UPDATE (PostgreSQL runs DML to completion).
  const upd = await all({ target: env.target, query: "UPDATE people SET note = 'x' RETURNING id", write: true, maxRows: 2 });
  t.match(upd.at(-1), { type: 'done', rowCount: 2, truncated: true, maxRows: 2 });
  t.equal((await env.admin.query("SELECT count(*)::int AS n FROM people WHERE note = 'x'")).rows[0].n, 5);
});

t.test('statement timeout: pg_sleep(5) with 200 ms gives UPLINK_ERR_SQL_TIMEOUT and 57014', async (t) => {
  const env = await setup(t, { statementTimeoutMs: 200 });
  if (!env) return;
  const err = await t.rejects(all({ target: env.target, query: 'SELECT pg_sleep(5)' }), { code: 'UPLINK_ERR_SQL_TIMEOUT' });
  t.equal((err as unknown as UplinkError).details?.sqlstate, '57014');
  t.equal((err as unknown as UplinkError).status, 408);
});

t.test('syntax error: 42601 with the position; other errors keep their SQLSTATE', async (t) => {
  const env = await setup(t);
  if (!env) return;
  const err = await t.rejects(all({ target: env.target, query: 'SELECT id FROM people WHER id = 1' }), { code: 'UPLINK_ERR_SQL_ERROR' });
  t.match((err as unknown as UplinkError).details, { sqlstate: '42601', position: 28, severity: 'ERROR' });
  await t.rejects(all({ target: env.target, query: 'SELECT 1/0' }), { code: 'UPLINK_ERR_SQL_ERROR', details: { sqlstate: '22012' } });
  const missing = await t.rejects(all({ target: env.target, query: 'SELECT nope FROM people' }), { code: 'UPLINK_ERR_SQL_ERROR' });
  t.match((missing as unknown as UplinkError).details, { sqlstate: '42703', position: 8 });
  t.equal(await backends(env.admin), 0);
});

t.test('several statements in one query are refused with their own code', async (t) => {
  const env = await setup(t, { allowWrite: true });
  if (!env) return;
  await t.rejects(all({ target: env.target, query: 'SELECT 1; DELETE FROM people', write: true }), {
    code: 'UPLINK_ERR_SQL_MULTIPLE_STATEMENTS',
    details: { sqlstate: '42601' },
  });
  t.equal((await env.admin.query('SELECT count(*)::int AS n FROM people')).rows[0].n, 3);
});

t.test('COPY to or from the client is refused without hurting the process', async (t) => {
  const env = await setup(t, { allowWrite: true });
  if (!env) return;
  await t.rejects(all({ target: env.target, query: 'COPY (SELECT g FROM generate_series(1, 5000000) g) TO STDOUT' }), { code: 'UPLINK_ERR_BAD_REQUEST' });
  await t.rejects(all({ target: env.target, query: 'COPY people FROM STDIN', write: true }), { code: 'UPLINK_ERR_BAD_REQUEST' });
  t.equal((await env.admin.query('SELECT count(*)::int AS n FROM people')).rows[0].n, 3);
  t.equal(await backends(env.admin), 0);
});

t.test('request checks: empty, NUL, oversized query, bad maxRows', async (t) => {
  const env = await setup(t);
  if (!env) return;
  await t.rejects(all({ target: env.target, query: '  \n' }), { code: 'UPLINK_ERR_BAD_REQUEST' });
  await t.rejects(all({ target: env.target, query: 'SELECT 1\u0000' }), { code: 'UPLINK_ERR_BAD_REQUEST' });
  await t.rejects(runSql({ target: env.target, query: 'SELECT 1' }, { maxQueryBytes: 4 }).next(), {
    code: 'UPLINK_ERR_PAYLOAD_TOO_LARGE',
    details: { limit: 'maxQueryBytes', max: 4, actual: 8 },
  });
  await t.rejects(all({ target: env.target, query: 'SELECT 1', maxRows: 0 }), { code: 'UPLINK_ERR_BAD_REQUEST' });
  await t.rejects(runSql({ target: env.target, query: 'SELECT 1' }, { batchRows: 0 }).next(), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  await t.rejects(runSql({ target: env.target, query: 'SELECT 1' }, { batchRowz: 5 } as never).next(), { code: 'UPLINK_ERR_CONFIG_INVALID' });
});

t.test('maxRows: exact limit is not truncation; one more is; the request cannot exceed the target', async (t) => {
  const env = await setup(t, { maxRows: 5 });
  if (!env) return;
  const exact = await all({ target: env.target, query: 'SELECT g FROM generate_series(1, 5) g' });
  t.match(exact.at(-1), { command: 'SELECT', rowCount: 5, truncated: false, maxRows: 5 });
  const over = await all({ target: env.target, query: 'SELECT g FROM generate_series(1, 6) g' });
  t.match(over.at(-1), { command: null, rowCount: 5, truncated: true, maxRows: 5 });
  t.same(over.filter((e) => e.type === 'rows').flatMap((e) => (e.type === 'rows' ? e.rows : [])), [['1'], ['2'], ['3'], ['4'], ['5']]);
  const asked = await all({ target: env.target, query: 'SELECT g FROM generate_series(1, 100) g', maxRows: 1000 });
  t.match(asked.at(-1), { rowCount: 5, truncated: true, maxRows: 5 });
  const fewer = await all({ target: env.target, query: 'SELECT g FROM generate_series(1, 100) g', maxRows: 2 });
  t.match(fewer.at(-1), { rowCount: 2, truncated: true, maxRows: 2 });
  t.equal(await backends(env.admin), 0);
});

t.test('batches: rows arrive in batchRows-sized events', async (t) => {
  const env = await setup(t);
  if (!env) return;
  const sizes: number[] = [];
  for await (const ev of runSql({ target: env.target, query: 'SELECT g FROM generate_series(1, 1200) g' }, { batchRows: 500 })) {
    if (ev.type === 'rows') sizes.push(ev.rows.length);
  }
  t.same(sizes, [500, 500, 200]);
});

t.test('abort mid-stream cancels the query, rolls back and closes the connection', async (t) => {
  const env = await setup(t);
  if (!env) return;
  const ac = new AbortController();
  let rows = 0;
  const started = Date.now();
  const run = (async () => {
    // A long grace: the clean path (close portal, ROLLBACK) must not need the socket destroyed.
    const opts = { batchRows: 100, cancelGraceMs: 60_000 };
    for await (const ev of runSql({ target: env.target, query: 'SELECT g, pg_sleep(0.001) FROM generate_series(1, 100000) g', maxRows: 100_000, signal: ac.signal }, opts)) {
      if (ev.type === 'rows') {
        rows += ev.rows.length;
        if (rows === 200) ac.abort();
      }
    }
  })();
  const err = await t.rejects(run, { code: 'UPLINK_ERR_SQL_CANCELLED' });
  t.equal((err as unknown as UplinkError).status, 499);
  t.equal(rows, 200, 'no rows after the abort');
  t.ok(Date.now() - started < 30_000, 'cleaned up without waiting for the hard stop');
  t.equal(await backends(env.admin), 0);
});

t.test('abort while the server is busy sends a cancel request', async (t) => {
  const env = await setup(t);
  if (!env) return;
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 300);
  const started = Date.now();
  const err = await t.rejects(all({ target: env.target, query: 'SELECT pg_sleep(30)', signal: ac.signal }), { code: 'UPLINK_ERR_SQL_CANCELLED' });
  t.equal((err as unknown as UplinkError).details?.sqlstate, '57014', 'the server reports the cancel');
  t.ok(Date.now() - started < 10_000, 'did not wait for the sleep');
  t.equal(await backends(env.admin), 0);
  const pre = new AbortController();
  pre.abort();
  await t.rejects(all({ target: env.target, query: 'SELECT 1', signal: pre.signal }), { code: 'UPLINK_ERR_SQL_CANCELLED' });
});

t.test('abort while connecting to a server that never answers', async (t) => {
  const server = createServer(() => {}); // accepts, then says nothing
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const sockets = new Set<Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.resume(); // read (and drop) the startup packet so the end of the stream is seen
    s.on('close', () => sockets.delete(s));
  });
  const port = (server.address() as { port: number }).port;
  const cfg = parseSqlTargets({ mute: { engine: 'postgres', connection: { host: '127.0.0.1', port, database: 'd', user: 'u' }, ssl: { mode: 'disable' } } });
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 200);
  await t.rejects(all({ target: await resolveSqlTarget('mute', cfg), query: 'SELECT 1', signal: ac.signal }), { code: 'UPLINK_ERR_SQL_CANCELLED' });
  await new Promise((r) => setTimeout(r, 50));
  t.equal(sockets.size, 0, 'the half-open connection was closed');
});

t.test('a consumer that stops early releases the connection', async (t) => {
  const env = await setup(t);
  if (!env) return;
  for await (const ev of runSql({ target: env.target, query: 'SELECT g FROM generate_series(1, 100000) g', maxRows: 100_000 })) {
    if (ev.type === 'rows') break;
  }
  t.equal(await backends(env.admin), 0);
});

t.test('connection failures are UPLINK_ERR_SQL_CONNECT without the password', async (t) => {
  const env = await setup(t);
  if (!env) return;
  const bad = parseSqlTargets({
    nodb: { engine: 'postgres', connection: { url: 'postgres://postgres:s3cr3t-pw@127.0.0.1:5432/uplink_no_such_db' }, ssl: { mode: 'disable' } },
    closed: { engine: 'postgres', connection: { host: '127.0.0.1', port: 1, database: 'x', user: 'y' }, ssl: { mode: 'disable' } },
  });
  const err = await t.rejects(all({ target: await resolveSqlTarget('nodb', bad), query: 'SELECT 1' }), { code: 'UPLINK_ERR_SQL_CONNECT' });
  t.equal((err as unknown as UplinkError).details?.sqlstate, '3D000');
  t.notMatch(JSON.stringify((err as unknown as UplinkError).toJSON()), /s3cr3t/);
  t.notMatch((err as Error).message, /s3cr3t/);
  await t.rejects(all({ target: await resolveSqlTarget('closed', bad), query: 'SELECT 1' }), {
    code: 'UPLINK_ERR_SQL_CONNECT',
    details: { errno: 'ECONNREFUSED' },
  });
});

t.test('1,000,000 rows stream through the csv renderer in bounded memory', async (t) => {
  const env = await setup(t, { maxRows: 1_000_000, statementTimeoutMs: 600_000 });
  if (!env) return;
  // ~110 MB of CSV: holding the result would grow the heap well past the bound below.
  const query = "SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 1000000) g";
  const sink = collectCount();
  globalThis.gc?.();
  const before = process.memoryUsage();
  let peakRss = before.rss;
  let peakHeap = before.heapUsed;
  const sample = setInterval(() => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
  }, 20);
  const done = await renderCsv(runSql({ target: env.target, query }), sink.out);
  clearInterval(sample);
  t.match(done, { command: 'SELECT', rowCount: 1_000_000, truncated: false });
  t.equal(sink.lines(), 1_000_001, 'header plus every row');
  t.equal(sink.bytes(), 'g,pad\r\n'.length + 1_000_000 * (1 + 100 + 2) + sumDigits(1_000_000));
  const mb = 1024 * 1024;
  t.ok(peakHeap - before.heapUsed < 100 * mb, `heap grew ${Math.round((peakHeap - before.heapUsed) / mb)} MB`);
  t.ok(peakRss - before.rss < 100 * mb, `rss grew ${Math.round((peakRss - before.rss) / mb)} MB`);
});

/** A Writable that only counts bytes and line ends (keeps nothing). */
function collectCount(): { out: Writable; bytes(): number; lines(): number } {
  let bytes = 0;
  let lines = 0;
  const out = new Writable({
    decodeStrings: false,
    write(chunk: string, _e, cb) {
      bytes += Buffer.byteLength(chunk);
      for (let i = chunk.indexOf('\n'); i !== -1; i = chunk.indexOf('\n', i + 1)) lines++;
      cb();
    },
  });
  return { out, bytes: () => bytes, lines: () => lines };
}

/** Total decimal digits of 1..n. */
function sumDigits(n: number): number {
  let total = 0;
  for (let d = 1, lo = 1; lo <= n; d++, lo *= 10) total += (Math.min(n, lo * 10 - 1) - lo + 1) * d;
  return total;
}
