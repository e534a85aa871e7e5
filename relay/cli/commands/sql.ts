/**
 * `uplink sql APPLIANCE --target NAME "QUERY" [--format table|csv|json] [--write] [--max-rows N]`
 *
 * The agent resolves NAME to a database only it knows the password of, runs the query in a
 * read-only transaction (unless --write) under the target's statement timeout, and streams
 * the result back as NDJSON events; this command renders them with shared/sql-format.ts.
 *
 * Transport: an op WebSocket (`sql` in the relay's OPS), not a streamed HTTP route, because
 * the op bridge already gives what a large result needs: the agent's refusal as status +
 * code before anything streams, end-to-end backpressure (a slow terminal slows the cursor,
 * so a million rows never sit in the relay), and cancellation when the CLI goes away
 * (RST_STREAM reaches the agent, which cancels the query on the server).
 *
 * Exit status: 0; 1 when the query failed (`error CODE: message (SQLSTATE xxxxx)`).
 */
import type { Duplex } from 'node:stream';
import { UplinkError, toUplinkError } from '../../../shared/errors.js';
import { EXIT, parseCommand, printError, str } from '../../../shared/cli-args.js';
import { SQL_FORMATS, renderSql, type SqlEvent, type SqlFormat } from '../../../shared/sql-format.js';
import type { Command } from '../context.js';

/** Longest NDJSON line accepted from the relay: one batch of rows. */
export const SQL_MAX_LINE_BYTES = 64 * 1024 * 1024;

/** NDJSON lines from the op stream as SqlEvents; an `error` line throws its UplinkError. */
export async function* sqlEvents(duplex: Duplex): AsyncGenerator<SqlEvent, void, undefined> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const parse = (text: string): SqlEvent => {
    let ev: Record<string, unknown>;
    try {
      ev = JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'malformed result line from the relay');
    }
    if (ev.type === 'error') {
      const details = ev.details && typeof ev.details === 'object' ? (ev.details as Record<string, unknown>) : undefined;
      throw new UplinkError(
        typeof ev.code === 'string' && /^UPLINK_ERR_[A-Z_]+$/.test(ev.code) ? (ev.code as never) : 'UPLINK_ERR_REMOTE',
        typeof ev.message === 'string' ? ev.message : 'remote error',
        details ? { details } : {},
      );
    }
    return ev as unknown as SqlEvent;
  };
  // for await pulls one chunk at a time: the socket is read only as fast as we render.
  for await (const chunk of duplex as AsyncIterable<Buffer>) {
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, nl);
      const text = pending.length ? Buffer.concat([...pending, piece]).toString('utf8') : piece.toString('utf8');
      pending = [];
      pendingBytes = 0;
      start = nl + 1;
      if (text.length) yield parse(text);
    }
    if (start < chunk.length) {
      pending.push(chunk.subarray(start));
      pendingBytes += chunk.length - start;
      if (pendingBytes > SQL_MAX_LINE_BYTES) throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `a result line exceeds ${SQL_MAX_LINE_BYTES} bytes`);
    }
  }
  if (pendingBytes > 0) yield parse(Buffer.concat(pending).toString('utf8'));
}

/** `error CODE: message (SQLSTATE xxxxx)`: the SQLSTATE is what DBAs search for. */
export function formatSqlError(e: UplinkError): string {
  const sqlstate = (e.details as { sqlstate?: unknown } | undefined)?.sqlstate;
  return `error ${e.code}: ${e.message}${typeof sqlstate === 'string' ? ` (SQLSTATE ${sqlstate})` : ''}`;
}

export const sqlCommand: Command = {
  words: ['sql'],
  summary: 'run a SQL query on a database target defined on the appliance',
  usage: `Usage: uplink sql APPLIANCE --target NAME "QUERY" [--format table|csv|json] [--write] [--max-rows N]
  --target NAME     the SQL target configured on the agent (sqlTargets)
  --format F        table (default), csv or json
  --write           run in a read-write transaction and commit (the target must allow writes)
  --max-rows N      stop after N rows (capped by the target's maxRows)
Exit status: 0; 1 when the query failed (the SQLSTATE is printed).`,
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, {
      target: { type: 'string' },
      format: { type: 'string' },
      write: { type: 'boolean' },
      'max-rows': { type: 'string' },
      json: { type: 'boolean' },
    });
    const [appliance, query, ...rest] = positionals;
    const target = str(values.target);
    if (!appliance || !query || rest.length || !target) throw new UplinkError('UPLINK_ERR_USAGE', 'sql needs APPLIANCE, --target NAME and one QUERY argument');
    const format = (str(values.format) ?? 'table') as SqlFormat;
    if (!SQL_FORMATS.includes(format)) throw new UplinkError('UPLINK_ERR_USAGE', `--format must be one of ${SQL_FORMATS.join(', ')}`);
    const maxRowsText = str(values['max-rows']);
    if (maxRowsText !== undefined && !/^[1-9]\d{0,8}$/.test(maxRowsText)) throw new UplinkError('UPLINK_ERR_USAGE', '--max-rows must be a positive whole number');
    const spec = { target, query, write: values.write === true, ...(maxRowsText ? { maxRows: Number(maxRowsText) } : {}) };
    try {
      const duplex = await ctx.client().openOp(appliance, 'sql', spec);
      const done = await renderSql(format, sqlEvents(duplex), ctx.io.stdout as NodeJS.WritableStream as never);
      duplex.destroy();
      if (done.truncated) ctx.io.stderr.write(`uplink: output stopped at ${done.maxRows} rows (--max-rows or the target's maxRows); more rows exist\n`);
      return EXIT.ok;
    } catch (err) {
      const e = toUplinkError(err);
      if (values.json) return printError(ctx.io, e, true);
      ctx.io.stderr.write(`${formatSqlError(e)}\n`);
      return e.code === 'UPLINK_ERR_USAGE' ? EXIT.usage : EXIT.failure;
    }
  },
};
