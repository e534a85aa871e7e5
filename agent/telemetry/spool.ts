/**
 * The agent's durable telemetry spool: collectors and the OTLP receiver append records, the
 * relay pulls batches through the tunnel and acknowledges them.
 *
 * Contracts:
 * - Durability: `append` resolves after the records are written and, with the default
 *   `fsync: 'batch'`, fdatasync'ed once per call ('always' syncs every record, 'interval'
 *   every `fsyncIntervalMs`, 'never' leaves it to the kernel).
 * - At-least-once: `read` returns the oldest unacknowledged records; until `ack`, reading
 *   again returns the same batch with the same id. Batch ids are derived from positions in
 *   the segment files (`<seq>.<offset>-<seq>.<offset>`), so an id stays meaningful across a
 *   relay restart, and `ack` durably moves the cursor (cursor file replaced atomically).
 * - Bounded: segment files never total more than `maxBytes`. When an append needs room the
 *   oldest segment is deleted, even if unread; the loss is counted in `stats()`, logged and
 *   passed to `onDrop` (never silent).
 * - Crash safety: at open every segment is scanned. A torn tail (a write cut short by a
 *   crash) is truncated away; a corrupted frame in the middle (CRC mismatch) is skipped up
 *   to the next valid frame, keeping everything around it. Both are counted and reported.
 *
 * Operations are serialised on one queue: the spool is one writer and one reader, and the
 * cost per call is one batch, so a lock per call is cheap and keeps reasoning simple.
 * The segment format lives in spool-segment.ts, the cursor file in spool-cursor.ts.
 */
