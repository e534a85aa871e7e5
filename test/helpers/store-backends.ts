/**
 * Run a store test on both backends: PGlite (in memory) and PostgreSQL (a fresh database on
 * DATABASE_URL or the local server; skipped outside CI when none answers). Each backend gets
 * a migrated Store; the caller's subtests share it, so use unique names per subtest.
 */
import type { Test } from 'tap';
import { PGliteDb, PostgresDb, type Db } from '../../relay/store/db.js';
import { migrate } from '../../relay/store/migrate.js';
import { Store } from '../../relay/store/store.js';
import { freshDatabase } from './pg.js';

export interface Backend {
  name: 'pglite' | 'postgres';
  /** Opens a migrated store (closed at teardown); undefined when PostgreSQL is unreachable. */
  open(t: Test): Promise<{ store: Store; db: Db; url?: string } | undefined>;
}

export const BACKENDS: Backend[] = [
  {
    name: 'pglite',
    async open(t) {
      const db = await PGliteDb.open();
      t.teardown(() => db.close());
      await migrate(db);
      return { store: new Store(db), db };
    },
  },
  {
    name: 'postgres',
    async open(t) {
      const url = await freshDatabase(t, 'uplink_store');
      if (!url) return undefined;
      const db = new PostgresDb(url);
      t.teardown(() => db.close());
      await migrate(db);
      return { store: new Store(db), db, url };
    },
  },
];

/** `fn` once per backend, each in its own subtest named after the backend. */
export function eachBackend(t: Test, fn: (t: Test, store: Store, backend: Backend['name']) => Promise<void>): void {
  for (const b of BACKENDS) {
    t.test(b.name, async (t) => {
      const opened = await b.open(t);
      if (!opened) return;
      await fn(t, opened.store, b.name);
    });
  }
}
