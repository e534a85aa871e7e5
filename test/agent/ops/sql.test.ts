/**
 * sql on the agent (agent/ops/sql.ts) through an in-process relay, against PostgreSQL:
 * - the customer switching sql off (operations.sql.enabled) is refused with its code;
 * - an error after rows were streamed: the client gets those rows, then an error line with
 *   the SQLSTATE (and `uplink sql` prints both, exiting 1);
 * - the CLI going away mid-query cancels the query on the server (pg_stat_activity), both
 *   while rows stream and before the first row exists;
 * - a first row later than the relay's default 30 s answer bound still arrives;
 * - a revoke of Operate mid-query cancels it too;
 * - a target whose connection and password live in a Secrets Manager secret (moto_server),
 *   read with the Operate role's credentials and not the agent's own: a recording proxy in
 *   front of moto shows which access key signed GetSecretValue.
 */
import t, { type Test } from 'tap';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { WebSocket } from 'ws';
import { CreateSecretCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { ADMIN_TOKEN, adminClient, createAppliance, startAgent, startRelay, waitFor } from '../../helpers/cluster.js';
import { freshDatabase } from '../../helpers/pg.js';
import { startMoto } from '../../helpers/moto.js';
import { BASE_CREDENTIALS, createPhaseRoles, iso } from '../phases/aws-fixture.js';
import { auditLogPath, readAuditLog } from '../../../agent/audit-log.js';
import { AccessControl } from '../../../agent/phases/grant.js';
import { OP_HEADERS, encodeSpec } from '../../../shared/protocol.js';
import type { ApiClient } from '../../../relay/cli/api-client.js';
import { cliContext } from '../../helpers/cli-context.js';
import { sqlCommand } from '../../../relay/cli/commands/sql.js';
import type { Relay } from '../../../relay/server.js';

type Line = Record<string, unknown> & { type: string };

/** Open a sql op and split what arrives into NDJSON lines; `ended` resolves at the end. */
async function sqlOp(client: ApiClient, appliance: string, spec: Record<string, unknown>) {
  const duplex = await client.openOp(appliance, 'sql', spec);
  const lines: Line[] = [];
  let buf = '';
  duplex.on('data', (c: Buffer) => {
    buf += c.toString('utf8');
    for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
      lines.push(JSON.parse(buf.slice(0, nl)) as Line);
      buf = buf.slice(nl + 1);
    }
  });
  duplex.on('error', () => {});
  // The relay ends its side after the last line; our side stays open until we close it, as the CLI does.
  const ended = new Promise<void>((resolve) => {
    duplex.once('end', () => {
      duplex.destroy();
      resolve();
    });
    duplex.once('close', () => resolve());
  });
  return { duplex, lines, ended, rows: () => lines.filter((l) => l.type === 'rows').reduce((n, l) => n + (l.rows as unknown[]).length, 0) };
}

/** Backends of the agent (application_name uplink-agent) in `db`, with what they run. */
async function agentBackends(admin: pg.Client, db: string): Promise<{ state: string; wait_event: string | null; query: string }[]> {
  const r = await admin.query<{ state: string; wait_event: string | null; query: string }>(
    "SELECT state, wait_event, query FROM pg_stat_activity WHERE datname = $1 AND application_name = 'uplink-agent'",
    [db],
  );
  return r.rows;
}

async function adminConnection(t: Test, url: string): Promise<pg.Client> {
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  t.teardown(() => admin.end());
  return admin;
}

async function sqlAudit(stateDir: string) {
  const events = [];
  for await (const e of readAuditLog(auditLogPath(stateDir))) if (e.operation === 'sql') events.push(e);
  return events;
}

/** Wait until one agent backend in `db` sleeps in pg_sleep: the query is running on the server. */
const sleeping = (admin: pg.Client, db: string) =>
  waitFor(async () => (await agentBackends(admin, db)).some((b) => b.state === 'active' && b.wait_event === 'PgSleep'), 20_000, 'the query running pg_sleep on the server');

