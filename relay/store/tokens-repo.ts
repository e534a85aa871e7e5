/** Vendor API tokens: stored as SHA-256 hashes, never in clear. */
import { createHash, randomBytes } from 'node:crypto';
import type { Db } from './db.js';

export const SCOPES = ['read', 'operate', 'deploy', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

export interface ApiToken {
  id: string;
  name: string;
  scopes: Scope[];
  createdAt: Date;
  createdBy: string | null;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
}

interface TokenRow {
  id: string;
  name: string;
  scopes: string[];
  created_at: Date;
  created_by: string | null;
  revoked_at: Date | null;
  last_used_at: Date | null;
}

function fromRow(r: TokenRow): ApiToken {
  return {
    id: r.id,
    name: r.name,
    scopes: r.scopes.filter((s): s is Scope => (SCOPES as readonly string[]).includes(s)),
    createdAt: r.created_at,
    createdBy: r.created_by,
    revokedAt: r.revoked_at,
    lastUsedAt: r.last_used_at,
  };
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** A new API token value. The prefix makes leaked tokens easy to find with secret scanners. */
export function newApiTokenValue(): string {
  return `uplk_${randomBytes(32).toString('base64url')}`;
}

/** `admin` implies everything; `operate` and `deploy` each imply `read`. */
export function scopeAllows(granted: readonly Scope[], needed: Scope): boolean {
  if (granted.includes('admin')) return true;
  if (granted.includes(needed)) return true;
  return needed === 'read' && (granted.includes('operate') || granted.includes('deploy'));
}

export class TokensRepo {
  constructor(private readonly db: Db) {}

  async create(input: { name: string; scopes: Scope[]; createdBy: string | null; value?: string }): Promise<{ token: ApiToken; value: string }> {
    const value = input.value ?? newApiTokenValue();
    const id = `tok_${randomBytes(6).toString('hex')}`;
    const r = await this.db.query<TokenRow>(
      'INSERT INTO api_tokens (id, name, scopes, token_hash, created_by) VALUES ($1, $2, $3, $4, $5) RETURNING *',
      [id, input.name, input.scopes, hashSecret(value), input.createdBy],
    );
    return { token: fromRow(r.rows[0]!), value };
  }

  async findActiveByValue(value: string): Promise<ApiToken | undefined> {
    const r = await this.db.query<TokenRow>('SELECT * FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL', [hashSecret(value)]);
    return r.rows[0] ? fromRow(r.rows[0]) : undefined;
  }

  async list(): Promise<ApiToken[]> {
    const r = await this.db.query<TokenRow>('SELECT * FROM api_tokens ORDER BY created_at, id');
    return r.rows.map(fromRow);
  }

  async countActiveAdmins(): Promise<number> {
    const r = await this.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM api_tokens WHERE revoked_at IS NULL AND 'admin' = ANY(scopes)`);
    return r.rows[0]?.n ?? 0;
  }

  /** Returns false when no active token has that id or name. */
  async revoke(idOrName: string, now: Date): Promise<boolean> {
    const r = await this.db.query('UPDATE api_tokens SET revoked_at = $2 WHERE (id = $1 OR name = $1) AND revoked_at IS NULL', [idOrName, now]);
    return r.rowCount > 0;
  }

  async touch(id: string, now: Date): Promise<void> {
    await this.db.query('UPDATE api_tokens SET last_used_at = $2 WHERE id = $1', [id, now]);
  }
}
