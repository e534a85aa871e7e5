/**
 * `uplink exec APPLIANCE [--timeout D] [--env K=V] [--cwd DIR] -- CMD [ARGS...]`
 *
 * Streams stdout/stderr live and separately, forwards local stdin, forwards Ctrl-C as
 * SIGINT (three within two seconds abandon the command), and exits with the remote status:
 * the exit code, 128+N for a signal, 124 for --timeout, 255 when uplink itself failed.
 */
import { constants as osConstants } from 'node:os';
import type { Duplex } from 'node:stream';
import { UplinkError } from '../../../shared/errors.js';
import { EXIT, list, parseCommand, str } from '../../../shared/cli-args.js';
import { parseDuration } from '../../../shared/duration.js';
import { OP_HEADERS } from '../../../shared/protocol.js';
import { CHANNEL, FrameDecoder, encodeControl, parseControl, writeFrame, type Frame } from '../../../shared/frames.js';
import type { Command, CliContext } from '../context.js';

/** Frames from the relay may be large (bulk output); bounded all the same. */
const CLI_MAX_FRAME_BYTES = 16 * 1024 * 1024;

export function exitStatusFor(exit: { code: number | null; signal: string | null; reason?: string }): number {
  if (exit.reason === 'timeout') return EXIT.timeout;
  if (exit.code !== null) return exit.code;
  const n = exit.signal ? (osConstants.signals as Record<string, number>)[exit.signal] : undefined;
  return n ? 128 + n : EXIT.uplinkError;
}

/** Pump a framed operation stream to stdout/stderr with backpressure; resolves the exit status. */
export function runFramedSession(ctx: CliContext, duplex: Duplex, opts: { forwardStdin: boolean }): Promise<number> {
  return new Promise<number>((resolve) => {
    const decoder = new FrameDecoder({ maxFrameBytes: CLI_MAX_FRAME_BYTES, streamData: true });
    duplex.pipe(decoder);
    let status: number | undefined;
    let interrupts: number[] = [];
    const done = (code: number) => {
      if (status !== undefined) return;
      status = code;
      process.off('SIGINT', onSigint);
      ctx.io.stdin.removeListener('data', onStdin);
      resolve(code);
    };
    const write = (stream: NodeJS.WritableStream, chunk: Buffer) => {
      if (!stream.write(chunk)) {
        decoder.pause();
        stream.once('drain', () => decoder.resume());
      }
    };
    decoder.on('data', (frame: Frame) => {
      if (frame.channel === CHANNEL.stdout) write(ctx.io.stdout, frame.payload);
      else if (frame.channel === CHANNEL.stderr) write(ctx.io.stderr, frame.payload);
      else if (frame.channel === CHANNEL.control) {
        const msg = parseControl(frame.payload);
        if (msg.type === 'exit') {
          if (msg.reason === 'timeout') ctx.io.stderr.write('uplink: the command ran past --timeout and was killed\n');
          done(exitStatusFor(msg));
        } else if (msg.type === 'error') {
          ctx.io.stderr.write(`error ${msg.code}: ${msg.message}\n`);
          done(EXIT.uplinkError);
        }
      }
    });
    decoder.on('error', (err) => {
      ctx.io.stderr.write(`error UPLINK_ERR_BAD_REQUEST: malformed stream from relay: ${err.message}\n`);
      duplex.destroy();
      done(EXIT.uplinkError);
    });
    decoder.on('end', () => {
      if (status === undefined) {
        ctx.io.stderr.write('error UPLINK_ERR_TUNNEL_CLOSED: the connection ended before the command reported its exit status\n');
        done(EXIT.uplinkError);
      }
    });
    duplex.on('error', () => {});
    duplex.on('close', () => decoder.end());

    const onStdin = (chunk: Buffer) => {
      if (!writeFrame(duplex, CHANNEL.stdin, chunk)) {
        ctx.io.stdin.pause();
        duplex.once('drain', () => ctx.io.stdin.resume());
      }
    };
    if (opts.forwardStdin) {
      ctx.io.stdin.on('data', onStdin);
      ctx.io.stdin.once('end', () => duplex.write(encodeControl({ type: 'eof' })));
    } else {
      duplex.write(encodeControl({ type: 'eof' }));
    }

    const onSigint = () => {
      const now = Date.now();
      interrupts = [...interrupts.filter((t) => now - t < 2000), now];
      if (interrupts.length >= 3) {
        ctx.io.stderr.write('\nuplink: abandoning the command (the agent stops it)\n');
        duplex.destroy();
        done(128 + 2);
        return;
      }
      duplex.write(encodeControl({ type: 'signal', signal: 'SIGINT' }));
    };
    process.on('SIGINT', onSigint);
  });
}

export const execCommand: Command = {
  words: ['exec'],
  summary: 'run a command on an appliance (no shell unless CMD is one) and exit with its status',
  usage: `Usage: uplink exec APPLIANCE [--timeout D] [--env K=V]... [--cwd DIR] [--no-stdin] -- CMD [ARGS...]
  --timeout D   kill the command after D (e.g. 30s, 5m); exit status 124
  --env K=V     set a variable for the command (repeatable)
  --cwd DIR     working directory on the agent
  --no-stdin    do not forward local stdin (the command sees EOF at once)
Exit status: the command's; 128+N when killed by signal N; 255 when uplink failed.`,
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, {
      timeout: { type: 'string' },
      env: { type: 'string', multiple: true },
      cwd: { type: 'string' },
      'no-stdin': { type: 'boolean' },
    });
    const [appliance, command, ...args] = positionals;
    if (!appliance || !command) throw new UplinkError('UPLINK_ERR_USAGE', 'exec needs APPLIANCE and, after --, a command');
    const env: Record<string, string> = {};
    for (const kv of list(values.env)) {
      const i = kv.indexOf('=');
      if (i <= 0) throw new UplinkError('UPLINK_ERR_USAGE', `--env wants K=V, got "${kv}"`);
      env[kv.slice(0, i)] = kv.slice(i + 1);
    }
    const timeout = str(values.timeout);
    const spec = {
      command,
      args,
      env,
      ...(str(values.cwd) ? { cwd: str(values.cwd) } : {}),
      ...(timeout ? { timeoutMs: parseDuration(timeout, '--timeout') } : {}),
    };
    // The agent says whether its phase decisions came from AWS roles or its local config;
    // an engineer at a terminal is told once, scripts reading stderr are not disturbed.
    const duplex = await ctx.client().openOp(appliance, 'exec', spec, {
      onHeaders: (h) => {
        if (h[OP_HEADERS.phaseMode] === 'local' && (ctx.io.stderr as { isTTY?: boolean }).isTTY) ctx.io.stderr.write('(phases: local mode)\n');
      },
    });
    return runFramedSession(ctx, duplex, { forwardStdin: !values['no-stdin'] });
  },
};