/**
 * Wait until the agent has no backend left in `db`. The queries sleep 600 s and PostgreSQL
 * does not notice a closed client socket while in pg_sleep, so only a cancel request ends
 * them within this wait.
 */
const gone = (admin: pg.Client, db: string, what: string) => waitFor(async () => (await agentBackends(admin, db)).length === 0, 20_000, what);

/** After 500 fast rows (the runner's first batch), row 600 sleeps: rows stream, then the server is busy. */
const SLOW_AFTER_ROWS = "SELECT i, CASE WHEN i = 600 THEN pg_sleep(600)::text ELSE 'x' END AS v FROM generate_series(1, 1000) i";

t.test('sql against PostgreSQL', async (t) => {
  const url = await freshDatabase(t, 'uplink_sql_agent');
  if (!url) return;
  const db = new URL(url).pathname.slice(1);
  const admin = await adminConnection(t, url);
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const local = { operate: 'enabled' };
  const sqlTargets = { main: { engine: 'postgres', connection: { url: `${url}?sslmode=disable` }, statementTimeoutMs: 600_000 } };
  const agent = await startAgent(t, relay, await createAppliance(client, 'sql-a'), { local, sqlTargets });

  await t.test('an error after rows: the rows arrive, then the error with its SQLSTATE', async (t) => {
    // Rows 1..1499 compute; row 1500 divides by zero. The runner fetches 500 rows a batch,
    // so two whole batches are delivered and the third fails.
    const q = "SELECT i, CASE WHEN i < 1500 THEN 'ok' ELSE (1 / (i - i))::text END AS v FROM generate_series(1, 2000) i";
    const op = await sqlOp(client, 'sql-a', { target: 'main', query: q });
    await op.ended;
    t.same(op.lines.map((l) => l.type), ['columns', 'rows', 'rows', 'error'], 'columns, two batches, then the error; no done');
    t.equal(op.rows(), 1000);
    t.same((op.lines[2]!.rows as string[][]).at(-1), ['1000', 'ok'], 'the last delivered row');
    t.same(op.lines[3], {
      type: 'error',
      code: 'UPLINK_ERR_SQL_ERROR',
      message: 'division by zero',
      details: { target: 'main', sqlstate: '22012', severity: 'ERROR', position: null, detail: null, hint: null },
    });

    // The CLI renders the rows it got, then the error with the SQLSTATE, and exits 1.
    const ctx = cliContext(client, ['sql-a', '--target', 'main', '--format', 'csv', q]);
    t.equal(await sqlCommand.run(ctx), 1, 'exit status 1');
    const csv = ctx.out().split('\r\n');
    t.equal(csv[0], 'i,v');
    t.equal(csv[1000], '1000,ok', 'the 1000 rows before the error are printed');
    t.equal(csv.length, 1002, 'header, 1000 rows, and nothing after the last line break');
    t.equal(ctx.err(), 'error UPLINK_ERR_SQL_ERROR: division by zero (SQLSTATE 22012)\n');
  });

  await t.test('the CLI going away while rows stream cancels the query on the server', async (t) => {
    const op = await sqlOp(client, 'sql-a', { target: 'main', query: SLOW_AFTER_ROWS });
    await waitFor(() => op.rows() === 500, 20_000, 'the first batch');
    await sleeping(admin, db);
    op.duplex.destroy();
    await gone(admin, db, 'the query cancelled and the connection closed');
    await waitFor(async () => (await sqlAudit(agent.cfg.stateDir)).at(-1)?.target === `main: ${SLOW_AFTER_ROWS}`, 10_000, 'the audit event');
    t.match((await sqlAudit(agent.cfg.stateDir)).at(-1), { outcome: 'error', detail: { rows: 500, write: false, code: 'UPLINK_ERR_SQL_CANCELLED' } });
  });

  await t.test('the CLI going away before the first row cancels the query on the server', async (t) => {
    // Nothing is answered until the first row exists, so the CLI still waits for its
    // WebSocket upgrade; it gives up by closing the connection.
    const query = 'SELECT pg_sleep(600) AS never';
    const ws = new WebSocket(`${relay.url.replace(/^http/, 'ws')}/v1/appliances/sql-a/sql`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, [OP_HEADERS.spec]: encodeSpec({ target: 'main', query }) },
    });
    ws.on('error', () => {});
    await sleeping(admin, db);
    ws.terminate();
    await gone(admin, db, 'the query cancelled although no row was ever sent');
    await waitFor(async () => (await sqlAudit(agent.cfg.stateDir)).at(-1)?.target === `main: ${query}`, 10_000, 'the audit event');
    t.match((await sqlAudit(agent.cfg.stateDir)).at(-1), { outcome: 'error', detail: { rows: 0, code: 'UPLINK_ERR_SQL_CANCELLED' } });
  });

  await t.test("a first row later than the relay's 30 s answer bound still arrives", async (t) => {
    // The agent answers a sql request with its first row; the statement timeout (here 600 s)
    // bounds that, not the relay's default wait for an agent's answer.
    const op = await sqlOp(client, 'sql-a', { target: 'main', query: "SELECT 'late' AS v FROM pg_sleep(31)" });
    await op.ended;
    t.same(op.lines.map((l) => l.type), ['columns', 'rows', 'done']);
    t.same(op.lines[1]!.rows, [['late']]);
  });

  await t.test('a revoke of Operate mid-query cancels it; the client is told why', async (t) => {
    const op = await sqlOp(client, 'sql-a', { target: 'main', query: SLOW_AFTER_ROWS });
    await waitFor(() => op.rows() === 500, 20_000, 'the first batch');
    await sleeping(admin, db);
    const control = new AccessControl({ config: { local }, stateDir: agent.cfg.stateDir, audit: async () => undefined });
    await control.revoke('operate', 'customer-admin');
    await op.ended;
    await gone(admin, db, 'the query cancelled by the revoke');
    t.match(op.lines.at(-1), { type: 'error', code: 'UPLINK_ERR_SQL_CANCELLED', details: { target: 'main' } });
    t.same(op.lines.map((l) => l.type), ['columns', 'rows', 'error']);
    await t.rejects(sqlOp(client, 'sql-a', { target: 'main', query: 'SELECT 1' }), { code: 'UPLINK_ERR_PHASE_NOT_APPROVED' });
  });
});

