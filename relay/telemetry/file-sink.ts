/**
 * File sink: OTLP/JSON lines, one export request per line (the OpenTelemetry Collector
 * file exporter's format: the top-level key, `resourceLogs`, `resourceMetrics` or
 * `resourceSpans`, tells the signal). For local use, demos and archiving.
 *
 * A batch is written with one write and one fsync, then `send` resolves: accepted means
 * on disk. Writes are serialised, so concurrent callers queue behind the disk (that is the
 * backpressure). The file rotates by size: `path` -> `path.1` -> ... -> `path.<maxFiles>`,
 * the oldest deleted. A failed write is cut back off the file and `send` rejects, so the
 * relay re-pulls the batch and no half line is left behind.
 */
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import type { SignalKind } from '../../shared/telemetry/record.js';
import { exportRequestsFromRecords } from '../../shared/telemetry/otlp-convert.js';
import { NOOP_OBSERVER, applianceResource, type Sink, type SinkBatch, type SinkObserver } from './sink.js';

/** Every default of the file sink, in one place. */
export const FILE_SINK_DEFAULTS = {
  maxFileBytes: 100 * 1024 * 1024,
  /** Rotated files kept besides the current one. */
  maxFiles: 5,
  fsync: true,
} as const;

const optionsSchema = z.strictObject({
  name: z.string().min(1).max(100),
  path: z.string().min(1),
  maxFileBytes: z.int().min(1024).default(FILE_SINK_DEFAULTS.maxFileBytes),
  maxFiles: z.int().min(0).max(1000).default(FILE_SINK_DEFAULTS.maxFiles),
  fsync: z.boolean().default(FILE_SINK_DEFAULTS.fsync),
  observer: z.custom<SinkObserver>((v) => typeof (v as SinkObserver | undefined)?.retry === 'function').optional(),
  logger: z.custom<Logger>((v) => typeof (v as Logger | undefined)?.child === 'function').optional(),
});

/** Options of `FileSink.open`; see FILE_SINK_DEFAULTS. */
export type FileSinkOptions = z.input<typeof optionsSchema>;
type Resolved = z.output<typeof optionsSchema>;

/** Writes OTLP JSON lines to a size-rotated file. */
export class FileSink implements Sink {
  readonly name: string;
  private fh: FileHandle | undefined;
  private size = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly observer: SinkObserver;
  private readonly log: Logger;

  private constructor(private readonly opts: Resolved) {
    this.name = opts.name;
    this.observer = opts.observer ?? NOOP_OBSERVER;
    this.log = (opts.logger ?? silentLogger).child({ component: 'file-sink', sink: opts.name, path: opts.path });
  }

  /** Open (append to) the file, creating its directory. */
  static async open(options: FileSinkOptions): Promise<FileSink> {
    const parsed = optionsSchema.safeParse(options);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `sink.${issue.path.join('.') || '(root)'}: ${issue.message}`, { details: { field: issue.path.join('.') } });
    }
    const sink = new FileSink(Object.freeze(parsed.data));
    await mkdir(dirname(sink.opts.path), { recursive: true });
    await sink.openFile();
    return sink;
  }

  send(batch: SinkBatch): Promise<void> {
    if (this.closed) return Promise.reject(new UplinkError('UPLINK_ERR_TELEMETRY_SINK_CLOSED', `sink ${this.name} is closed`, { details: { sink: this.name } }));
    const result = this.queue.then(() => this.write(batch));
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** Finish queued writes and close the file. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue;
    await this.fh?.close();
    this.fh = undefined;
  }

  private async openFile(): Promise<void> {
    this.fh = await open(this.opts.path, 'a', 0o600);
    this.size = (await this.fh.stat()).size;
  }

  private async write(batch: SinkBatch): Promise<void> {
    const exports = exportRequestsFromRecords(batch.records, applianceResource(batch.appliance));
    if (exports.length === 0) return;
    const lines = exports.map((e) => `${JSON.stringify(e.request)}\n`);
    const data = Buffer.from(lines.join(''));
    try {
      if (!this.fh) await this.openFile(); // a failed rotation left no file open
      if (this.size > 0 && this.size + data.length > this.opts.maxFileBytes) await this.rotate();
      const fh = this.fh!;
      const before = this.size;
      try {
        let done = 0;
        while (done < data.length) done += (await fh.write(data, done, data.length - done)).bytesWritten;
        if (this.opts.fsync) await fh.datasync();
      } catch (err) {
        await fh.truncate(before).catch(() => undefined);
        throw err;
      }
      this.size += data.length;
    } catch (err) {
      this.log.error({ err }, 'file sink write failed');
      throw new UplinkError('UPLINK_ERR_TELEMETRY_SINK_FAILED', `sink ${this.name}: cannot write ${this.opts.path}: ${(err as Error).message}`, { cause: err, details: { sink: this.name } });
    }
    exports.forEach((e, i) => this.observer.sent(this.name, batch.appliance.name, e.signal as SignalKind, e.records, Buffer.byteLength(lines[i]!)));
  }

  /** path -> path.1 -> ... ; the file beyond maxFiles is deleted. */
  private async rotate(): Promise<void> {
    await this.fh?.close();
    this.fh = undefined;
    const { path, maxFiles } = this.opts;
    if (maxFiles === 0) {
      await rm(path, { force: true });
    } else {
      await rm(`${path}.${maxFiles}`, { force: true });
      for (let i = maxFiles - 1; i >= 1; i--) await rename(`${path}.${i}`, `${path}.${i + 1}`).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
      await rename(path, `${path}.1`);
    }
    await this.openFile();
  }
}
