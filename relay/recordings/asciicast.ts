/**
 * Session recordings in asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/):
 * the format definition, the byte-exact text codec and the writer. Reading and replay live
 * in asciicast-replay.ts.
 *
 * File layout: one JSON header line, then one JSON array per event line,
 * `[seconds, type, data]` with type "o" (output), "i" (input), "r" (resize, "COLSxROWS")
 * or "m" (marker). The writer always finishes with an end marker as its last line:
 *
 *     [12.345678, "m", "uplink-end:{\"complete\":true}"]
 *     [12.345678, "m", "uplink-end:{\"complete\":false,\"reason\":\"tunnel closed\"}"]
 *
 * Standard players show it as an ordinary marker. A file whose last line is not that
 * marker was cut off (relay crash, disk full) and the reader reports it incomplete, so a
 * recording is never silently partial.
 *
 * Byte exactness: terminals carry bytes, asciicast carries JSON strings. Each direction
 * has its own streaming decoder, so a UTF-8 character split across chunks is joined, not
 * mangled. Bytes that are not valid UTF-8 are kept losslessly the way Python's
 * "surrogateescape" (PEP 383) does: byte 0xNN becomes the lone surrogate U+DCNN (written
 * by JSON as "\udcNN"). Valid UTF-8 can never produce a lone surrogate, so decoding back
 * is unambiguous and replay is byte-identical for any output, valid UTF-8 or not; other
 * players render those code units as U+FFFD, which is what they would show anyway.
 */
import { createWriteStream } from 'node:fs';
import { isUtf8 } from 'node:buffer';
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';

/** Prefix of the data of the end marker, the last event the writer writes. */
export const END_MARKER_PREFIX = 'uplink-end:';

export const ASCIICAST_WRITER_DEFAULTS = Object.freeze({
  /**
   * Largest chunk of terminal bytes put in one event. JSON escaping can grow a byte to six
   * characters, so lines stay well below the reader's default maxLineBytes (1 MiB).
   */
  maxEventBytes: 32 * 1024,
  /** Record "i" events. Off by default: input holds passwords typed at prompts. */
  recordInput: false,
  /** Largest width or height accepted in the header and in resize events. */
  maxWindowDimension: 1000,
});

/** Event types of asciicast v2. */
export type AsciicastEventType = 'o' | 'i' | 'r' | 'm';

/** The header line. Extra keys allowed by the v2 spec (idle_time_limit, theme…) pass through. */
export interface AsciicastHeader {
  version: 2;
  width: number;
  height: number;
  /** Unix seconds when the session started. */
  timestamp?: number;
  env?: { TERM?: string; SHELL?: string };
  title?: string;
  [extra: string]: unknown;
}

/** How a recording ended, from the end marker or from its absence. */
export interface RecordingEnd {
  complete: boolean;
  /** Why the recording is incomplete; absent when complete. */
  reason?: string;
}

/** Turn the end marker's data into its status, or undefined when `data` is not one. */
export function parseEndMarker(data: string): RecordingEnd | undefined {
  if (!data.startsWith(END_MARKER_PREFIX)) return undefined;
  let body: unknown;
  try {
    body = JSON.parse(data.slice(END_MARKER_PREFIX.length));
  } catch {
    return undefined;
  }
  const parsed = z.strictObject({ complete: z.boolean(), reason: z.string().optional() }).safeParse(body);
  if (!parsed.success) return undefined;
  return parsed.data.reason === undefined ? { complete: parsed.data.complete } : { complete: parsed.data.complete, reason: parsed.data.reason };
}

/** Expected second-byte range for each UTF-8 lead byte (Unicode 15, table 3-7). */
function sequenceOf(lead: number): { len: number; lo: number; hi: number } | undefined {
  if (lead >= 0xc2 && lead <= 0xdf) return { len: 2, lo: 0x80, hi: 0xbf };
  if (lead === 0xe0) return { len: 3, lo: 0xa0, hi: 0xbf };
  if (lead === 0xed) return { len: 3, lo: 0x80, hi: 0x9f }; // excludes UTF-16 surrogates
  if (lead >= 0xe1 && lead <= 0xef) return { len: 3, lo: 0x80, hi: 0xbf };
  if (lead === 0xf0) return { len: 4, lo: 0x90, hi: 0xbf };
  if (lead >= 0xf1 && lead <= 0xf3) return { len: 4, lo: 0x80, hi: 0xbf };
  if (lead === 0xf4) return { len: 4, lo: 0x80, hi: 0x8f };
  return undefined;
}

