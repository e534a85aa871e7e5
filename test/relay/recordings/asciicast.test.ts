import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { AsciicastWriter, ByteExactDecoder, encodeEventData, parseEndMarker, END_MARKER_PREFIX } from '../../../relay/recordings/asciicast.js';

/** Deterministic PRNG (mulberry32) so fuzz cases are the same on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function decodeChunks(chunks: Buffer[]): string {
  const d = new ByteExactDecoder();
  return chunks.map((c) => d.write(c)).join('') + d.end();
}

function collect(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const parts: Buffer[] = [];
  stream.on('data', (c: Buffer) => parts.push(c));
  return { stream, text: () => Buffer.concat(parts).toString('utf8') };
}

const MULTI = Buffer.from('a\u00e9\u20ac\u{1F600}\u{10080}z', 'utf8'); // 1-, 2-, 3-, 4-byte chars; U+10080 has low surrogate DC80

t.test('valid UTF-8 split at every offset decodes to the same text and re-encodes to the same bytes', async (t) => {
  const text = MULTI.toString('utf8');
  for (let i = 0; i <= MULTI.length; i++) {
    const decoded = decodeChunks([MULTI.subarray(0, i), MULTI.subarray(i)]);
    t.equal(decoded, text, `split at ${i}`);
    t.same(encodeEventData(decoded), MULTI);
  }
  for (let i = 0; i <= MULTI.length; i++) {
    for (let j = i; j <= MULTI.length; j++) {
      const decoded = decodeChunks([MULTI.subarray(0, i), MULTI.subarray(i, j), MULTI.subarray(j)]);
      if (decoded !== text) t.fail(`three-way split ${i}/${j} mangled the text`);
    }
  }
  t.equal(decodeChunks([...MULTI].map((b) => Buffer.from([b]))), text, 'byte by byte');
  t.notMatch(text, /[\udc80-\udcff]/u, 'valid UTF-8 yields no escaped bytes, even with a DC80 low surrogate in a pair');
});

t.test('invalid bytes are escaped as lone surrogates U+DC80..U+DCFF and restored exactly', async (t) => {
  const cases: Array<[number[], string]> = [
    [[0xff], '\udcff'],
    [[0x80], '\udc80'],
    [[0xc0, 0x80], '\udcc0\udc80'], // overlong NUL
    [[0xed, 0xa0, 0x80], '\udced\udca0\udc80'], // UTF-8 encoded surrogate
    [[0xf4, 0x90, 0x80, 0x80], '\udcf4\udc90\udc80\udc80'], // above U+10FFFF
    [[0xe2, 0x82, 0x41], '\udce2\udc82A'], // sequence broken by ASCII
    [[0x61, 0xe2, 0x82], 'a\udce2\udc82'], // cut at the very end: flushed by end()
    [[0xf0, 0x9f, 0x98], '\udcf0\udc9f\udc98'],
  ];
  for (const [bytes, expected] of cases) {
    const buf = Buffer.from(bytes);
    for (let i = 0; i <= buf.length; i++) {
      const decoded = decodeChunks([buf.subarray(0, i), buf.subarray(i)]);
      t.equal(decoded, expected, `${buf.toString('hex')} split at ${i}`);
      t.same(encodeEventData(decoded), buf);
    }
  }
  t.equal(JSON.stringify('\udcff'), '"\\udcff"', 'JSON writes an escaped byte as \\udcNN');
});

t.test('fuzz: any bytes, any chunking, round trip exactly', async (t) => {
  const rand = prng(20240611);
  let cases = 0;
  for (let n = 0; n < 300; n++) {
    const len = Math.floor(rand() * 64);
    // Bias towards UTF-8 structure so lead/continuation edge cases are common.
    const pool = [0x41, 0x80, 0x9f, 0xa0, 0xbf, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff];
    const buf = Buffer.from(Array.from({ length: len }, () => (rand() < 0.5 ? pool[Math.floor(rand() * pool.length)]! : Math.floor(rand() * 256))));
    const chunks: Buffer[] = [];
    for (let off = 0; off < buf.length; ) {
      const size = 1 + Math.floor(rand() * 5);
      chunks.push(buf.subarray(off, off + size));
      off += size;
    }
    const decoded = decodeChunks(chunks);
    if (!encodeEventData(decoded).equals(buf)) t.fail(`round trip failed for ${buf.toString('hex')}`);
    if (decoded !== decodeChunks([buf])) t.fail(`chunking changed the text for ${buf.toString('hex')}`);
    cases += 1;
  }
  t.equal(cases, 300);
});

t.test('writer: header, event lines, monotonic times, end marker', async (t) => {
  const { stream, text } = collect();
  const w = new AsciicastWriter(stream, { width: 80, height: 24, timestamp: 1700000000, env: { TERM: 'xterm-256color', SHELL: '/bin/bash' }, title: 'prod-1 shell' });
  w.output(Buffer.from('hello '));
  w.output(MULTI.subarray(0, 4)); // ends inside the euro sign
  w.output(MULTI.subarray(4));
  w.resize(100, 30);
  w.input(Buffer.from('secret\r')); // recordInput is off by default
  await w.end({ complete: true });
  const lines = text().split('\n');
  t.equal(lines.pop(), '', 'every line ends with a newline');
  t.same(JSON.parse(lines[0]!), { version: 2, width: 80, height: 24, timestamp: 1700000000, env: { TERM: 'xterm-256color', SHELL: '/bin/bash' }, title: 'prod-1 shell' });
  const events = lines.slice(1).map((l) => {
    t.match(l, /^\[\d+\.\d{6}, "[oirm]", ".*"\]$/, 'event line format');
    return JSON.parse(l) as [number, string, string];
  });
  t.same(events.map((e) => [e[1], e[2]]), [
    ['o', 'hello '],
    ['o', 'a\u00e9'],
    ['o', '\u20ac\u{1F600}\u{10080}z'],
    ['r', '100x30'],
    ['m', `${END_MARKER_PREFIX}{"complete":true}`],
  ]);
  for (let i = 1; i < events.length; i++) t.ok(events[i]![0] >= events[i - 1]![0], 'time never goes back');
  t.notMatch(text(), /secret/, 'input is not recorded unless asked');
});

t.test('writer: input recorded on request; carried bytes flushed at end; big chunks split', async (t) => {
  const { stream, text } = collect();
  const w = new AsciicastWriter(stream, { width: 80, height: 24 }, { recordInput: true, maxEventBytes: 8 });
  w.input(Buffer.from('ls\r'));
  w.output(Buffer.from('0123456789abcdefXYZ'));
  w.output(Buffer.from([0xe2, 0x82])); // never completed
  await w.end({ complete: false, reason: 'tunnel closed' });
  const events = text().trim().split('\n').slice(1).map((l) => JSON.parse(l) as [number, string, string]);
  t.same(events.map((e) => [e[1], e[2]]), [
    ['i', 'ls\r'],
    ['o', '01234567'],
    ['o', '89abcdef'],
    ['o', 'XYZ'],
    ['o', '\udce2\udc82'],
    ['m', `${END_MARKER_PREFIX}{"complete":false,"reason":"tunnel closed"}`],
  ]);
  t.same(parseEndMarker(events.at(-1)![2]), { complete: false, reason: 'tunnel closed' });
  t.equal(JSON.parse(text().split('\n')[0]!).timestamp > 1_600_000_000, true, 'timestamp defaults to now');
});

t.test('writer: misuse is refused with codes', async (t) => {
  const { stream } = collect();
  t.throws(() => new AsciicastWriter(stream, { width: 0, height: 24 }), { code: 'UPLINK_ERR_PTY_SIZE_INVALID' });
  t.throws(() => new AsciicastWriter(stream, { width: 80, height: 24 }, { recordinput: true } as never), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  const w = new AsciicastWriter(stream, { width: 80, height: 24 });
  t.throws(() => w.resize(1001, 5), { code: 'UPLINK_ERR_PTY_SIZE_INVALID' });
  const first = w.end({ complete: true });
  t.equal(w.end({ complete: false, reason: 'again' }), first, 'end() is idempotent');
  await first;
  t.throws(() => w.output(Buffer.from('late')), { code: 'UPLINK_ERR_RECORDING_WRITE' });
  t.throws(() => w.resize(80, 24), { code: 'UPLINK_ERR_RECORDING_WRITE' });
});

t.test('writer: a failing destination makes end() reject, never the session', async (t) => {
  const failing = new Writable({
    write(_chunk, _enc, cb) {
      cb(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }));
    },
  });
  const w = new AsciicastWriter(failing, { width: 80, height: 24 });
  t.doesNotThrow(() => w.output(Buffer.from('x')), 'the session keeps running');
  await t.rejects(w.end({ complete: true }), { code: 'UPLINK_ERR_RECORDING_WRITE' });
  t.equal((w.error as NodeJS.ErrnoException).code, 'ENOSPC');
});

t.test('writer: toFile creates the file, and refuses to overwrite one', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'uplink-cast-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'session.cast');
  const w = AsciicastWriter.toFile(file, { width: 80, height: 24, timestamp: 1 });
  w.output(Buffer.from([0x68, 0x69, 0xff]));
  await w.end({ complete: true });
  const lines = readFileSync(file, 'utf8').trim().split('\n');
  t.equal(lines[0], '{"version":2,"width":80,"height":24,"timestamp":1}');
  t.match(lines[1]!, /^\[\d+\.\d{6}, "o", "hi\\udcff"\]$/);
  t.equal(lines.length, 3);

  const existing = path.join(dir, 'existing.cast');
  writeFileSync(existing, 'keep me');
  const clash = AsciicastWriter.toFile(existing, { width: 80, height: 24 });
  await t.rejects(clash.end({ complete: true }), { code: 'UPLINK_ERR_RECORDING_WRITE' });
  t.equal(readFileSync(existing, 'utf8'), 'keep me');
});

t.test('parseEndMarker accepts only the documented shape', async (t) => {
  t.same(parseEndMarker(`${END_MARKER_PREFIX}{"complete":true}`), { complete: true });
  t.equal(parseEndMarker('chapter 1'), undefined);
  t.equal(parseEndMarker(`${END_MARKER_PREFIX}{"complete":"yes"}`), undefined);
  t.equal(parseEndMarker(`${END_MARKER_PREFIX}{"complete":true,"extra":1}`), undefined);
  t.equal(parseEndMarker(`${END_MARKER_PREFIX}{`), undefined);
});
