/**
 * The relay's hash-chained audit log (table audit_events, head in audit_head; migration
 * 0002-operations). One chain for the whole relay, shared by every replica.
 *
 * Ordering contract: `append` runs in a transaction that first locks the audit_head row
 * (SELECT ... FOR UPDATE), takes seq and prevHash from it, inserts the sealed event and
 * moves the head. Concurrent appends from any number of replicas therefore queue on that
 * row and extend one gap-free chain; an append whose transaction fails leaves no trace.
 * Called with a `Db` that is already a transaction, the event commits or rolls back with
 * the caller's other writes.
 */
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { ChainVerifier, GENESIS, sealEvent, type ChainVerifyResult } from '../../shared/audit/chain.js';
import { DEFAULT_AUDIT_LIMITS, normalizeAuditInput, type AuditInput, type AuditLimits, type AuditRecord } from '../../shared/audit/event.js';
import type { Db } from './db.js';

export const AUDIT_REPO_DEFAULTS = Object.freeze({
  /** Rows returned by `list` when the caller names no limit. */
  listDefaultLimit: 100,
  /** Most rows one `list` call returns, whatever the caller asks. */
  listMaxLimit: 1000,
  /** Rows fetched per page while verifying (bounds memory for any chain length). */
  verifyPageSize: 1000,
  maxFieldChars: DEFAULT_AUDIT_LIMITS.maxFieldChars,
  maxDetailBytes: DEFAULT_AUDIT_LIMITS.maxDetailBytes,
});

const optionsSchema = z.strictObject({
  listDefaultLimit: z.number().int().min(1),
  listMaxLimit: z.number().int().min(1).max(100_000),
  verifyPageSize: z.number().int().min(1).max(100_000),
  maxFieldChars: z.number().int().min(16).max(65_536),
  maxDetailBytes: z.number().int().min(2).max(1024 * 1024),
});

export type AuditRepoOptions = z.infer<typeof optionsSchema>;

/** Filters for `list`. `since` compares against the event's recorded `time`. */
export interface AuditListFilter {
  appliance?: string;
  since?: Date;
  /** Return events with seq greater than this (keyset paging). */
  afterSeq?: number;
  limit?: number;
}

export interface AuditRepoVerifyResult extends ChainVerifyResult {
  /** The head row: what the last append left. */
  head: { seq: number; hash: string };
}

interface AuditRow {
  seq: string | number;
  time: Date;
  actor: string;
  appliance: string;
  operation: string;
  phase: string | null;
  request_id: string | null;
  target: string | null;
  start_at: Date | null;
  end_at: Date | null;
  outcome: string;
  bytes_in: string | number;
  bytes_out: string | number;
  detail: unknown;
  hash: string;
}

const COLUMNS = 'seq, time, actor, appliance, operation, phase, request_id, target, start_at, end_at, outcome, bytes_in, bytes_out, detail, hash';

/** int8 columns come back as strings from `pg` and as numbers from PGlite. */
function toNumber(v: string | number): number {
  return typeof v === 'number' ? v : Number(v);
}

function iso(d: Date | null): string | null {
  return d === null ? null : new Date(d).toISOString();
}

/**
 * Rebuild the event exactly as it was sealed. Values are passed through untouched apart
 * from type conversion, so a row edited in SQL fails verification instead of being
 * "repaired" here.
 */
function fromRow(r: AuditRow): AuditRecord {
  return {
    seq: toNumber(r.seq),
    time: iso(r.time) as string,
    actor: r.actor,
    appliance: r.appliance,
    operation: r.operation,
    phase: r.phase,
    requestId: r.request_id,
    target: r.target,
    start: iso(r.start_at),
    end: iso(r.end_at),
    outcome: r.outcome as AuditRecord['outcome'],
    bytesIn: toNumber(r.bytes_in),
    bytesOut: toNumber(r.bytes_out),
    detail: r.detail as AuditRecord['detail'],
    hash: r.hash,
  };
}

export class AuditRepo {
  private readonly options: Readonly<AuditRepoOptions>;
  private readonly limits: AuditLimits;

