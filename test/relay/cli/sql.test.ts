/**
 * `uplink sql` end to end: the CLI command (in process) → relay op WebSocket → tunnel →
 * agent → PostgreSQL (a fresh database on the test server): every format, a read-only
 * violation and a timeout with their SQLSTATE, an unknown target, and a 1,000,000-row result
 * streamed through the full stack with bounded heap growth.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import { PassThrough, Writable } from 'node:stream';
import { adminClient, createAppliance, startAgent, startRelay } from '../../helpers/cluster.js';
import { freshDatabase } from '../../helpers/pg.js';
import type { ApiClient } from '../../../relay/cli/api-client.js';
import type { CliContext } from '../../../relay/cli/context.js';
import { sqlCommand } from '../../../relay/cli/commands/sql.js';

async function runSqlCli(client: ApiClient, argv: string[], stdout: NodeJS.WritableStream = new PassThrough()): Promise<{ code: number; out: string; err: string }> {
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  if (stdout instanceof PassThrough) stdout.on('data', (d: Buffer) => (out += d.toString()));
  stderr.on('data', (d: Buffer) => (err += d.toString()));
  const ctx: CliContext = { argv, io: { stdout, stderr, stdin: new PassThrough() }, env: {}, client: () => client };
  const code = await sqlCommand.run(ctx);
  return { code, out, err };
}

t.test('uplink sql against PostgreSQL', async (t) => {
  const url = await freshDatabase(t, 'uplink_sql_cli');
  if (!url) return;
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'db');
  await startAgent(t, relay, enrolled, {
    local: { operate: 'enabled' },
    sqlTargets: {
      main: { engine: 'postgres', connection: { url: `${url}?sslmode=disable` }, statementTimeoutMs: 500_000, maxRows: 1_000_000, allowWrite: true },
      ro: { engine: 'postgres', connection: { url: `${url}?sslmode=disable` } },
      slow: { engine: 'postgres', connection: { url: `${url}?sslmode=disable` }, statementTimeoutMs: 300 },
    },
  });
  const q = "SELECT i AS id, CASE WHEN i = 2 THEN NULL ELSE 'v,' || i END AS val FROM generate_series(1, 3) i";

  t.test('table, csv and json formats', async (t) => {
    const table = await runSqlCli(client, ['db', '--target', 'ro', q]);
    t.equal(table.code, 0);
    t.equal(table.out, ' id | val\n----+-----\n  1 | v,1\n  2 |\n  3 | v,3\n(3 rows)\n');
    const csv = await runSqlCli(client, ['db', '--target', 'ro', '--format', 'csv', q]);
    t.equal(csv.out, 'id,val\r\n1,"v,1"\r\n2,\r\n3,"v,3"\r\n');
    const json = await runSqlCli(client, ['db', '--target', 'ro', '--format', 'json', q]);
    t.same(JSON.parse(json.out), [{ id: '1', val: 'v,1' }, { id: '2', val: null }, { id: '3', val: 'v,3' }]);
    const limited = await runSqlCli(client, ['db', '--target', 'ro', '--format', 'csv', '--max-rows', '2', q]);
    t.equal(limited.code, 0);
    t.equal(limited.out, 'id,val\r\n1,"v,1"\r\n2,\r\n');
    t.equal(limited.err, "uplink: output stopped at 2 rows (--max-rows or the target's maxRows); more rows exist\n");
  });

  t.test('read-only by default; --write commits on a target that allows it', async (t) => {
    const ro = await runSqlCli(client, ['db', '--target', 'main', 'CREATE TABLE t1 (x int)']);
    t.equal(ro.code, 1);
    t.match(ro.err, /^error UPLINK_ERR_SQL_READ_ONLY: .* \(SQLSTATE 25006\)\n$/);
    const notAllowed = await runSqlCli(client, ['db', '--target', 'ro', '--write', 'CREATE TABLE t1 (x int)']);
    t.equal(notAllowed.err, 'error UPLINK_ERR_SQL_WRITE_NOT_ALLOWED: SQL target "ro" does not allow writes\n');
    const w = await runSqlCli(client, ['db', '--target', 'main', '--write', '--format', 'csv', 'CREATE TABLE t1 AS SELECT 42 AS x']);
    t.equal(w.code, 0);
    const r = await runSqlCli(client, ['db', '--target', 'ro', '--format', 'csv', 'SELECT x FROM t1']);
    t.equal(r.out, 'x\r\n42\r\n');
  });

  t.test('statement timeout and syntax errors come back with their SQLSTATE', async (t) => {
    const slow = await runSqlCli(client, ['db', '--target', 'slow', 'SELECT pg_sleep(5)']);
    t.equal(slow.code, 1);
    t.match(slow.err, /^error UPLINK_ERR_SQL_TIMEOUT: .* \(SQLSTATE 57014\)\n$/);
    const bad = await runSqlCli(client, ['db', '--target', 'ro', 'SELEC 1']);
    t.match(bad.err, /^error UPLINK_ERR_SQL_ERROR: .*syntax error.* \(SQLSTATE 42601\)\n$/);
    const unknown = await runSqlCli(client, ['db', '--target', 'nope', 'SELECT 1']);
    t.equal(unknown.err, 'error UPLINK_ERR_SQL_TARGET_UNKNOWN: no SQL target "nope" on this agent (known: main, ro, slow)\n');
  });

  t.test('1,000,000 rows stream through the full stack with bounded memory', async (t) => {
    let bytes = 0;
    let lines = 0;
    let peak = 0;
    // Live memory, not garbage waiting for collection: collect before each sample.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    gc();
    const base = process.memoryUsage().heapUsed;
    const SAMPLE_EVERY = 8 * 1024 * 1024;
    let nextSample = SAMPLE_EVERY;
    // A sink that reads slowly enough to apply backpressure: every write waits a tick.
    const sink = new Writable({
      highWaterMark: 64 * 1024,
      write(chunk: Buffer, _enc, done) {
        bytes += chunk.length;
        for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
        if (bytes >= nextSample) {
          nextSample += SAMPLE_EVERY;
          gc();
          peak = Math.max(peak, process.memoryUsage().heapUsed - base);
        }
        setImmediate(done);
      },
    });
    const r = await runSqlCli(client, ['db', '--target', 'main', '--format', 'csv', "SELECT i, repeat('x', 100) AS pad FROM generate_series(1, 1000000) i"], sink);
    t.equal(r.code, 0);
    t.equal(r.err, '');
    t.equal(lines, 1_000_001);
    t.ok(bytes > 100_000_000, `${bytes} bytes rendered`);
    // The whole result is over 100 MB; relay, agent and CLI share this heap. Streaming keeps
    // the growth to a few batches in flight, far below the size of the result.
    t.ok(peak < 64 * 1024 * 1024, `peak live heap growth ${Math.round(peak / 1048576)} MiB < 64 MiB`);
  });
});
