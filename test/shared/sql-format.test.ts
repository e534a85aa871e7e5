import t from 'tap';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  displayWidth, escapeControls, renderCsv, renderJson, renderSql, renderTable, uniqueKeys,
  type SqlColumn, type SqlDoneEvent, type SqlEvent,
} from '../../shared/sql-format.js';

const col = (name: string, type = 'text'): SqlColumn => ({ name, type, typeOid: type === 'integer' ? 23 : 25 });
const done = (rowCount: number, extra: Partial<SqlDoneEvent> = {}): SqlDoneEvent => ({
  type: 'done', command: 'SELECT', rowCount, truncated: false, maxRows: 10_000, durationMs: 1, ...extra,
});

async function* events(...evs: SqlEvent[]): AsyncGenerator<SqlEvent> {
  for (const ev of evs) yield ev;
}

/** A Writable collecting text, optionally slow (small buffer, delayed callbacks) to force backpressure. */
function sink(opts: { delayMs?: number; highWaterMark?: number } = {}): { out: Writable; text(): string; writes(): number } {
  const chunks: string[] = [];
  const out = new Writable({
    highWaterMark: opts.highWaterMark ?? 16_384,
    decodeStrings: false,
    write(chunk: string, _enc, cb) {
      chunks.push(chunk);
      if (opts.delayMs) setTimeout(cb, opts.delayMs);
      else cb();
    },
  });
  return { out, text: () => chunks.join(''), writes: () => chunks.length };
}

t.test('csv: RFC 4180 quoting, CRLF, NULL empty and empty string quoted', async (t) => {
  const s = sink();
  const d = await renderCsv(
    events(
      { type: 'columns', columns: [col('id', 'integer'), col('na,me'), col('v')] },
      { type: 'rows', rows: [['1', 'a "q"', null], ['2', 'line1\nline2', ''], ['3', 'cr\rx', 'plain']] },
      done(3),
    ),
    s.out,
  );
  t.equal(s.text(), 'id,"na,me",v\r\n1,"a ""q""",\r\n2,"line1\nline2",""\r\n3,"cr\rx",plain\r\n');
  t.equal(d.rowCount, 3);
});

t.test('csv: a statement without columns writes nothing', async (t) => {
  const s = sink();
  await renderCsv(events({ type: 'columns', columns: [] }, done(4, { command: 'INSERT' })), s.out);
  t.equal(s.text(), '');
});

t.test('json: array of objects in column order, duplicate names suffixed, integer-like keys kept in order', async (t) => {
  const s = sink();
  await renderJson(
    events(
      { type: 'columns', columns: [col('b'), col('a'), col('a'), col('2'), col('1'), col('__proto__')] },
      { type: 'rows', rows: [['x', null, 'é', '"q"', '\\', 'p']] },
      { type: 'rows', rows: [['y', '1', '2', '3', '4', '5']] },
      done(2),
    ),
    s.out,
  );
  t.equal(
    s.text(),
    '[\n{"b":"x","a":null,"a_2":"é","2":"\\"q\\"","1":"\\\\","__proto__":"p"},\n{"b":"y","a":"1","a_2":"2","2":"3","1":"4","__proto__":"5"}\n]\n',
  );
  const parsed = JSON.parse(s.text()) as Record<string, unknown>[];
  t.equal(parsed.length, 2);
});

t.test('json: empty result is []', async (t) => {
  const s = sink();
  await renderJson(events({ type: 'columns', columns: [col('a')] }, done(0)), s.out);
  t.equal(s.text(), '[]\n');
});

t.test('uniqueKeys never collides with an existing suffixed name', async (t) => {
  t.same(uniqueKeys(['a', 'a_2', 'a', 'a']), ['a', 'a_2', 'a_3', 'a_4']);
});

t.test('table: psql-like layout, numeric right-aligned, NULL empty, footer', async (t) => {
  const s = sink();
  await renderTable(
    events(
      { type: 'columns', columns: [col('id', 'integer'), col('name')] },
      { type: 'rows', rows: [['1', 'alice'], ['100', null]] },
      done(2),
    ),
    s.out,
  );
  t.equal(s.text(), [' id  | name', '-----+-------', '   1 | alice', ' 100 |', '(2 rows)', ''].join('\n'));
});

t.test('table: widths come from the sample; later longer values are cut with an ellipsis', async (t) => {
  const s = sink();
  await renderTable(
    events(
      { type: 'columns', columns: [col('v')] },
      { type: 'rows', rows: [['abcd']] },
      { type: 'rows', rows: [['abcdefgh'], ['日本語テキスト']] },
      done(3),
    ),
    s.out,
    { sampleRows: 1 },
  );
  t.equal(s.text(), ['  v', '------', ' abcd', ' abc…', ' 日…', '(3 rows)', ''].join('\n'));
});

