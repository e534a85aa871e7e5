/**
 * The API server's end of `kubectl port-forward`, for the test kube API server.
 *
 * What kubectl 1.32 sends (client-go's fallback dialer, seen with `-v=6`): first a
 * WebSocket upgrade offering the single subprotocol `SPDY/3.1+portforward.k8s.io`, whose
 * binary messages carry a SPDY/3.1 byte stream; only when that upgrade fails, a plain
 * `Upgrade: SPDY/3.1` POST. Either way the port-forward protocol is SPDY streams, so this
 * file speaks SPDY/3.1 framing, and the test server accepts the WebSocket tunnel (the first
 * and current route) and nothing else.
 *
 * The streams (k8s.io/api/core/v1 port-forward constants): per forwarded connection kubectl
 * opens an `error` stream and a `data` stream with headers streamtype, port and requestid.
 * Each gets a SYN_REPLY. Data-stream bytes go to a TCP connection to the "container" port
 * (a loopback port the test chose), and back; the destination's FIN becomes a FIN on the
 * data stream, then the error stream ends empty (kubectl waits for it). A refused dial is
 * reported as text on the error stream, as the kubelet does. PING is answered; SETTINGS and
 * WINDOW_UPDATE are ignored (kubectl's spdystream does not do flow control).
 *
 * Header blocks are zlib-compressed with the SPDY/3 dictionary, one compression context per
 * direction for the whole connection; the dictionary is built below from its definition
 * (length-prefixed header names, then a run of common values).
 */
import { connect, type Socket } from 'node:net';
import { constants as zc, createDeflate, createInflate, type Deflate, type Inflate } from 'node:zlib';

export const PORTFORWARD_TUNNEL_PROTOCOL = 'SPDY/3.1+portforward.k8s.io';

const DICTIONARY_WORDS = [
  'options', 'head', 'post', 'put', 'delete', 'trace', 'accept', 'accept-charset', 'accept-encoding', 'accept-language',
  'accept-ranges', 'age', 'allow', 'authorization', 'cache-control', 'connection', 'content-base', 'content-encoding',
  'content-language', 'content-length', 'content-location', 'content-md5', 'content-range', 'content-type', 'date', 'etag',
  'expect', 'expires', 'from', 'host', 'if-match', 'if-modified-since', 'if-none-match', 'if-range', 'if-unmodified-since',
  'last-modified', 'location', 'max-forwards', 'pragma', 'proxy-authenticate', 'proxy-authorization', 'range', 'referer',
  'retry-after', 'server', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'user-agent', 'vary', 'via', 'warning',
  'www-authenticate', 'method', 'get', 'status', '200 OK', 'version', 'HTTP/1.1', 'url', 'public', 'set-cookie', 'keep-alive', 'origin',
];
const DICTIONARY_TAIL =
  '100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505' +
  '203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized' +
  '403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable' +
  'Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT' +
  'chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,' +
  'text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.';

/** The SPDY/3 header compression dictionary (1423 bytes, zlib dictionary id 0xe3c6a7c2). */
export const SPDY_DICTIONARY: Buffer = Buffer.concat([
  ...DICTIONARY_WORDS.flatMap((w) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(w.length);
    return [len, Buffer.from(w, 'latin1')];
  }),
  Buffer.from(DICTIONARY_TAIL, 'latin1'),
]);

const FRAME = { synStream: 1, synReply: 2, rstStream: 3, settings: 4, ping: 6, goaway: 7, headers: 8, windowUpdate: 9 } as const;
const FLAG_FIN = 0x01;
const MAX_DATA_FRAME = 16 * 1024;

type Frame = { control: true; type: number; flags: number; data: Buffer } | { control: false; streamId: number; flags: number; data: Buffer };

/** Run a zlib stream one SYNC_FLUSH block at a time, keeping its context between blocks. */
async function zlibBlock(z: Inflate | Deflate, input: Buffer): Promise<Buffer> {
  z.write(input);
  await new Promise<void>((resolve) => z.flush(zc.Z_SYNC_FLUSH, () => resolve()));
  const out: Buffer[] = [];
  for (let chunk = z.read() as Buffer | null; chunk !== null; chunk = z.read() as Buffer | null) out.push(chunk);
  return Buffer.concat(out);
}

function parseHeaderBlock(block: Buffer): Map<string, string> {
  const headers = new Map<string, string>();
  let at = 0;
  const u32 = (): number => {
    const v = block.readUInt32BE(at);
    at += 4;
    return v;
  };
  const str = (): string => {
    const n = u32();
    const s = block.toString('utf8', at, at + n);
    at += n;
    return s;
  };
  for (let pairs = u32(); pairs > 0; pairs--) headers.set(str().toLowerCase(), str());
  return headers;
}

function controlFrame(type: number, flags: number, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt16BE(0x8000 | 3, 0);
  head.writeUInt16BE(type, 2);
  head.writeUInt32BE(data.length, 4);
  head[4] = flags;
  return Buffer.concat([head, data]);
}

function dataFrame(streamId: number, flags: number, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(streamId & 0x7fffffff, 0);
  head.writeUInt32BE(data.length, 4);
  head[4] = flags;
  return Buffer.concat([head, data]);
}

interface Forward {
  errorStream?: number;
  dataStream?: number;
  socket?: Socket;
  port: number;
  errorSent: boolean;
}

/** Where a forwarded pod port really goes: a loopback port, or undefined when nothing listens there. */
export type PortDialer = (port: number) => number | undefined;

/**
 * One port-forward connection (one WebSocket tunnel). `send` writes SPDY bytes to kubectl;
 * feed what kubectl sent to `receive`. `shutdown` is the pod going away.
 */