/** Length of the valid UTF-8 sequence at `i`, 0 when invalid, -1 when valid so far but cut off by the end. */
function validSequenceAt(buf: Buffer, i: number): number {
  const b = buf[i]!;
  if (b < 0x80) return 1;
  const seq = sequenceOf(b);
  if (!seq) return 0;
  for (let k = 1; k < seq.len; k++) {
    if (i + k >= buf.length) return -1;
    const c = buf[i + k]!;
    const [lo, hi] = k === 1 ? [seq.lo, seq.hi] : [0x80, 0xbf];
    if (c < lo || c > hi) return 0;
  }
  return seq.len;
}

/**
 * Streaming bytes → string decoder for one direction of a session. Unlike StringDecoder
 * it is lossless: invalid bytes become lone surrogates U+DC80..U+DCFF (see file comment).
 * A sequence cut at the end of a chunk is held back until the next chunk or end().
 */
export class ByteExactDecoder {
  private carry: Buffer = Buffer.alloc(0);

  write(chunk: Buffer): string {
    const data = this.carry.length ? Buffer.concat([this.carry, chunk]) : chunk;
    // Only the last three bytes can start an incomplete sequence.
    let cut = data.length;
    for (let i = Math.max(0, data.length - 3); i < data.length; i++) {
      if (validSequenceAt(data, i) === -1) {
        cut = i;
        break;
      }
    }
    this.carry = Buffer.from(data.subarray(cut));
    return decodeComplete(data.subarray(0, cut));
  }

  /** Flush: a sequence still held back can no longer complete, so its bytes are escaped. */
  end(): string {
    const rest = this.carry;
    this.carry = Buffer.alloc(0);
    return decodeComplete(rest);
  }
}

function decodeComplete(buf: Buffer): string {
  if (isUtf8(buf)) return buf.toString('utf8'); // the common case, at native speed
  let out = '';
  let start = 0; // start of the pending run of valid bytes
  for (let i = 0; i < buf.length; ) {
    const n = validSequenceAt(buf, i);
    if (n > 0) {
      i += n;
      continue;
    }
    out += buf.toString('utf8', start, i) + String.fromCharCode(0xdc00 + buf[i]!);
    i += 1;
    start = i;
  }
  return out + buf.toString('utf8', start);
}

const ESCAPED_BYTES = /[\udc80-\udcff]+/gu;

/** Inverse of {@link ByteExactDecoder}: the exact bytes an event's data stands for. */
export function encodeEventData(data: string): Buffer {
  // With the u flag a surrogate pair is one code point, so only lone surrogates match.
  if (!/[\udc80-\udcff]/u.test(data)) return Buffer.from(data, 'utf8');
  const parts: Buffer[] = [];
  let last = 0;
  for (const m of data.matchAll(ESCAPED_BYTES)) {
    parts.push(Buffer.from(data.slice(last, m.index), 'utf8'));
    parts.push(Buffer.from([...m[0]].map((ch) => ch.charCodeAt(0) - 0xdc00)));
    last = m.index + m[0].length;
  }
  parts.push(Buffer.from(data.slice(last), 'utf8'));
  return Buffer.concat(parts);
}

const writerOptionsSchema = z.strictObject({
  maxEventBytes: z.number().int().min(4).max(1024 * 1024).default(ASCIICAST_WRITER_DEFAULTS.maxEventBytes),
  recordInput: z.boolean().default(ASCIICAST_WRITER_DEFAULTS.recordInput),
  maxWindowDimension: z.number().int().min(1).max(65_535).default(ASCIICAST_WRITER_DEFAULTS.maxWindowDimension),
});

export type AsciicastWriterOptions = z.input<typeof writerOptionsSchema>;

/** What the caller knows at session start; `version` is always 2. */
export interface AsciicastStart {
  width: number;
  height: number;
  /** Unix seconds; default now. */
  timestamp?: number;
  env?: { TERM?: string; SHELL?: string };
  title?: string;
}

/**
 * Writes one session as asciicast v2. Times are seconds since construction from a
 * monotonic clock, with microsecond (6 decimal) precision, never decreasing.
 *
 * Methods return the destination's write() result so the caller can apply backpressure.
 * A destination error does not throw into the session: the writer stops writing and
 * end() rejects with UPLINK_ERR_RECORDING_WRITE, so the caller can mark the recording
 * incomplete in the store.
 */
export class AsciicastWriter {
  private readonly opts: z.output<typeof writerOptionsSchema>;
  private readonly started = process.hrtime.bigint();
  private readonly decoders = { o: new ByteExactDecoder(), i: new ByteExactDecoder() };
  private lastMicros = 0n;
  private failure: Error | undefined;
  private ending: Promise<void> | undefined;

