import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { AsciicastWriter } from '../../../relay/recordings/asciicast.js';
import { AsciicastReader, replay, type AsciicastEvent } from '../../../relay/recordings/asciicast-replay.js';
import { startPtySession } from '../../../agent/ops/pty-session.js';

const dir = mkdtempSync(path.join(tmpdir(), 'uplink-replay-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let fileNo = 0;
const newFile = (): string => path.join(dir, `rec-${++fileNo}.cast`);

const HEADER = '{"version":2,"width":80,"height":24}';

/** Replay as fast as possible and return the bytes written plus the result. */
async function replayAll(reader: AsciicastReader): Promise<{ out: Buffer; result: Awaited<ReturnType<typeof replay>>; resizes: string[] }> {
  const parts: Buffer[] = [];
  const resizes: string[] = [];
  const result = await replay(reader, { speed: 1e6, maxIdleSeconds: 0, write: (b) => void parts.push(b), onResize: (c, r) => resizes.push(`${c}x${r}`) });
  return { out: Buffer.concat(parts), result, resizes };
}

const fromText = (text: string | Buffer): Readable => Readable.from([typeof text === 'string' ? Buffer.from(text) : text]);

/** Output chunks with multi-byte characters split across chunks and bytes that are not UTF-8. */
const OUTPUT = [
  Buffer.from('\x1b[?1049h\x1b[H'), // alternate screen, as vim/top/less do
  Buffer.from('caf\u00e9 '),
  Buffer.from('\u20ac\u{1F600}', 'utf8').subarray(0, 2),
  Buffer.from('\u20ac\u{1F600}', 'utf8').subarray(2, 5),
  Buffer.from('\u20ac\u{1F600}', 'utf8').subarray(5),
  Buffer.from([0xff, 0xfe, 0x00, 0xc3]),
  Buffer.from([0xa9, 0x0d, 0x0a]),
  Buffer.from('\x1b[?1049l'),
];

async function writeRecording(file: string, end: { complete: boolean; reason?: string } = { complete: true }): Promise<void> {
  const w = AsciicastWriter.toFile(file, { width: 80, height: 24, env: { TERM: 'xterm-256color', SHELL: '/bin/bash' } }, { recordInput: true });
  w.input(Buffer.from('vim\r'));
  OUTPUT.slice(0, 4).forEach((c) => w.output(c));
  w.resize(120, 40);
  OUTPUT.slice(4).forEach((c) => w.output(c));
  await w.end(end);
}

t.test('round trip: replay writes exactly the bytes the terminal saw', async (t) => {
  const file = newFile();
  await writeRecording(file);
  const reader = await AsciicastReader.openFile(file);
  t.same(reader.header.env, { TERM: 'xterm-256color', SHELL: '/bin/bash' });
  t.equal(reader.end, undefined, 'status is unknown until read to the end');
  const { out, result, resizes } = await replayAll(reader);
  t.same(out, Buffer.concat(OUTPUT));
  t.same(resizes, ['120x40']);
  // 9 events: input, resize and 7 outputs (the chunk holding half a euro sign is carried, not written).
  t.same(result, { complete: true, events: 9, bytes: Buffer.concat(OUTPUT).length });
  t.same(reader.end, { complete: true });
});

t.test('a real PTY session recorded and replayed is byte-identical', async (t) => {
  const file = newFile();
  const session = startPtySession({ file: '/bin/sh', args: ['-c', "printf 'ab\\303\\251\\342\\202\\254\\360\\237\\230\\200\\377\\000end\\n'; exit 4"], cols: 90, rows: 20 });
  const w = AsciicastWriter.toFile(file, { width: session.cols, height: session.rows });
  const seen: Buffer[] = [];
  session.onData((c) => {
    seen.push(c);
    w.output(c);
  });
  const exit = await session.exit;
  await w.end({ complete: true });
  t.equal(exit.exitCode, 4);
  const { out, result } = await replayAll(await AsciicastReader.openFile(file));
  t.same(out, Buffer.concat(seen));
  t.same([...out.subarray(0, 13)], [0x61, 0x62, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0xff, 0x00]);
  t.equal(result.complete, true);
});

t.test('a marker saying incomplete is reported with its reason', async (t) => {
  const file = newFile();
  await writeRecording(file, { complete: false, reason: 'tunnel closed' });
  const { out, result } = await replayAll(await AsciicastReader.openFile(file));
  t.same(out, Buffer.concat(OUTPUT), 'all output still replays');
  t.same({ complete: result.complete, reason: result.reason }, { complete: false, reason: 'tunnel closed' });
});

t.test('a file cut at any byte is incomplete, never malformed, and replays a prefix', async (t) => {
  const file = newFile();
  await writeRecording(file);
  const full = readFileSync(file);
  const headerEnd = full.indexOf(0x0a) + 1;
  const expected = Buffer.concat(OUTPUT);
  // Up to full.length - 1: only the final newline missing still leaves a whole end marker.
  for (let cut = headerEnd; cut < full.length - 1; cut++) {
    const reader = await AsciicastReader.open(fromText(full.subarray(0, cut)));
    const { out, result } = await replayAll(reader);
    if (result.complete) t.fail(`cut at ${cut} reported complete`);
    if (!expected.subarray(0, out.length).equals(out)) t.fail(`cut at ${cut} replayed bytes that are not a prefix`);
    if (!/cut off|without its end marker/.test(result.reason ?? '')) t.fail(`cut at ${cut}: reason ${result.reason}`);
  }
  const lastLineStart = full.lastIndexOf(0x0a, full.length - 2) + 1;
  const noMarker = await replayAll(await AsciicastReader.open(fromText(full.subarray(0, lastLineStart))));
  t.same(noMarker.result, { complete: false, reason: 'recording ended without its end marker (the writer stopped early)', events: 9, bytes: expected.length });
  const midLine = await replayAll(await AsciicastReader.open(fromText(full.subarray(0, lastLineStart + 5))));
  t.equal(midLine.result.reason, `recording cut off in line ${full.subarray(0, lastLineStart).toString().split('\n').length}`);
  const whole = await replayAll(await AsciicastReader.open(fromText(full)));
  t.equal(whole.result.complete, true, 'the uncut file is complete');
});

t.test('malformed recordings are rejected with UPLINK_ERR_RECORDING_MALFORMED and the line', async (t) => {
  const END = '[9, "m", "uplink-end:{\\"complete\\":true}"]';
  const cases: Array<[string, Buffer | string, number]> = [
    ['empty file', '', 1],
    ['header not JSON', 'hello\n', 1],
    ['header version 1', '{"version":1,"width":80,"height":24}\n', 1],
    ['header without width', '{"version":2,"height":24}\n', 1],
    ['header too wide', '{"version":2,"width":5000,"height":24}\n', 1],
    ['event not JSON', `${HEADER}\n[0.1, "o", "x"\n${END}\n`, 2],
    ['event not an array', `${HEADER}\n{"t":1}\n${END}\n`, 2],
    ['event with 2 fields', `${HEADER}\n[0.1, "o"]\n${END}\n`, 2],
    ['negative time', `${HEADER}\n[-1, "o", "x"]\n${END}\n`, 2],
    ['time as string', `${HEADER}\n["1", "o", "x"]\n${END}\n`, 2],
    ['time going back', `${HEADER}\n[2, "o", "x"]\n[1, "o", "y"]\n${END}\n`, 3],
    ['unknown type', `${HEADER}\n[1, "x", "y"]\n${END}\n`, 2],
    ['data not a string', `${HEADER}\n[1, "o", 5]\n${END}\n`, 2],
    ['bad resize', `${HEADER}\n[1, "r", "80by24"]\n${END}\n`, 2],
    ['zero resize', `${HEADER}\n[1, "r", "0x24"]\n${END}\n`, 2],
    ['blank line', `${HEADER}\n\n${END}\n`, 2],
    ['line not UTF-8', Buffer.concat([Buffer.from(`${HEADER}\n[1, "o", "`), Buffer.from([0xff]), Buffer.from(`"]\n${END}\n`)]), 2],
    ['event after the end marker', `${HEADER}\n${END}\n[10, "o", "sneaky"]\n`, 3],
    ['unreadable end marker', `${HEADER}\n[1, "m", "uplink-end:{nope"]\n`, 2],
  ];
  for (const [name, content, line] of cases) {
    const attempt = async (): Promise<AsciicastEvent[]> => {
      const reader = await AsciicastReader.open(fromText(content));
      const events: AsciicastEvent[] = [];
      for await (const ev of reader.events()) events.push(ev);
      return events;
    };
    await t.rejects(attempt(), { code: 'UPLINK_ERR_RECORDING_MALFORMED', details: { line } }, name);
  }
});

t.test('limits: long lines, endless lines and too many events are refused', async (t) => {
  const long = `${HEADER}\n[1, "o", "${'x'.repeat(200)}"]\n`;
  await t.rejects(
    (async () => {
      const r = await AsciicastReader.open(fromText(long), { maxLineBytes: 100 });
      for await (const ev of r.events()) void ev;
    })(),
    { code: 'UPLINK_ERR_RECORDING_LIMIT', details: { limit: 'maxLineBytes', line: 2 } },
  );
  // A stream with no newline at all: refused after maxLineBytes, not buffered to the end.
  let produced = 0;
  const endless = new Readable({
    read() {
      produced += 1024;
      this.push(produced > 10 * 1024 * 1024 ? null : Buffer.alloc(1024, 0x61));
    },
  });
  await t.rejects(AsciicastReader.open(endless, { maxLineBytes: 4096 }), { code: 'UPLINK_ERR_RECORDING_LIMIT', details: { line: 1 } });
  t.ok(produced < 64 * 1024, `stopped reading after ${produced} bytes`);
  t.ok(endless.destroyed, 'the source is released');

  const many = `${HEADER}\n${Array.from({ length: 6 }, (_, i) => `[${i}, "o", "x"]`).join('\n')}\n`;
  const r = await AsciicastReader.open(fromText(many), { maxEvents: 5 });
  await t.rejects(replay(r, { speed: 1e6, write: () => undefined }), { code: 'UPLINK_ERR_RECORDING_LIMIT', details: { limit: 'maxEvents' } });
  await t.rejects(AsciicastReader.open(fromText(many), { maxEvent: 5 } as never), { code: 'UPLINK_ERR_CONFIG_INVALID' });
});

t.test('replay options are validated and abort stops playback', async (t) => {
  const file = newFile();
  await writeRecording(file);
  await t.rejects(replay(await AsciicastReader.openFile(file), { speed: 0, write: () => undefined }), { code: 'UPLINK_ERR_USAGE' });
  await t.rejects(replay(await AsciicastReader.openFile(file), { speed: 1, write: () => undefined, sped: 2 } as never), { code: 'UPLINK_ERR_USAGE' });

  // A long pause in the recording: abort while replay sleeps through it.
  const gap = `${HEADER}\n[0.5, "o", "before"]\n[5000, "o", "after"]\n[5000, "m", "uplink-end:{\\"complete\\":true}"]\n`;
  const ac = new AbortController();
  const written: string[] = [];
  const playing = replay(await AsciicastReader.open(fromText(gap)), {
    maxIdleSeconds: 3600,
    signal: ac.signal,
    write: (b) => {
      written.push(b.toString());
      ac.abort();
    },
  });
  await t.rejects(playing, { name: 'AbortError' });
  t.same(written, ['before']);

  // maxIdleSeconds caps the same pause, so playback finishes; the header's idle_time_limit is the default cap.
  const capped = await replayAll(await AsciicastReader.open(fromText(gap)));
  t.equal(capped.out.toString(), 'beforeafter');
  const withLimit = gap.replace(HEADER, '{"version":2,"width":80,"height":24,"idle_time_limit":0}');
  const viaHeader = await replay(await AsciicastReader.open(fromText(withLimit)), { write: () => undefined });
  t.same(viaHeader, { complete: true, events: 2, bytes: 11 });
});

t.test('events() can be read once; input and markers are events but are not played', async (t) => {
  const content = `${HEADER}\n[0.1, "i", "ls\\r"]\n[0.2, "m", "chapter"]\n[0.3, "o", "file\\r\\n"]\n[0.3, "m", "uplink-end:{\\"complete\\":true}"]\n`;
  const reader = await AsciicastReader.open(fromText(content));
  const markers: string[] = [];
  const parts: Buffer[] = [];
  const result = await replay(reader, { speed: 1e6, write: (b) => void parts.push(b), onMarker: (m) => markers.push(m) });
  t.equal(Buffer.concat(parts).toString(), 'file\r\n');
  t.same(markers, ['chapter']);
  t.same(result, { complete: true, events: 3, bytes: 6 });
  await t.rejects((async () => {
    for await (const ev of reader.events()) void ev;
  })(), { code: 'UPLINK_ERR_INTERNAL' });

  const unterminated = await AsciicastReader.open(fromText(content.trimEnd()));
  const played = await replayAll(unterminated);
  t.equal(played.result.complete, true, 'a final marker without its newline still counts');
  writeFileSync(path.join(dir, 'closed.cast'), content);
  const closed = await AsciicastReader.openFile(path.join(dir, 'closed.cast'));
  await closed.close();
  t.pass('close() releases an unread recording');
});
