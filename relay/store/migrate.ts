/**
 * Forward-only migrations, run at relay start. Several replicas may start at once against
 * one PostgreSQL: an advisory lock serialises them, and each migration runs in its own
 * transaction together with its row in `schema_migrations`, so a crash never leaves one
 * half-applied.
 */
import type { Db } from './db.js';
import { MIGRATIONS, type Migration } from './migrations/index.js';

/** Arbitrary constant: the advisory lock id reserved for uplink migrations. */
const MIGRATION_LOCK_ID = 0x75706c6e; // "upln"

export async function migrate(db: Db, migrations: readonly Migration[] = MIGRATIONS): Promise<string[]> {
  const ids = migrations.map((m) => m.id);
  if (new Set(ids).size !== ids.length) throw new Error('duplicate migration id');
  const applied: string[] = [];
  await db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_ID]);
    await tx.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      id text PRIMARY KEY,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const done = new Set((await tx.query<{ id: string }>('SELECT id FROM schema_migrations')).rows.map((r) => r.id));
    for (const m of [...migrations].sort((a, b) => a.id.localeCompare(b.id))) {
      if (done.has(m.id)) continue;
      await tx.exec(m.sql);
      await tx.query('INSERT INTO schema_migrations (id) VALUES ($1)', [m.id]);
      applied.push(m.id);
    }
  });
  return applied;
}
