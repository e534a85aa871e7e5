/**
 * Channel framing for interactive operations (exec, shell): the same byte layout on the
 * CLI↔relay WebSocket stream and on the relay↔agent HTTP/2 stream, like gRPC's
 * length-prefixed messages or Kubernetes' channel protocol.
 *
 *   [u8 channel][u32 big-endian length][payload]
 *
 * Channels: 0 stdin, 1 stdout, 2 stderr, 3 control (UTF-8 JSON, see ControlMessage).
 * The length is checked against a limit before any payload is buffered.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { UplinkError } from './errors.js';

export const CHANNEL = { stdin: 0, stdout: 1, stderr: 2, control: 3 } as const;
export type Channel = (typeof CHANNEL)[keyof typeof CHANNEL];

export const FRAME_HEADER_BYTES = 5;
const EMPTY = Buffer.alloc(0);
/** Default upper bound for one frame's payload. */
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;

export type ControlMessage =
  | { type: 'eof' }
  | { type: 'signal'; signal: string }
  | { type: 'resize'; cols: number; rows: number }
  | { type: 'exit'; code: number | null; signal: string | null; reason?: string }
  | { type: 'error'; code: string; message: string }
  /** kube ops: the API server's status and headers, sent once before any stdout (body) bytes. */
  | { type: 'response'; status: number; headers: Record<string, string | string[]> };

export interface Frame {
  channel: number;
  payload: Buffer;
}

/** Write the header of a frame of `length` bytes on `channel` at the start of `buf`; returns `buf`. */
function putHeader(buf: Buffer, channel: number, length: number): Buffer {
  buf[0] = channel;
  buf.writeUInt32BE(length, 1);
  return buf;
}

/** The 5-byte header of a frame of `length` bytes on `channel`. */
export function frameHeader(channel: number, length: number): Buffer {
  return putHeader(Buffer.allocUnsafe(FRAME_HEADER_BYTES), channel, length);
}

/** Payloads from this size on are written beside their header instead of copied behind it. */
export const WRITE_UNCOPIED_FROM_BYTES = 16 * 1024;

/**
 * Write one data frame. A large payload goes out as two buffers, header and payload, under
 * one cork: it is not copied (the stream's writev takes both), which matters on the bulk
 * paths (forward). A small one is copied behind its header: one buffer costs less than a
 * second write (on a WebSocket stream, a second message) for a few bytes.
 * Returns what the write of the payload returned (false: wait for 'drain').
 */
export function writeFrame(out: NodeJS.WritableStream & { cork(): void; uncork(): void }, channel: number, payload: Buffer): boolean {
  if (payload.length < WRITE_UNCOPIED_FROM_BYTES) return out.write(encodeFrame(channel, payload));
  out.cork();
  out.write(frameHeader(channel, payload.length));
  const ok = out.write(payload);
  out.uncork();
  return ok;
}

export function encodeFrame(channel: number, payload: Buffer | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const out = putHeader(Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.length), channel, body.length);
  body.copy(out, FRAME_HEADER_BYTES);
  return out;
}

export function encodeControl(msg: ControlMessage): Buffer {
  return encodeFrame(CHANNEL.control, JSON.stringify(msg));
}

/** Parse a control payload; throws UPLINK_ERR_BAD_REQUEST for anything not a known message. */
export function parseControl(payload: Buffer): ControlMessage {
  let msg: unknown;
  try {
    msg = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'control frame is not JSON');
  }
  const m = msg as Record<string, unknown>;
  switch (m?.type) {
    case 'eof':
      return { type: 'eof' };
    case 'signal':
      if (typeof m.signal === 'string') return { type: 'signal', signal: m.signal };
      break;
    case 'resize':
      if (Number.isInteger(m.cols) && Number.isInteger(m.rows)) return { type: 'resize', cols: m.cols as number, rows: m.rows as number };
      break;
    case 'exit':
      return {
        type: 'exit',
        code: typeof m.code === 'number' ? m.code : null,
        signal: typeof m.signal === 'string' ? m.signal : null,
        ...(typeof m.reason === 'string' ? { reason: m.reason } : {}),
      };
    case 'error':
      if (typeof m.code === 'string' && typeof m.message === 'string') return { type: 'error', code: m.code, message: m.message };
      break;
    case 'response':
      if (Number.isInteger(m.status) && (m.status as number) >= 100 && (m.status as number) <= 599 && isHeaderRecord(m.headers)) {
        return { type: 'response', status: m.status as number, headers: m.headers };
      }
      break;
  }
  throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'unknown or malformed control frame');
}

