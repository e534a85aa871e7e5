/**
 * SQL result events and the CLI's streaming renderers for them (`uplink sql --format`).
 *
 * Event contract (agent/ops/sql-runner.ts produces it, the relay forwards it): exactly one
 * `columns` event first (empty for statements without a result set, such as INSERT without
 * RETURNING), then any number of `rows` events, then exactly one `done`. Values are
 * PostgreSQL's text output (what psql shows), or null for SQL NULL.
 *
 * Renderers pull events one at a time and wait for the Writable to drain before pulling
 * more, so a slow terminal or pipe slows the query down instead of filling memory. Each
 * resolves with the `done` event (the CLI reports truncation from it) and rejects if the
 * events fail midway; what was already written stays written (a partial table, CSV or an
 * unterminated JSON array), and the CLI prints the error to stderr.
 *
 * Formats:
 * - table: psql-like aligned text. It streams, so column widths come from the header and
 *   the first `sampleRows` rows (default 1000); later values that do not fit are cut with
 *   "…". No column is wider than `maxColumnWidth` (default 80). Control characters are
 *   shown escaped (\n, \t, \x1b…) so that data can neither break the layout nor send escape
 *   sequences to the user's terminal. Numeric columns are right-aligned. NULL shows as
 *   `nullText` (default empty, as in psql). Footer: "(N rows)".
 * - csv: RFC 4180: header line, CRLF line ends, fields quoted when they hold a comma, quote,
 *   CR or LF (quotes doubled). NULL is an empty unquoted field and the empty string is "",
 *   so the two stay distinct (as in PostgreSQL's COPY ... CSV).
 * - json: one JSON array of objects, one object per line, keys in column order, values
 *   strings or null. A repeated column name gets a suffix (_2, _3…) so no value is lost.
 */
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { UplinkError } from './errors.js';

export interface SqlColumn {
  name: string;
  /** PostgreSQL type name as format_type() spells it ("integer", "text", "timestamp with time zone"). */
  type: string;
  typeOid: number;
}

export interface SqlColumnsEvent {
  type: 'columns';
  columns: SqlColumn[];
}
export interface SqlRowsEvent {
  type: 'rows';
  rows: (string | null)[][];
}
export interface SqlDoneEvent {
  type: 'done';
  /** The command tag's verb (SELECT, INSERT…); null when the run stopped before it arrived (truncated). */
  command: string | null;
  /** Rows returned, or rows affected for INSERT/UPDATE/DELETE without RETURNING. */
  rowCount: number;
  /** True when more rows existed than `maxRows`: the rest were not read. */
  truncated: boolean;
  /** The row limit that applied. */
  maxRows: number;
  durationMs: number;
}
export type SqlEvent = SqlColumnsEvent | SqlRowsEvent | SqlDoneEvent;

export const SQL_FORMATS = ['table', 'csv', 'json'] as const;
export type SqlFormat = (typeof SQL_FORMATS)[number];

export interface TableFormatOptions {
  /** Rows buffered to choose column widths before output starts. */
  sampleRows: number;
  /** Widest a column may be, in terminal cells. */
  maxColumnWidth: number;
  nullText: string;
}

export const TABLE_FORMAT_DEFAULTS: Readonly<TableFormatOptions> = Object.freeze({ sampleRows: 1000, maxColumnWidth: 80, nullText: '' });

/** Write with backpressure: wait for 'drain' when the buffer is full. */
async function write(out: Writable, chunk: string): Promise<void> {
  if (out.destroyed) throw new Error('output stream is closed');
  if (!out.write(chunk)) {
    const ac = new AbortController();
    try {
      await Promise.race([
        once(out, 'drain', { signal: ac.signal }),
        once(out, 'close', { signal: ac.signal }).then(() => {
          throw new Error('output stream closed');
        }),
      ]);
    } finally {
      ac.abort();
    }
  }
}

/**
 * Walk the events checking their order, calling the handlers. Resolves with `done`.
 * A missing or misplaced event is a bug in the producer: UPLINK_ERR_INTERNAL.
 */
