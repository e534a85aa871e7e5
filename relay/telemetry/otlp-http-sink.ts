/**
 * OTLP/HTTP sink: exports batches to an OpenTelemetry Collector, Grafana, Datadog,
 * Honeycomb... through an undici Pool, in protobuf or JSON, gzip-compressed by default.
 *
 * Delivery: each batch becomes one export request per signal (split further at
 * `maxRecordsPerRequest`). A request is retried with exponential backoff and jitter on
 * network errors, 408, 429 and 5xx, honouring Retry-After. A 413 splits the request in two
 * and sends the halves; any other 4xx is a permanent refusal: those records are counted as
 * dropped (the spec says such requests must not be retried) and the batch still resolves.
 * `send` resolves after the last request is accepted.
 *
 * Backpressure: at most `maxQueuedBatches` batches are in delivery at once; further `send`
 * calls wait their turn (FIFO), so a slow or failing endpoint slows the relay's pulls
 * instead of filling its memory. By default a batch is retried until it succeeds or the
 * sink closes; with `maxElapsedMs` it fails after that long, and the relay re-pulls it.
 */
import { Pool } from 'undici';
import { gzip } from 'node:zlib';
import { promisify } from 'node:util';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import type { SignalKind, TelemetryRecord } from '../../shared/telemetry/record.js';
import { SIGNALS, exportRequestsFromRecords } from '../../shared/telemetry/otlp-convert.js';
import { OTLP_CONTENT_TYPES, OTLP_PATHS, decodeExportResponse, encodeExportRequest } from '../../shared/telemetry/otlp-proto.js';
import { NOOP_OBSERVER, applianceResource, type Sink, type SinkBatch, type SinkObserver } from './sink.js';

const gzipAsync = promisify(gzip);

/** Every default of the OTLP/HTTP sink, in one place. */
export const OTLP_HTTP_SINK_DEFAULTS = {
  encoding: 'protobuf' as 'protobuf' | 'json',
  compression: 'gzip' as 'gzip' | 'none',
  connections: 4,
  maxQueuedBatches: 8,
  maxRecordsPerRequest: 2000,
  requestTimeoutMs: 30_000,
  initialBackoffMs: 500,
  maxBackoffMs: 30_000,
  /** A Retry-After longer than this is clamped (a broken server must not park us for days). */
  maxRetryAfterMs: 300_000,
  /** 0 = retry until success or close. */
  maxElapsedMs: 0,
  /** Response bodies are read up to this size (enough for a Status or a partial success). */
  maxResponseBytes: 64 * 1024,
  /** close() waits this long for in-flight batches before abandoning them. */
  closeTimeoutMs: 5_000,
} as const;

const D = OTLP_HTTP_SINK_DEFAULTS;
const ms = z.int().min(0).max(86_400_000);
const optionsSchema = z.strictObject({
  name: z.string().min(1).max(100),
  /** Base URL: `http(s)://host:port[/prefix]`; the signal path (/v1/logs...) is appended. */
  endpoint: z.url({ protocol: /^https?$/ }),
  headers: z.record(z.string(), z.string()).default({}),
  encoding: z.enum(['protobuf', 'json']).default(D.encoding),
  compression: z.enum(['gzip', 'none']).default(D.compression),
  connections: z.int().min(1).max(256).default(D.connections),
  maxQueuedBatches: z.int().min(1).max(10_000).default(D.maxQueuedBatches),
  maxRecordsPerRequest: z.int().min(1).max(1_000_000).default(D.maxRecordsPerRequest),
  requestTimeoutMs: ms.min(1).default(D.requestTimeoutMs),
  initialBackoffMs: ms.min(1).default(D.initialBackoffMs),
  maxBackoffMs: ms.min(1).default(D.maxBackoffMs),
  maxRetryAfterMs: ms.default(D.maxRetryAfterMs),
  maxElapsedMs: ms.default(D.maxElapsedMs),
  maxResponseBytes: z.int().min(1024).default(D.maxResponseBytes),
  closeTimeoutMs: ms.default(D.closeTimeoutMs),
  observer: z.custom<SinkObserver>((v) => typeof (v as SinkObserver | undefined)?.retry === 'function').optional(),
  logger: z.custom<Logger>((v) => typeof (v as Logger | undefined)?.child === 'function').optional(),
  /** Source of jitter in [0, 1); tests pass a fixed one. */
  random: z.custom<() => number>((v) => typeof v === 'function').optional(),
});

/** Options of `OtlpHttpSink`; see OTLP_HTTP_SINK_DEFAULTS. */
export type OtlpHttpSinkOptions = z.input<typeof optionsSchema>;
type Resolved = z.output<typeof optionsSchema>;