  /** Open `file` for writing (it must not exist) and write the header. */
  static toFile(file: string, start: AsciicastStart, options: AsciicastWriterOptions = {}): AsciicastWriter {
    return new AsciicastWriter(createWriteStream(file, { flags: 'wx', mode: 0o600 }), start, options);
  }

  constructor(
    private readonly dest: Writable,
    start: AsciicastStart,
    options: AsciicastWriterOptions = {},
  ) {
    const parsed = writerOptionsSchema.safeParse(options);
    if (!parsed.success) {
      const field = parsed.error.issues[0]!.path.join('.') || '(options)';
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `asciicast writer option ${field}: ${parsed.error.issues[0]!.message}`, { details: { field } });
    }
    this.opts = parsed.data;
    this.checkSize(start.width, start.height);
    dest.on('error', (err) => {
      this.failure ??= err;
    });
    const header: AsciicastHeader = {
      version: 2,
      width: start.width,
      height: start.height,
      timestamp: start.timestamp ?? Math.floor(Date.now() / 1000),
    };
    if (start.env) header.env = { ...start.env };
    if (start.title !== undefined) header.title = start.title;
    this.line(JSON.stringify(header));
  }

  /** Bytes the terminal showed. */
  output(data: Buffer): boolean {
    return this.bytes('o', data);
  }

  /** Bytes the user typed; dropped unless the writer was made with recordInput. */
  input(data: Buffer): boolean {
    this.assertOpen();
    return this.opts.recordInput ? this.bytes('i', data) : true;
  }

  /** The window changed size. */
  resize(cols: number, rows: number): boolean {
    this.assertOpen();
    this.checkSize(cols, rows);
    return this.event('r', `${cols}x${rows}`);
  }

  /**
   * Flush both decoders, write the end marker and close the destination. Idempotent:
   * later calls return the first call's promise. Rejects with UPLINK_ERR_RECORDING_WRITE
   * when any write failed (the file on disk then lacks its marker and reads incomplete).
   */
  end(status: RecordingEnd): Promise<void> {
    this.ending ??= this.finish(status);
    return this.ending;
  }

  private async finish(status: RecordingEnd): Promise<void> {
    for (const type of ['o', 'i'] as const) {
      const rest = this.decoders[type].end();
      if (rest) this.event(type, rest);
    }
    const marker = status.complete ? { complete: true } : { complete: false, reason: status.reason ?? 'unknown' };
    this.event('m', END_MARKER_PREFIX + JSON.stringify(marker));
    if (!this.failure && !this.dest.destroyed) {
      this.dest.end();
      try {
        // Waits for 'close' on files, so the bytes have reached the kernel when this resolves.
        await finished(this.dest);
      } catch (err) {
        this.failure ??= err as Error;
      }
    }
    if (this.failure) {
      throw new UplinkError('UPLINK_ERR_RECORDING_WRITE', `recording write failed: ${this.failure.message}`, { cause: this.failure });
    }
  }

  /** The first destination error, if any. */
  get error(): Error | undefined {
    return this.failure;
  }

  private bytes(type: 'o' | 'i', data: Buffer): boolean {
    this.assertOpen();
    let ok = true;
    for (let off = 0; off < data.length; off += this.opts.maxEventBytes) {
      const text = this.decoders[type].write(data.subarray(off, off + this.opts.maxEventBytes));
      if (text) ok = this.event(type, text) && ok;
    }
    return ok;
  }

  private event(type: AsciicastEventType, data: string): boolean {
    const micros = (process.hrtime.bigint() - this.started) / 1000n;
    if (micros > this.lastMicros) this.lastMicros = micros;
    const seconds = `${this.lastMicros / 1_000_000n}.${(this.lastMicros % 1_000_000n).toString().padStart(6, '0')}`;
    return this.line(`[${seconds}, "${type}", ${JSON.stringify(data)}]`);
  }

  private line(text: string): boolean {
    if (this.failure || this.dest.destroyed) return false;
    return this.dest.write(text + '\n');
  }

  /**
   * The session must stop feeding the writer before end(): an event after the end marker
   * would make the file malformed, and silently dropping it would hide output.
   */
  private assertOpen(): void {
    if (this.ending) throw new UplinkError('UPLINK_ERR_RECORDING_WRITE', 'recording already ended');
  }

  private checkSize(cols: number, rows: number): void {
    const max = this.opts.maxWindowDimension;
    const ok = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= max;
    if (!ok(cols) || !ok(rows)) {
      throw new UplinkError('UPLINK_ERR_PTY_SIZE_INVALID', `window size ${String(cols)}x${String(rows)} is not within 1..${max}`, { details: { cols, rows, max } });
    }
  }
}
