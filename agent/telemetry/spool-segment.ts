/**
 * On-disk format of the telemetry spool's segment files, and a reader that walks them.
 *
 * A segment is `<seq as 20 digits>.seg`: a 16-byte file header, then frames back to back.
 *
 *   file header   "UPLSPOOL" | u32 format version | u32 reserved (0)
 *   frame         u32 magic "UPLR" | u32 crc32 | u32 payload length | f64 appended-at ms | payload
 *
 * All integers little-endian. The CRC-32 covers everything after itself (length, time and
 * payload), so a flipped length is caught as surely as a flipped payload byte. The payload
 * is one record's JSON, which lets a batch be served as `[p1,p2,...]` without parsing.
 *
 * Why a magic per frame: after a corrupted byte the reader can find the next frame by
 * searching for the magic and checking that candidate's CRC, instead of losing the rest of
 * the segment. A false match must also pass the CRC (1 in 2^32), and is then only a wrong
 * resync point, never silently altered data of a real record.
 */
import { open, type FileHandle } from 'node:fs/promises';
import zlib from 'node:zlib';

/** File header: magic + version + reserved. */
export const SEGMENT_MAGIC = Buffer.from('UPLSPOOL', 'latin1');
export const SEGMENT_FORMAT_VERSION = 1;
export const SEGMENT_HEADER_BYTES = 16;

/** Frame magic "UPLR" read as a little-endian u32. */
export const FRAME_MAGIC = 0x524c5055;
export const FRAME_HEADER_BYTES = 20;
const FRAME_MAGIC_BYTES = Buffer.from('UPLR', 'latin1');

/** Reader window: one disk read fetches at least this much (batch reads, few syscalls). */
export const READ_CHUNK_BYTES = 1024 * 1024;

const SEGMENT_NAME = /^(\d{20})\.seg$/;

/** File name of segment `seq`. */
export function segmentName(seq: number): string {
  return `${String(seq).padStart(20, '0')}.seg`;
}

/** Sequence number of a segment file name, or undefined for any other file. */
export function parseSegmentName(name: string): number | undefined {
  const m = SEGMENT_NAME.exec(name);
  if (!m) return undefined;
  const seq = Number(m[1]);
  return Number.isSafeInteger(seq) ? seq : undefined;
}

/** The 16-byte header every segment starts with. */
export function segmentHeader(): Buffer {
  const header = Buffer.alloc(SEGMENT_HEADER_BYTES);
  SEGMENT_MAGIC.copy(header, 0);
  header.writeUInt32LE(SEGMENT_FORMAT_VERSION, 8);
  return header;
}

/** True when `buf` starts with a segment header this version reads. */
export function isSegmentHeader(buf: Buffer): boolean {
  return buf.length >= SEGMENT_HEADER_BYTES && buf.subarray(0, 8).equals(SEGMENT_MAGIC) && buf.readUInt32LE(8) === SEGMENT_FORMAT_VERSION;
}

let crcTable: Int32Array | undefined;

/** Portable CRC-32 (IEEE) for Node versions before zlib.crc32 (20.15). */
function crc32Js(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c;
    }
  }
  let crc = -1;
  for (let i = 0; i < data.length; i++) crc = crcTable[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ -1) >>> 0;
}

const nativeCrc32 = (zlib as unknown as { crc32?: (data: Uint8Array) => number }).crc32;

/** CRC-32 (IEEE), native when available. */
export function crc32(data: Uint8Array): number {
  return nativeCrc32 ? nativeCrc32(data) : crc32Js(data);
}

/**
 * Write the header of the frame at `o` whose payload (`length` bytes) is already in place
 * after it: magic, length, append time, and the CRC over all but the magic and itself.
 */
function sealFrame(out: Buffer, o: number, length: number, appendedAtMs: number): void {
  out.writeUInt32LE(FRAME_MAGIC, o);
  out.writeUInt32LE(length, o + 8);
  out.writeDoubleLE(appendedAtMs, o + 12);
  out.writeUInt32LE(crc32(out.subarray(o + 8, o + FRAME_HEADER_BYTES + length)), o + 4);
}

/** One frame around `payload`, stamped with the append time. */
export function encodeFrame(payload: Buffer, appendedAtMs: number): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  payload.copy(frame, FRAME_HEADER_BYTES);
  sealFrame(frame, 0, payload.length, appendedAtMs);
  return frame;
}

/**
 * Frames for `texts[from..to)` (record JSON, `bytes[i]` its UTF-8 length) back to back in one
 * buffer of `total` bytes, all stamped `appendedAtMs`. Same bytes as concatenating
 * `encodeFrame` of each, without a buffer and a copy per record (the spool's append path).
 */
export function encodeFrames(texts: readonly string[], bytes: readonly number[], from: number, to: number, total: number, appendedAtMs: number): Buffer {
  const out = Buffer.allocUnsafe(total);
  let o = 0;
  for (let i = from; i < to; i++) {
    const length = bytes[i]!;
    if (out.write(texts[i]!, o + FRAME_HEADER_BYTES, length, 'utf8') !== length) throw new Error(`record ${i} is not ${length} bytes of UTF-8`);
    sealFrame(out, o, length, appendedAtMs);
    o += FRAME_HEADER_BYTES + length;
  }
  if (o !== total) throw new Error(`frames are ${o} bytes, expected ${total}`);
  return out;
}

