/**
 * Typed errors with stable codes.
 *
 * Every error that crosses a process boundary (HTTP API, tunnel stream, CLI exit) is an
 * `UplinkError` carrying a code from the catalog below. Callers match on `.code`, never on
 * the message. Across the wire an error is an HTTP status plus `{ code, message, details }`.
 * Every code is documented in docs/errors.md; test/shared/errors.test.ts fails on drift.
 */
import { CORE_CODES } from './error-codes/core.js';
import { OPS_CODES } from './error-codes/ops.js';
import { PHASE_CODES } from './error-codes/phases.js';
import { DEPLOY_CODES } from './error-codes/deploy.js';
import { TELEMETRY_CODES } from './error-codes/telemetry.js';

export interface CodeInfo {
  /** HTTP status used when this error crosses the wire. */
  readonly status: number;
  /** One line: what happened. The fix lives in docs/errors.md. */
  readonly summary: string;
}

export const ERROR_CODES = {
  ...CORE_CODES,
  ...OPS_CODES,
  ...PHASE_CODES,
  ...DEPLOY_CODES,
  ...TELEMETRY_CODES,
} as const satisfies Record<string, CodeInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorBody {
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

export class UplinkError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, opts: { details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'UplinkError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.details = opts.details;
  }

  toJSON(): ErrorBody {
    return this.details ? { code: this.code, message: this.message, details: this.details } : { code: this.code, message: this.message };
  }
}

export function isUplinkError(err: unknown, code?: ErrorCode): err is UplinkError {
  return err instanceof UplinkError && (code === undefined || err.code === code);
}

export function isKnownCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, code);
}

/**
 * Rebuild an error received from a peer. Unknown codes (a newer peer) keep their text
 * but map to UPLINK_ERR_REMOTE so callers still get a stable code.
 */
export function errorFromBody(body: unknown, fallbackStatus = 500): UplinkError {
  if (body && typeof body === 'object') {
    const b = body as Partial<ErrorBody>;
    const message = typeof b.message === 'string' ? b.message : 'remote error';
    const details = b.details && typeof b.details === 'object' ? b.details : undefined;
    if (isKnownCode(b.code)) return new UplinkError(b.code, message, details ? { details } : {});
    return new UplinkError('UPLINK_ERR_REMOTE', message, { details: { ...details, remoteCode: b.code, status: fallbackStatus } });
  }
  return new UplinkError('UPLINK_ERR_REMOTE', `remote error (HTTP ${fallbackStatus})`, { details: { status: fallbackStatus } });
}

/** Wrap anything thrown into an UplinkError without losing the original as `cause`. */
export function toUplinkError(err: unknown): UplinkError {
  if (err instanceof UplinkError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new UplinkError('UPLINK_ERR_INTERNAL', message, { cause: err });
}
