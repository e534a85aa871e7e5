/**
 * Optional OTLP/HTTP receiver for applications running in the appliance: POST /v1/logs,
 * /v1/metrics and /v1/traces, protobuf or JSON, optionally gzip-compressed. Records go
 * straight into the spool; the 200 is sent only after the spool accepted them, so a client
 * that got a 200 can forget its data.
 *
 * Security: this is the agent's only listening socket (DESIGN.md, decision 2). It binds to
 * exactly the IP address the customer configured: a hostname (which could resolve anywhere)
 * or a wildcard address is refused, and the bound address is checked after listen.
 *
 * Responses follow the OTLP/HTTP spec: 200 with an empty Export*ServiceResponse in the
 * request's encoding; 400 with a google.rpc.Status for undecodable input (not retryable);
 * 413 over a size or count limit; 415 for other content types or encodings; 503 with
 * Retry-After when the spool cannot take the data (retryable).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { gunzip } from 'node:zlib';
import { promisify } from 'node:util';
import { z } from 'zod';
import { UplinkError, isUplinkError } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import type { SignalKind, TelemetryRecord } from '../../shared/telemetry/record.js';
import { GRPC_CODES, OTLP_CONTENT_TYPES, OTLP_PATHS, decodeExportRequest, encodeExportResponse, encodeStatus, encodingFromContentType, type OtlpEncoding, type OtlpStatus } from '../../shared/telemetry/otlp-proto.js';
import { recordsFromExportRequest } from '../../shared/telemetry/otlp-convert.js';

const gunzipAsync = promisify(gunzip);

/** What the receiver needs from the spool. */
export interface RecordSink {
  append(records: readonly TelemetryRecord[]): Promise<void>;
}

/** Every default of the receiver, in one place. */
export const OTLP_RECEIVER_DEFAULTS = {
  port: 4318,
  /** Request body as sent (possibly compressed). */
  maxBodyBytes: 4 * 1024 * 1024,
  /** Body after gzip decompression: bounds a decompression bomb. */
  maxDecodedBytes: 16 * 1024 * 1024,
  maxRecordsPerRequest: 50_000,
  /** Retry-After sent with 503. */
  retryAfterSeconds: 5,
  requestTimeoutMs: 30_000,
  maxConnections: 256,
} as const;

const D = OTLP_RECEIVER_DEFAULTS;
const optionsSchema = z.strictObject({
  host: z.string().min(1),
  port: z.int().min(0).max(65_535).default(D.port),
  maxBodyBytes: z.int().min(1024).default(D.maxBodyBytes),
  maxDecodedBytes: z.int().min(1024).default(D.maxDecodedBytes),
  maxRecordsPerRequest: z.int().min(1).default(D.maxRecordsPerRequest),
  retryAfterSeconds: z.int().min(1).max(3600).default(D.retryAfterSeconds),
  requestTimeoutMs: z.int().min(100).default(D.requestTimeoutMs),
  maxConnections: z.int().min(1).default(D.maxConnections),
  spool: z.custom<RecordSink>((v) => typeof (v as RecordSink | undefined)?.append === 'function', 'must have append(records)'),
  logger: z.custom<Logger>((v) => typeof (v as Logger | undefined)?.child === 'function').optional(),
});

/** Options of `startOtlpReceiver`; see OTLP_RECEIVER_DEFAULTS. */
export type OtlpReceiverOptions = z.input<typeof optionsSchema>;

/** A running receiver. */
export interface OtlpReceiver {
  readonly host: string;
  readonly port: number;
  /** Base URL, e.g. http://127.0.0.1:4318 (append /v1/logs...). */
  readonly url: string;
  /** Stop accepting, let in-flight requests finish. Idempotent. */
  close(): Promise<void>;
}

const SIGNAL_BY_PATH = new Map<string, SignalKind>(Object.entries(OTLP_PATHS).map(([signal, path]) => [path, signal as SignalKind]));

/** Refuse anything that is not one concrete IP address. */
function checkHost(host: string): void {
  const family = isIP(host);
  if (family === 0) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `otlpReceiver.host: "${host}" is not an IP address (hostnames are refused: they could resolve to any interface)`, {
      details: { field: 'otlpReceiver.host' },
    });
  }
  const unspecified = family === 4 ? host === '0.0.0.0' : /^[0:]+$/.test(host);
  if (unspecified) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `otlpReceiver.host: "${host}" would listen on every interface; name one address`, { details: { field: 'otlpReceiver.host' } });
  }
}

/** Start the receiver; resolves once it listens on the configured address. */
export async function startOtlpReceiver(options: OtlpReceiverOptions): Promise<OtlpReceiver> {
  const parsed = optionsSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `otlpReceiver.${issue.path.join('.') || '(root)'}: ${issue.message}`, { details: { field: issue.path.join('.') } });
  }
  const opts = parsed.data;
  checkHost(opts.host);
  const log = (opts.logger ?? silentLogger).child({ component: 'otlp-receiver' });
  const server = createServer({ requestTimeout: opts.requestTimeoutMs, headersTimeout: Math.min(opts.requestTimeoutMs, 60_000) }, (req, res) => {
    handle(req, res, opts, log).catch((err: unknown) => {
      log.error({ err }, 'OTLP request failed');
      if (!res.headersSent) reply(res, 500, 'json', { code: GRPC_CODES.UNAVAILABLE, message: 'internal error' });
      else res.destroy();
    });
  });
  server.maxConnections = opts.maxConnections;
  await listen(server, opts.host, opts.port);
  const address = server.address();
  const bound = typeof address === 'object' && address ? address : undefined;
  if (!bound || canonicalIp(bound.address) !== canonicalIp(opts.host)) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    throw new UplinkError('UPLINK_ERR_TELEMETRY_RECEIVER_BIND', `OTLP receiver bound to ${bound?.address ?? 'unknown'} instead of ${opts.host}`);
  }
  const urlHost = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  log.info({ host: bound.address, port: bound.port }, 'OTLP receiver listening');
  let closing: Promise<void> | undefined;
  return {
    host: bound.address,
    port: bound.port,
    url: `http://${urlHost}:${bound.port}`,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      })),
  };
}

