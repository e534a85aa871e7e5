/**
 * The relay's SQL seam. The same SQL and migrations run on PostgreSQL through `pg`
 * (production, many replicas) and on PGlite (one process, data in a directory, nothing to
 * install). Repositories take a `Db` and never know which backend they run on.
 *
 * Contract: parameters are positional ($1, $2…); timestamps are `timestamptz` and come back
 * as `Date`; `transaction()` runs its callback on one connection and commits or rolls back.
 */
import pg from 'pg';
import { mkdirSync } from 'node:fs';
import { UplinkError } from '../../shared/errors.js';

export interface QueryResult<T> {
  rows: T[];
  rowCount: number;
}

export interface Db {
  readonly kind: 'pglite' | 'postgres';
  query<T = Record<string, unknown>>(text: string, params?: unknown[]): Promise<QueryResult<T>>;
  /** Run one or more statements without parameters (migrations). */
  exec(sql: string): Promise<void>;
  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

function storeError(err: unknown): UplinkError {
  if (err instanceof UplinkError) return err;
  const e = err as { message?: string; code?: string };
  return new UplinkError('UPLINK_ERR_STORE', `store: ${e.message ?? String(err)}`, {
    cause: err,
    details: e.code ? { sqlstate: e.code } : {},
  });
}

/** True when a driver error is a unique-constraint violation (SQLSTATE 23505). */
export function isUniqueViolation(err: unknown): boolean {
  const e = err as { code?: string; cause?: { code?: string }; details?: { sqlstate?: string } };
  return e?.code === '23505' || e?.cause?.code === '23505' || e?.details?.sqlstate === '23505';
}

class PgClientDb implements Db {
  readonly kind = 'postgres' as const;
  constructor(private readonly client: pg.PoolClient) {}
  async query<T>(text: string, params: unknown[] = []): Promise<QueryResult<T>> {
    try {
      const r = await this.client.query(text, params);
      return { rows: r.rows as T[], rowCount: r.rowCount ?? 0 };
    } catch (err) {
      throw storeError(err);
    }
  }
  async exec(sql: string): Promise<void> {
    try {
      await this.client.query(sql);
    } catch (err) {
      throw storeError(err);
    }
  }
  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
    return fn(this); // already inside one
  }
  async close(): Promise<void> {}
}

export class PostgresDb implements Db {
  readonly kind = 'postgres' as const;
  private readonly pool: pg.Pool;

  constructor(url: string, opts: { maxConnections?: number } = {}) {
    this.pool = new pg.Pool({ connectionString: url, max: opts.maxConnections ?? 10 });
    // An idle client's error (server restart) must not crash the relay; the next query reconnects.
    this.pool.on('error', () => {});
  }

  async query<T>(text: string, params: unknown[] = []): Promise<QueryResult<T>> {
    try {
      const r = await this.pool.query(text, params);
      return { rows: r.rows as T[], rowCount: r.rowCount ?? 0 };
    } catch (err) {
      throw storeError(err);
    }
  }

  async exec(sql: string): Promise<void> {
    try {
      await this.pool.query(sql);
    } catch (err) {
      throw storeError(err);
    }
  }

  async transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw storeError(err);
    }
    try {
      await client.query('BEGIN');
      const result = await fn(new PgClientDb(client));
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw storeError(err);
    } finally {
      client.release();
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

type PGliteQueryable = {
  query<R>(text: string, params?: unknown[]): Promise<{ rows: R[]; affectedRows?: number }>;
  exec(sql: string): Promise<unknown>;
};
type PGliteLike = PGliteQueryable & {
  transaction<T>(fn: (tx: PGliteQueryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
};

class PGliteTxDb implements Db {
  readonly kind = 'pglite' as const;
  constructor(private readonly tx: PGliteQueryable) {}
  async query<T>(text: string, params: unknown[] = []): Promise<QueryResult<T>> {
    try {
      const r = await this.tx.query<T>(text, params);
      return { rows: r.rows, rowCount: r.affectedRows ?? r.rows.length };
    } catch (err) {
      throw storeError(err);
    }
  }
  async exec(sql: string): Promise<void> {
    try {
      await this.tx.exec(sql);
    } catch (err) {
      throw storeError(err);
    }
  }
  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
    return fn(this);
  }
  async close(): Promise<void> {}
}

export class PGliteDb implements Db {
  readonly kind = 'pglite' as const;
  private constructor(private readonly db: PGliteLike) {}

  /** Open (creating if needed) a PGlite database in `dataDir`, or in memory when omitted. */
  static async open(dataDir?: string): Promise<PGliteDb> {
    if (dataDir) mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const { PGlite } = await import('@electric-sql/pglite');
    const db = dataDir ? new PGlite(dataDir) : new PGlite();
    await db.waitReady;
    return new PGliteDb(db as unknown as PGliteLike);
  }

  async query<T>(text: string, params: unknown[] = []): Promise<QueryResult<T>> {
    try {
      const r = await this.db.query<T>(text, params);
      return { rows: r.rows, rowCount: r.affectedRows ?? r.rows.length };
    } catch (err) {
      throw storeError(err);
    }
  }

  async exec(sql: string): Promise<void> {
    try {
      await this.db.exec(sql);
    } catch (err) {
      throw storeError(err);
    }
  }

  async transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
    try {
      return await this.db.transaction((tx) => fn(new PGliteTxDb(tx)));
    } catch (err) {
      throw storeError(err);
    }
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

/** Open the store named by the relay's configuration: PostgreSQL URL, or PGlite directory. */
export async function openDb(opts: { databaseUrl?: string | undefined; dataDir?: string | undefined }): Promise<Db> {
  if (opts.databaseUrl) {
    const db = new PostgresDb(opts.databaseUrl);
    await db.query('SELECT 1');
    return db;
  }
  return PGliteDb.open(opts.dataDir);
}
