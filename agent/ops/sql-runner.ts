/**
 * Runs one SQL statement against a resolved target and streams the result as SqlEvents
 * (shared/sql-format.ts). One connection per run, always closed at the end.
 *
 * - Transaction: `BEGIN READ ONLY` (or `READ WRITE` when `write` is asked for and the
 *   target allows it), `statement_timeout` set for this transaction only, then the
 *   statement through pg-cursor, then COMMIT (write) or ROLLBACK (read-only, errors,
 *   aborts). Each run is one statement on a fresh session, so a session-level SET in the
 *   query cannot leak into later runs.
 * - Streaming: the cursor fetches `batchRows` rows per round trip, only when the consumer
 *   asks for the next event (async iterator pull), so a million-row result uses the memory
 *   of one batch and a slow consumer slows the fetching. Note that PostgreSQL keeps the
 *   statement timer running while the cursor waits for the consumer, so the statement
 *   timeout bounds the whole run, delivery included.
 * - Row limit: at most `maxRows` rows (the smaller of the request's and the target's).
 *   One row more is fetched to tell "exactly maxRows" from "truncated". Statements that
 *   modify data run to completion before their first row is returned (PostgreSQL holds
 *   their RETURNING rows), so truncating the output never truncates a write.
 * - Abort: `signal` sends PostgreSQL a cancel request for the running fetch; if the server
 *   does not give up within `cancelGraceMs` the socket is destroyed. The iterator then
 *   throws UPLINK_ERR_SQL_CANCELLED. Leaving the iterator early (break/return) closes the
 *   cursor and rolls back the same way.
 * - Values are PostgreSQL's text output: no type parsing, so nothing is lost or reformatted.
 */
import pg from 'pg';
import Cursor from 'pg-cursor';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import type { SqlColumn, SqlEvent } from '../../shared/sql-format.js';
import type { ResolvedSqlTarget } from './sql-targets.js';
import { toSqlError, type SqlErrorContext } from './sql-errors.js';
import { sendCancelRequest } from './sql-cancel.js';

export const SQL_RUNNER_DEFAULTS = Object.freeze({
  /** Rows per fetch and per `rows` event. */
  batchRows: 500,
  /** Longest accepted query text, in UTF-8 bytes. */
  maxQueryBytes: 1_048_576,
  /** How long the server gets to honour a cancel request before the socket is destroyed. */
  cancelGraceMs: 5_000,
  /** Most type names loaded to label columns (base, enum, range and domain types plus arrays). */
  maxTypeNames: 20_000,
});

const optionsSchema = z.strictObject({
  batchRows: z.number().int().min(1).max(100_000),
  maxQueryBytes: z.number().int().min(1).max(64 * 1024 * 1024),
  cancelGraceMs: z.number().int().min(0).max(600_000),
  maxTypeNames: z.number().int().min(0).max(1_000_000),
});

export type SqlRunnerOptions = z.infer<typeof optionsSchema>;

export interface RunSqlRequest {
  target: ResolvedSqlTarget;
  query: string;
  /** Run READ WRITE and COMMIT. Refused (UPLINK_ERR_SQL_WRITE_NOT_ALLOWED) unless the target allows writes. */
  write?: boolean;
  /** Row limit for this run; capped by the target's maxRows. */
  maxRows?: number;
  signal?: AbortSignal;
}

/** Text in, text out: every value stays PostgreSQL's text representation. */
const TEXT_TYPES = { getTypeParser: () => (value: string) => value } as unknown as NonNullable<Cursor.CursorQueryConfig['types']>;

/** Type names for column labels; table row types (one per table) are left out on purpose. */
const TYPE_NAMES_SQL = `SELECT t.oid::int8 AS oid, format_type(t.oid, NULL) AS name FROM pg_type t
  WHERE t.typrelid = 0 AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.oid = t.typelem AND e.typrelid <> 0)
  LIMIT $1`;

/**
 * pg-cursor plus refusals for COPY: pg would otherwise call methods the cursor lacks and
 * throw from inside the socket handler, which would take the whole agent down.
 */
class TextCursor extends Cursor<(string | null)[]> {
  copyRefused = false;
  onCopyOut: (() => void) | undefined;

  handleCopyInResponse(connection: { sendCopyFail(msg: string): void }): void {
    this.copyRefused = true;
    connection.sendCopyFail('COPY FROM STDIN is not supported by uplink sql');
  }