t.test('enabled: false refuses sql with its code, before the Operate check', async (t) => {
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const agent = await startAgent(t, relay, await createAppliance(client, 'sql-off'), {
    operations: { sql: { enabled: false } },
    sqlTargets: { main: { engine: 'postgres', connection: { url: 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable' } } },
  });
  await t.rejects(sqlOp(client, 'sql-off', { target: 'main', query: 'SELECT 1' }), {
    code: 'UPLINK_ERR_OPERATION_DISABLED',
    message: /^sql is disabled by the customer on this agent \(operations\.sql\.enabled\)$/,
  });
  t.same(await sqlAudit(agent.cfg.stateDir), []);
});

interface AwsCall {
  service: string;
  action: string;
  accessKeyId: string;
}

/**
 * A transparent HTTP proxy in front of moto that notes, for every AWS call, the service,
 * the action and the access key that signed it, and the keys STS handed out per role.
 */
async function recordingProxy(t: Test, target: string): Promise<{ url: string; calls: AwsCall[]; issued: Map<string, string> }> {
  const calls: AwsCall[] = [];
  /** AccessKeyId -> assumed role ARN, from AssumeRole answers. */
  const issued = new Map<string, string>();
  const upstream = new URL(target);
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const auth = req.headers.authorization ?? '';
      const cred = /Credential=([^/]+)\/[^/]+\/[^/]+\/([^/]+)\//.exec(auth);
      const amzTarget = req.headers['x-amz-target'];
      const action = typeof amzTarget === 'string' ? amzTarget.split('.').pop()! : (new URLSearchParams(body.toString('utf8')).get('Action') ?? '?');
      calls.push({ service: cred?.[2] ?? '?', action, accessKeyId: cred?.[1] ?? '' });
      const out = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up: IncomingMessage) => {
        const answer: Buffer[] = [];
        up.on('data', (c: Buffer) => answer.push(c));
        up.on('end', () => {
          const text = Buffer.concat(answer).toString('utf8');
          if (action === 'AssumeRole') {
            const key = /<AccessKeyId>([^<]+)<\/AccessKeyId>/.exec(text)?.[1];
            const arn = /<AssumedRoleUser>[\s\S]*?<Arn>([^<]+)<\/Arn>/.exec(text)?.[1];
            if (key && arn) issued.set(key, arn);
          }
          res.writeHead(up.statusCode ?? 502, up.headers);
          res.end(Buffer.concat(answer));
        });
      });
      out.on('error', () => res.destroy());
      out.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, calls, issued };
}

