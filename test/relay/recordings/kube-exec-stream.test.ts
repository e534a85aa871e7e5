/**
 * KubeExecStream (relay/recordings/kube-exec-stream.ts): the WebSocket remote-command bytes
 * of a `kubectl exec` turned into terminal events, fed the way the relay sees them (chunks
 * cut anywhere), and every case it must refuse to read named as the recording's reason.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { KubeExecStream, exitCodeFromStatus, isKubeTerminalPath } from '../../../relay/recordings/kube-exec-stream.js';

type Ev = [string, ...unknown[]];

function stream(maxMessageBytes = 1024 * 1024): { s: KubeExecStream; events: Ev[] } {
  const events: Ev[] = [];
  const s = new KubeExecStream(
    {
      output: (b) => events.push(['o', b.toString('utf8')]),
      input: (b) => events.push(['i', b.toString('utf8')]),
      resize: (c, r) => events.push(['r', c, r]),
      exit: (code) => events.push(['exit', code]),
      broken: (reason) => events.push(['broken', reason]),
    },
    maxMessageBytes,
  );
  return { s, events };
}

/** One WebSocket frame; masked as a client must send, unmasked as a server does. */
function wsFrame(payload: Buffer, opts: { opcode?: number; fin?: boolean; masked?: boolean } = {}): Buffer {
  const { opcode = 2, fin = true, masked = false } = opts;
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0, len]) : len < 65_536 ? Buffer.alloc(4) : Buffer.alloc(10);
  if (len >= 65_536) {
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(len), 2);
  } else if (len >= 126) {
    head[1] = 126;
    head.writeUInt16BE(len, 2);
  }
  head[0] = (fin ? 0x80 : 0) | opcode;
  if (!masked) return Buffer.concat([head, payload]);
  head[1]! |= 0x80;
  const key = randomBytes(4);
  const body = Buffer.from(payload.map((b, i) => b ^ key[i & 3]!));
  return Buffer.concat([head, key, body]);
}

const msg = (channel: number, data: string | Buffer): Buffer => Buffer.concat([Buffer.from([channel]), Buffer.from(data)]);
const V5 = { upgrade: 'websocket', 'sec-websocket-protocol': 'v5.channel.k8s.io' };

/** Feed `bytes` in pieces of `size`, as TCP may cut them. */
function inPieces(feed: (b: Buffer) => void, bytes: Buffer, size: number): void {
  for (let at = 0; at < bytes.length; at += size) feed(bytes.subarray(at, at + size));
}

t.test('terminal paths: exec and attach, not port-forward', async (t) => {
  t.ok(isKubeTerminalPath('/api/v1/namespaces/default/pods/web-1/exec?command=sh&stdin=true&tty=true'));
  t.ok(isKubeTerminalPath('/api/v1/namespaces/x/pods/y/attach'));
  t.notOk(isKubeTerminalPath('/api/v1/namespaces/default/pods/web-1/portforward'));
  t.notOk(isKubeTerminalPath('/api/v1/namespaces/default/pods/web-1/log'));
  t.notOk(isKubeTerminalPath('/api/v1/namespaces/default/pods/web-1/execx'));
});

t.test('exit codes from the Status on the error channel', async (t) => {
  t.equal(exitCodeFromStatus('{"metadata":{},"status":"Success"}'), 0);
  t.equal(exitCodeFromStatus(JSON.stringify({ status: 'Failure', reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: '3' }] } })), 3);
  t.equal(exitCodeFromStatus(JSON.stringify({ status: 'Failure', reason: 'InternalError', message: 'exec: "x": executable file not found' })), null);
  t.equal(exitCodeFromStatus(JSON.stringify({ status: 'Failure', reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: '999' }] } })), null);
  t.equal(exitCodeFromStatus('not json'), null);
});

