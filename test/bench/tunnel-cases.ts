/**
 * The `tunnel` group: what carrying HTTP/2 inside a WebSocket costs, against HTTP/2 straight
 * on the same TLS connection, with uplink's own settings on both (H2_WINDOWS, the
 * shared/ws-stream.ts adapter, the zero mask over wss). One process holds both ends on
 * loopback, so the figure is the CPU both ends need per GiB, the cost the relay and the agent
 * share on a bulk forward. A server (the agent's side) sends BENCH_TUNNEL_MIB (256) on one
 * response stream to a client (the relay's side), then echoes 2,000 one-byte messages one at a
 * time on another; the two ways take turns, BENCH_TUNNEL_RUNS (5) each.
 *
 * This is a measurement for a design choice (docs/performance.md), not a path the product
 * has: the WebSocket is what lets agents through customers' proxies.
 */
import http2, { type ClientHttp2Session, type Http2Server } from 'node:http2';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { once } from 'node:events';
import { mkdirSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { WebSocket, WebSocketServer } from 'ws';
import { H2_WINDOWS } from '../../shared/protocol.js';
import { webSocketStream } from '../../shared/ws-stream.js';
import { clientMaskOptions } from '../../shared/ws-mask.js';
import { selfSignedCert } from '../helpers/tls.js';
import type { CaseResult } from './agents-cases.js';
import { envNumber } from './env.js';
import { cpuUsSince } from './proc.js';
import { figure, percentile } from './stats.js';

export interface TunnelOpts {
  runs: number;
  mib: number;
}

export function tunnelOptsFromEnv(): TunnelOpts {
  return { runs: envNumber('BENCH_TUNNEL_RUNS', 5), mib: envNumber('BENCH_TUNNEL_MIB', 256) };
}

const SETTINGS = { enablePush: false, initialWindowSize: H2_WINDOWS.streamBytes, maxFrameSize: H2_WINDOWS.maxFrameBytes };
const CHUNK = Buffer.alloc(64 * 1024, 0x42);
const PING_SAMPLES = 2000;

/** The agent's side: an HTTP/2 server that answers every request with `bytes` bytes. */
function bulkServer(bytes: number): Http2Server {
  const h2 = http2.createServer({ settings: { ...SETTINGS, maxConcurrentStreams: 100 } });
  h2.on('session', (s) => s.setLocalWindowSize(H2_WINDOWS.connectionBytes));
  h2.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200 });
    if (headers[':path'] === '/echo') {
      stream.on('data', (c: Buffer) => stream.write(c));
      stream.on('end', () => stream.end());
      return;
    }
    let left = bytes;
    const pump = (): void => {
      while (left > 0) {
        const piece = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
        left -= piece.length;
        if (!stream.write(piece)) return void stream.once('drain', pump);
      }
      stream.end();
    };
    pump();
  });
  return h2;
}

/** One download over `session`; resolves with the bytes received. */
function download(session: ClientHttp2Session): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':method': 'POST', ':path': '/bulk' }, { endStream: true });
    let got = 0;
    req.on('data', (c: Buffer) => (got += c.length));
    req.on('end', () => resolve(got));
    req.on('error', reject);
  });
}

/** `n` one-byte round trips on one stream; resolves with each round trip's time in ms and the CPU per round trip in µs. */
async function pingPong(session: ClientHttp2Session, n: number): Promise<{ lat: number[]; cpuUs: number }> {
  const req = session.request({ ':method': 'POST', ':path': '/echo' });
  const lat: number[] = [];
  const one = Buffer.from('x');
  let wake: (() => void) | undefined;
  req.on('data', () => wake?.());
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      wake = resolve;
      req.write(one);
    });
    lat.push(performance.now() - t0);
  }
  const cpuUs = cpuUsSince(c0);
  req.end();
  return { lat, cpuUs: cpuUs / n };
}

interface Way {
  session: ClientHttp2Session;
  close(): Promise<void>;
}

