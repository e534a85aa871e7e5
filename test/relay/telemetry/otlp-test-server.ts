/**
 * A real OTLP/HTTP server for sink tests: decodes gzip + protobuf/JSON with our proto module
 * and answers from a script, so tests can serve 500s, 429s, 413s or hold requests open.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { gunzipSync } from 'node:zlib';
import type { Test } from 'tap';
import { decodeExportRequest, encodingFromContentType, type OtlpEncoding, type OtlpObject } from '../../../shared/telemetry/otlp-proto.js';
import type { SignalKind } from '../../../shared/telemetry/record.js';

export interface ReceivedRequest {
  path: string;
  signal: SignalKind;
  encoding: OtlpEncoding;
  gzip: boolean;
  headers: IncomingMessage['headers'];
  /** Decoded export request (OTLP/JSON shape). */
  request: OtlpObject;
  /** Number of items (log records, data points, spans). */
  items: number;
}

/** What to answer: a status with optional headers/body, after an optional hold. */
export interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** Resolve this promise to let the response go. */
  hold?: Promise<void>;
}

export interface TestOtlpServer {
  url: string;
  port: number;
  received: ReceivedRequest[];
  /** Replies used in order; when empty, `fallback` decides (default 200 with an empty body). */
  script: Array<Reply | ((req: ReceivedRequest) => Reply)>;
  fallback: (req: ReceivedRequest) => Reply;
  /** Requests seen so far, including those still held. */
  arrived: number;
}

const SIGNAL_BY_SUFFIX: Array<[string, SignalKind]> = [
  ['/v1/logs', 'logs'],
  ['/v1/metrics', 'metrics'],
  ['/v1/traces', 'traces'],
];

function countItems(signal: SignalKind, request: OtlpObject): number {
  let n = 0;
  const list = (request.resourceLogs ?? request.resourceMetrics ?? request.resourceSpans ?? []) as OtlpObject[];
  for (const r of list) {
    for (const s of ((r.scopeLogs ?? r.scopeMetrics ?? r.scopeSpans ?? []) as OtlpObject[])) {
      const items = (s.logRecords ?? s.metrics ?? s.spans ?? []) as OtlpObject[];
      if (signal !== 'metrics') n += items.length;
      else for (const m of items) n += (((m.gauge ?? m.sum ?? m.histogram ?? m.summary ?? m.exponentialHistogram) as OtlpObject).dataPoints as unknown[]).length;
    }
  }
  return n;
}

export async function startTestOtlpServer(t: Test): Promise<TestOtlpServer> {
  const state: Omit<TestOtlpServer, 'url' | 'port'> = { received: [], script: [], fallback: () => ({ status: 200 }), arrived: 0 };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        state.arrived++;
        const path = req.url ?? '/';
        const signal = SIGNAL_BY_SUFFIX.find(([suffix]) => path.endsWith(suffix))?.[1];
        const encoding = encodingFromContentType(req.headers['content-type']);
        if (!signal || !encoding) {
          res.writeHead(404).end();
          return;
        }
        const gzip = req.headers['content-encoding'] === 'gzip';
        const raw = Buffer.concat(chunks);
        const request = decodeExportRequest(signal, encoding, gzip ? gunzipSync(raw) : raw);
        const received: ReceivedRequest = { path, signal, encoding, gzip, headers: req.headers, request, items: countItems(signal, request) };
        const next = state.script.shift() ?? state.fallback;
        const reply = typeof next === 'function' ? next(received) : next;
        if (reply.hold) await reply.hold;
        if (reply.status >= 200 && reply.status < 300) state.received.push(received);
        res.writeHead(reply.status, { 'content-type': req.headers['content-type']!, ...reply.headers });
        res.end(reply.body ?? '');
      })();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const port = (server.address() as { port: number }).port;
  return Object.assign(state, { url: `http://127.0.0.1:${port}`, port });
}

/** A promise and its resolver, for holding replies. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}
