/** Appliances and their one-time enrollment tokens. */
import { randomBytes } from 'node:crypto';
import { UplinkError } from '../../shared/errors.js';
import { isUniqueViolation, type Db } from './db.js';

export interface Appliance {
  id: string;
  name: string;
  customer: string;
  instanceId: string;
  createdAt: Date;
  publicKey: string | null;
  keyId: string | null;
  enrolledAt: Date | null;
  keyRevokedAt: Date | null;
  agentVersion: string | null;
  lastSeenAt: Date | null;
  lastRemoteAddress: string | null;
  phaseSummary: Record<string, unknown> | null;
}

/** What a handshake tells about the agent. */
export interface Seen {
  agentVersion: string | null;
  remoteAddress: string | null;
  at: Date;
}

interface ApplianceRow {
  id: string;
  name: string;
  customer: string;
  instance_id: string;
  created_at: Date;
  public_key: string | null;
  key_id: string | null;
  enrolled_at: Date | null;
  key_revoked_at: Date | null;
  agent_version: string | null;
  last_seen_at: Date | null;
  last_remote_address: string | null;
  phase_summary: Record<string, unknown> | null;
}

function fromRow(r: ApplianceRow): Appliance {
  return {
    id: r.id,
    name: r.name,
    customer: r.customer,
    instanceId: r.instance_id,
    createdAt: r.created_at,
    publicKey: r.public_key,
    keyId: r.key_id,
    enrolledAt: r.enrolled_at,
    keyRevokedAt: r.key_revoked_at,
    agentVersion: r.agent_version,
    lastSeenAt: r.last_seen_at,
    lastRemoteAddress: r.last_remote_address,
    phaseSummary: r.phase_summary,
  };
}

export type EnrollmentOutcome =
  | { ok: true; appliance: Appliance }
  | { ok: false; reason: 'invalid' | 'used' | 'expired' | 'wrong_appliance' };

export function newApplianceId(): string {
  return `apl_${randomBytes(8).toString('hex')}`;
}

export class AppliancesRepo {
  constructor(private readonly db: Db) {}

  async create(input: { name: string; customer: string; instanceId: string }): Promise<Appliance> {
    try {
      const r = await this.db.query<ApplianceRow>(
        'INSERT INTO appliances (id, name, customer, instance_id) VALUES ($1, $2, $3, $4) RETURNING *',
        [newApplianceId(), input.name, input.customer, input.instanceId],
      );
      return fromRow(r.rows[0]!);
    } catch (err) {
      if (isUniqueViolation(err)) throw new UplinkError('UPLINK_ERR_CONFLICT', `appliance "${input.name}" already exists`);
      throw err;
    }
  }

  async byName(name: string): Promise<Appliance | undefined> {
    const r = await this.db.query<ApplianceRow>('SELECT * FROM appliances WHERE name = $1', [name]);
    return r.rows[0] ? fromRow(r.rows[0]) : undefined;
  }

  async byId(id: string): Promise<Appliance | undefined> {
    const r = await this.db.query<ApplianceRow>('SELECT * FROM appliances WHERE id = $1', [id]);
    return r.rows[0] ? fromRow(r.rows[0]) : undefined;
  }

  /** byId for many ids in one statement, answered in the order asked (undefined for unknown ids). */
  async byIds(ids: readonly string[]): Promise<(Appliance | undefined)[]> {
    if (ids.length === 0) return [];
    const r = await this.db.query<ApplianceRow>('SELECT * FROM appliances WHERE id = ANY($1::text[])', [[...new Set(ids)]]);
    const found = new Map(r.rows.map((row) => [row.id, fromRow(row)]));
    return ids.map((id) => found.get(id));
  }

  async list(): Promise<Appliance[]> {
    const r = await this.db.query<ApplianceRow>('SELECT * FROM appliances ORDER BY name');
    return r.rows.map(fromRow);
  }