  constructor(private readonly db: Db, options: Partial<AuditRepoOptions> = {}, private readonly now: () => Date = () => new Date()) {
    const r = optionsSchema.safeParse({ ...AUDIT_REPO_DEFAULTS, ...options });
    if (!r.success) {
      const issue = r.error.issues[0];
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `audit repo options: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
    }
    this.options = Object.freeze(r.data);
    this.limits = { maxFieldChars: r.data.maxFieldChars, maxDetailBytes: r.data.maxDetailBytes };
  }

  /** Seal and store one event; resolves with the stored record. */
  async append(input: AuditInput): Promise<AuditRecord> {
    // Validate before taking the chain lock, so a bad event never holds up other appends.
    const now = this.now();
    normalizeAuditInput(input, 1, now, this.limits);
    return this.db.transaction(async (tx) => {
      const head = (await tx.query<{ seq: string | number; hash: string }>('SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE')).rows[0];
      if (!head) throw new UplinkError('UPLINK_ERR_STORE', 'audit_head row is missing (was migration 0002-operations applied?)');
      const prevHash = head.hash;
      const record = sealEvent(prevHash, normalizeAuditInput(input, toNumber(head.seq) + 1, now, this.limits));
      await tx.query(
        `INSERT INTO audit_events (seq, time, actor, appliance, operation, phase, request_id, target, start_at, end_at,
           outcome, bytes_in, bytes_out, detail, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb, $15, $16)`,
        [
          record.seq, record.time, record.actor, record.appliance, record.operation, record.phase, record.requestId,
          record.target, record.start, record.end, record.outcome, record.bytesIn, record.bytesOut,
          JSON.stringify(record.detail), prevHash, record.hash,
        ],
      );
      await tx.query('UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1', [record.seq, record.hash]);
      return record;
    });
  }

  /** Events oldest first, filtered; at most `listMaxLimit`. */
  async list(filter: AuditListFilter = {}): Promise<AuditRecord[]> {
    const limit = filter.limit ?? this.options.listDefaultLimit;
    if (!Number.isInteger(limit) || limit < 1) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'audit list: limit must be a positive integer');
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.appliance !== undefined) {
      params.push(filter.appliance);
      where.push(`appliance = $${params.length}`);
    }
    if (filter.since !== undefined) {
      params.push(filter.since);
      where.push(`time >= $${params.length}`);
    }
    if (filter.afterSeq !== undefined) {
      params.push(filter.afterSeq);
      where.push(`seq > $${params.length}`);
    }
    params.push(Math.min(limit, this.options.listMaxLimit));
    const sql = `SELECT ${COLUMNS} FROM audit_events ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq LIMIT $${params.length}`;
    return (await this.db.query<AuditRow>(sql, params)).rows.map(fromRow);
  }

  /** The chain head: seq and hash of the last appended event (0 and 64 zeros when empty). */
  async head(): Promise<{ seq: number; hash: string }> {
    const row = (await this.db.query<{ seq: string | number; hash: string }>('SELECT seq, hash FROM audit_head WHERE id = 1')).rows[0];
    if (!row) throw new UplinkError('UPLINK_ERR_STORE', 'audit_head row is missing (was migration 0002-operations applied?)');
    return { seq: toNumber(row.seq), hash: row.hash };
  }

  /**
   * Verify the whole chain from the genesis hash, a page at a time, then check that the head
   * row points at the last event. Everything is read in one REPEATABLE READ snapshot, so
   * appends that commit meanwhile are neither half-seen nor mistaken for tampering, and a
   * row beyond the head (or a head past the last row) is a `head-mismatch`. Call it on the
   * root Db, not inside another transaction.
   */
  async verify(): Promise<AuditRepoVerifyResult> {
    return this.db.transaction(async (tx) => {
      await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
      const head = await new AuditRepo(tx, this.options).head();
      const verifier = new ChainVerifier(GENESIS, this.limits);
      let after = 0;
      for (;;) {
        const rows = (
          await tx.query<AuditRow>(`SELECT ${COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2`, [after, this.options.verifyPageSize])
        ).rows;
        for (const row of rows) {
          if (!verifier.push(fromRow(row))) return { ...verifier.result(), head };
        }
        if (rows.length < this.options.verifyPageSize) break;
        after = toNumber(rows[rows.length - 1]!.seq);
      }
      const r = verifier.result();
      if (r.lastSeq !== head.seq || r.lastHash !== head.hash) {
        const message = r.lastSeq < head.seq
          ? `chain ends at seq ${r.lastSeq} but the head says seq ${head.seq}: events were removed from the end`
          : `chain ends at seq ${r.lastSeq} with hash ${r.lastHash.slice(0, 12)}… but the head says seq ${head.seq} with ${head.hash.slice(0, 12)}…`;
        verifier.fail(r.lastSeq === head.seq ? head.seq : Math.min(r.lastSeq, head.seq) + 1, 'head-mismatch', message);
      }
      return { ...verifier.result(), head };
    });
  }
}