  handleCopyData(): void {
    if (!this.copyRefused) {
      this.copyRefused = true;
      this.onCopyOut?.(); // stop the server producing data nobody will read
    }
  }
}

interface ReadResult {
  rows: (string | null)[][];
  fields: { name: string; dataTypeID: number }[];
  command: string | null;
  rowCount: number | null;
}

function readBatch(cursor: TextCursor, n: number): Promise<ReadResult> {
  return new Promise((resolve, reject) => {
    cursor.read(n, (err, rows, result) => {
      if (err) reject(err);
      // A cursor already at its end answers [] without a result object.
      else resolve({ rows, fields: result?.fields ?? [], command: result?.command ?? null, rowCount: result?.rowCount ?? null });
    });
  });
}

function copyRefusedError(): UplinkError {
  return new UplinkError('UPLINK_ERR_BAD_REQUEST', 'COPY to or from the client is not supported by uplink sql: use SELECT (or a TCP forward with psql)');
}

function resolveOptions(options: Partial<SqlRunnerOptions>): Readonly<SqlRunnerOptions> {
  const r = optionsSchema.safeParse({ ...SQL_RUNNER_DEFAULTS, ...options });
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `sql runner options: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
  }
  return r.data;
}

function checkRequest(req: RunSqlRequest, opts: Readonly<SqlRunnerOptions>): number {
  const { target, query } = req;
  if (req.write && !target.allowWrite) {
    throw new UplinkError('UPLINK_ERR_SQL_WRITE_NOT_ALLOWED', `SQL target "${target.name}" does not allow writes`, { details: { target: target.name } });
  }
  if (typeof query !== 'string' || query.trim() === '') throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'the query is empty');
  if (query.includes('\u0000')) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'the query contains a NUL character');
  const bytes = Buffer.byteLength(query);
  if (bytes > opts.maxQueryBytes) {
    throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `the query is ${bytes} bytes, over the ${opts.maxQueryBytes}-byte limit (maxQueryBytes)`, {
      details: { limit: 'maxQueryBytes', max: opts.maxQueryBytes, actual: bytes },
    });
  }
  const asked = req.maxRows ?? target.maxRows;
  if (!Number.isInteger(asked) || asked < 1) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'maxRows must be a positive whole number');
  return Math.min(asked, target.maxRows);
}

/**
 * Run `query` on `target`. The returned iterable yields `columns`, then `rows` batches,
 * then `done`; it throws UplinkErrors (sql-errors.ts) and always releases the connection.
 */
export async function* runSql(req: RunSqlRequest, options: Partial<SqlRunnerOptions> = {}, deps: { logger?: Logger } = {}): AsyncGenerator<SqlEvent, void, undefined> {
  const opts = resolveOptions(options);
  const maxRows = checkRequest(req, opts);
  const { target, signal } = req;
  const log = (deps.logger ?? silentLogger).child({ sqlTarget: target.name });
  const started = performance.now();
  const config: pg.ClientConfig = {
    host: target.host,
    port: target.port,
    database: target.database,
    user: target.user,
    ssl: target.ssl,
    connectionTimeoutMillis: target.connectTimeoutMs,
    application_name: 'uplink-agent',
  };
  const password = target.password();
  if (password !== undefined) config.password = password;
  const client = new pg.Client(config);
  // Errors while idle (server restart) arrive as events; without a listener they would crash the agent.
  client.on('error', (err) => log.debug({ err: err.message }, 'sql connection error'));

  const ctx: SqlErrorContext = { target: target.name, cancelledByCaller: false, copyRefused: false, connecting: true };
  let cursor: TextCursor | undefined;
  let busy = false; // a request is on the wire: a cancel request has something to cancel
  let hardStop: NodeJS.Timeout | undefined;
  let destroyed = false;

  const destroy = (): void => {
    destroyed = true;
    (client as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
  };
  const sendCancel = (): void => {
    // The session's key from BackendKeyData; pg keeps it on the client without typing it.
    const key = client as unknown as { processID: number | null; secretKey: number | null };
    if (key.processID === null || key.secretKey === null) return;
    void sendCancelRequest({ host: target.host, port: target.port, processId: key.processID, secretKey: key.secretKey }, opts.cancelGraceMs);
  };
  const onAbort = (): void => {
    ctx.cancelledByCaller = true;
    if (ctx.connecting) return destroy();
    if (busy) sendCancel();
    hardStop = setTimeout(destroy, opts.cancelGraceMs);
    hardStop.unref();
  };
  const throwIfAborted = (): void => {
    if (signal?.aborted) {
      ctx.cancelledByCaller = true;
      throw new UplinkError('UPLINK_ERR_SQL_CANCELLED', `query on "${target.name}" was cancelled`, { details: { target: target.name }, cause: signal.reason });
    }
  };
  const step = async <T>(fn: () => Promise<T>): Promise<T> => {
    throwIfAborted();
    busy = true;
    try {
      return await fn();
    } finally {
      busy = false;
    }
  };

  throwIfAborted();
  signal?.addEventListener('abort', onAbort, { once: true });
  let inTransaction = false;
  let committed = false;
  try {
    await step(() => client.connect());
    ctx.connecting = false;
    await step(() => client.query(req.write ? 'BEGIN READ WRITE' : 'BEGIN READ ONLY'));
    inTransaction = true;
    await step(() => client.query("SELECT set_config('statement_timeout', $1, true)", [String(target.statementTimeoutMs)]));
    const typeNames = new Map<number, string>();
    if (opts.maxTypeNames > 0) {
      const r = await step(() => client.query<{ oid: string; name: string }>(TYPE_NAMES_SQL, [opts.maxTypeNames]));
      for (const row of r.rows) typeNames.set(Number(row.oid), row.name);
    }

    const cur = new TextCursor(req.query, undefined, { rowMode: 'array', types: TEXT_TYPES });
    cur.onCopyOut = () => {
      ctx.copyRefused = true;
      sendCancel();
    };
    cursor = cur;
    client.query(cur);
    let sent = 0;
    let columnsSent = false;
    let truncated = false;
    let last: ReadResult | undefined;
    for (;;) {
      const want = Math.min(opts.batchRows, maxRows - sent + 1);
      const batch = await step(() => readBatch(cur, want));
      if (cur.copyRefused) throw copyRefusedError();
      last = batch;
      if (!columnsSent) {
        const columns: SqlColumn[] = batch.fields.map((f) => ({
          name: f.name,
          type: typeNames.get(f.dataTypeID) ?? `unknown (oid ${f.dataTypeID})`,
          typeOid: f.dataTypeID,
        }));
        columnsSent = true;
        yield { type: 'columns', columns };
        throwIfAborted();
      }
      let rows = batch.rows;
      if (sent + rows.length > maxRows) {
        rows = rows.slice(0, maxRows - sent);
        truncated = true;
      }
      sent += rows.length;
      if (rows.length) {
        yield { type: 'rows', rows };
        throwIfAborted();
      }
      // Fewer rows than asked for: the server sent CommandComplete, the statement is finished.
      if (truncated || batch.rows.length < want) break;
    }
    if (truncated) await step(() => cur.close());
    await step(() => client.query(req.write ? 'COMMIT' : 'ROLLBACK'));
    committed = true;
    const hasResultSet = (last?.fields.length ?? 0) > 0;
    const done: SqlEvent = {
      type: 'done',
      command: truncated ? null : (last?.command ?? null),
      rowCount: hasResultSet ? sent : (last?.rowCount ?? 0),
      truncated,
      maxRows,
      durationMs: Math.round(performance.now() - started),
    };
    log.debug({ command: done.command, rowCount: done.rowCount, truncated, durationMs: done.durationMs, write: !!req.write }, 'sql run done');
    yield done;
  } catch (err) {
    ctx.copyRefused ||= cursor?.copyRefused ?? false;
    throw toSqlError(err, ctx);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    if (!destroyed) {
      // Leaving early (the consumer stopped reading) or after an error: end the transaction
      // explicitly, within cancelGraceMs; the socket is destroyed if the server does not answer.
      const grace = setTimeout(destroy, opts.cancelGraceMs);
      if (inTransaction && !committed) {
        // A suspended portal must be closed before the session accepts ROLLBACK; after a
        // server error the cursor has already synced and is closed.
        if (cursor && (cursor as unknown as { state: string }).state === 'idle') await cursor.close().catch(() => {});
        await client.query('ROLLBACK').catch(() => {});
      }
      await client.end().catch(() => {});
      clearTimeout(grace);
    }
    if (hardStop) clearTimeout(hardStop);
  }
}
