/**
 * Reading and replaying asciicast v2 recordings written by AsciicastWriter (or any other
 * v2 writer).
 *
 * The reader streams: it holds one line at a time, never the file, so an eight-hour
 * recording replays in constant memory. Every size it reads is bounded (maxLineBytes,
 * maxEvents). Damage is told apart from truncation:
 * - a line that is not valid v2 (bad JSON, not UTF-8, wrong shape, time going backwards,
 *   anything after the end marker) is UPLINK_ERR_RECORDING_MALFORMED with its line number;
 * - a file that stops without the writer's end marker, or whose last line is cut
 *   mid-way, was interrupted (crash, disk full): its events are all delivered and the end
 *   status is `{ complete: false, reason }`. So is a marker that says `complete: false`.
 */
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { encodeEventData, parseEndMarker, END_MARKER_PREFIX, type AsciicastEventType, type AsciicastHeader, type RecordingEnd } from './asciicast.js';

export const ASCIICAST_READER_DEFAULTS = Object.freeze({
  /** Longest line accepted, in bytes; the writer's lines stay far below (32 KiB events). */
  maxLineBytes: 1024 * 1024,
  /** Most events accepted in one recording (about 8 h of busy output). */
  maxEvents: 5_000_000,
  /** Largest width or height accepted in the header and in resize events. */
  maxWindowDimension: 1000,
});

const limitsSchema = z.strictObject({
  maxLineBytes: z.number().int().min(64).default(ASCIICAST_READER_DEFAULTS.maxLineBytes),
  maxEvents: z.number().int().min(0).default(ASCIICAST_READER_DEFAULTS.maxEvents),
  maxWindowDimension: z.number().int().min(1).max(65_535).default(ASCIICAST_READER_DEFAULTS.maxWindowDimension),
});

export type AsciicastReaderLimits = z.input<typeof limitsSchema>;

/** One event; `data` is a JS string, see encodeEventData() for its bytes. */
export interface AsciicastEvent {
  time: number;
  type: AsciicastEventType;
  data: string;
}

interface Line {
  bytes: Buffer;
  number: number;
  /** false for a last line with no newline: the writer was cut off mid-line. */
  terminated: boolean;
}

async function* splitLines(source: AsyncIterable<Buffer | string>, maxLineBytes: number): AsyncGenerator<Line> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let number = 0;
  const tooLong = (): UplinkError =>
    new UplinkError('UPLINK_ERR_RECORDING_LIMIT', `line ${number + 1} is longer than maxLineBytes (${maxLineBytes})`, {
      details: { limit: 'maxLineBytes', value: maxLineBytes, line: number + 1 },
    });
  for await (const raw of source) {
    let chunk = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw;
    for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a)) {
      if (pendingBytes + nl > maxLineBytes) throw tooLong();
      pending.push(chunk.subarray(0, nl));
      number += 1;
      yield { bytes: Buffer.concat(pending), number, terminated: true };
      pending = [];
      pendingBytes = 0;
      chunk = chunk.subarray(nl + 1);
    }
    // Checked before buffering, so a hostile file without newlines costs maxLineBytes at most.
    if (pendingBytes + chunk.length > maxLineBytes) throw tooLong();
    if (chunk.length) {
      pending.push(Buffer.from(chunk));
      pendingBytes += chunk.length;
    }
  }
  if (pendingBytes > 0) yield { bytes: Buffer.concat(pending), number: number + 1, terminated: false };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function malformed(line: number, why: string): UplinkError {
  return new UplinkError('UPLINK_ERR_RECORDING_MALFORMED', `recording line ${line}: ${why}`, { details: { line, reason: why } });
}

function parseJson(line: Line): unknown {
  let text: string;
  try {
    text = utf8.decode(line.bytes);
  } catch {
    throw malformed(line.number, 'not valid UTF-8');
  }
  try {
    return JSON.parse(text);
  } catch {
    throw malformed(line.number, 'not valid JSON');
  }
}

const headerSchema = z.looseObject({
  version: z.literal(2),
  width: z.number().int().min(1),
  height: z.number().int().min(1),
  timestamp: z.number().int().min(0).optional(),
  env: z.record(z.string(), z.string().nullable()).optional(),
  title: z.string().optional(),
  idle_time_limit: z.number().min(0).optional(),
});