  async addEnrollmentToken(applianceId: string, tokenHash: string, expiresAt: Date): Promise<void> {
    await this.db.query('INSERT INTO enrollment_tokens (token_hash, appliance_id, expires_at) VALUES ($1, $2, $3)', [
      tokenHash,
      applianceId,
      expiresAt,
    ]);
  }

  /**
   * Consume a one-time token and bind the key, atomically: two agents racing with the same
   * token get exactly one success. A token for another appliance is refused without
   * consuming it.
   */
  async enroll(input: { tokenHash: string; claimedApplianceId: string; publicKey: string; keyId: string; now: Date }): Promise<EnrollmentOutcome> {
    return this.db.transaction(async (tx) => {
      const t = await tx.query<{ appliance_id: string; expires_at: Date; used_at: Date | null }>(
        'SELECT appliance_id, expires_at, used_at FROM enrollment_tokens WHERE token_hash = $1 FOR UPDATE',
        [input.tokenHash],
      );
      const token = t.rows[0];
      if (!token) return { ok: false, reason: 'invalid' } as const;
      if (token.appliance_id !== input.claimedApplianceId) return { ok: false, reason: 'wrong_appliance' } as const;
      if (token.used_at) return { ok: false, reason: 'used' } as const;
      if (token.expires_at.getTime() <= input.now.getTime()) return { ok: false, reason: 'expired' } as const;
      await tx.query('UPDATE enrollment_tokens SET used_at = $2 WHERE token_hash = $1', [input.tokenHash, input.now]);
      const r = await tx.query<ApplianceRow>(
        `UPDATE appliances SET public_key = $2, key_id = $3, enrolled_at = $4, key_revoked_at = NULL
         WHERE id = $1 RETURNING *`,
        [token.appliance_id, input.publicKey, input.keyId, input.now],
      );
      return { ok: true, appliance: fromRow(r.rows[0]!) } as const;
    });
  }

  async revokeKey(id: string, now: Date): Promise<void> {
    await this.db.query('UPDATE appliances SET key_revoked_at = $2 WHERE id = $1 AND public_key IS NOT NULL', [id, now]);
  }

  /** What handshakes told about agents (version, address, when), in one statement; a later entry for the same id wins. */
  async recordSeenMany(list: readonly ({ id: string } & Seen)[]): Promise<void> {
    const latest = [...new Map(list.map((s) => [s.id, s])).values()];
    if (latest.length === 0) return;
    await this.db.query(
      `UPDATE appliances a SET agent_version = s.agent_version, last_remote_address = s.remote_address, last_seen_at = s.at
       FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS s(id, agent_version, remote_address, at)
       WHERE a.id = s.id`,
      [latest.map((s) => s.id), latest.map((s) => s.agentVersion), latest.map((s) => s.remoteAddress), latest.map((s) => s.at.toISOString())],
    );
  }

  /** Ids at a time in one touchLastSeen statement: on the embedded store a statement holds the event loop. */
  static readonly TOUCH_CHUNK = 1000;

  /** Sets last_seen_at for all `ids`, in statements of at most TOUCH_CHUNK ids. */
  async touchLastSeen(ids: string[], at: Date): Promise<void> {
    for (let i = 0; i < ids.length; i += AppliancesRepo.TOUCH_CHUNK) {
      await this.db.query('UPDATE appliances SET last_seen_at = $2 WHERE id = ANY($1::text[])', [ids.slice(i, i + AppliancesRepo.TOUCH_CHUNK), at]);
    }
  }

  /** Appliance id → the `fingerprint` of its stored phase summary, for those that have one. */
  async phaseFingerprints(): Promise<Map<string, string>> {
    const r = await this.db.query<{ id: string; fp: string }>(
      "SELECT id, phase_summary->>'fingerprint' AS fp FROM appliances WHERE phase_summary->>'fingerprint' IS NOT NULL",
    );
    return new Map(r.rows.map((row) => [row.id, row.fp]));
  }

  async setPhaseSummary(id: string, summary: Record<string, unknown>): Promise<void> {
    await this.db.query('UPDATE appliances SET phase_summary = $2 WHERE id = $1', [id, JSON.stringify(summary)]);
  }
}
