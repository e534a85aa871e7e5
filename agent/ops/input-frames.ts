/**
 * The relay→agent half of an interactive operation: channel frames decoded from the stream,
 * stdin bytes handed to the operation's sink with backpressure, control messages parsed
 * (a malformed one is logged and ignored), a malformed stream reported once through `error`.
 * exec, shell and forward all read their input this way.
 */
import type { Readable } from 'node:stream';
import type { Logger } from '../../shared/logger.js';
import { CHANNEL, FrameDecoder, parseControl, type ControlMessage, type Frame } from '../../shared/frames.js';

/** Where stdin goes: a Writable (paused on push-back until 'drain'), or a plain function. */
export type StdinSink = { write(chunk: Buffer): boolean; once(event: 'drain', cb: () => void): unknown } | ((chunk: Buffer) => void);

export interface InputHandlers {
  /** The sink for stdin bytes, or undefined when it no longer takes any (closed, ended). */
  stdin(): StdinSink | undefined;
  control(msg: ControlMessage): void;
  error(err: Error): void;
  /** The relay ended its side of the stream. */
  end?(): void;
}

export interface InputStats {
  /** stdin bytes received (including any dropped because the sink was gone). */
  bytesIn: number;
}

export function readInputFrames(stream: Readable, opts: { maxFrameBytes: number; log: Logger }, h: InputHandlers): InputStats {
  const stats: InputStats = { bytesIn: 0 };
  // stdin is a byte stream for every operation: a large frame passes on in pieces, uncopied.
  const decoder = new FrameDecoder({ maxFrameBytes: opts.maxFrameBytes, streamData: true });
  stream.pipe(decoder);
  decoder.on('data', (frame: Frame) => {
    if (frame.channel === CHANNEL.stdin) {
      stats.bytesIn += frame.payload.length;
      const sink = h.stdin();
      if (typeof sink === 'function') sink(frame.payload);
      else if (sink && !sink.write(frame.payload)) {
        decoder.pause();
        sink.once('drain', () => decoder.resume());
      }
      return;
    }
    if (frame.channel !== CHANNEL.control) return;
    let msg: ControlMessage;
    try {
      msg = parseControl(frame.payload);
    } catch (err) {
      opts.log.info({ err: (err as Error).message }, 'bad control frame ignored');
      return;
    }
    h.control(msg);
  });
  decoder.on('error', (err) => h.error(err));
  if (h.end) decoder.on('end', h.end);
  return stats;
}