function isHeaderRecord(v: unknown): v is Record<string, string | string[]> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  return Object.values(v).every((x) => typeof x === 'string' || (Array.isArray(x) && x.every((y) => typeof y === 'string')));
}

/**
 * Bytes in, Frame objects out. Rejects a frame whose declared length exceeds `maxFrameBytes`
 * before buffering it, and an unknown channel number.
 *
 * `streamData`: a data frame (stdin, stdout, stderr) that has not fully arrived is passed on
 * in pieces as its bytes come, each piece a Frame of the same channel, instead of being
 * joined into one buffer first. For readers that treat a data channel as a byte stream
 * (forward, stdin): no copy, and no frame-sized buffer. Control frames always arrive whole.
 */
export class FrameDecoder extends Transform {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private readonly maxFrameBytes: number;
  private readonly streamData: boolean;
  /** streamData: payload bytes of the current data frame still to come, and its channel. */
  private dataLeft = 0;
  private dataChannel = 0;

  constructor(opts: { maxFrameBytes?: number; streamData?: boolean } = {}) {
    super({ readableObjectMode: true });
    this.maxFrameBytes = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.streamData = opts.streamData ?? false;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.dataLeft > 0 && chunk.length > 0) chunk = this.continueData(chunk);
    if (chunk.length > 0) {
      this.buffered.push(chunk);
      this.bufferedBytes += chunk.length;
    }
    try {
      this.drainFrames();
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    if (this.dataLeft > 0) {
      // streamData: what arrived of the frame was passed on; say how much of it never came.
      done(new UplinkError('UPLINK_ERR_BAD_REQUEST', `stream ended inside a frame (${this.dataLeft} bytes of it missing)`));
      return;
    }
    if (this.bufferedBytes > 0) {
      done(new UplinkError('UPLINK_ERR_BAD_REQUEST', `stream ended inside a frame (${this.bufferedBytes} bytes left)`));
      return;
    }
    done();
  }

  /** streamData: the next bytes of the frame in progress go out as they are; returns the rest of the chunk. */
  private continueData(chunk: Buffer): Buffer {
    const n = Math.min(this.dataLeft, chunk.length);
    this.push({ channel: this.dataChannel, payload: n === chunk.length ? chunk : chunk.subarray(0, n) } satisfies Frame);
    this.dataLeft -= n;
    return n === chunk.length ? EMPTY : chunk.subarray(n);
  }

  private drainFrames(): void {
    while (this.bufferedBytes >= FRAME_HEADER_BYTES) {
      const head = this.peekBytes(FRAME_HEADER_BYTES);
      const channel = head[0]!;
      const length = head.readUInt32BE(1);
      if (channel > CHANNEL.control) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `unknown frame channel ${channel}`);
      if (length > this.maxFrameBytes) {
        throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `frame of ${length} bytes exceeds the ${this.maxFrameBytes}-byte limit`);
      }
      if (this.bufferedBytes < FRAME_HEADER_BYTES + length) {
        if (this.streamData && channel !== CHANNEL.control) this.startData(channel, length);
        return;
      }
      const all = this.takeBytes(FRAME_HEADER_BYTES + length);
      this.push({ channel, payload: all.subarray(FRAME_HEADER_BYTES) } satisfies Frame);
    }
  }

  /** streamData: pass on what arrived of a data frame's payload; the rest follows in continueData. */
  private startData(channel: number, length: number): void {
    this.takeBytes(FRAME_HEADER_BYTES);
    this.dataChannel = channel;
    this.dataLeft = length - this.bufferedBytes;
    for (const piece of this.buffered) this.push({ channel, payload: piece } satisfies Frame);
    this.buffered = [];
    this.bufferedBytes = 0;
  }

  private peekBytes(n: number): Buffer {
    if (this.buffered[0]!.length >= n) return this.buffered[0]!;
    const joined = Buffer.concat(this.buffered);
    this.buffered = [joined];
    return joined;
  }

  private takeBytes(n: number): Buffer {
    const first = this.buffered[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.buffered.shift();
      else this.buffered[0] = first.subarray(n);
    } else {
      const joined = Buffer.concat(this.buffered);
      out = joined.subarray(0, n);
      this.buffered = joined.length > n ? [joined.subarray(n)] : [];
    }
    this.bufferedBytes -= n;
    return out;
  }
}