async function walk(
  events: AsyncIterable<SqlEvent>,
  on: { columns(c: SqlColumn[]): Promise<void>; rows(r: (string | null)[][]): Promise<void>; done(d: SqlDoneEvent): Promise<void> },
): Promise<SqlDoneEvent> {
  let columns: SqlColumn[] | undefined;
  for await (const ev of events) {
    if (ev.type === 'columns' && columns === undefined) {
      columns = ev.columns;
      await on.columns(columns);
    } else if (ev.type === 'rows' && columns !== undefined) {
      await on.rows(ev.rows);
    } else if (ev.type === 'done' && columns !== undefined) {
      await on.done(ev);
      return ev;
    } else {
      throw new UplinkError('UPLINK_ERR_INTERNAL', `SQL result stream: unexpected "${ev.type}" event`);
    }
  }
  throw new UplinkError('UPLINK_ERR_INTERNAL', 'SQL result stream ended without a "done" event');
}

// ---- CSV ---------------------------------------------------------------------------------

const CSV_NEEDS_QUOTES = /[",\r\n]/;

function csvField(v: string | null): string {
  if (v === null) return '';
  if (v === '' || CSV_NEEDS_QUOTES.test(v)) return `"${v.replaceAll('"', '""')}"`;
  return v;
}

/** RFC 4180 CSV. */
export function renderCsv(events: AsyncIterable<SqlEvent>, out: Writable): Promise<SqlDoneEvent> {
  return walk(events, {
    columns: async (cols) => {
      if (cols.length) await write(out, `${cols.map((c) => csvField(c.name)).join(',')}\r\n`);
    },
    rows: (rows) => write(out, rows.map((r) => `${r.map(csvField).join(',')}\r\n`).join('')),
    done: async () => {},
  });
}

// ---- JSON --------------------------------------------------------------------------------

/** Column names as unique object keys: a repeated name gets _2, _3… */
export function uniqueKeys(names: readonly string[]): string[] {
  const used = new Set<string>();
  return names.map((name) => {
    let key = name;
    for (let n = 2; used.has(key); n++) key = `${name}_${n}`;
    used.add(key);
    return key;
  });
}

/** One JSON array of objects, streamed one object per line. */
export function renderJson(events: AsyncIterable<SqlEvent>, out: Writable): Promise<SqlDoneEvent> {
  let keys: string[] = [];
  let first = true;
  return walk(events, {
    columns: async (cols) => {
      keys = uniqueKeys(cols.map((c) => c.name)).map((k) => JSON.stringify(k));
      await write(out, '[');
    },
    rows: (rows) => {
      let text = '';
      for (const row of rows) {
        // Built by hand: a JS object would reorder integer-like keys and treat "__proto__" specially.
        text += `${first ? '\n' : ',\n'}{${row.map((v, i) => `${keys[i]}:${JSON.stringify(v)}`).join(',')}}`;
        first = false;
      }
      return write(out, text);
    },
    done: () => write(out, first ? ']\n' : '\n]\n'),
  });
}

// ---- table -------------------------------------------------------------------------------

const NUMERIC_TYPES = new Set(['smallint', 'integer', 'bigint', 'numeric', 'real', 'double precision', 'oid', 'money']);
const COUNTED_COMMANDS = new Set(['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'MERGE', 'COPY', 'FETCH', 'MOVE']);

/** Escape C0, DEL and C1 control characters so data cannot drive the terminal. */
export function escapeControls(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
  });
}

const ZERO_WIDTH = /^[\p{Mn}\p{Me}\u200b-\u200f\u2060-\u2064\ufe00-\ufe0f]$/u;

function isWide(cp: number): boolean {
  return (
    (cp >= 0x1100 && cp <= 0x115f) || (cp >= 0x2e80 && cp <= 0x303e) || (cp >= 0x3041 && cp <= 0x33ff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) || (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0xa000 && cp <= 0xa4cf) ||
    (cp >= 0xac00 && cp <= 0xd7a3) || (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) || (cp >= 0xffe0 && cp <= 0xffe6) || (cp >= 0x1f300 && cp <= 0x1f64f) ||
    (cp >= 0x1f900 && cp <= 0x1f9ff) || (cp >= 0x20000 && cp <= 0x3fffd)
  );
}

function charWidth(ch: string): number {
  if (ZERO_WIDTH.test(ch)) return 0;
  return isWide(ch.codePointAt(0)!) ? 2 : 1;
}

/** Terminal cells `s` takes (East Asian wide characters count 2, combining marks 0). */
export function displayWidth(s: string): number {
  let w = 0;
  for (const ch of s) w += charWidth(ch);
  return w;
}

/** Cut `s` to at most `width` cells, ending with "…" when cut. */
function fit(s: string, width: number): string {
  if (displayWidth(s) <= width) return s;
  let w = 0;
  let outText = '';
  for (const ch of s) {
    const cw = charWidth(ch);
    if (w + cw > width - 1) break;
    outText += ch;
    w += cw;
  }
  return `${outText}…`;
}

function pad(s: string, width: number, align: 'left' | 'right' | 'center'): string {
  const gap = Math.max(0, width - displayWidth(s));
  if (align === 'right') return ' '.repeat(gap) + s;
  if (align === 'center') return ' '.repeat(Math.floor(gap / 2)) + s + ' '.repeat(gap - Math.floor(gap / 2));
  return s + ' '.repeat(gap);
}

/** psql-like aligned table; see the file comment for the streaming width rule. */
export function renderTable(events: AsyncIterable<SqlEvent>, out: Writable, options: Partial<TableFormatOptions> = {}): Promise<SqlDoneEvent> {
  const opts = { ...TABLE_FORMAT_DEFAULTS, ...options };
  if (!Number.isInteger(opts.sampleRows) || opts.sampleRows < 0) throw new UplinkError('UPLINK_ERR_USAGE', 'table format: sampleRows must be a whole number');
  if (!Number.isInteger(opts.maxColumnWidth) || opts.maxColumnWidth < 2) throw new UplinkError('UPLINK_ERR_USAGE', 'table format: maxColumnWidth must be at least 2');
  let columns: SqlColumn[] = [];
  let sample: string[][] | undefined = [];
  let widths: number[] = [];
  let aligns: ('left' | 'right')[] = [];

  const cell = (v: string | null): string => escapeControls(v ?? opts.nullText);
  const line = (cells: string[], align: (i: number) => 'left' | 'right' | 'center'): string =>
    `${cells.map((c, i) => ` ${pad(fit(c, widths[i]!), widths[i]!, align(i))} `).join('|').trimEnd()}\n`;

  const flushSample = async (): Promise<void> => {
    if (!sample) return;
    const names = columns.map((c) => escapeControls(c.name));
    widths = names.map((n) => displayWidth(n));
    for (const r of sample) r.forEach((v, i) => (widths[i] = Math.max(widths[i]!, displayWidth(v))));
    widths = widths.map((w) => Math.min(opts.maxColumnWidth, w));
    aligns = columns.map((c) => (NUMERIC_TYPES.has(c.type) ? 'right' : 'left'));
    let text = line(names, () => 'center');
    text += `${widths.map((w) => '-'.repeat(w + 2)).join('+')}\n`;
    for (const r of sample) text += line(r, (i) => aligns[i]!);
    sample = undefined;
    await write(out, text);
  };

  return walk(events, {
    columns: async (cols) => {
      columns = cols;
    },
    rows: async (rows) => {
      if (columns.length === 0) return;
      const cells = rows.map((r) => r.map(cell));
      if (sample) {
        sample.push(...cells);
        if (sample.length >= opts.sampleRows) await flushSample();
        return;
      }
      await write(out, cells.map((r) => line(r, (i) => aligns[i]!)).join(''));
    },
    done: async (d) => {
      if (columns.length === 0) {
        const verb = d.command ?? 'OK';
        await write(out, `${COUNTED_COMMANDS.has(verb) ? `${verb} ${d.rowCount}` : verb}\n`);
        return;
      }
      await flushSample();
      const n = `(${d.rowCount} ${d.rowCount === 1 ? 'row' : 'rows'}`;
      await write(out, d.truncated ? `${n}; stopped at the ${d.maxRows}-row limit, more rows exist)\n` : `${n})\n`);
    },
  });
}

/** Render `events` in `format` to `out`. */
export function renderSql(format: SqlFormat, events: AsyncIterable<SqlEvent>, out: Writable, table: Partial<TableFormatOptions> = {}): Promise<SqlDoneEvent> {
  switch (format) {
    case 'table':
      return renderTable(events, out, table);
    case 'csv':
      return renderCsv(events, out);
    case 'json':
      return renderJson(events, out);
  }
}