t.test('table: maxColumnWidth caps even sampled values; wide characters count two cells', async (t) => {
  const s = sink();
  await renderTable(
    events({ type: 'columns', columns: [col('k')] }, { type: 'rows', rows: [['x'.repeat(20)], ['日本']] }, done(2)),
    s.out,
    { maxColumnWidth: 6 },
  );
  t.equal(s.text(), ['   k', '--------', ' xxxxx…', ' 日本', '(2 rows)', ''].join('\n'));
  t.equal(displayWidth('日本'), 4);
  t.equal(displayWidth('e\u0301'), 1, 'combining mark has no width');
});

t.test('table: control characters are escaped so data cannot drive the terminal', async (t) => {
  t.equal(escapeControls('a\nb\tc\u001b[31mred\u007f\u0085'), 'a\\nb\\tc\\x1b[31mred\\x7f\\x85');
  const s = sink();
  await renderTable(events({ type: 'columns', columns: [col('x\ny')] }, { type: 'rows', rows: [['\u001b]0;pwned\u0007']] }, done(1)), s.out);
  t.notMatch(s.text(), /\u001b/);
  t.match(s.text(), /\\x1b\]0;pwned\\x07/);
  t.match(s.text(), /x\\ny/);
});

t.test('table: truncated footer and commands without a result set', async (t) => {
  const a = sink();
  await renderTable(events({ type: 'columns', columns: [col('a')] }, { type: 'rows', rows: [['1']] }, done(1, { truncated: true, maxRows: 1, command: null })), a.out);
  t.equal(a.text(), [' a', '---', ' 1', '(1 row; stopped at the 1-row limit, more rows exist)', ''].join('\n'));
  const b = sink();
  await renderTable(events({ type: 'columns', columns: [] }, done(3, { command: 'INSERT' })), b.out);
  t.equal(b.text(), 'INSERT 3\n');
  const c = sink();
  await renderTable(events({ type: 'columns', columns: [] }, done(0, { command: 'CREATE' })), c.out);
  t.equal(c.text(), 'CREATE\n');
});

t.test('renderers refuse out-of-order or unterminated streams', async (t) => {
  await t.rejects(renderCsv(events({ type: 'rows', rows: [['1']] }), sink().out), { code: 'UPLINK_ERR_INTERNAL' });
  await t.rejects(renderJson(events({ type: 'columns', columns: [col('a')] }), sink().out), { code: 'UPLINK_ERR_INTERNAL' });
  await t.rejects(
    renderTable(events({ type: 'columns', columns: [col('a')] }, { type: 'columns', columns: [col('a')] }), sink().out),
    { code: 'UPLINK_ERR_INTERNAL' },
  );
  t.throws(() => renderTable(events(), sink().out, { maxColumnWidth: 1 }), { code: 'UPLINK_ERR_USAGE' });
});

t.test('backpressure: the renderer stops pulling events while the output is full', async (t) => {
  let pulled = 0;
  async function* many(): AsyncGenerator<SqlEvent> {
    yield { type: 'columns', columns: [col('n')] };
    for (let i = 0; i < 50; i++) {
      pulled++;
      yield { type: 'rows', rows: [[String(i).padStart(100, '0')]] };
    }
    yield done(50);
  }
  const s = sink({ delayMs: 5, highWaterMark: 64 });
  const p = renderCsv(many(), s.out);
  await sleep(30);
  t.ok(pulled < 20, `pulled ${pulled} batches while the writer is slow`);
  await p;
  t.equal(pulled, 50);
  t.equal(s.text().split('\r\n').length, 52);
});

t.test('a destroyed output rejects instead of hanging', async (t) => {
  const s = sink({ delayMs: 1_000, highWaterMark: 1 });
  const p = renderCsv(
    events({ type: 'columns', columns: [col('a')] }, { type: 'rows', rows: [['1']] }, { type: 'rows', rows: [['2']] }, done(2)),
    s.out,
  );
  setTimeout(() => s.out.destroy(), 20);
  await t.rejects(p);
});

t.test('renderSql dispatches by format', async (t) => {
  for (const [format, expected] of [['csv', 'a\r\n1\r\n'], ['json', '[\n{"a":"1"}\n]\n'], ['table', ' a\n---\n 1\n(1 row)\n']] as const) {
    const s = sink();
    await renderSql(format, events({ type: 'columns', columns: [col('a')] }, { type: 'rows', rows: [['1']] }, done(1)), s.out);
    t.equal(s.text(), expected, format);
  }
});
