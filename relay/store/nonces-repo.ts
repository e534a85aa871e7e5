/** Handshake nonces, kept until they could no longer pass the clock-skew check. */
import { isUniqueViolation, type Db } from './db.js';

export class NoncesRepo {
  constructor(private readonly db: Db) {}

  /** Records the nonce; returns false when it was already used (a replay). */
  async use(nonce: string, applianceId: string, expiresAt: Date): Promise<boolean> {
    try {
      const r = await this.db.query(
        'INSERT INTO auth_nonces (nonce, appliance_id, expires_at) VALUES ($1, $2, $3) ON CONFLICT (nonce) DO NOTHING',
        [nonce, applianceId, expiresAt],
      );
      return r.rowCount === 1;
    } catch (err) {
      if (isUniqueViolation(err)) return false;
      throw err;
    }
  }

  async purge(now: Date): Promise<number> {
    const r = await this.db.query('DELETE FROM auth_nonces WHERE expires_at < $1', [now]);
    return r.rowCount;
  }
}