export class SpdyPortForwardSession {
  private buf: Buffer = Buffer.alloc(0);
  private queue: Promise<void> = Promise.resolve();
  private readonly inflate = createInflate({ dictionary: SPDY_DICTIONARY });
  private readonly deflate = createDeflate({ dictionary: SPDY_DICTIONARY });
  private readonly forwards = new Map<string, Forward>();
  private readonly streams = new Map<number, { requestId: string; type: string }>();
  private closed = false;

  constructor(
    private readonly podPorts: PortDialer,
    private readonly send: (bytes: Buffer) => void,
    private readonly onProtocolError: (reason: string) => void,
  ) {}

  receive(chunk: Buffer): void {
    if (this.closed) return;
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      if (this.buf.length < 8) return;
      const len = this.buf.readUInt32BE(4) & 0xffffff;
      if (this.buf.length < 8 + len) return;
      const b = this.buf;
      const data = Buffer.from(b.subarray(8, 8 + len));
      const frame: Frame = (b[0]! & 0x80) !== 0
        ? { control: true, type: b.readUInt16BE(2), flags: b[4]!, data }
        : { control: false, streamId: b.readUInt32BE(0) & 0x7fffffff, flags: b[4]!, data };
      this.buf = b.subarray(8 + len);
      // In order: a SYN_STREAM's headers must be inflated before that stream's data is handled.
      this.queue = this.queue.then(() => this.handle(frame)).catch((err: unknown) => this.fail(String(err)));
    }
  }

  /** The pod went away: tell kubectl (GOAWAY) and drop every forwarded connection. */
  shutdown(): void {
    if (this.closed) return;
    const goaway = Buffer.alloc(8);
    this.send(controlFrame(FRAME.goaway, 0, goaway));
    this.close();
  }

  /** The tunnel closed: drop everything. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const f of this.forwards.values()) f.socket?.destroy();
    this.inflate.close();
    this.deflate.close();
  }

  private fail(reason: string): void {
    this.close();
    this.onProtocolError(reason);
  }

  private async handle(frame: Frame): Promise<void> {
    if (this.closed) return;
    if (!frame.control) return this.onData(frame.streamId, frame.flags, frame.data);
    switch (frame.type) {
      case FRAME.synStream:
        return this.onSynStream(frame.data);
      case FRAME.rstStream: {
        const s = this.streams.get(frame.data.readUInt32BE(0) & 0x7fffffff);
        if (s) this.forwards.get(s.requestId)?.socket?.destroy();
        return undefined;
      }
      case FRAME.ping:
        return void this.send(controlFrame(FRAME.ping, 0, frame.data));
      case FRAME.goaway:
        return this.close();
      default:
        return undefined; // SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do here
    }
  }

  private async onSynStream(data: Buffer): Promise<void> {
    const streamId = data.readUInt32BE(0) & 0x7fffffff;
    const headers = parseHeaderBlock(await zlibBlock(this.inflate, data.subarray(10)));
    const type = headers.get('streamtype') ?? '';
    const requestId = headers.get('requestid') ?? '';
    const port = Number(headers.get('port'));
    if ((type !== 'error' && type !== 'data') || !Number.isInteger(port)) throw new Error(`unexpected port-forward stream headers ${JSON.stringify([...headers])}`);
    const reply = Buffer.alloc(4);
    reply.writeUInt32BE(streamId);
    // An empty header block still goes through this direction's compression context.
    this.send(controlFrame(FRAME.synReply, 0, Buffer.concat([reply, await zlibBlock(this.deflate, Buffer.alloc(4))])));
    this.streams.set(streamId, { requestId, type });
    const f = this.forwards.get(requestId) ?? { port, errorSent: false };
    this.forwards.set(requestId, f);
    if (type === 'error') f.errorStream = streamId;
    else {
      f.dataStream = streamId;
      this.dial(f);
    }
  }

  private dial(f: Forward): void {
    const target = this.podPorts(f.port);
    if (target === undefined) return this.refuse(f, `error forwarding port ${f.port} to pod: nothing listens on port ${f.port} in this test pod`);
    const socket = connect({ host: '127.0.0.1', port: target, allowHalfOpen: true });
    f.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      for (let at = 0; at < chunk.length; at += MAX_DATA_FRAME) this.sendData(f.dataStream!, 0, chunk.subarray(at, at + MAX_DATA_FRAME));
    });
    socket.on('end', () => this.sendData(f.dataStream!, FLAG_FIN, Buffer.alloc(0)));
    socket.on('error', (err: NodeJS.ErrnoException) => this.refuse(f, `error forwarding port ${f.port} to pod: ${err.code ?? err.message}`));
    // The connection is over: kubectl waits for the error stream to end before it lets go.
    socket.on('close', () => this.endError(f, ''));
  }

  private refuse(f: Forward, message: string): void {
    this.endError(f, message);
    if (f.dataStream !== undefined) this.sendData(f.dataStream, FLAG_FIN, Buffer.alloc(0));
  }

  private endError(f: Forward, message: string): void {
    if (f.errorSent || f.errorStream === undefined) return;
    f.errorSent = true;
    this.sendData(f.errorStream, FLAG_FIN, Buffer.from(message, 'utf8'));
  }

  private onData(streamId: number, flags: number, data: Buffer): void {
    const s = this.streams.get(streamId);
    if (!s || s.type !== 'data') return; // kubectl writes nothing on the error stream but its FIN
    const socket = this.forwards.get(s.requestId)?.socket;
    if (!socket || socket.destroyed) return;
    if (data.length) socket.write(data);
    if (flags & FLAG_FIN) socket.end();
  }

  private sendData(streamId: number, flags: number, data: Buffer): void {
    if (!this.closed) this.send(dataFrame(streamId, flags, data));
  }
}