import { mkdir, open, readdir, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import type { TelemetryRecord } from '../../shared/telemetry/record.js';
import { PULL_LIMITS } from '../../shared/telemetry/pull-protocol.js';
import { comparePositions, loadCursor, saveCursor, syncDir, type SpoolPosition } from './spool-cursor.js';
import { FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES, SegmentReader, encodeFrames, isSegmentHeader, parseSegmentName, segmentHeader, segmentName } from './spool-segment.js';

/** When appended data is flushed to stable storage. */
export type FsyncPolicy = 'always' | 'batch' | 'interval' | 'never';

/** Why data left the spool without being acknowledged. */
export type SpoolDropReason = 'full' | 'corrupt' | 'torn';

/** Passed to `onDrop` each time data is lost. `records` is 0 for corrupt/torn bytes (they cannot be counted). */
export interface SpoolDropEvent {
  reason: SpoolDropReason;
  records: number;
  bytes: number;
  segment: number;
}

/** Every default of the spool, in one place. */
export const SPOOL_DEFAULTS = {
  maxBytes: 1024 * 1024 * 1024,
  segmentBytes: 16 * 1024 * 1024,
  fsync: 'batch' as FsyncPolicy,
  fsyncIntervalMs: 1000,
  /** One record's JSON may not exceed this (appends holding a larger one are refused). */
  maxRecordBytes: 1024 * 1024,
  /** Caps on what one `read` may ask for, whatever the relay requests. */
  maxReadRecords: 100_000,
  maxReadBytes: 16 * 1024 * 1024,
  /** Batches handed out and not yet acknowledged (the one at the cursor and those read ahead): the pull protocol's limit. */
  maxOutstandingBatches: PULL_LIMITS.maxOutstandingBatches,
} as const;

const optionsSchema = z
  .strictObject({
    dir: z.string().min(1),
    maxBytes: z.int().min(4096).default(SPOOL_DEFAULTS.maxBytes),
    segmentBytes: z.int().min(1024).default(SPOOL_DEFAULTS.segmentBytes),
    fsync: z.enum(['always', 'batch', 'interval', 'never']).default(SPOOL_DEFAULTS.fsync),
    fsyncIntervalMs: z.int().min(1).max(3_600_000).default(SPOOL_DEFAULTS.fsyncIntervalMs),
    maxRecordBytes: z.int().min(64).default(SPOOL_DEFAULTS.maxRecordBytes),
    maxReadRecords: z.int().min(1).default(SPOOL_DEFAULTS.maxReadRecords),
    maxReadBytes: z.int().min(64).default(SPOOL_DEFAULTS.maxReadBytes),
    maxOutstandingBatches: z.int().min(1).max(16).default(SPOOL_DEFAULTS.maxOutstandingBatches),
    logger: z.custom<Logger>((v) => typeof v === 'object' && v !== null && typeof (v as Logger).warn === 'function').optional(),
    onDrop: z.custom<(event: SpoolDropEvent) => void>((v) => typeof v === 'function').optional(),
  })
  // The bound only holds if dropping whole old segments can always make room beside the active one.
  .refine((o) => o.maxBytes >= 2 * o.segmentBytes, { message: 'maxBytes must be at least 2 x segmentBytes', path: ['maxBytes'] })
  .refine((o) => o.maxRecordBytes + FRAME_HEADER_BYTES + SEGMENT_HEADER_BYTES <= o.segmentBytes, {
    message: 'segmentBytes must hold at least one record of maxRecordBytes',
    path: ['segmentBytes'],
  });

/** Options of `Spool.open`; see SPOOL_DEFAULTS. */
export type SpoolOptions = z.input<typeof optionsSchema>;
type ResolvedOptions = z.output<typeof optionsSchema>;

/** Counters and gauges of the spool; `bytes` is unacknowledged data, `diskBytes` all segment files. */
export interface SpoolStats {
  records: number;
  bytes: number;
  diskBytes: number;
  segments: number;
  droppedRecords: number;
  droppedBytes: number;
  corruptRegions: number;
  corruptBytes: number;
  tornBytes: number;
  /** Wall-clock ms when the oldest unacknowledged record was appended, or null when empty. */
  oldestAppendedAtMs: number | null;
}

interface Segment {
  seq: number;
  path: string;
  size: number;
  /** Valid records in this segment not yet acknowledged. */
  unacked: number;
}

/**
 * A batch handed to the relay. `encoded` is the records' JSON array exactly as stored,
 * ready to send; `records` parses it on first use (one JSON.parse, none if never touched).
 */
export class SpoolBatch {
  private parsed: TelemetryRecord[] | undefined;

  constructor(
    readonly batchId: string,
    readonly count: number,
    readonly encoded: Buffer,
    /** Append time of the batch's oldest record (ms), or null for an empty batch. */
    readonly oldestAppendedAtMs: number | null,
    /** @internal positions and per-segment record counts, used by ack. */
    readonly start: SpoolPosition,
    readonly end: SpoolPosition,
    readonly perSegment: ReadonlyMap<number, number>,
    /** @internal append time of the record right after the batch, when the read saw it. */
    readonly nextAppendedAtMs: number | undefined = undefined,
  ) {}

  get records(): TelemetryRecord[] {
    this.parsed ??= this.count === 0 ? [] : (JSON.parse(this.encoded.toString('utf8')) as TelemetryRecord[]);
    return this.parsed;
  }
}

const BATCH_ID = /^(\d+)\.(\d+)-(\d+)\.(\d+)$/;

function batchIdOf(start: SpoolPosition, end: SpoolPosition): string {
  return `${start.seq}.${start.offset}-${end.seq}.${end.offset}`;
}

function spoolError(message: string, cause: unknown): UplinkError {
  if (cause instanceof UplinkError) return cause;
  return new UplinkError('UPLINK_ERR_TELEMETRY_SPOOL_UNAVAILABLE', `${message}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
}

/** Walk limits; `until` makes the walk verify that it ends exactly there. */
interface WalkLimits {
  maxRecords: number;
  maxBytes: number;
  until?: SpoolPosition;
}

/** The durable telemetry spool. Create with `Spool.open`. */
export class Spool {
  private readonly log: Logger;
  private segments: Segment[] = [];
  private fh: FileHandle | undefined;
  private cursor: SpoolPosition = { seq: 0, offset: SEGMENT_HEADER_BYTES };
  /**
   * Batches handed out and not yet acknowledged, in spool order, each starting where the
   * previous one ends (the first at the cursor when nothing was dropped meanwhile). At most
   * `maxOutstandingBatches`: the batch at the cursor plus the ones read ahead of it.
   */
  private outstanding: SpoolBatch[] = [];
  private records = 0;
  private headAppendedAtMs: number | null = null;
  private dirty = false;
  private closed = false;
  private queue: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private readonly reported = new Set<string>();
  private readonly counters = { droppedRecords: 0, droppedBytes: 0, corruptRegions: 0, corruptBytes: 0, tornBytes: 0 };

  private constructor(private readonly opts: ResolvedOptions) {
    this.log = (opts.logger ?? silentLogger).child({ component: 'spool', dir: opts.dir });
  }

  /** Open (or create) the spool in `options.dir`, recovering from any crash. */
  static async open(options: SpoolOptions): Promise<Spool> {
    const parsed = optionsSchema.safeParse(options);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `spool.${issue.path.join('.') || '(root)'}: ${issue.message}`, { details: { field: issue.path.join('.') } });
    }
    const spool = new Spool(Object.freeze(parsed.data));
    try {
      await spool.recover();
    } catch (err) {
      await spool.fh?.close().catch(() => undefined);
      throw spoolError(`cannot open the spool in ${parsed.data.dir}`, err);
    }
    if (spool.opts.fsync === 'interval') {
      spool.timer = setInterval(() => void spool.run(() => spool.flush()).catch((err) => spool.log.error({ err }, 'spool fsync failed')), spool.opts.fsyncIntervalMs);
      spool.timer.unref();
    }
    return spool;
  }

  /** Append records in order. Refuses the whole call if one record exceeds `maxRecordBytes`. */
  append(records: readonly TelemetryRecord[]): Promise<void> {
    return this.run(() => this.appendLocked(records));
  }

  /**
   * The oldest unacknowledged records: at most `maxRecords` and about `maxBytes` of JSON
   * (always at least one record when any is pending), both capped by the spool's
   * `maxReadRecords`/`maxReadBytes`. Reading again before `ack` returns the same batch.
   *
   * With `after` (the id of an outstanding batch): the records that follow that batch, so a
   * reader can fetch the next batch while the previous one is still being delivered. Reading
   * after the same batch again returns the same next batch. At most `maxOutstandingBatches`
   * may be outstanding at once (each is held in memory until acknowledged).
   * @throws UplinkError UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN when `after` is not outstanding
   *   (acknowledged, dropped while the spool was full, or handed out before a restart);
   *   UPLINK_ERR_TELEMETRY_LIMIT when one more batch would exceed the outstanding limit.
   */
  read(maxRecords: number, maxBytes: number, after?: string): Promise<SpoolBatch> {
    return this.run(() => this.readLocked(maxRecords, maxBytes, after));
  }

  /**
   * Durably mark a batch as delivered. Acknowledging a batch that is already acknowledged,
   * or whose data was dropped meanwhile, is a no-op; an id that does not describe a batch
   * starting at or before the cursor throws UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN: so does a batch
   * read ahead (`read(..., after)`) acknowledged before the ones in front of it.
   */
  ack(batchId: string): Promise<void> {
    return this.run(() => this.ackLocked(batchId));
  }

  /** Current counters (synchronous: kept in memory). */
  stats(): SpoolStats {
    let bytes = 0;
    let diskBytes = 0;
    for (const s of this.segments) {
      diskBytes += s.size;
      const cmp = s.seq - this.cursor.seq;
      if (cmp > 0) bytes += s.size - SEGMENT_HEADER_BYTES;
      else if (cmp === 0) bytes += s.size - this.cursor.offset;
    }
    return { records: this.records, bytes, diskBytes, segments: this.segments.length, ...this.counters, oldestAppendedAtMs: this.records > 0 ? this.headAppendedAtMs : null };
  }

  /** Flush and close. Idempotent; later calls to append/read/ack throw SPOOL_UNAVAILABLE. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.queue.catch(() => undefined);
    const fh = this.fh;
    this.fh = undefined;
    if (!fh) return;
    try {
      if (this.opts.fsync !== 'never') await fh.datasync();
    } finally {
      await fh.close();
    }
  }

  /** Serialise `fn` after every earlier operation. */
  private run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new UplinkError('UPLINK_ERR_TELEMETRY_SPOOL_UNAVAILABLE', 'the spool is closed'));
    const result = this.queue.then(fn);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private get active(): Segment {
    return this.segments[this.segments.length - 1]!;
  }

  private segmentBySeq(seq: number): Segment | undefined {
    return this.segments.find((s) => s.seq === seq);
  }

  private report(event: SpoolDropEvent): void {
    if (event.reason === 'full') {
      this.counters.droppedRecords += event.records;
      this.counters.droppedBytes += event.bytes;
    } else if (event.reason === 'corrupt') {
      this.counters.corruptRegions++;
      this.counters.corruptBytes += event.bytes;
    } else {
      this.counters.tornBytes += event.bytes;
    }
    this.log.warn({ drop: event }, `telemetry spool dropped data (${event.reason})`);
    try {
      this.opts.onDrop?.(event);
    } catch (err) {
      this.log.error({ err }, 'spool onDrop callback threw');
    }
  }

  // ---------------------------------------------------------------- open and recovery

  private async recover(): Promise<void> {
    const { dir } = this.opts;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const seqs = (await readdir(dir)).map(parseSegmentName).filter((s): s is number => s !== undefined).sort((a, b) => a - b);
    const loaded = await loadCursor(dir);
    let cursor = loaded.position;
    if (!cursor) {
      if (seqs.length > 0) this.log.warn({ reason: 'reason' in loaded ? loaded.reason : 'missing' }, 'spool cursor file missing or unreadable: redelivering from the oldest segment');
      cursor = { seq: seqs[0] ?? 1, offset: SEGMENT_HEADER_BYTES };
    }
    // Segments before the cursor were acknowledged; a crash between saving the cursor and
    // deleting them leaves them behind.
    for (const seq of seqs.filter((s) => s < cursor!.seq)) await rm(join(dir, segmentName(seq)), { force: true });
    const live = seqs.filter((s) => s >= cursor!.seq);
    if (live.length === 0 || live[0] !== cursor.seq) {
      // The cursor's segment is gone (dropped while full): resume at the oldest one left.
      cursor = { seq: live[0] ?? cursor.seq, offset: SEGMENT_HEADER_BYTES };
    }
    this.cursor = cursor;
    for (let i = 0; i < live.length; i++) await this.recoverSegment(live[i]!, i === live.length - 1);
    if (this.segments.length === 0) await this.createSegment(this.cursor.seq);
    this.fh = await open(this.active.path, 'r+');
    this.releaseConsumedPosition();
    await saveCursor(dir, this.cursor);
    await this.deleteConsumedSegments();
    await this.refreshHead();
    this.log.debug({ stats: this.stats() }, 'spool opened');
  }

  /** Scan one segment: count unacknowledged records, report corruption, cut a torn tail. */
  private async recoverSegment(seq: number, last: boolean): Promise<void> {
    const path = join(this.opts.dir, segmentName(seq));
    const fh = await open(path, 'r+');
    let size: number;
    let header: Buffer;
    try {
      size = (await fh.stat()).size;
      header = Buffer.alloc(SEGMENT_HEADER_BYTES);
      await fh.read(header, 0, SEGMENT_HEADER_BYTES, 0);
      if (size < SEGMENT_HEADER_BYTES) {
        // Created but its header never fully written: a crash right after a roll.
        if (size > 0) this.report({ reason: 'torn', records: 0, bytes: size, segment: seq });
        if (!last) {
          await fh.close();
          await rm(path, { force: true });
          return;
        }
        await fh.truncate(0);
        await fh.write(segmentHeader(), 0, SEGMENT_HEADER_BYTES, 0);
        await fh.datasync();
        size = SEGMENT_HEADER_BYTES;
      }
    } finally {
      await fh.close().catch(() => undefined);
    }
    const segment: Segment = { seq, path, size, unacked: 0 };
    let pos = SEGMENT_HEADER_BYTES;
    if (!isSegmentHeader(header)) {
      this.reportCorrupt(seq, 0, SEGMENT_HEADER_BYTES);
    }
    const atCursor = seq === this.cursor.seq;
    const reader = await SegmentReader.open(path, size, this.opts.maxRecordBytes);
    try {
      for (;;) {
        const item = reader.nextBuffered(pos) ?? (await reader.next(pos));
        if (item.kind === 'end') break;
        if (atCursor && item.pos < this.cursor.offset && this.cursor.offset < item.end) {
          // The cursor points inside an item (a foreign or damaged cursor file): step back to
          // its start, so at worst one record is delivered twice, never lost.
          this.log.warn({ cursor: this.cursor, item: item.pos }, 'spool cursor not on a record boundary: moved back');
          this.cursor = { seq, offset: item.pos };
        }
        if (item.kind === 'corrupt') {
          if (last && item.end === size) {
            await this.truncateTornTail(segment, item.pos);
            break;
          }
          this.reportCorrupt(seq, item.pos, item.end);
        } else if (!atCursor || item.pos >= this.cursor.offset) {
          segment.unacked++;
        }
        pos = item.end;
      }
    } finally {
      await reader.close();
    }
    if (atCursor && this.cursor.offset > segment.size) this.cursor = { seq, offset: segment.size };
    this.records += segment.unacked;
    this.segments.push(segment);
  }

  private async truncateTornTail(segment: Segment, validEnd: number): Promise<void> {
    const fh = await open(segment.path, 'r+');
    try {
      await fh.truncate(validEnd);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    this.report({ reason: 'torn', records: 0, bytes: segment.size - validEnd, segment: segment.seq });
    segment.size = validEnd;
  }

  private reportCorrupt(seq: number, pos: number, end: number): void {
    const key = `${seq}.${pos}`;
    if (this.reported.has(key)) return;
    this.reported.add(key);
    this.report({ reason: 'corrupt', records: 0, bytes: end - pos, segment: seq });
  }

  /** Create segment `seq` with its header, durably. */
  private async createSegment(seq: number): Promise<void> {
    const path = join(this.opts.dir, segmentName(seq));
    const fh = await open(path, 'wx', 0o600);
    try {
      await fh.write(segmentHeader(), 0, SEGMENT_HEADER_BYTES, 0);
      if (this.opts.fsync !== 'never') await fh.datasync();
    } finally {
      await fh.close();
    }
    if (this.opts.fsync !== 'never') await syncDir(this.opts.dir);
    this.segments.push({ seq, path, size: SEGMENT_HEADER_BYTES, unacked: 0 });
  }

  /** A cursor at the very end of a finished segment means "start of the next one". */
  private releaseConsumedPosition(): void {
    for (;;) {
      const idx = this.segments.findIndex((s) => s.seq === this.cursor.seq);
      const seg = this.segments[idx];
      if (!seg || idx === this.segments.length - 1 || this.cursor.offset < seg.size) return;
      this.cursor = { seq: this.segments[idx + 1]!.seq, offset: SEGMENT_HEADER_BYTES };
    }
  }

  /** Delete segments entirely before the cursor. Call only after the cursor is saved. */
  private async deleteConsumedSegments(): Promise<void> {
    let deleted = false;
    while (this.segments.length > 1 && this.segments[0]!.seq < this.cursor.seq) {
      await rm(this.segments.shift()!.path, { force: true });
      deleted = true;
    }
    if (deleted && this.opts.fsync !== 'never') await syncDir(this.opts.dir);
  }

  /** Find the append time of the record at the cursor (for stats and lag). */
  private async refreshHead(): Promise<void> {
    this.headAppendedAtMs = null;
    if (this.records === 0) return;
    const batch = await this.walk(this.cursor, { maxRecords: 1, maxBytes: Number.MAX_SAFE_INTEGER }, false);
    this.headAppendedAtMs = batch.oldestAppendedAtMs;
  }

  // ---------------------------------------------------------------- append

  private async appendLocked(records: readonly TelemetryRecord[]): Promise<void> {
    if (records.length === 0) return;
    const now = Date.now();
    const texts: string[] = new Array(records.length);
    const sizes: number[] = new Array(records.length);
    let total = 0;
    for (let i = 0; i < records.length; i++) {
      const text = JSON.stringify(records[i]);
      const size = Buffer.byteLength(text);
      if (size > this.opts.maxRecordBytes) {
        throw new UplinkError('UPLINK_ERR_TELEMETRY_LIMIT', `record ${i} is ${size} bytes, over the spool's maxRecordBytes (${this.opts.maxRecordBytes})`, {
          details: { limit: 'maxRecordBytes', value: this.opts.maxRecordBytes, index: i },
        });
      }
      texts[i] = text;
      sizes[i] = size;
      total += FRAME_HEADER_BYTES + size;
    }
    // An append larger than half the spool would evict data written by the same call.
    if (total > this.opts.maxBytes / 2) {
      throw new UplinkError('UPLINK_ERR_TELEMETRY_LIMIT', `an append of ${total} bytes exceeds half the spool's maxBytes`, { details: { limit: 'maxBytes', value: this.opts.maxBytes } });
    }
    try {
      let i = 0;
      while (i < records.length) {
        if (this.active.size > SEGMENT_HEADER_BYTES && this.active.size + FRAME_HEADER_BYTES + sizes[i]! > this.opts.segmentBytes) await this.roll();
        let j = i;
        let chunk = 0;
        while (j < records.length && (j === i || this.active.size + chunk + FRAME_HEADER_BYTES + sizes[j]! <= this.opts.segmentBytes)) chunk += FRAME_HEADER_BYTES + sizes[j++]!;
        await this.makeRoom(chunk);
        await this.writeFrames(encodeFrames(texts, sizes, i, j, chunk, now), sizes.slice(i, j));
        this.active.unacked += j - i;
        this.records += j - i;
        i = j;
      }
      if (this.opts.fsync === 'batch') await this.fh!.datasync();
      else if (this.opts.fsync === 'interval') this.dirty = true;
      this.headAppendedAtMs ??= now;
    } catch (err) {
      throw spoolError('cannot append to the spool', err);
    }
  }

  /** Write consecutive frames (payload sizes `sizes`) at the end of the active segment. */
  private async writeFrames(frames: Buffer, sizes: readonly number[]): Promise<void> {
    const seg = this.active;
    const fh = this.fh!;
    const start = seg.size;
    try {
      if (this.opts.fsync === 'always') {
        let o = 0;
        for (const size of sizes) {
          const frame = frames.subarray(o, o + FRAME_HEADER_BYTES + size);
          await writeAll(fh, frame, seg.size);
          await fh.datasync();
          seg.size += frame.length;
          o += frame.length;
        }
        return;
      }
      await writeAll(fh, frames, start);
      seg.size += frames.length;
    } catch (err) {
      // Leave nothing of a failed call behind: the next append must start on a clean
      // boundary, and the caller retries the whole call.
      seg.size = start;
      await fh.truncate(start).catch(() => undefined);
      throw err;
    }
  }

  /** Seal the active segment and start the next one. */
  private async roll(): Promise<void> {
    const old = this.fh!;
    if (this.opts.fsync !== 'never') await old.datasync();
    await old.close();
    this.fh = undefined;
    await this.createSegment(this.active.seq + 1);
    this.fh = await open(this.active.path, 'r+');
    const before = this.cursor;
    this.releaseConsumedPosition();
    if (comparePositions(before, this.cursor) !== 0) {
      await saveCursor(this.opts.dir, this.cursor);
      await this.deleteConsumedSegments();
    }
  }

  /** Delete the oldest segments (read or not) until `bytes` more fit under maxBytes. */
  private async makeRoom(bytes: number): Promise<void> {
    let moved = false;
    const diskBytes = (): number => this.segments.reduce((sum, s) => sum + s.size, 0);
    while (this.segments.length > 1 && diskBytes() + bytes > this.opts.maxBytes) {
      const victim = this.segments.shift()!;
      const cmp = victim.seq - this.cursor.seq;
      const lostBytes = cmp > 0 ? victim.size - SEGMENT_HEADER_BYTES : cmp === 0 ? victim.size - this.cursor.offset : 0;
      await rm(victim.path, { force: true });
      this.records -= victim.unacked;
      if (cmp >= 0) {
        this.cursor = { seq: this.segments[0]!.seq, offset: SEGMENT_HEADER_BYTES };
        moved = true;
      }
      this.outstanding = this.outstanding.filter((b) => b.start.seq > victim.seq);
      if (victim.unacked > 0 || lostBytes > 0) this.report({ reason: 'full', records: victim.unacked, bytes: lostBytes, segment: victim.seq });
    }
    if (moved) {
      await saveCursor(this.opts.dir, this.cursor);
      await this.refreshHead();
    }
  }

  private async flush(): Promise<void> {
    if (!this.dirty || !this.fh) return;
    this.dirty = false;
    await this.fh.datasync();
  }

  // ---------------------------------------------------------------- read and ack

  private async readLocked(maxRecords: number, maxBytes: number, after: string | undefined): Promise<SpoolBatch> {
    if (!Number.isSafeInteger(maxRecords) || maxRecords < 1 || !Number.isSafeInteger(maxBytes) || maxBytes < 1) {
      throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `read limits must be positive integers (got ${maxRecords}, ${maxBytes})`);
    }
    const records = Math.min(maxRecords, this.opts.maxReadRecords);
    const bytes = Math.min(maxBytes, this.opts.maxReadBytes);
    const fits = (b: SpoolBatch): boolean => b.count > 0 && b.count <= records && (b.encoded.length <= bytes || b.count === 1);
    let from = this.cursor;
    let index = 0;
    if (after === undefined) {
      // Same batch again until acknowledged (if it still fits the limits). An empty result is
      // never pinned: data appended since must show up on the next read.
      const first = this.outstanding[0];
      if (first && comparePositions(first.start, this.cursor) === 0 && fits(first)) return first;
    } else {
      const i = this.outstanding.findIndex((b) => b.batchId === after);
      if (i < 0) {
        throw new UplinkError('UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN', `batch ${after.slice(0, 80)} is not outstanding (acknowledged, dropped, or the agent restarted): read from the cursor`);
      }
      const next = this.outstanding[i + 1];
      if (next && fits(next)) return next;
      if (i + 1 >= this.opts.maxOutstandingBatches) {
        throw new UplinkError('UPLINK_ERR_TELEMETRY_LIMIT', `at most ${this.opts.maxOutstandingBatches} batches may be outstanding; acknowledge ${this.outstanding[0]!.batchId} first`, {
          details: { limit: 'maxOutstandingBatches', value: this.opts.maxOutstandingBatches },
        });
      }
      from = this.outstanding[i]!.end;
      index = i + 1;
    }
    let batch: SpoolBatch;
    try {
      batch = await this.walk(from, { maxRecords: records, maxBytes: bytes }, true);
    } catch (err) {
      throw spoolError('cannot read the spool', err);
    }
    this.outstanding = batch.count > 0 ? [...this.outstanding.slice(0, index), batch] : this.outstanding.slice(0, index);
    return batch;
  }

  private async ackLocked(batchId: string): Promise<void> {
    const m = BATCH_ID.exec(batchId);
    if (!m) throw new UplinkError('UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN', `"${batchId.slice(0, 80)}" is not a spool batch id`);
    const start = { seq: Number(m[1]), offset: Number(m[2]) };
    const end = { seq: Number(m[3]), offset: Number(m[4]) };
    if (comparePositions(end, this.cursor) <= 0) return; // acknowledged before, or dropped
    let batch = this.outstanding.find((b) => b.batchId === batchId && comparePositions(b.start, this.cursor) === 0);
    if (!batch) {
      if (comparePositions(start, this.cursor) > 0) {
        throw new UplinkError('UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN', `batch ${batchId} starts after the unacknowledged data (cursor ${batchIdOf(this.cursor, this.cursor)})`);
      }
      // Not the batch we handed out (the agent restarted, or it was partly dropped):
      // accept it only if the data from the cursor really ends on a record boundary at `end`.
      batch = await this.walk(this.cursor, { maxRecords: Number.MAX_SAFE_INTEGER, maxBytes: Number.MAX_SAFE_INTEGER, until: end }, false);
    }
    try {
      this.cursor = end;
      for (const [seq, n] of batch.perSegment) {
        const seg = this.segmentBySeq(seq);
        if (seg) seg.unacked -= n;
      }
      this.records -= batch.count;
      // Batches read ahead of this one stay outstanding (they start at the new cursor).
      this.outstanding = this.outstanding.filter((b) => comparePositions(b.start, this.cursor) >= 0);
      this.releaseConsumedPosition();
      await saveCursor(this.opts.dir, this.cursor);
      await this.deleteConsumedSegments();
      // The new head's append time is usually known already (the batch read ahead, or the
      // record the read stopped at): re-reading it costs a disk read per acknowledgement.
      const ahead = this.outstanding[0];
      if (this.records === 0) this.headAppendedAtMs = null;
      else if (ahead && comparePositions(ahead.start, end) === 0) this.headAppendedAtMs = ahead.oldestAppendedAtMs;
      else if (batch.nextAppendedAtMs !== undefined && comparePositions(batch.end, end) === 0) this.headAppendedAtMs = batch.nextAppendedAtMs;
      else await this.refreshHead();
    } catch (err) {
      throw spoolError('cannot save the spool cursor', err);
    }
  }

  /**
   * Collect records from `from` onwards within `limits`, skipping (and reporting) corrupt
   * runs. With `until`, walk exactly to that position or throw BATCH_UNKNOWN.
   */
  private async walk(from: SpoolPosition, limits: WalkLimits, collect: boolean): Promise<SpoolBatch> {
    const payloads: Buffer[] = [];
    const perSegment = new Map<number, number>();
    let count = 0;
    let bytes = 2; // the array brackets
    let oldest: number | null = null;
    let next: number | undefined;
    let end = from;
    let full = false;
    for (const seg of this.segments) {
      if (seg.seq < from.seq || full) continue;
      if (limits.until && seg.seq > limits.until.seq) break;
      let pos = seg.seq === from.seq ? from.offset : SEGMENT_HEADER_BYTES;
      const reader = await SegmentReader.open(seg.path, seg.size, this.opts.maxRecordBytes);
      try {
        for (;;) {
          if (limits.until && comparePositions({ seq: seg.seq, offset: pos }, limits.until) >= 0) break;
          const item = reader.nextBuffered(pos) ?? (await reader.next(pos));
          if (item.kind === 'end') break;
          if (item.kind === 'corrupt') {
            this.reportCorrupt(seg.seq, item.pos, item.end);
          } else {
            const add = item.payload.length + (count > 0 ? 1 : 0);
            if (count > 0 && (count >= limits.maxRecords || bytes + add > limits.maxBytes)) {
              next = item.appendedAtMs;
              full = true;
              break;
            }
            if (collect) payloads.push(item.payload);
            oldest ??= item.appendedAtMs;
            count++;
            bytes += add;
            perSegment.set(seg.seq, (perSegment.get(seg.seq) ?? 0) + 1);
            if (count >= limits.maxRecords) full = true;
          }
          pos = item.end;
          end = { seq: seg.seq, offset: pos };
          if (full) break;
        }
        if (!full) end = { seq: seg.seq, offset: Math.max(pos, seg.seq === from.seq ? from.offset : SEGMENT_HEADER_BYTES) };
      } finally {
        await reader.close();
      }
    }
    if (limits.until && comparePositions(end, limits.until) !== 0) {
      throw new UplinkError('UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN', `batch end ${limits.until.seq}.${limits.until.offset} is not a record boundary in the spool`);
    }
    const encoded = collect ? joinPayloads(payloads, bytes) : Buffer.alloc(0);
    return new SpoolBatch(batchIdOf(from, end), count, encoded, oldest, from, end, perSegment, next);
  }
}

/** `[p1,p2,...]` in one allocation. */
function joinPayloads(payloads: Buffer[], total: number): Buffer {
  const out = Buffer.allocUnsafe(total);
  let o = 0;
  out[o++] = 0x5b; // [
  for (let i = 0; i < payloads.length; i++) {
    if (i > 0) out[o++] = 0x2c; // ,
    o += payloads[i]!.copy(out, o);
  }
  out[o++] = 0x5d; // ]
  return out.subarray(0, o);
}

async function writeAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    done += bytesWritten;
  }
}
