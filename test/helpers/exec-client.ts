/**
 * Run one exec through the relay the way the CLI does (WebSocket op, framed channels) and
 * collect what came back: stdout and stderr kept apart, and the exit control frame.
 */
import type { Duplex } from 'node:stream';
import type { ApiClient } from '../../relay/cli/api-client.js';
import { CHANNEL, FrameDecoder, encodeControl, encodeFrame, parseControl, type ControlMessage, type Frame } from '../../shared/frames.js';

export interface ExecResult {
  stdout: string;
  stderr: string;
  exit: Extract<ControlMessage, { type: 'exit' }> | undefined;
}

export interface ExecOptions {
  /** Bytes sent on stdin before EOF; omitted: EOF at once. */
  stdin?: string;
  /** Called once the op is open, e.g. to send a signal. */
  onOpen?(duplex: Duplex): void;
  /** Called on the first stdout bytes. */
  onFirstOutput?(duplex: Duplex): void;
}

/**
 * Pass every frame an op's stream carries to `onFrame`. The decoder ends when the stream
 * closes; the stream's own errors are ignored (a test sees them as missing frames or an
 * early end).
 */
export function readFrames(duplex: Duplex, onFrame: (f: Frame) => void, opts: { maxFrameBytes?: number } = {}): FrameDecoder {
  const decoder = new FrameDecoder(opts);
  duplex.pipe(decoder);
  duplex.on('error', () => {});
  duplex.on('close', () => decoder.end());
  decoder.on('data', onFrame);
  return decoder;
}

/** Collect frames from an open op until the stream ends. */
export function collect(duplex: Duplex, opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let exit: ExecResult['exit'];
    let first = true;
    const decoder = readFrames(duplex, (f: Frame) => {
      if (f.channel === CHANNEL.stdout) {
        out.push(f.payload);
        if (first) {
          first = false;
          opts.onFirstOutput?.(duplex);
        }
      } else if (f.channel === CHANNEL.stderr) err.push(f.payload);
      else if (f.channel === CHANNEL.control) {
        const m = parseControl(f.payload);
        if (m.type === 'exit') exit = m;
      }
    }, { maxFrameBytes: 16 * 1024 * 1024 });
    decoder.on('error', reject);
    const finish = () => resolve({ stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), exit });
    decoder.on('end', finish);
    opts.onOpen?.(duplex);
    if (opts.stdin !== undefined) duplex.write(encodeFrame(CHANNEL.stdin, opts.stdin));
    duplex.write(encodeControl({ type: 'eof' }));
  });
}

/** Open exec on `appliance` and collect the result. */
export async function runExec(client: ApiClient, appliance: string, spec: Record<string, unknown>, opts: ExecOptions = {}): Promise<ExecResult> {
  const duplex = await client.openOp(appliance, 'exec', spec);
  return collect(duplex, opts);
}