/** What the reader found at a position. */
export type ScanItem =
  | { kind: 'frame'; pos: number; end: number; payload: Buffer; appendedAtMs: number }
  /** Bytes that are not valid frames, up to the next valid frame or the end of the data. */
  | { kind: 'corrupt'; pos: number; end: number }
  | { kind: 'end'; pos: number };

/**
 * Sequential reader over one segment file's bytes `[start, size)`, buffering large chunks.
 * `size` is the caller's idea of the valid length (the writer's in-memory size for the
 * segment being appended to), so the reader never sees a write in progress.
 */
export class SegmentReader {
  private buf: Buffer = Buffer.alloc(0);
  private bufStart = 0;

  private constructor(
    private readonly fh: FileHandle,
    private readonly size: number,
    private readonly maxPayloadBytes: number,
  ) {}

  /** Open `path` for reading frames up to byte `size`. */
  static async open(path: string, size: number, maxPayloadBytes: number): Promise<SegmentReader> {
    return new SegmentReader(await open(path, 'r'), size, maxPayloadBytes);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }

  /** Make `[pos, pos+len)` available in the buffer (clamped to size); returns the bytes available. */
  private async ensure(pos: number, len: number): Promise<number> {
    const want = Math.min(len, this.size - pos);
    if (want <= 0) return 0;
    if (pos >= this.bufStart && pos + want <= this.bufStart + this.buf.length) return want;
    const readLen = Math.min(Math.max(want, READ_CHUNK_BYTES), this.size - pos);
    const buf = Buffer.allocUnsafe(readLen);
    let got = 0;
    while (got < readLen) {
      const { bytesRead } = await this.fh.read(buf, got, readLen - got, pos + got);
      if (bytesRead === 0) break; // file shorter than expected: callers see a short read
      got += bytesRead;
    }
    this.buf = buf.subarray(0, got);
    this.bufStart = pos;
    return Math.min(want, got);
  }

  private at(pos: number): number {
    return pos - this.bufStart;
  }

  /**
   * Parse the frame at `pos` from the buffer alone: the frame, undefined when there is no
   * valid frame there, or 'more' when the buffer does not hold enough bytes to tell.
   */
  private parseAt(pos: number): Extract<ScanItem, { kind: 'frame' }> | undefined | 'more' {
    const o = pos - this.bufStart;
    const buf = this.buf;
    if (o < 0 || o + FRAME_HEADER_BYTES > buf.length) return pos + FRAME_HEADER_BYTES > this.size ? undefined : 'more';
    if (buf.readUInt32LE(o) !== FRAME_MAGIC) return undefined;
    const length = buf.readUInt32LE(o + 8);
    const end = pos + FRAME_HEADER_BYTES + length;
    // A length beyond the limit or the file is corruption (or a torn write); never trust it.
    if (length > this.maxPayloadBytes || end > this.size) return undefined;
    if (o + FRAME_HEADER_BYTES + length > buf.length) return 'more';
    const bufEnd = o + FRAME_HEADER_BYTES + length;
    if (crc32(buf.subarray(o + 8, bufEnd)) !== buf.readUInt32LE(o + 4)) return undefined;
    return { kind: 'frame', pos, end, payload: buf.subarray(o + FRAME_HEADER_BYTES, bufEnd), appendedAtMs: buf.readDoubleLE(o + 12) };
  }

  /** The valid frame starting exactly at `pos`, or undefined. */
  private async frameAt(pos: number): Promise<Extract<ScanItem, { kind: 'frame' }> | undefined> {
    const parsed = this.parseAt(pos);
    if (parsed !== 'more') return parsed;
    await this.ensure(pos, FRAME_HEADER_BYTES + this.maxPayloadBytes);
    const again = this.parseAt(pos);
    return again === 'more' ? undefined : again;
  }

  /**
   * The frame at `pos` when it is already buffered, else undefined (then call `next`).
   * The hot path of a batch read: no promise per record.
   */
  nextBuffered(pos: number): ScanItem | undefined {
    if (pos >= this.size) return { kind: 'end', pos };
    const parsed = this.parseAt(pos);
    return typeof parsed === 'object' ? parsed : undefined;
  }

  /**
   * The item at `pos`: a valid frame, the end of the data, or a corrupt run reaching to the
   * next valid frame (found by searching for the frame magic) or to the end.
   * The payload is a view into a read buffer. Each refill allocates a fresh buffer and never
   * writes into an old one, so views stay valid after later calls (no per-record copy).
   */
  async next(pos: number): Promise<ScanItem> {
    if (pos >= this.size) return { kind: 'end', pos };
    const frame = await this.frameAt(pos);
    if (frame) return frame;
    let search = pos + 1;
    while (search + FRAME_HEADER_BYTES <= this.size) {
      const avail = await this.ensure(search, READ_CHUNK_BYTES);
      const o = this.at(search);
      const hit = this.buf.subarray(o, o + avail).indexOf(FRAME_MAGIC_BYTES);
      if (hit < 0) {
        // Keep 3 bytes: the magic may straddle the window edge.
        search += Math.max(1, avail - (FRAME_MAGIC_BYTES.length - 1));
        continue;
      }
      const candidate = search + hit;
      if (await this.frameAt(candidate)) return { kind: 'corrupt', pos, end: candidate };
      search = candidate + 1;
    }
    return { kind: 'corrupt', pos, end: this.size };
  }
}
