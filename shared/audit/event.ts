/**
 * The audit event: what both hash chains (the relay's table and the agent's file) record
 * for every operation, grant and deployment.
 *
 * Events are normalised before they are sealed so that every stored copy hashes the same:
 * absent optional fields are `null` (never missing), times are `Date#toISOString()` strings
 * (UTC, millisecond precision, which PostgreSQL `timestamptz` stores and returns exactly),
 * byte counts are safe integers, and no string holds U+0000 (PostgreSQL text cannot).
 */
import { z } from 'zod';
import { UplinkError } from '../errors.js';
import { canonicalJson, CanonicalJsonError, type JsonValue } from './canonical-json.js';

/** How an operation ended. `started` marks the opening event of a long session. */
export const AUDIT_OUTCOMES = ['started', 'ok', 'error', 'denied', 'cancelled', 'timeout'] as const;
export type AuditOutcome = (typeof AUDIT_OUTCOMES)[number];

/** One audit event, without its hash. */
export interface AuditEvent {
  /** Position in the chain, from 1, without gaps. */
  seq: number;
  /** When the event was recorded (ISO 8601, UTC, milliseconds). */
  time: string;
  /** Who acted: the vendor engineer or token name, or `customer:<user>` for grants. */
  actor: string;
  appliance: string;
  /** What was done: `sql`, `shell`, `exec`, `kubectl`, `forward`, `deploy`, `grant`… */
  operation: string;
  /** The phase role used (`operate`, `deploy`…), or null when none was assumed. */
  phase: string | null;
  requestId: string | null;
  /** What the operation acted on: SQL target name, cluster, port, stack… */
  target: string | null;
  start: string | null;
  end: string | null;
  outcome: AuditOutcome;
  bytesIn: number;
  bytesOut: number;
  /** Small free-form context (error code, SQLSTATE, row count). Bounded by maxDetailBytes. */
  detail: { [key: string]: JsonValue };
}

/** An event sealed into a chain. */
export interface AuditRecord extends AuditEvent {
  /** sha256 hex; see chain.ts for what it covers. */
  hash: string;
}

/** What a caller supplies; the log assigns `seq` and (unless given) `time`. */
export interface AuditInput {
  actor: string;
  appliance: string;
  operation: string;
  outcome: AuditOutcome;
  phase?: string | null;
  requestId?: string | null;
  target?: string | null;
  start?: Date | string | null;
  end?: Date | string | null;
  time?: Date | string;
  bytesIn?: number;
  bytesOut?: number;
  detail?: { [key: string]: JsonValue };
}

/** Size limits for event fields: they bound what one event may cost on disk and in the store. */
export interface AuditLimits {
  /** Longest string field, in UTF-16 code units. */
  maxFieldChars: number;
  /** Largest `detail`, as canonical JSON bytes. */
  maxDetailBytes: number;
}

export const DEFAULT_AUDIT_LIMITS: Readonly<AuditLimits> = Object.freeze({ maxFieldChars: 1024, maxDetailBytes: 4096 });

/** The exact time form every stored copy uses. */
const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

function isCanonicalTime(s: string): boolean {
  if (!ISO_MS.test(s)) return false;
  const d = new Date(s);
  return !Number.isNaN(d.getTime()) && d.toISOString() === s;
}

function buildRecordSchema(limits: AuditLimits) {
  const text = z.string().min(1).max(limits.maxFieldChars).refine((s) => !s.includes('\u0000'), 'contains U+0000');
  const optText = text.nullable();
  const time = z.string().refine(isCanonicalTime, 'not a canonical ISO time (YYYY-MM-DDTHH:MM:SS.mmmZ)');
  const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
  return z.strictObject({
    seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
    time,
    actor: text,
    appliance: text,
    operation: text,
    phase: optText,
    requestId: optText,
    target: optText,
    start: time.nullable(),
    end: time.nullable(),
    outcome: z.enum(AUDIT_OUTCOMES),
    bytesIn: count,
    bytesOut: count,
    detail: z.record(z.string(), z.json()).refine((d) => detailFits(d, limits), `detail exceeds ${limits.maxDetailBytes} bytes or is not plain JSON`),
    hash: z.string().regex(/^[0-9a-f]{64}$/, 'not a sha256 hex digest'),
  });
}