/** Outcome of one HTTP attempt. */
type Attempt = { kind: 'ok'; rejected: number; bytes: number } | { kind: 'retry'; cause: string; retryAfterMs?: number } | { kind: 'too_large' } | { kind: 'refused'; status: number; message: string };

const RETRYABLE_STATUS = (status: number): boolean => status === 408 || status === 429 || status >= 500;

/** Parse Retry-After (seconds or an HTTP date) into milliseconds. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return undefined;
  if (/^\d+$/.test(text.trim())) return Number(text.trim()) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** An OTLP/HTTP exporter with retries and a bounded queue. */
export class OtlpHttpSink implements Sink {
  readonly name: string;
  private readonly opts: Resolved;
  private readonly pool: Pool;
  private readonly basePath: string;
  private readonly observer: SinkObserver;
  private readonly log: Logger;
  private readonly random: () => number;
  private readonly abort = new AbortController();
  private readonly waiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  private readonly inFlight = new Set<Promise<void>>();
  private active = 0;
  private closing: Promise<void> | undefined;

  constructor(options: OtlpHttpSinkOptions) {
    const parsed = optionsSchema.safeParse(options);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `sink.${issue.path.join('.') || '(root)'}: ${issue.message}`, { details: { field: issue.path.join('.') } });
    }
    this.opts = parsed.data;
    this.name = this.opts.name;
    const url = new URL(this.opts.endpoint);
    this.basePath = url.pathname.replace(/\/+$/, '');
    this.pool = new Pool(url.origin, { connections: this.opts.connections, headersTimeout: this.opts.requestTimeoutMs, bodyTimeout: this.opts.requestTimeoutMs, connect: { timeout: this.opts.requestTimeoutMs } });
    this.observer = this.opts.observer ?? NOOP_OBSERVER;
    this.log = (this.opts.logger ?? silentLogger).child({ component: 'otlp-http-sink', sink: this.name });
    this.random = this.opts.random ?? Math.random;
  }

  async send(batch: SinkBatch): Promise<void> {
    await this.acquire();
    const delivery = this.deliver(batch);
    this.inFlight.add(delivery);
    try {
      await delivery;
    } finally {
      this.inFlight.delete(delivery);
      this.release();
    }
  }

  /**
   * Stop taking batches; wait up to `closeTimeoutMs` for in-flight ones, then abandon them
   * (their `send` rejects with SINK_CLOSED and the relay re-pulls them later). Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const w of this.waiters.splice(0)) w.reject(this.closedError());
      if (this.inFlight.size > 0) {
        let timer: NodeJS.Timeout | undefined;
        const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.opts.closeTimeoutMs)));
        await Promise.race([Promise.allSettled([...this.inFlight]), deadline]);
        clearTimeout(timer);
      }
      this.abort.abort();
      await Promise.allSettled([...this.inFlight]);
      await this.pool.destroy();
    })();
    return this.closing;
  }

  private closedError(): UplinkError {
    return new UplinkError('UPLINK_ERR_TELEMETRY_SINK_CLOSED', `sink ${this.name} is closed`, { details: { sink: this.name } });
  }

  private acquire(): Promise<void> {
    if (this.closing) return Promise.reject(this.closedError());
    if (this.active < this.opts.maxQueuedBatches) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  private release(): void {
    // Hand the slot straight to the next waiter (FIFO), so `active` never over-counts.
    const next = this.waiters.shift();
    if (next) next.resolve();
    else this.active--;
  }

  private async deliver(batch: SinkBatch): Promise<void> {
    const started = Date.now();
    const extra = applianceResource(batch.appliance);
    for (let i = 0; i < batch.records.length; i += this.opts.maxRecordsPerRequest) {
      const chunk = batch.records.slice(i, i + this.opts.maxRecordsPerRequest);
      for (const signal of SIGNALS) {
        const records = chunk.filter((r) => r.signal === signal);
        if (records.length > 0) await this.deliverSignal(batch, signal, records, extra, started);
      }
    }
  }

  /** Send records of one signal; on 413 split in halves until single records. */
  private async deliverSignal(batch: SinkBatch, signal: SignalKind, records: TelemetryRecord[], extra: ReturnType<typeof applianceResource>, started: number): Promise<void> {
    const [exp] = exportRequestsFromRecords(records, extra);
    let body = encodeExportRequest(signal, this.opts.encoding, exp!.request);
    if (this.opts.compression === 'gzip') body = await gzipAsync(body);
    const outcome = await this.postWithRetry(signal, body, started);
    if (outcome.kind === 'ok') {
      this.observer.sent(this.name, batch.appliance.name, signal, records.length, outcome.bytes);
      if (outcome.rejected > 0) {
        this.observer.dropped(this.name, 'partial', outcome.rejected);
        this.log.warn({ signal, rejected: outcome.rejected }, 'endpoint rejected part of an export (partial success)');
      }
      return;
    }
    if (outcome.kind === 'too_large' && records.length > 1) {
      const half = Math.ceil(records.length / 2);
      await this.deliverSignal(batch, signal, records.slice(0, half), extra, started);
      await this.deliverSignal(batch, signal, records.slice(half), extra, started);
      return;
    }
    const reason = outcome.kind === 'too_large' ? 'too_large' : 'rejected';
    this.observer.dropped(this.name, reason, records.length);
    this.log.error({ signal, records: records.length, outcome }, 'endpoint refused an export for good; records dropped');
  }

  private async postWithRetry(signal: SignalKind, body: Buffer, started: number): Promise<Exclude<Attempt, { kind: 'retry' }>> {
    for (let attempt = 0; ; attempt++) {
      if (this.abort.signal.aborted) throw this.closedError();
      const result = await this.post(signal, body);
      if (result.kind !== 'retry') return result;
      const ceiling = Math.min(this.opts.maxBackoffMs, this.opts.initialBackoffMs * 2 ** Math.min(attempt, 30));
      // "Equal jitter": at least half the backoff, so retries spread out but never collapse to 0.
      let delay = ceiling / 2 + (this.random() * ceiling) / 2;
      if (result.retryAfterMs !== undefined) delay = Math.min(result.retryAfterMs, this.opts.maxRetryAfterMs);
      if (this.opts.maxElapsedMs > 0 && Date.now() + delay - started > this.opts.maxElapsedMs) {
        throw new UplinkError('UPLINK_ERR_TELEMETRY_SINK_FAILED', `sink ${this.name}: gave up after ${attempt + 1} attempts (${result.cause})`, {
          details: { sink: this.name, attempts: attempt + 1, cause: result.cause },
        });
      }
      this.observer.retry(this.name, result.cause);
      this.log.debug({ attempt, delay, cause: result.cause }, 'retrying export');
      await this.sleep(delay);
    }
  }

  private async post(signal: SignalKind, body: Buffer): Promise<Attempt> {
    const headers: Record<string, string> = {
      ...this.opts.headers,
      'content-type': OTLP_CONTENT_TYPES[this.opts.encoding],
      'content-length': String(body.length),
    };
    if (this.opts.compression === 'gzip') headers['content-encoding'] = 'gzip';
    let res;
    try {
      res = await this.pool.request({ path: this.basePath + OTLP_PATHS[signal], method: 'POST', headers, body, signal: this.abort.signal });
    } catch (err) {
      if (this.abort.signal.aborted) throw this.closedError();
      return { kind: 'retry', cause: (err as NodeJS.ErrnoException).code ?? 'network' };
    }
    const responseBody = await readLimited(res.body, this.opts.maxResponseBytes).catch(() => Buffer.alloc(0));
    const status = res.statusCode;
    if (status >= 200 && status < 300) {
      let rejected = 0;
      try {
        rejected = decodeExportResponse(signal, this.opts.encoding, responseBody).rejected;
      } catch {
        // A 2xx whose body we cannot read still means "accepted" per the spec.
        this.log.warn({ status }, 'undecodable 2xx body from endpoint; treating as accepted');
      }
      return { kind: 'ok', rejected, bytes: body.length };
    }
    if (RETRYABLE_STATUS(status)) {
      const retryAfterMs = status === 429 || status === 503 ? parseRetryAfter(res.headers['retry-after']) : undefined;
      return retryAfterMs === undefined ? { kind: 'retry', cause: `http_${status}` } : { kind: 'retry', cause: `http_${status}`, retryAfterMs };
    }
    if (status === 413) return { kind: 'too_large' };
    return { kind: 'refused', status, message: responseBody.subarray(0, 200).toString('utf8') };
  }

  private sleep(delayMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(this.closedError());
      };
      const timer = setTimeout(() => {
        this.abort.signal.removeEventListener('abort', onAbort);
        resolve();
      }, delayMs);
      this.abort.signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/** Read a response body up to `limit` bytes, discarding the rest. */
async function readLimited(body: AsyncIterable<Buffer> & { destroy(): unknown }, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    if (size + chunk.length > limit) {
      body.destroy();
      break;
    }
    chunks.push(chunk);
    size += chunk.length;
  }
  return Buffer.concat(chunks, size);
}