t.test('a Secrets Manager target is read with the Operate role, not the agent credentials', async (t) => {
  const moto = await startMoto(t);
  if (!moto) return;
  const url = await freshDatabase(t, 'uplink_sql_sm');
  if (!url) return;
  const db = new URL(url);
  // The agent's own ("task role") credentials come from its environment, as in production.
  const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
  process.env.AWS_ACCESS_KEY_ID = BASE_CREDENTIALS.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = BASE_CREDENTIALS.secretAccessKey;
  t.teardown(() => {
    for (const [k, v] of [['AWS_ACCESS_KEY_ID', saved.id], ['AWS_SECRET_ACCESS_KEY', saved.secret]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  const roles = await createPhaseRoles(t, moto, { operate: { OperateAccess: 'enabled', OperateAccessUntil: iso(Date.now() + 3_600_000) } });
  const sm = new SecretsManagerClient({ region: 'us-east-1', endpoint: moto.endpoint, credentials: BASE_CREDENTIALS });
  t.teardown(() => sm.destroy());
  const secretId = `uplink/test/orders-${process.pid}`;
  const secret = { engine: 'postgres', host: db.hostname, port: Number(db.port), username: 'postgres', password: 'from-the-secret', dbname: db.pathname.slice(1) };
  await sm.send(new CreateSecretCommand({ Name: secretId, SecretString: JSON.stringify(secret) }));

  const proxy = await recordingProxy(t, moto.endpoint);
  const relay: Relay = await startRelay(t);
  const client = adminClient(t, relay);
  await startAgent(t, relay, await createAppliance(client, 'sql-sm'), {
    aws: { ...roles.config.aws, endpoint: proxy.url },
    sqlTargets: { orders: { engine: 'postgres', connection: { secretsManager: { secretId } }, ssl: { mode: 'disable' } } },
  });

  const op = await sqlOp(client, 'sql-sm', { target: 'orders', query: 'SELECT current_database() AS db, current_user AS who' });
  await op.ended;
  t.same(op.lines.map((l) => l.type), ['columns', 'rows', 'done']);
  t.same(op.lines[1]!.rows, [[db.pathname.slice(1), 'postgres']], 'the query ran on the database the secret names');

  const reads = proxy.calls.filter((c) => c.action === 'GetSecretValue');
  t.equal(reads.length, 1, 'one secret read');
  const key = reads[0]!.accessKeyId;
  t.not(key, BASE_CREDENTIALS.accessKeyId, "not signed with the agent's own key");
  t.match(proxy.issued.get(key), new RegExp(`^arn:aws:sts::\\d+:assumed-role/${roles.names.operate}/bootstrap-admin\\+`), "signed with the Operate role's session for this engineer");
});