const RESIZE = /^(\d{1,5})x(\d{1,5})$/;
const TYPES = new Set<string>(['o', 'i', 'r', 'm']);

/**
 * A recording opened for reading: `header` is parsed at open, events() streams the rest
 * once. `end` is set when events() has run to completion.
 */
export class AsciicastReader {
  private status: RecordingEnd | undefined;
  private consumed = false;

  private constructor(
    readonly header: AsciicastHeader,
    private readonly lines: AsyncGenerator<Line>,
    private readonly limits: z.output<typeof limitsSchema>,
    private readonly source: Readable | undefined,
  ) {}

  /** Open a stream (or any async iterable of chunks) and read its header. */
  static async open(source: Readable | AsyncIterable<Buffer | string>, limits: AsciicastReaderLimits = {}): Promise<AsciicastReader> {
    const parsedLimits = limitsSchema.safeParse(limits);
    if (!parsedLimits.success) {
      const field = parsedLimits.error.issues[0]!.path.join('.') || '(limits)';
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `asciicast reader limit ${field}: ${parsedLimits.error.issues[0]!.message}`, { details: { field } });
    }
    const lim = parsedLimits.data;
    const readable = 'destroy' in source ? (source as Readable) : undefined;
    const lines = splitLines(source, lim.maxLineBytes);
    try {
      const first = await lines.next();
      if (first.done) throw malformed(1, 'empty file: no header');
      const parsed = headerSchema.safeParse(parseJson(first.value));
      if (!parsed.success) throw malformed(1, `bad header: ${parsed.error.issues[0]!.path.join('.') || 'header'} ${parsed.error.issues[0]!.message}`);
      const { width, height } = parsed.data;
      if (width > lim.maxWindowDimension || height > lim.maxWindowDimension) {
        throw malformed(1, `header size ${width}x${height} exceeds ${lim.maxWindowDimension}`);
      }
      return new AsciicastReader(parsed.data as AsciicastHeader, lines, lim, readable);
    } catch (err) {
      await lines.return(undefined);
      readable?.destroy();
      throw err;
    }
  }

  /** Open a recording file. */
  static async openFile(file: string, limits: AsciicastReaderLimits = {}): Promise<AsciicastReader> {
    return AsciicastReader.open(createReadStream(file), limits);
  }

  /** How the recording ended; undefined until events() has been read to the end. */
  get end(): RecordingEnd | undefined {
    return this.status;
  }

  /** Stop reading and release the source. */
  async close(): Promise<void> {
    await this.lines.return(undefined);
    this.source?.destroy();
  }

  /** Stream the events (the end marker is consumed, not yielded); returns the end status. */
  async *events(): AsyncGenerator<AsciicastEvent, RecordingEnd> {
    if (this.consumed) throw new UplinkError('UPLINK_ERR_INTERNAL', 'asciicast events() can be read only once');
    this.consumed = true;
    let lastTime = 0;
    let count = 0;
    let marker: RecordingEnd | undefined;
    try {
      for await (const line of this.lines) {
        if (marker) throw malformed(line.number, 'event after the end marker');
        let event: AsciicastEvent;
        try {
          event = this.parseEvent(line, lastTime);
        } catch (err) {
          // A half-written last line is the signature of a crash, not of tampering.
          if (!line.terminated) {
            this.status = { complete: false, reason: `recording cut off in line ${line.number}` };
            return this.status;
          }
          throw err;
        }
        lastTime = event.time;
        if (event.type === 'm' && event.data.startsWith(END_MARKER_PREFIX)) {
          marker = parseEndMarker(event.data);
          if (!marker) throw malformed(line.number, 'unreadable end marker');
          continue;
        }
        count += 1;
        if (count > this.limits.maxEvents) {
          throw new UplinkError('UPLINK_ERR_RECORDING_LIMIT', `recording has more than maxEvents (${this.limits.maxEvents}) events`, {
            details: { limit: 'maxEvents', value: this.limits.maxEvents, line: line.number },
          });
        }
        yield event;
      }
    } finally {
      this.source?.destroy();
    }
    this.status = marker ?? { complete: false, reason: 'recording ended without its end marker (the writer stopped early)' };
    return this.status;
  }

  private parseEvent(line: Line, lastTime: number): AsciicastEvent {
    const value = parseJson(line);
    if (!Array.isArray(value) || value.length !== 3) throw malformed(line.number, 'an event must be [time, type, data]');
    const [time, type, data] = value as [unknown, unknown, unknown];
    if (typeof time !== 'number' || !Number.isFinite(time) || time < 0) throw malformed(line.number, 'event time must be a non-negative number');
    if (time < lastTime) throw malformed(line.number, `event time ${time} goes back from ${lastTime}`);
    if (typeof type !== 'string' || !TYPES.has(type)) throw malformed(line.number, `unknown event type ${JSON.stringify(type)}`);
    if (typeof data !== 'string') throw malformed(line.number, 'event data must be a string');
    if (type === 'r') {
      const m = RESIZE.exec(data);
      const max = this.limits.maxWindowDimension;
      if (!m || Number(m[1]) < 1 || Number(m[2]) < 1 || Number(m[1]) > max || Number(m[2]) > max) {
        throw malformed(line.number, `resize data ${JSON.stringify(data)} is not COLSxROWS within 1..${max}`);
      }
    }
    return { time, type: type as AsciicastEventType, data };
  }
}

