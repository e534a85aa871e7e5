/**
 * The `frames` group: what the channel framing of a bulk stream (forward) costs by itself, in
 * this process. 64 KiB payloads, as a forwarded socket reads them, framed and decoded over and
 * over; CPU time (process.cpuUsage) per 256 MiB, each way measured back to back with its
 * baseline in every run:
 *
 * - encode: `encodeFrame` (header and payload copied into one buffer) against `writeFrame`
 *   (header and payload handed to one writev, the payload uncopied);
 * - decode: `FrameDecoder` joining each frame (its 5-byte header puts every frame across two
 *   64 KiB chunks) against `FrameDecoder` with `streamData` (pieces passed on as they arrive).
 *
 * BENCH_FRAMES_RUNS (7), BENCH_FRAMES_MIB (256).
 */
import { Writable } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { CHANNEL, FrameDecoder, encodeFrame, writeFrame, type Frame } from '../../shared/frames.js';
import type { CaseResult } from './agents-cases.js';
import { envNumber } from './env.js';
import { cpuUsSince } from './proc.js';
import { figure } from './stats.js';

const PAYLOAD = Buffer.alloc(64 * 1024, 0x5a);
const FRAMES_PER_BLOCK = 64;

export interface FramesOpts {
  runs: number;
  mib: number;
}

export function framesOptsFromEnv(): FramesOpts {
  return { runs: envNumber('BENCH_FRAMES_RUNS', 7), mib: envNumber('BENCH_FRAMES_MIB', 256) };
}

async function cpuMs(fn: () => void): Promise<number> {
  const c0 = process.cpuUsage();
  fn();
  await tick();
  return cpuUsSince(c0) / 1000;
}

function encodeOnce(frames: number, uncopied: boolean): Promise<number> {
  const sink = new Writable({ highWaterMark: 2 ** 30, writev: (_c, cb) => cb(), write: (_c, _e, cb) => cb() });
  return cpuMs(() => {
    for (let i = 0; i < frames; i++) {
      if (uncopied) writeFrame(sink, CHANNEL.stdout, PAYLOAD);
      else sink.write(encodeFrame(CHANNEL.stdout, PAYLOAD));
    }
  });
}

async function decodeOnce(chunks: Buffer[], blocks: number, streamData: boolean): Promise<{ ms: number; bytes: number }> {
  const decoder = new FrameDecoder({ streamData });
  let bytes = 0;
  decoder.on('data', (f: Frame) => (bytes += f.payload.length));
  const ms = await cpuMs(() => {
    for (let b = 0; b < blocks; b++) for (const c of chunks) decoder.write(c);
  });
  return { ms, bytes };
}

export async function runFramesCases(_dir: string, opts: FramesOpts): Promise<CaseResult[]> {
  const frames = Math.max(1, Math.round((opts.mib * 1024 * 1024) / PAYLOAD.length));
  const blocks = Math.max(1, Math.round(frames / FRAMES_PER_BLOCK));
  // One block of frames as it arrives off a socket: in 64 KiB chunks, not at frame boundaries.
  const wire = Buffer.concat(Array.from({ length: FRAMES_PER_BLOCK }, () => encodeFrame(CHANNEL.stdout, PAYLOAD)));
  const chunks: Buffer[] = [];
  for (let i = 0; i < wire.length; i += PAYLOAD.length) chunks.push(wire.subarray(i, i + PAYLOAD.length));
  const runs = { copied: [] as number[], uncopied: [] as number[], joined: [] as number[], streamed: [] as number[] };
  await encodeOnce(frames, false); // warm-up
  await encodeOnce(frames, true);
  for (let r = 0; r < opts.runs; r++) {
    runs.copied.push(await encodeOnce(frames, false));
    runs.uncopied.push(await encodeOnce(frames, true));
    for (const [key, streamData] of [['joined', false], ['streamed', true]] as const) {
      const d = await decodeOnce(chunks, blocks, streamData);
      runs[key].push(d.ms);
      if (d.bytes !== blocks * FRAMES_PER_BLOCK * PAYLOAD.length) throw new Error(`frames bench: decoded ${d.bytes} bytes, expected ${blocks * FRAMES_PER_BLOCK * PAYLOAD.length}`);
    }
  }
  const ms = (xs: number[]) => ({ ...figure(xs), unit: `ms CPU per ${opts.mib} MiB` });
  const ratio = (a: number[], b: number[]) => ({ ...figure(a.map((x, i) => x / b[i]!)), unit: '×' });
  return [
    {
      name: 'frames: channel framing of 64 KiB payloads, in process',
      figures: {
        'encode, copied behind the header (encodeFrame)': ms(runs.copied),
        'encode, header and payload in one writev (writeFrame)': ms(runs.uncopied),
        'encode: writeFrame / encodeFrame': ratio(runs.uncopied, runs.copied),
        'decode, frames joined': ms(runs.joined),
        'decode, streamData': ms(runs.streamed),
        'decode: streamData / joined': ratio(runs.streamed, runs.joined),
      },
      target: '– (explains part of the forward CPU per GiB)',
      met: null,
      notes: [`frames: ${frames} frames of ${PAYLOAD.length} bytes per run, ${opts.runs} runs, each way back to back with its baseline`],
    },
  ];
}
