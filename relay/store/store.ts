/**
 * The relay store: one Db and the repositories over it. Open with `openStore()`, which also
 * runs the migrations (forward-only, serialised across replicas).
 */
import { openDb, type Db } from './db.js';
import { migrate } from './migrate.js';
import { AppliancesRepo } from './appliances-repo.js';
import { TokensRepo } from './tokens-repo.js';
import { NoncesRepo } from './nonces-repo.js';
import { PresenceRepo } from './presence-repo.js';

export class Store {
  readonly appliances: AppliancesRepo;
  readonly tokens: TokensRepo;
  readonly nonces: NoncesRepo;
  readonly presence: PresenceRepo;

  constructor(readonly db: Db) {
    this.appliances = new AppliancesRepo(db);
    this.tokens = new TokensRepo(db);
    this.nonces = new NoncesRepo(db);
    this.presence = new PresenceRepo(db);
  }

  async ping(): Promise<void> {
    await this.db.query('SELECT 1');
  }

  close(): Promise<void> {
    return this.db.close();
  }
}

export async function openStore(opts: { databaseUrl?: string | undefined; dataDir?: string | undefined }): Promise<Store> {
  const db = await openDb(opts);
  try {
    await migrate(db);
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
  return new Store(db);
}