function detailFits(detail: unknown, limits: AuditLimits): boolean {
  try {
    return Buffer.byteLength(canonicalJson(detail)) <= limits.maxDetailBytes && !hasNul(detail);
  } catch {
    return false;
  }
}

function hasNul(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('\u0000');
  if (Array.isArray(value)) return value.some(hasNul);
  if (value && typeof value === 'object') return Object.entries(value).some(([k, v]) => k.includes('\u0000') || hasNul(v));
  return false;
}

const schemaCache = new Map<string, ReturnType<typeof buildRecordSchema>>();

function recordSchema(limits: AuditLimits): ReturnType<typeof buildRecordSchema> {
  const key = `${limits.maxFieldChars}/${limits.maxDetailBytes}`;
  let schema = schemaCache.get(key);
  if (!schema) {
    schema = buildRecordSchema(limits);
    schemaCache.set(key, schema);
  }
  return schema;
}

/**
 * Check an untrusted value (a parsed file line, a database row) is a well-formed sealed
 * record. Returns the record, or a reason naming the first bad field.
 */
export function parseAuditRecord(value: unknown, limits: AuditLimits = DEFAULT_AUDIT_LIMITS): { ok: true; record: AuditRecord } | { ok: false; reason: string } {
  const r = recordSchema(limits).safeParse(value);
  if (r.success) return { ok: true, record: r.data as AuditRecord };
  const issue = r.error.issues[0];
  return { ok: false, reason: issue ? `${issue.path.join('.') || '(event)'}: ${issue.message}` : 'invalid event' };
}

function toTime(value: Date | string, field: string): string {
  const d = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(d.getTime()) || (typeof value === 'string' && !/^\d{4}-\d{2}-\d{2}T/.test(value))) {
    throw new UplinkError('UPLINK_ERR_AUDIT_EVENT_INVALID', `audit event ${field}: not an ISO 8601 time`, { details: { field } });
  }
  return d.toISOString();
}

/**
 * Turn caller input into a complete event (minus its hash) for chain position `seq`,
 * applying defaults and limits. Throws UPLINK_ERR_AUDIT_EVENT_INVALID naming the field.
 */
export function normalizeAuditInput(input: AuditInput, seq: number, now: Date, limits: AuditLimits = DEFAULT_AUDIT_LIMITS): AuditEvent {
  const event: AuditEvent = {
    seq,
    time: toTime(input.time ?? now, 'time'),
    actor: input.actor,
    appliance: input.appliance,
    operation: input.operation,
    phase: input.phase ?? null,
    requestId: input.requestId ?? null,
    target: input.target ?? null,
    start: input.start == null ? null : toTime(input.start, 'start'),
    end: input.end == null ? null : toTime(input.end, 'end'),
    outcome: input.outcome,
    bytesIn: input.bytesIn ?? 0,
    bytesOut: input.bytesOut ?? 0,
    detail: input.detail ?? {},
  };
  try {
    canonicalJson(event.detail);
  } catch (err) {
    const path = err instanceof CanonicalJsonError ? `detail.${err.path}` : 'detail';
    throw new UplinkError('UPLINK_ERR_AUDIT_EVENT_INVALID', `audit event ${path}: ${(err as Error).message}`, { details: { field: path } });
  }
  // The hash is checked by the chain, not here: validate with a placeholder digest.
  const checked = parseAuditRecord({ ...event, hash: '0'.repeat(64) }, limits);
  if (!checked.ok) {
    throw new UplinkError('UPLINK_ERR_AUDIT_EVENT_INVALID', `audit event ${checked.reason}`, { details: { reason: checked.reason } });
  }
  return event;
}
