import t from 'tap';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { CreateSecretCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { startMoto } from '../../helpers/moto.js';
import { freshDatabase } from '../../helpers/pg.js';
import { describeSqlTargets, parseSqlTargets, resolveSqlTarget, SQL_TARGET_DEFAULTS } from '../../../agent/ops/sql-targets.js';
import { runSql } from '../../../agent/ops/sql-runner.js';
import type { SqlEvent } from '../../../shared/sql-format.js';
import type { UplinkError } from '../../../shared/errors.js';

const PW = 'pa:ss/w@rd%secret';

t.test('schema: defaults, durations, and every connection variant', async (t) => {
  const cfg = parseSqlTargets({
    a: { engine: 'postgres', connection: { url: 'postgres://u@h/db' } },
    b: { engine: 'postgres', connection: { host: 'db.internal', database: 'app', user: 'ro', passwordEnv: 'DB_PW' }, statementTimeoutMs: '2m', maxRows: 1_000_000 },
    c: { engine: 'postgres', connection: { env: 'DATABASE_URL' }, allowWrite: true, ssl: { mode: 'require' } },
    d: { engine: 'postgres', connection: { secretsManager: { secretId: 'rds!db-1', region: 'eu-west-1' } } },
  });
  t.match(cfg.a, { statementTimeoutMs: 30_000, maxRows: 10_000, allowWrite: false, connectTimeoutMs: 10_000 });
  t.equal(cfg.a!.ssl, undefined);
  t.match(cfg.b, { statementTimeoutMs: 120_000, maxRows: 1_000_000, connection: { port: 5432 } });
  t.same(describeSqlTargets(cfg).map((d) => [d.name, d.allowWrite]), [['a', false], ['b', false], ['c', true], ['d', false]]);
  t.notMatch(JSON.stringify(describeSqlTargets(cfg)), /db\.internal|DB_PW|rds!/, 'no connection details in the description');
});

t.test('schema: rejects unknown keys, bad variants and limits, naming the field', async (t) => {
  const bad: [unknown, RegExp][] = [
    [{ x: { engine: 'postgres', connection: { url: 'postgres://u@h/d' }, maxrows: 5 } }, /sqlTargets\.x/],
    [{ x: { engine: 'mysql', connection: { url: 'postgres://u@h/d' } } }, /sqlTargets\.x\.engine/],
    [{ x: { engine: 'postgres', connection: { url: 'postgres://u@h/d', env: 'X' } } }, /sqlTargets\.x\.connection: needs exactly one/],
    [{ x: { engine: 'postgres', connection: {} } }, /sqlTargets\.x\.connection: needs exactly one/],
    [{ x: { engine: 'postgres', connection: { host: 'h', database: 'd' } } }, /sqlTargets\.x\.connection\.user/],
    [{ x: { engine: 'postgres', connection: { host: 'h', database: 'd', user: 'u', password: 'inline' } } }, /sqlTargets\.x\.connection/],
    [{ x: { engine: 'postgres', connection: { env: 'not a var' } } }, /sqlTargets\.x\.connection\.env/],
    [{ x: { engine: 'postgres', connection: { secretsManager: { secretId: 's', region: 'mars' } } } }, /secretsManager\.region/],
    [{ x: { engine: 'postgres', connection: { url: 'postgres://u@h/d' }, maxRows: 1_000_001 } }, /sqlTargets\.x\.maxRows/],
    [{ x: { engine: 'postgres', connection: { url: 'postgres://u@h/d' }, statementTimeoutMs: 'soon' } }, /statementTimeoutMs: "soon" is not a duration/],
    [{ x: { engine: 'postgres', connection: { url: 'postgres://u@h/d' }, statementTimeoutMs: 0 } }, /statementTimeoutMs/],
    [{ x: { engine: 'postgres', connection: { url: 'postgres://u@h/d' }, ssl: { mode: 'prefer' } } }, /ssl\.mode/],
    [{ 'Bad Name': { engine: 'postgres', connection: { url: 'postgres://u@h/d' } } }, /target names/],
  ];
  for (const [raw, message] of bad) t.throws(() => parseSqlTargets(raw), { code: 'UPLINK_ERR_CONFIG_INVALID', message }, JSON.stringify(raw));
  t.equal(SQL_TARGET_DEFAULTS.maxRowsHardCap, 1_000_000);
});

t.test('resolve: unknown target lists the known names', async (t) => {
  const cfg = parseSqlTargets({ zeta: { engine: 'postgres', connection: { url: 'postgres://u@h/d' } }, alpha: { engine: 'postgres', connection: { url: 'postgres://u@h/d' } } });
  await t.rejects(resolveSqlTarget('nope', cfg), { code: 'UPLINK_ERR_SQL_TARGET_UNKNOWN', details: { target: 'nope', known: ['alpha', 'zeta'] }, message: /known: alpha, zeta/ });
  await t.rejects(resolveSqlTarget('__proto__', cfg), { code: 'UPLINK_ERR_SQL_TARGET_UNKNOWN' });
});

t.test('resolve: url, env and host+passwordEnv; the password stays out of logs and JSON', async (t) => {
  const enc = encodeURIComponent(PW);
  const cfg = parseSqlTargets({
    url: { engine: 'postgres', connection: { url: `postgresql://app%40x:${enc}@[::1]:6543/my%20db?sslmode=require` } },
    env: { engine: 'postgres', connection: { env: 'UPLINK_TEST_DB_URL' }, ssl: { mode: 'disable' } },
    host: { engine: 'postgres', connection: { host: 'db.internal', database: 'app', user: 'ro', passwordEnv: 'UPLINK_TEST_DB_PW' } },
  });
  const env = { UPLINK_TEST_DB_URL: `postgres://svc:${enc}@db.example:5432/main?sslmode=verify-full`, UPLINK_TEST_DB_PW: PW };
  const u = await resolveSqlTarget('url', cfg, { env });
  t.match(u, { source: 'url', host: '::1', port: 6543, database: 'my db', user: 'app@x', ssl: { rejectUnauthorized: false } });
  t.equal(u.password(), PW);
  const e = await resolveSqlTarget('env', cfg, { env });
  t.match(e, { source: 'env', host: 'db.example', port: 5432, database: 'main', user: 'svc', ssl: false }, 'explicit ssl beats the URL sslmode');
  const h = await resolveSqlTarget('host', cfg, { env });
  t.match(h, { source: 'host', host: 'db.internal', ssl: { rejectUnauthorized: true, servername: 'db.internal' } }, 'verify-full by default');
  t.equal(h.password(), PW);
  for (const r of [u, e, h]) {
    t.notMatch(JSON.stringify(r), PW);
    t.notMatch(inspect(r, { depth: 5 }), PW);
  }
});

t.test('resolve: missing env vars and bad URLs are UNRESOLVED and never echo the URL', async (t) => {
  const cfg = parseSqlTargets({
    env: { engine: 'postgres', connection: { env: 'UPLINK_TEST_MISSING' } },
    pw: { engine: 'postgres', connection: { host: 'h', database: 'd', user: 'u', passwordEnv: 'UPLINK_TEST_MISSING' } },
    bad: { engine: 'postgres', connection: { url: `mysql://u:${PW}@h/d` } },
    param: { engine: 'postgres', connection: { url: `postgres://u:hunter2@h/d?options=-c%20x` } },
    nodb: { engine: 'postgres', connection: { url: 'postgres://u:hunter2@h' } },
  });
  await t.rejects(resolveSqlTarget('env', cfg, { env: {} }), { code: 'UPLINK_ERR_SQL_TARGET_UNRESOLVED', details: { source: 'env', env: 'UPLINK_TEST_MISSING' } });
  await t.rejects(resolveSqlTarget('pw', cfg, { env: {} }), { code: 'UPLINK_ERR_SQL_TARGET_UNRESOLVED', details: { source: 'host' } });
  for (const name of ['bad', 'param', 'nodb']) {
    const err = (await t.rejects(resolveSqlTarget(name, cfg, { env: {} }), { code: 'UPLINK_ERR_SQL_TARGET_UNRESOLVED' })) as unknown as UplinkError;
    t.notMatch(JSON.stringify(err.toJSON()), /hunter2|pa:ss/, name);
  }
});

t.test('resolve: ssl verify-ca and caFile', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'uplink-sql-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const ca = join(dir, 'ca.pem');
  await writeFile(ca, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
  const cfg = parseSqlTargets({
    ca: { engine: 'postgres', connection: { url: 'postgres://u@10.0.0.5/d' }, ssl: { mode: 'verify-ca', caFile: ca } },
    full: { engine: 'postgres', connection: { url: 'postgres://u@10.0.0.5/d' }, ssl: { mode: 'verify-full', caFile: ca, serverName: 'db.internal' } },
    missing: { engine: 'postgres', connection: { url: 'postgres://u@h/d' }, ssl: { mode: 'verify-full', caFile: join(dir, 'nope.pem') } },
  });
  const a = await resolveSqlTarget('ca', cfg);
  t.ok(a.ssl && a.ssl.ca && typeof a.ssl.checkServerIdentity === 'function');
  t.equal(a.ssl && a.ssl.checkServerIdentity?.('x', {} as never), undefined, 'verify-ca skips the host name check');
  t.match(await resolveSqlTarget('full', cfg), { ssl: { servername: 'db.internal', rejectUnauthorized: true } });
  await t.rejects(resolveSqlTarget('missing', cfg), { code: 'UPLINK_ERR_SQL_TARGET_UNRESOLVED', message: /ENOENT/ });
});

t.test('Secrets Manager target against moto: create the secret, resolve, run a query', async (t) => {
  const moto = await startMoto(t);
  if (!moto) return;
  const url = await freshDatabase(t, 'uplink_sqlsm');
  if (!url) return;
  const db = new URL(url);
  const sm = new SecretsManagerClient({ region: 'us-east-1', endpoint: moto.endpoint, credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' } });
  t.teardown(() => sm.destroy());
  const rds = { engine: 'postgres', host: db.hostname, port: Number(db.port), username: 'postgres', password: 'unused-by-trust-auth', dbname: db.pathname.slice(1) };
  await sm.send(new CreateSecretCommand({ Name: 'uplink/test/rds', SecretString: JSON.stringify(rds) }));
  await sm.send(new CreateSecretCommand({ Name: 'uplink/test/managed', SecretString: JSON.stringify({ username: 'postgres', password: 'x' }) }));
  await sm.send(new CreateSecretCommand({ Name: 'uplink/test/mysql', SecretString: JSON.stringify({ ...rds, engine: 'mysql' }) }));
  await sm.send(new CreateSecretCommand({ Name: 'uplink/test/notjson', SecretString: 'postgres://x' }));
  await sm.send(new CreateSecretCommand({ Name: 'uplink/test/nouser', SecretString: JSON.stringify({ password: 'topsecret' }) }));

  const cfg = parseSqlTargets({
    rds: { engine: 'postgres', connection: { secretsManager: { secretId: 'uplink/test/rds' } }, ssl: { mode: 'disable' } },
    managed: {
      engine: 'postgres',
      connection: { secretsManager: { secretId: 'uplink/test/managed', host: db.hostname, port: Number(db.port), database: db.pathname.slice(1) } },
      ssl: { mode: 'disable' },
    },
    hostless: { engine: 'postgres', connection: { secretsManager: { secretId: 'uplink/test/managed' } } },
    mysql: { engine: 'postgres', connection: { secretsManager: { secretId: 'uplink/test/mysql' } } },
    notjson: { engine: 'postgres', connection: { secretsManager: { secretId: 'uplink/test/notjson' } } },
    nouser: { engine: 'postgres', connection: { secretsManager: { secretId: 'uplink/test/nouser' } } },
    gone: { engine: 'postgres', connection: { secretsManager: { secretId: 'uplink/test/absent' } } },
  });
  const opts = { region: 'us-east-1', endpoint: moto.endpoint, awsCredentials: async () => ({ accessKeyId: 'testing', secretAccessKey: 'testing' }) };

  const target = await resolveSqlTarget('rds', cfg, opts);
  t.match(target, { source: 'secretsManager', host: db.hostname, port: Number(db.port), user: 'postgres', database: db.pathname.slice(1) });
  t.equal(target.password(), 'unused-by-trust-auth');
  const evs: SqlEvent[] = [];
  for await (const ev of runSql({ target, query: 'SELECT current_database() AS db, 40 + 2 AS answer' })) evs.push(ev);
  t.same(evs[1], { type: 'rows', rows: [[db.pathname.slice(1), '42']] });

  const managed = await resolveSqlTarget('managed', cfg, opts);
  t.match(managed, { host: db.hostname, database: db.pathname.slice(1), user: 'postgres' });

  await t.rejects(resolveSqlTarget('hostless', cfg, opts), { code: 'UPLINK_ERR_SQL_TARGET_UNRESOLVED', message: /no host/ });
  await t.rejects(resolveSqlTarget('mysql', cfg, opts), { code: 'UPLINK_ERR_SQL_TARGET_UNRESOLVED', message: /mysql/ });
  await t.rejects(resolveSqlTarget('notjson', cfg, opts), { code: 'UPLINK_ERR_SQL_TARGET_UNRESOLVED', message: /not JSON/ });
  const nouser = (await t.rejects(resolveSqlTarget('nouser', cfg, opts), {
    code: 'UPLINK_ERR_SQL_TARGET_UNRESOLVED',
    details: { field: 'username' },
  })) as unknown as UplinkError;
  t.notMatch(JSON.stringify(nouser.toJSON()), /topsecret/);
  await t.rejects(resolveSqlTarget('gone', cfg, opts), { code: 'UPLINK_ERR_SQL_TARGET_UNRESOLVED', details: { awsCode: 'ResourceNotFoundException' } });
});
