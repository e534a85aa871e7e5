/**
 * Traffic for the network benchmarks: one TCP target server and the clients that measure
 * through it, the same code for every path (direct, `ssh -L`, `uplink forward`).
 *
 * The target reads a 9-byte request: a mode byte and a big-endian u64 length.
 *   'd' LEN  the server sends LEN bytes (2^64-1: until the client goes away), then ends;
 *   'u' LEN  the server reads LEN bytes, then answers one byte 'k';
 *   'e' 0    every following byte is echoed.
 *
 * Run as a script (`node --import tsx traffic.ts load TARGET_PORT CONNECT_PORT STREAMS`) it is
 * the load generator of the shell benchmark: a target on TARGET_PORT and STREAMS endless
 * downloads from CONNECT_PORT, printing `{"bytes":N}` lines twice a second, until SIGTERM.
 */
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { pathToFileURL } from 'node:url';

const CHUNK = Buffer.alloc(1 << 20, 0x5a);
export const FOREVER = 0xffff_ffff_ffff_ffffn;

function request(mode: 'd' | 'u' | 'e', len: bigint): Buffer {
  const b = Buffer.alloc(9);
  b.write(mode, 0, 'latin1');
  b.writeBigUInt64BE(len, 1);
  return b;
}

/** Write `len` bytes (FOREVER: until the socket closes) honouring backpressure; then `after`. */
function pump(sock: Socket, len: bigint, after: () => void): void {
  let left = len;
  const go = (): void => {
    while (left > 0n && !sock.destroyed) {
      const n = left >= BigInt(CHUNK.length) ? CHUNK.length : Number(left);
      if (len !== FOREVER) left -= BigInt(n);
      if (!sock.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) {
        sock.once('drain', go);
        return;
      }
    }
    if (left === 0n) after();
  };
  go();
}

function serve(sock: Socket): void {
  sock.setNoDelay(true);
  sock.on('error', () => {});
  let head = Buffer.alloc(0);
  const onHead = (d: Buffer): void => {
    head = Buffer.concat([head, d]);
    if (head.length < 9) return;
    sock.off('data', onHead);
    const mode = String.fromCharCode(head[0]!);
    const len = head.readBigUInt64BE(1);
    const rest = head.subarray(9);
    if (mode === 'd') {
      pump(sock, len, () => sock.end());
    } else if (mode === 'u') {
      let got = BigInt(rest.length);
      const check = (): void => {
        if (got >= len) {
          sock.off('data', onData);
          sock.end('k');
        }
      };
      const onData = (c: Buffer): void => {
        got += BigInt(c.length);
        check();
      };
      sock.on('data', onData);
      check();
    } else if (mode === 'e') {
      if (rest.length) sock.write(rest);
      sock.on('data', (c: Buffer) => sock.write(c));
    } else sock.destroy();
  };
  sock.on('data', onHead);
}

export async function startTarget(port = 0): Promise<{ port: number; close(): Promise<void> }> {
  const live = new Set<Socket>();
  const server: Server = createServer({ noDelay: true }, (s) => {
    live.add(s);
    s.once('close', () => live.delete(s));
    serve(s);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        for (const s of live) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, noDelay: true });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

const closed = (s: Socket): Promise<void> => new Promise((r) => (s.destroyed ? r() : s.once('close', () => r())));

/** Milliseconds from connecting to the last of `bytes` downloaded bytes. */
export async function download(port: number, bytes: number): Promise<number> {
  const t0 = performance.now();
  const s = await open(port);
  let got = 0;
  const ms = await new Promise<number>((resolve, reject) => {
    s.on('data', (c: Buffer) => {
      got += c.length;
      if (got >= bytes) resolve(performance.now() - t0);
    });
    s.once('error', reject);
    s.once('close', () => reject(new Error(`download: connection closed after ${got} of ${bytes} bytes`)));
    s.write(request('d', BigInt(bytes)));
  });
  s.destroy();
  await closed(s);
  return ms;
}

/** Milliseconds from connecting to the server's acknowledgement of `bytes` uploaded bytes. */
export async function upload(port: number, bytes: number): Promise<number> {
  const t0 = performance.now();
  const s = await open(port);
  const ms = await new Promise<number>((resolve, reject) => {
    s.once('data', () => resolve(performance.now() - t0));
    s.once('error', reject);
    s.once('close', () => reject(new Error('upload: connection closed before the acknowledgement')));
    s.write(request('u', BigInt(bytes)));
    pump(s, BigInt(bytes), () => {});
  });
  s.destroy();
  await closed(s);
  return ms;
}

/**
 * `streams` endless downloads at once; after `warmMs`, the bytes each stream received in the
 * next `windowMs`. Returns per-stream bytes and the window's measured length in ms.
 */
export async function downloadWindow(port: number, streams: number, warmMs: number, windowMs: number): Promise<{ perStream: number[]; ms: number }> {
  const socks = await Promise.all(Array.from({ length: streams }, () => open(port)));
  const counts = socks.map(() => 0);
  socks.forEach((s, i) => {
    s.on('data', (c: Buffer) => (counts[i]! += c.length));
    s.on('error', () => {});
    s.write(request('d', FOREVER));
  });
  await new Promise((r) => setTimeout(r, warmMs));
  const start = [...counts];
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, windowMs));
  const perStream = counts.map((c, i) => c - start[i]!);
  const ms = performance.now() - t0;
  for (const s of socks) s.destroy();
  await Promise.all(socks.map(closed));
  if (socks.some((s, i) => perStream[i] === 0 && s.errored)) throw new Error('downloadWindow: a stream failed');
  return { perStream, ms };
}

/** Round trips of one byte through an echo, after `warmup` unmeasured ones; in ms. */
export async function pingPong(port: number, samples: number, warmup: number): Promise<number[]> {
  const s = await open(port);
  s.on('error', () => {});
  s.write(request('e', 0n));
  let waiting: (() => void) | undefined;
  s.on('data', () => {
    const w = waiting;
    waiting = undefined;
    w?.();
  });
  const one = () =>
    new Promise<number>((resolve) => {
      const t0 = performance.now();
      waiting = () => resolve(performance.now() - t0);
      s.write('x');
    });
  const out: number[] = [];
  for (let i = 0; i < warmup + samples; i++) {
    const ms = await one();
    if (i >= warmup) out.push(ms);
  }
  s.destroy();
  await closed(s);
  return out;
}

/** The load generator (see the header). */
async function loadMain(targetPort: number, connectPort: number, streams: number): Promise<void> {
  const target = await startTarget(targetPort);
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
  const socks = await Promise.all(Array.from({ length: streams }, () => open(connectPort)));
  let bytes = 0;
  for (const s of socks) {
    s.on('data', (c: Buffer) => (bytes += c.length));
    s.on('error', () => {});
    s.write(request('d', FOREVER));
  }
  setInterval(() => process.stdout.write(`${JSON.stringify({ bytes })}\n`), 500);
  process.once('SIGTERM', () => {
    for (const s of socks) s.destroy();
    void target.close().then(() => process.exit(0));
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href && process.argv[2] === 'load') {
  const [tp, cp, n] = process.argv.slice(3).map(Number);
  loadMain(tp!, cp!, n ?? 1).catch((err: Error) => {
    process.stderr.write(`load generator: ${err.stack ?? err.message}\n`);
    process.exit(1);
  });
}
