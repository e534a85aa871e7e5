import t from 'tap';
import { Writable } from 'node:stream';
import { CHANNEL, FrameDecoder, encodeControl, encodeFrame, frameHeader, parseControl, writeFrame, WRITE_UNCOPIED_FROM_BYTES, type Frame } from '../../shared/frames.js';

function decode(chunks: Buffer[], maxFrameBytes?: number, streamData = false): Promise<{ frames: Frame[]; error?: { code?: string; message?: string } }> {
  return new Promise((resolve) => {
    const d = new FrameDecoder({ ...(maxFrameBytes ? { maxFrameBytes } : {}), streamData });
    const frames: Frame[] = [];
    d.on('data', (f: Frame) => frames.push(f));
    d.on('error', (error) => resolve({ frames, error: error as { code?: string } }));
    d.on('end', () => resolve({ frames }));
    for (const c of chunks) d.write(c);
    d.end();
  });
}

t.test('encodeFrame lays out [channel][u32 BE length][payload]', async (t) => {
  t.same([...encodeFrame(CHANNEL.stderr, 'hi')], [2, 0, 0, 0, 2, 0x68, 0x69]);
  t.same([...encodeFrame(CHANNEL.stdin, Buffer.alloc(0))], [0, 0, 0, 0, 0]);
});

t.test('decoder reassembles frames split at every byte and several per chunk', async (t) => {
  const bytes = Buffer.concat([encodeFrame(1, 'out'), encodeFrame(2, 'err'), encodeFrame(0, ''), encodeControl({ type: 'eof' })]);
  const oneByOne = await decode([...bytes].map((b) => Buffer.from([b])));
  t.same(oneByOne.frames.map((f) => [f.channel, f.payload.toString()]), [[1, 'out'], [2, 'err'], [0, ''], [3, '{"type":"eof"}']]);
  const whole = await decode([bytes]);
  t.equal(whole.frames.length, 4);
  t.equal(whole.error, undefined);
});

t.test('oversized declared length is refused before the payload arrives', async (t) => {
  const head = Buffer.from([1, 0, 0, 0x10, 0x01]); // 4097 bytes declared
  const r = await decode([head], 4096);
  t.equal(r.error?.code, 'UPLINK_ERR_PAYLOAD_TOO_LARGE');
  t.same(r.frames, []);
  const huge = await decode([Buffer.from([1, 0xff, 0xff, 0xff, 0xff])]);
  t.equal(huge.error?.code, 'UPLINK_ERR_PAYLOAD_TOO_LARGE');
  const exact = await decode([encodeFrame(1, Buffer.alloc(4096, 7))], 4096);
  t.equal(exact.frames[0]?.payload.length, 4096);
});

t.test('garbage: unknown channel and a stream ending inside a frame', async (t) => {
  const r = await decode([Buffer.from([9, 0, 0, 0, 1, 0])]);
  t.equal(r.error?.code, 'UPLINK_ERR_BAD_REQUEST');
  const cut = await decode([encodeFrame(1, 'abcdef').subarray(0, 8)]);
  t.equal(cut.error?.code, 'UPLINK_ERR_BAD_REQUEST');
  const headOnly = await decode([Buffer.from([1, 0])]);
  t.equal(headOnly.error?.code, 'UPLINK_ERR_BAD_REQUEST');
});

t.test('streamData: a data frame split across chunks passes on piece by piece, uncopied', async (t) => {
  const payload = Buffer.from('0123456789abcdefghij');
  // Its own memory (Buffer.alloc does not use the shared pool), so a copy cannot share it.
  const wire = Buffer.concat([encodeFrame(CHANNEL.stdout, payload), encodeFrame(CHANNEL.stdin, 'next')]);
  const bytes = Buffer.alloc(wire.length);
  wire.copy(bytes);
  // Cut: header + 3 bytes | 7 bytes | 10 payload bytes and the whole next frame.
  const chunks = [bytes.subarray(0, 8), bytes.subarray(8, 15), bytes.subarray(15)];
  const r = await decode(chunks, undefined, true);
  t.equal(r.error, undefined);
  t.same(r.frames.map((f) => [f.channel, f.payload.toString()]), [[1, '012'], [1, '3456789'], [1, 'abcdefghij'], [0, 'next']]);
  t.ok(r.frames.slice(0, 3).every((f) => f.payload.buffer === bytes.buffer), 'pieces are views of the received chunks');
  // The same bytes one at a time give the same payload, in one-byte pieces.
  const oneByOne = await decode([...bytes].map((b) => Buffer.from([b])), undefined, true);
  t.equal(Buffer.concat(oneByOne.frames.filter((f) => f.channel === 1).map((f) => f.payload)).toString(), payload.toString());
  t.equal(Buffer.concat(oneByOne.frames.filter((f) => f.channel === 0).map((f) => f.payload)).toString(), 'next');
  t.equal(oneByOne.frames.length, payload.length + 4, 'one piece per byte');
});

