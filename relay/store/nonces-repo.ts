/** Handshake nonces, kept until they could no longer pass the clock-skew check. */
import type { Db } from './db.js';

export class NoncesRepo {
  constructor(private readonly db: Db) {}

  /**
   * Record nonces in one statement; each answer (in order) is false when that nonce was
   * already used (a replay). A nonce asked twice in one batch is fresh only the first time.
   */
  async useMany(list: readonly { nonce: string; applianceId: string; expiresAt: Date }[]): Promise<boolean[]> {
    if (list.length === 0) return [];
    const first = new Map<string, number>();
    list.forEach((n, i) => {
      if (!first.has(n.nonce)) first.set(n.nonce, i);
    });
    const unique = [...first.values()].map((i) => list[i]!);
    const r = await this.db.query<{ nonce: string }>(
      `INSERT INTO auth_nonces (nonce, appliance_id, expires_at)
       SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
       ON CONFLICT (nonce) DO NOTHING RETURNING nonce`,
      [unique.map((n) => n.nonce), unique.map((n) => n.applianceId), unique.map((n) => n.expiresAt.toISOString())],
    );
    const inserted = new Set(r.rows.map((row) => row.nonce));
    return list.map((n, i) => first.get(n.nonce) === i && inserted.has(n.nonce));
  }

  async purge(now: Date): Promise<number> {
    const r = await this.db.query('DELETE FROM auth_nonces WHERE expires_at < $1', [now]);
    return r.rowCount;
  }
}
