/**
 * PostgreSQL and driver errors as UplinkErrors. Callers (and the vendor's scripts) match
 * on the uplink code; the SQLSTATE and the server's own fields ride along in `details`, in
 * the same shape for every SQL code:
 *   { target, sqlstate, severity, position, detail, hint }   (null when the server sent none)
 * Passwords cannot appear: the server's messages never contain them and connection
 * settings are not part of any message built here.
 */
import { UplinkError, type ErrorCode } from '../../shared/errors.js';

/** The fields pg's DatabaseError carries that we pass on. */
interface PgErrorFields {
  message?: string;
  code?: string;
  severity?: string;
  position?: string;
  detail?: string;
  hint?: string;
  routine?: string;
}

export const SQLSTATE = Object.freeze({
  readOnlyTransaction: '25006',
  queryCanceled: '57014',
  syntaxError: '42601',
});

/** What the runner knew when the error arrived; decides between look-alike SQLSTATEs. */
export interface SqlErrorContext {
  target: string;
  /** The caller aborted, and we sent the cancel request. */
  cancelledByCaller: boolean;
  /** The statement was a COPY to or from the client, which the runner refuses. */
  copyRefused: boolean;
  /** The error arrived before the session was established. */
  connecting: boolean;
}

function isServerError(err: unknown): err is PgErrorFields & Error {
  const code = (err as PgErrorFields | null)?.code;
  return err instanceof Error && typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && typeof (err as PgErrorFields).severity === 'string';
}

function serverDetails(target: string, e: PgErrorFields): Record<string, unknown> {
  const position = e.position === undefined ? null : Number(e.position);
  return {
    target,
    sqlstate: e.code ?? null,
    severity: e.severity ?? null,
    position: Number.isFinite(position) ? position : null,
    detail: e.detail ?? null,
    hint: e.hint ?? null,
  };
}

/** Map anything the pg driver threw during a SQL run to an UplinkError. */
export function toSqlError(err: unknown, ctx: SqlErrorContext): UplinkError {
  if (err instanceof UplinkError) return err;
  if (ctx.cancelledByCaller) {
    return new UplinkError('UPLINK_ERR_SQL_CANCELLED', `query on "${ctx.target}" was cancelled`, {
      details: isServerError(err) ? serverDetails(ctx.target, err) : { target: ctx.target },
      cause: err,
    });
  }
  if (!isServerError(err)) {
    // Socket and TLS failures, DNS, connect timeouts, a server that went away mid-query.
    const e = err as NodeJS.ErrnoException;
    const what = ctx.connecting ? 'cannot connect to' : 'lost the connection to';
    return new UplinkError('UPLINK_ERR_SQL_CONNECT', `${what} SQL target "${ctx.target}": ${e?.message ?? String(err)}`, {
      details: { target: ctx.target, errno: e?.code ?? null, sqlstate: null },
      cause: err,
    });
  }
  const details = serverDetails(ctx.target, err);
  let code: ErrorCode = 'UPLINK_ERR_SQL_ERROR';
  let message = err.message;
  if (ctx.connecting) {
    // Authentication (28P01, 28000), unknown database (3D000), too many connections (53300).
    code = 'UPLINK_ERR_SQL_CONNECT';
    message = `cannot connect to SQL target "${ctx.target}": ${err.message}`;
  } else if (ctx.copyRefused) {
    code = 'UPLINK_ERR_BAD_REQUEST';
    message = 'COPY to or from the client is not supported by uplink sql: use SELECT (or a TCP forward with psql)';
  } else if (err.code === SQLSTATE.readOnlyTransaction) {
    code = 'UPLINK_ERR_SQL_READ_ONLY';
    message = `${err.message} (run with --write, on a target that allows writes)`;
  } else if (err.code === SQLSTATE.queryCanceled) {
    // Not cancelled by us: the statement timeout fired (or an administrator cancelled it,
    // which the server message in details.detail/message tells apart).
    code = 'UPLINK_ERR_SQL_TIMEOUT';
  } else if (err.code === SQLSTATE.syntaxError && err.routine === 'exec_parse_message') {
    // The extended protocol refuses several statements in one Parse; that check lives in
    // exec_parse_message, unlike real syntax errors (raised by the scanner/parser).
    code = 'UPLINK_ERR_SQL_MULTIPLE_STATEMENTS';
    message = 'the query holds more than one SQL statement; send one statement per request';
  }
  return new UplinkError(code, message, { details, cause: err });
}