function canonicalIp(ip: string): string {
  // IPv6 text has many spellings (::1 vs 0:0:0:0:0:0:0:1); compare through the URL parser.
  return isIP(ip) === 6 ? new URL(`http://[${ip}]/`).hostname : ip;
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(new UplinkError('UPLINK_ERR_TELEMETRY_RECEIVER_BIND', `OTLP receiver cannot listen on ${host}:${port}: ${err.code ?? err.message}`, { cause: err, details: { host, port } }));
    };
    server.once('error', onError);
    // exclusive: no port sharing with a cluster primary; ipv6Only: "::1" must not mean "::1 and 127.0.0.1".
    server.listen({ host, port, exclusive: true, ipv6Only: isIP(host) === 6 }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function reply(res: ServerResponse, status: number, encoding: OtlpEncoding, payload: OtlpStatus | Buffer, headers: Record<string, string> = {}): void {
  const body = Buffer.isBuffer(payload) ? payload : encodeStatus(encoding, payload);
  res.writeHead(status, { 'content-type': OTLP_CONTENT_TYPES[encoding], 'content-length': String(body.length), ...headers });
  res.end(body);
}

async function handle(req: IncomingMessage, res: ServerResponse, opts: z.output<typeof optionsSchema>, log: Logger): Promise<void> {
  const path = (req.url ?? '/').split('?')[0]!;
  const signal = SIGNAL_BY_PATH.get(path);
  const encoding = encodingFromContentType(req.headers['content-type']);
  const replyEncoding = encoding ?? 'json';
  if (!signal) return reply(res, 404, replyEncoding, { code: GRPC_CODES.INVALID_ARGUMENT, message: `no OTLP endpoint at ${path.slice(0, 100)}` });
  if (req.method !== 'POST') return reply(res, 405, replyEncoding, { code: GRPC_CODES.INVALID_ARGUMENT, message: 'use POST' }, { allow: 'POST' });
  if (!encoding) return reply(res, 415, 'json', { code: GRPC_CODES.INVALID_ARGUMENT, message: 'content-type must be application/x-protobuf or application/json' });
  const contentEncoding = (req.headers['content-encoding'] ?? 'identity').toLowerCase();
  if (contentEncoding !== 'identity' && contentEncoding !== 'gzip') {
    return reply(res, 415, encoding, { code: GRPC_CODES.INVALID_ARGUMENT, message: `content-encoding ${contentEncoding.slice(0, 40)} is not supported (gzip or none)` });
  }
  const tooLarge = (what: string): void =>
    reply(res, 413, encoding, { code: GRPC_CODES.RESOURCE_EXHAUSTED, message: `${what} exceeds the receiver's limit` }, { connection: 'close' });
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > opts.maxBodyBytes) {
    tooLarge(`body of ${declared} bytes`);
    req.resume(); // drain politely; the connection closes after the response
    return;
  }
  const raw = await readBody(req, opts.maxBodyBytes);
  if (!raw) return tooLarge('body');
  let body = raw;
  if (contentEncoding === 'gzip') {
    try {
      body = await gunzipAsync(raw, { maxOutputLength: opts.maxDecodedBytes });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') return tooLarge('decompressed body');
      return reply(res, 400, encoding, { code: GRPC_CODES.INVALID_ARGUMENT, message: 'body is not valid gzip' });
    }
  }
  let records: TelemetryRecord[];
  try {
    const request = decodeExportRequest(signal, encoding, body);
    records = recordsFromExportRequest(signal, request, { source: 'otlp', maxRecords: opts.maxRecordsPerRequest });
  } catch (err) {
    if (isUplinkError(err, 'UPLINK_ERR_TELEMETRY_LIMIT')) return tooLarge(`more than ${opts.maxRecordsPerRequest} records`);
    if (isUplinkError(err, 'UPLINK_ERR_TELEMETRY_OTLP_INVALID')) {
      log.debug({ err: err.message, signal }, 'rejected OTLP request');
      return reply(res, 400, encoding, { code: GRPC_CODES.INVALID_ARGUMENT, message: err.message });
    }
    throw err;
  }
  try {
    await opts.spool.append(records);
  } catch (err) {
    if (isUplinkError(err, 'UPLINK_ERR_TELEMETRY_LIMIT')) return tooLarge(err.message);
    log.warn({ err, signal, records: records.length }, 'spool refused OTLP records');
    return reply(res, 503, encoding, { code: GRPC_CODES.UNAVAILABLE, message: 'telemetry spool unavailable; retry later' }, { 'retry-after': String(opts.retryAfterSeconds) });
  }
  reply(res, 200, encoding, encodeExportResponse(signal, encoding));
}

/** The whole body, or undefined once it passes `limit` bytes (reading stops there). */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        req.off('data', onData);
        req.resume();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks, size)));
    req.once('error', reject);
  });
}
