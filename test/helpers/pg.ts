/**
 * A fresh PostgreSQL database per test, dropped afterwards. Uses DATABASE_URL when set,
 * else the CI server on 127.0.0.1:5432 (user postgres, trust auth). Returns undefined when
 * no server answers (outside CI the caller then skips; under CI that is a failure).
 */
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import type { Test } from 'tap';

const ADMIN_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export async function freshDatabase(t: Test, prefix = 'uplink_test'): Promise<string | undefined> {
  const name = `${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 3000 });
  try {
    await admin.connect();
  } catch (err) {
    if (process.env.CI === 'true') throw new Error(`CI=true and PostgreSQL is unreachable at ${ADMIN_URL}: ${String(err)}`);
    (t.skip as unknown as (name: string) => void)(`PostgreSQL unreachable at ${ADMIN_URL}`);
    return undefined;
  }
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  t.teardown(async () => {
    const drop = new pg.Client({ connectionString: ADMIN_URL });
    await drop.connect();
    await drop.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await drop.end();
  });
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}