/** The session once connected, with the relay's connection window; close() ends it and its server. */
async function connected(session: ClientHttp2Session, server: { close(cb: () => void): unknown }, alsoClose: () => void = () => {}): Promise<Way> {
  await once(session, 'connect');
  session.setLocalWindowSize(H2_WINDOWS.connectionBytes);
  return {
    session,
    close: async () => {
      session.destroy();
      alsoClose();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

async function overWebSocket(h2: Http2Server, cert: Buffer, key: Buffer): Promise<Way> {
  const https: HttpsServer = createHttpsServer({ cert, key });
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  https.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => h2.emit('connection', webSocketStream(ws))));
  https.listen(0, '127.0.0.1');
  await once(https, 'listening');
  const url = `wss://127.0.0.1:${(https.address() as AddressInfo).port}/`;
  const ws = new WebSocket(url, { ca: cert, perMessageDeflate: false, ...clientMaskOptions(url) });
  await once(ws, 'open');
  const session = http2.connect('http://tunnel.invalid', { createConnection: () => webSocketStream(ws) as never, settings: SETTINGS });
  return connected(session, https, () => ws.terminate());
}

async function overTls(h2: Http2Server, cert: Buffer, key: Buffer): Promise<Way> {
  const tls: TlsServer = createTlsServer({ cert, key, ALPNProtocols: ['h2'] }, (socket) => h2.emit('connection', socket));
  tls.listen(0, '127.0.0.1');
  await once(tls, 'listening');
  const port = (tls.address() as AddressInfo).port;
  const session = http2.connect(`https://127.0.0.1:${port}`, { createConnection: () => tlsConnect({ host: '127.0.0.1', port, ca: cert, ALPNProtocols: ['h2'] }), settings: SETTINGS });
  return connected(session, tls);
}

async function measureOnce(way: Way, bytes: number): Promise<{ mibps: number; cpuSecPerGiB: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const got = await download(way.session);
  const secs = (performance.now() - t0) / 1000;
  const cpuUs = cpuUsSince(c0);
  if (got !== bytes) throw new Error(`tunnel bench: received ${got} bytes, expected ${bytes}`);
  return { mibps: bytes / 2 ** 20 / secs, cpuSecPerGiB: cpuUs / 1e6 / (bytes / 2 ** 30) };
}

export async function runTunnelCases(dir: string, opts: TunnelOpts): Promise<CaseResult[]> {
  mkdirSync(dir, { recursive: true });
  const files = selfSignedCert(dir);
  const cert = readFileSync(files.certFile);
  const key = readFileSync(files.keyFile);
  const bytes = opts.mib * 2 ** 20;
  const h2 = bulkServer(bytes);
  const ways = { websocket: await overWebSocket(h2, cert, key), tls: await overTls(h2, cert, key) };
  const runs = {
    websocket: { mibps: [] as number[], cpu: [] as number[], p50: [] as number[], p99: [] as number[], rttCpu: [] as number[] },
    tls: { mibps: [] as number[], cpu: [] as number[], p50: [] as number[], p99: [] as number[], rttCpu: [] as number[] },
  };
  try {
    for (const w of ['websocket', 'tls'] as const) await measureOnce(ways[w], bytes); // warm-up
    for (let r = 0; r < opts.runs; r++) {
      for (const w of ['websocket', 'tls'] as const) {
        const m = await measureOnce(ways[w], bytes);
        runs[w].mibps.push(m.mibps);
        runs[w].cpu.push(m.cpuSecPerGiB);
        const p = await pingPong(ways[w].session, PING_SAMPLES);
        runs[w].p50.push(percentile(p.lat, 50));
        runs[w].p99.push(percentile(p.lat, 99));
        runs[w].rttCpu.push(p.cpuUs);
      }
    }
  } finally {
    await ways.websocket.close();
    await ways.tls.close();
  }
  const unit = (u: string, xs: number[]) => ({ ...figure(xs), unit: u });
  const ratio = (a: number[], b: number[]) => unit('×', a.map((x, i) => x / b[i]!));
  return [
    {
      name: 'tunnel: HTTP/2 in a WebSocket vs HTTP/2 on TLS, both ends in one process',
      figures: {
        'HTTP/2 in WebSocket over TLS': unit('MiB/s', runs.websocket.mibps),
        'HTTP/2 on TLS': unit('MiB/s', runs.tls.mibps),
        'HTTP/2 in WebSocket: CPU (both ends)': unit('s per GiB', runs.websocket.cpu),
        'HTTP/2 on TLS: CPU (both ends)': unit('s per GiB', runs.tls.cpu),
        'CPU: WebSocket / TLS only': ratio(runs.websocket.cpu, runs.tls.cpu),
        'HTTP/2 in WebSocket: 1-byte round trip p50': unit('ms', runs.websocket.p50),
        'HTTP/2 on TLS: 1-byte round trip p50': unit('ms', runs.tls.p50),
        'HTTP/2 in WebSocket: 1-byte round trip p99': unit('ms', runs.websocket.p99),
        'HTTP/2 on TLS: 1-byte round trip p99': unit('ms', runs.tls.p99),
        'HTTP/2 in WebSocket: CPU per round trip (both ends)': unit('µs', runs.websocket.rttCpu),
        'HTTP/2 on TLS: CPU per round trip (both ends)': unit('µs', runs.tls.rttCpu),
        'CPU per round trip: WebSocket / TLS only': ratio(runs.websocket.rttCpu, runs.tls.rttCpu),
      },
      target: '– (sizes the WebSocket layer)',
      met: null,
      notes: [`tunnel: ${opts.mib} MiB per download and ${PING_SAMPLES} one-byte round trips on one stream per run, ${opts.runs} runs each way, taking turns; uplink's HTTP/2 settings; TLS 1.3 with an EC P-256 certificate`],
    },
  ];
}
