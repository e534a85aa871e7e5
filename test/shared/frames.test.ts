import t from 'tap';
import { CHANNEL, FrameDecoder, encodeControl, encodeFrame, parseControl, type Frame } from '../../shared/frames.js';

function decode(chunks: Buffer[], maxFrameBytes?: number): Promise<{ frames: Frame[]; error?: { code?: string } }> {
  return new Promise((resolve) => {
    const d = new FrameDecoder(maxFrameBytes ? { maxFrameBytes } : {});
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
