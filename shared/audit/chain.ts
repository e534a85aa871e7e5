/**
 * The audit hash chain shared by the relay's table and the agent's file.
 *
 *   hash(n) = sha256_hex("uplink-audit-v1\n" + hash(n-1) + "\n" + canonicalJson(event(n)))
 *
 * where event(n) is the record without its `hash` field and hash(0) is 64 zeros. Because
 * every hash covers the previous one, editing, deleting, reordering or inserting an event
 * breaks verification at that point or at the event after it.
 *
 * What a chain cannot show on its own: that events were cut off the end, or that someone
 * who can write the whole log rewrote it and recomputed every hash from the edit onwards
 * (the hash is not keyed). That is why there are two copies held by different parties: the
 * vendor's relay store and the customer's agent file. Comparing the last seq and hash of
 * one with the other (`ChainVerifyResult.lastSeq/lastHash`) catches both.
 */
import { createHash } from 'node:crypto';
import { UplinkError } from '../errors.js';
import { canonicalJson } from './canonical-json.js';
import { DEFAULT_AUDIT_LIMITS, parseAuditRecord, type AuditEvent, type AuditLimits, type AuditRecord } from './event.js';

/** Domain separation: a hash from this chain can never be confused with any other sha256 use. */
export const AUDIT_HASH_DOMAIN = 'uplink-audit-v1\n';
/** prevHash of the first event. */
export const GENESIS_HASH = '0'.repeat(64);

/** The hash of `event` (its own `hash` field, if present, is ignored) following `prevHash`. */
export function hashEvent(prevHash: string, event: AuditEvent): string {
  const { hash: _ignored, ...rest } = event as AuditEvent & { hash?: string };
  return createHash('sha256').update(AUDIT_HASH_DOMAIN).update(prevHash).update('\n').update(canonicalJson(rest)).digest('hex');
}

/** Seal `event` onto a chain whose last hash is `prevHash`. */
export function sealEvent(prevHash: string, event: AuditEvent): AuditRecord {
  return { ...event, hash: hashEvent(prevHash, event) };
}

/**
 * Why verification stopped:
 * - `malformed`: the entry is not a well-formed record (bad JSON, missing or oversized field);
 * - `seq-mismatch`: seq is not the previous seq + 1 (an event was deleted, duplicated,
 *   inserted with a new number, or the order changed);
 * - `hash-mismatch`: the stored hash does not match the content and the previous hash (the
 *   event or one before it was edited, or an event was inserted/removed and renumbered);
 * - `head-mismatch`: the relay's chain head does not match the last event (rows were cut
 *   off the end, or the head was edited).
 */
export type ChainBreakReason = 'malformed' | 'seq-mismatch' | 'hash-mismatch' | 'head-mismatch';

export interface ChainVerifyResult {
  ok: boolean;
  /** Events that verified (on failure: those before the break). */
  count: number;
  /** seq and hash of the last event that verified: compare them with the other copy. */
  lastSeq: number;
  lastHash: string;
  /** seq of the first entry that failed (when it has a readable seq). */
  firstBadSeq?: number;
  /** 1-based position of the first failing entry in the input (a line number for files). */
  firstBadIndex?: number;
  reason?: ChainBreakReason;
  /** Human-readable explanation of the break. */
  message?: string;
}

/** Where a verification starts: the genesis by default, or a known good checkpoint. */
export interface ChainStart {
  prevHash: string;
  /** seq of the last event before the start (0 at genesis). */
  lastSeq: number;
}

export const GENESIS: Readonly<ChainStart> = Object.freeze({ prevHash: GENESIS_HASH, lastSeq: 0 });

/**
 * Incremental verifier: feed entries in stored order with `push`, so a chain of any length
 * is checked in constant memory (pages from the store, lines from a file). After the first
 * failure further pushes are ignored and `result()` reports that failure.
 */
export class ChainVerifier {
  private prevHash: string;
  private lastSeq: number;
  private count = 0;
  private index = 0;
  private failure: Pick<ChainVerifyResult, 'firstBadSeq' | 'firstBadIndex' | 'reason' | 'message'> | undefined;

  constructor(start: ChainStart = GENESIS, private readonly limits: AuditLimits = DEFAULT_AUDIT_LIMITS) {
    this.prevHash = start.prevHash;
    this.lastSeq = start.lastSeq;
  }

  /** Check the next entry (an untrusted value). Returns false once the chain is broken. */
  push(entry: unknown): boolean {
    if (this.failure) return false;
    this.index++;
    const parsed = parseAuditRecord(entry, this.limits);
    if (!parsed.ok) {
      const seq = (entry as { seq?: unknown } | null)?.seq;
      return this.fail(typeof seq === 'number' ? seq : undefined, 'malformed', parsed.reason);
    }
    const record = parsed.record;
    const expected = this.lastSeq + 1;
    if (record.seq !== expected) {
      return this.fail(record.seq, 'seq-mismatch', `expected seq ${expected}, found ${record.seq}`);
    }
    const hash = hashEvent(this.prevHash, record);
    if (hash !== record.hash) {
      return this.fail(record.seq, 'hash-mismatch', `seq ${record.seq}: stored hash does not match the event and the previous hash`);
    }
    this.prevHash = hash;
    this.lastSeq = record.seq;
    this.count++;
    return true;
  }

  /** Count an entry that could not even be parsed (bad JSON, over-long line) and fail on it. */
  pushUnreadable(message: string): false {
    if (this.failure) return false;
    this.index++;
    return this.fail(undefined, 'malformed', message);
  }

  /** Record a failure found outside the entries themselves (the relay's head check). */
  fail(seq: number | undefined, reason: ChainBreakReason, message: string): false {
    if (!this.failure) {
      this.failure = { reason, message, firstBadIndex: this.index };
      if (seq !== undefined) this.failure.firstBadSeq = seq;
    }
    return false;
  }

  get ok(): boolean {
    return this.failure === undefined;
  }

  result(): ChainVerifyResult {
    return { ok: this.ok, count: this.count, lastSeq: this.lastSeq, lastHash: this.prevHash, ...this.failure };
  }
}

/** Verify a whole chain held in memory (tests, small exports). */
export function verifyChain(entries: Iterable<unknown>, start: ChainStart = GENESIS, limits: AuditLimits = DEFAULT_AUDIT_LIMITS): ChainVerifyResult {
  const verifier = new ChainVerifier(start, limits);
  for (const entry of entries) if (!verifier.push(entry)) break;
  return verifier.result();
}

/**
 * The error a CLI or API reports for a failed verification (`uplink audit --verify`,
 * `uplink-agent audit --verify`): UPLINK_ERR_AUDIT_CHAIN_BROKEN with the result as details.
 * `where` names the copy ("relay store", a file path).
 */
export function chainBrokenError(result: ChainVerifyResult, where: string): UplinkError {
  const at = result.firstBadSeq !== undefined ? `seq ${result.firstBadSeq}` : `entry ${result.firstBadIndex ?? '?'}`;
  return new UplinkError('UPLINK_ERR_AUDIT_CHAIN_BROKEN', `audit chain in ${where} is broken at ${at}: ${result.message ?? result.reason ?? 'verification failed'}`, {
    details: {
      where,
      reason: result.reason ?? null,
      firstBadSeq: result.firstBadSeq ?? null,
      firstBadIndex: result.firstBadIndex ?? null,
      verifiedCount: result.count,
      lastGoodSeq: result.lastSeq,
      lastGoodHash: result.lastHash,
    },
  });
}