const replaySchema = z.strictObject({
  /** 2 plays twice as fast. */
  speed: z.number().positive().max(1e6).default(1),
  /** Cap on any pause between events; default the header's idle_time_limit, else none. */
  maxIdleSeconds: z.number().min(0).optional(),
  /** Receives the exact output bytes; a returned promise is awaited (backpressure). */
  write: z.custom<(bytes: Buffer) => void | Promise<void>>((v) => typeof v === 'function'),
  onResize: z.custom<(cols: number, rows: number) => void>((v) => typeof v === 'function').optional(),
  onMarker: z.custom<(label: string) => void>((v) => typeof v === 'function').optional(),
  signal: z.custom<AbortSignal>((v) => v instanceof AbortSignal).optional(),
});

export type ReplayOptions = z.input<typeof replaySchema>;

/** What replay() delivered, and how the recording ended. */
export interface ReplayResult extends RecordingEnd {
  events: number;
  bytes: number;
}

/**
 * Play a recording's output in real time (scaled by `speed`): the bytes given to `write`
 * are exactly the bytes the terminal saw. Input events are not played (the terminal's echo
 * is already in the output). Throws UPLINK_ERR_USAGE for bad options, the reader's codes
 * for a damaged file, and AbortError when `signal` aborts.
 */
export async function replay(reader: AsciicastReader, options: ReplayOptions): Promise<ReplayResult> {
  const parsed = replaySchema.safeParse(options);
  if (!parsed.success) {
    const field = parsed.error.issues[0]!.path.join('.') || '(options)';
    throw new UplinkError('UPLINK_ERR_USAGE', `replay ${field}: ${parsed.error.issues[0]!.message}`, { details: { field } });
  }
  const opts = parsed.data;
  const idleCap = opts.maxIdleSeconds ?? reader.header.idle_time_limit;
  const maxIdle = typeof idleCap === 'number' ? idleCap : Number.POSITIVE_INFINITY;
  let last = 0;
  let events = 0;
  let bytes = 0;
  const it = reader.events();
  try {
    for (;;) {
      opts.signal?.throwIfAborted();
      const next = await it.next();
      if (next.done) return { ...next.value, events, bytes };
      const ev = next.value;
      const delayMs = (Math.min(ev.time - last, maxIdle) / opts.speed) * 1000;
      last = ev.time;
      if (delayMs >= 1) await sleep(delayMs, undefined, opts.signal ? { signal: opts.signal } : {});
      events += 1;
      if (ev.type === 'o') {
        const out = encodeEventData(ev.data);
        bytes += out.length;
        await opts.write(out);
      } else if (ev.type === 'r') {
        const [cols, rows] = ev.data.split('x').map(Number) as [number, number];
        opts.onResize?.(cols, rows);
      } else if (ev.type === 'm') {
        opts.onMarker?.(ev.data);
      }
    }
  } finally {
    await it.return({ complete: false, reason: 'replay stopped' });
  }
}