t.test('streamData: control frames still arrive whole, empty frames stay frames, limits and cuts still count', async (t) => {
  const control = encodeControl({ type: 'exit', code: 3, signal: null });
  const r = await decode([control.subarray(0, 7), control.subarray(7, 12), control.subarray(12), encodeFrame(CHANNEL.stderr, '')], undefined, true);
  t.same(r.frames.map((f) => [f.channel, f.payload.toString()]), [[3, '{"type":"exit","code":3,"signal":null}'], [2, '']]);
  const big = await decode([Buffer.from([1, 0, 0, 0x10, 0x01]), Buffer.alloc(100)], 4096, true);
  t.equal(big.error?.code, 'UPLINK_ERR_PAYLOAD_TOO_LARGE', 'the declared length is checked before anything passes');
  t.same(big.frames, []);
  const cut = await decode([encodeFrame(CHANNEL.stdout, 'abcdef').subarray(0, 8)], undefined, true);
  t.same(cut.frames.map((f) => f.payload.toString()), ['abc'], 'what arrived passed on');
  t.equal(cut.error?.code, 'UPLINK_ERR_BAD_REQUEST');
  t.match(cut.error?.message, /ended inside a frame \(3 bytes of it missing\)/);
});

t.test('writeFrame: a large payload goes beside its header in one writev, uncopied; a small one in one buffer', async (t) => {
  const writes: Buffer[][] = [];
  const out = new Writable({
    highWaterMark: 1024 * 1024,
    writev(chunks, cb) {
      writes.push(chunks.map((c) => c.chunk as Buffer));
      cb();
    },
    write(chunk: Buffer, _enc, cb) {
      writes.push([chunk]);
      cb();
    },
  });
  const payload = Buffer.alloc(WRITE_UNCOPIED_FROM_BYTES, 0x61);
  t.equal(writeFrame(out, CHANNEL.stdout, payload), true);
  t.equal(writes.length, 1);
  t.equal(writes[0]!.length, 2, 'header and payload together');
  t.same([...writes[0]![0]!], [...frameHeader(CHANNEL.stdout, WRITE_UNCOPIED_FROM_BYTES)]);
  t.same([...frameHeader(CHANNEL.stdout, 7)], [1, 0, 0, 0, 7]);
  t.equal(writes[0]![1], payload, 'not copied');
  t.equal(writeFrame(out, CHANNEL.stdin, Buffer.from('key')), true);
  t.equal(writes.length, 2);
  t.same([...writes[1]![0]!], [...encodeFrame(CHANNEL.stdin, 'key')], 'a small frame is one buffer');
  const small = new Writable({ highWaterMark: 4, write: (_c, _e, cb) => setImmediate(cb) });
  t.equal(writeFrame(small, CHANNEL.stdin, Buffer.alloc(16)), false, 'push-back is reported');
  t.equal(writeFrame(small, CHANNEL.stdin, Buffer.alloc(WRITE_UNCOPIED_FROM_BYTES)), false, 'for a large frame too');
});

t.test('parseControl accepts the known messages and refuses the rest', async (t) => {
  const p = (v: unknown) => parseControl(Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)));
  t.same(p({ type: 'eof' }), { type: 'eof' });
  t.same(p({ type: 'signal', signal: 'SIGINT', extra: 1 }), { type: 'signal', signal: 'SIGINT' });
  t.same(p({ type: 'resize', cols: 80, rows: 24 }), { type: 'resize', cols: 80, rows: 24 });
  t.same(p({ type: 'exit', code: 3, signal: null }), { type: 'exit', code: 3, signal: null });
  t.same(p({ type: 'exit', code: 'x', signal: 'SIGKILL', reason: 'timeout' }), { type: 'exit', code: null, signal: 'SIGKILL', reason: 'timeout' });
  t.same(p({ type: 'error', code: 'C', message: 'm' }), { type: 'error', code: 'C', message: 'm' });
  for (const bad of ['not json', 'null', '[]', { type: 'signal' }, { type: 'resize', cols: 1.5, rows: 2 }, { type: 'error', code: 1 }, { type: 'launch' }]) {
    t.throws(() => p(bad), { code: 'UPLINK_ERR_BAD_REQUEST' }, JSON.stringify(bad));
  }
});