t.test('a v5 session, cut into 3-byte pieces: output, input, resize, exit', async (t) => {
  const { s, events } = stream();
  s.response(101, V5);
  // kubectl: the terminal size, two keystrokes (one message in two fragments), v5 close of stdin.
  const fromClient = Buffer.concat([
    wsFrame(msg(4, '{"Width":120,"Height":40}'), { masked: true }),
    wsFrame(msg(0, 'l'), { masked: true, fin: false }),
    wsFrame(Buffer.from('s\r'), { masked: true, opcode: 0 }),
    wsFrame(Buffer.from([1, 2]), { masked: true, opcode: 9 }), // a ping in the middle is skipped
    wsFrame(Buffer.from([255, 0]), { masked: true }),
  ]);
  inPieces((b) => s.client(b), fromClient, 3);
  // The API server: stdout, stderr, non-UTF-8 bytes, the Status, then its close frame.
  const fromServer = Buffer.concat([
    wsFrame(msg(1, 'a.txt\r\n')),
    wsFrame(msg(2, 'warn\r\n')),
    wsFrame(msg(1, '')), // v4/v5 servers may open a channel with an empty message
    wsFrame(msg(3, JSON.stringify({ status: 'Failure', reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: '2' }] } }))),
    wsFrame(Buffer.from([0x03, 0xe8]), { opcode: 8 }),
  ]);
  inPieces((b) => s.server(b), fromServer, 3);
  t.same(events, [['r', 120, 40], ['i', 'ls\r'], ['o', 'a.txt\r\n'], ['o', 'warn\r\n'], ['exit', 2]]);
});

t.test('large messages with 16- and 64-bit lengths arrive whole', async (t) => {
  const { s, events } = stream();
  s.response(101, { Upgrade: 'websocket', 'Sec-WebSocket-Protocol': 'v4.channel.k8s.io' } as never);
  const mid = 'm'.repeat(300);
  const big = 'b'.repeat(70_000);
  inPieces((b) => s.server(b), Buffer.concat([wsFrame(msg(1, mid)), wsFrame(msg(1, big))]), 4096);
  t.same(events.map(([type, d]) => [type, (d as string).length]), [['o', 300], ['o', 70_000]]);
});

t.test('a large message in many small chunks is joined once, not once per chunk', async (t) => {
  const { s, events } = stream(8 * 1024 * 1024);
  s.response(101, V5 as never);
  const payload = randomBytes(4 * 1024 * 1024);
  const bytes = Buffer.concat([wsFrame(msg(1, payload)), wsFrame(msg(1, 'after'))]);
  const concat = Buffer.concat;
  let joined = 0;
  let joinedBytes = 0;
  Buffer.concat = ((list: readonly Uint8Array[], total?: number) => {
    joined++;
    const out = concat(list, total);
    joinedBytes += out.length;
    return out;
  }) as typeof Buffer.concat;
  try {
    inPieces((b) => s.server(b), bytes, 1024);
  } finally {
    Buffer.concat = concat;
  }
  t.equal(events.length, 2);
  t.equal(events[0]![0], 'o');
  t.equal(events[0]![1] as string, payload.toString('utf8'), 'the payload, whole');
  t.same(events[1], ['o', 'after']);
  // 4 MiB in 1 KiB chunks: a join per chunk would copy ~8 GiB; here the message is joined
  // once, and the bytes of the header and the short frame after it a few times more.
  t.ok(joined <= 4, `${joined} joins`);
  t.ok(joinedBytes < 2 * bytes.length, `${joinedBytes} bytes joined for a ${bytes.length}-byte stream`);
});

t.test('what cannot be read is named, once, and nothing after it is used', async (t) => {
  const cases: Array<[string, (s: KubeExecStream) => void, string]> = [
    ['refused upgrade', (s) => s.response(404, {}), 'the API server refused the session (HTTP 404)'],
    ['SPDY', (s) => s.response(101, { upgrade: 'SPDY/3.1' }), 'the session uses spdy/3.1, which recordings do not decode (kubectl 1.30+ uses WebSocket)'],
    ['old subprotocol', (s) => s.response(101, { upgrade: 'websocket', 'sec-websocket-protocol': 'channel.k8s.io' }), 'the session uses the subprotocol "channel.k8s.io", which recordings do not decode (v4/v5.channel.k8s.io only)'],
    ['bytes before the 101', (s) => s.server(wsFrame(msg(1, 'x'))), 'upgraded bytes arrived before the API server answered'],
    ['stray continuation', (s) => { s.response(101, V5); s.server(wsFrame(Buffer.from('x'), { opcode: 0 })); }, 'unreadable frames from the API server: a WebSocket continuation frame without a first fragment'],
    ['oversized', (s) => { s.response(101, V5); s.client(wsFrame(msg(0, 'x'.repeat(100)), { masked: true })); }, 'unreadable frames from kubectl: a WebSocket frame of 101 bytes exceeds 64'],
  ];
  for (const [what, run, reason] of cases) {
    const { s, events } = stream(64);
    run(s);
    s.server(wsFrame(msg(1, 'after')));
    s.client(wsFrame(msg(0, 'after'), { masked: true }));
    t.same(events, [['broken', reason]], what);
  }
});
