/**
 * `uplink shell APPLIANCE [--command CMD]`: an interactive PTY on the appliance.
 *
 * The local terminal goes into raw mode (relay/cli/terminal.ts) so every key, Ctrl-C and
 * Ctrl-Z included, reaches the remote line discipline; full-screen programs work because
 * the remote PTY has the local window size, sent in the spec at start and as a `resize`
 * control frame on every SIGWINCH. The terminal is restored on every way out: the remote
 * exit, a lost tunnel, an error, a signal to the CLI.
 *
 * Scripted use: when stdin is not a TTY nothing is put in raw mode, stdin is forwarded as
 * typed input and its end sends Ctrl-D, so `echo 'exit 3' | uplink shell app` exits 3.
 * Exit status: the remote shell's; 128+N for signal N; 255 when uplink itself failed.
 */
import type { Duplex } from 'node:stream';
import { UplinkError } from '../../../shared/errors.js';
import { EXIT, parseCommand, str } from '../../../shared/cli-args.js';
import { CHANNEL, FrameDecoder, encodeControl, encodeFrame, parseControl, type Frame } from '../../../shared/frames.js';
import { currentSize, enterRawMode, exitCodeFromRemote, type RawModeHandle } from '../terminal.js';
import type { Command, CliContext } from '../context.js';

/** Frames from the relay are terminal output; bounded all the same. */
const CLI_MAX_FRAME_BYTES = 16 * 1024 * 1024;
/** What a terminal sends for Ctrl-D: the shell reads it as end of input. */
const EOT = Buffer.from([0x04]);
const TERM_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/;

/** Pump one shell session until the remote exit frame or the end of the stream. */
function runShellSession(ctx: CliContext, duplex: Duplex, raw: RawModeHandle | undefined, setResize: (fn: (cols: number, rows: number) => void) => void): Promise<number> {
  const stdin = ctx.io.stdin;
  return new Promise<number>((resolve) => {
    const decoder = new FrameDecoder({ maxFrameBytes: CLI_MAX_FRAME_BYTES, streamData: true });
    duplex.pipe(decoder);
    let status: number | undefined;
    const done = (code: number): void => {
      if (status !== undefined) return;
      status = code;
      stdin.removeListener('data', onStdin);
      stdin.removeListener('end', onStdinEnd);
      stdin.pause();
      resolve(code);
    };
    decoder.on('data', (frame: Frame) => {
      if (frame.channel === CHANNEL.stdout || frame.channel === CHANNEL.stderr) {
        if (!ctx.io.stdout.write(frame.payload)) {
          decoder.pause();
          ctx.io.stdout.once('drain', () => decoder.resume());
        }
        return;
      }
      if (frame.channel !== CHANNEL.control) return;
      const msg = parseControl(frame.payload);
      if (msg.type === 'exit') done(exitCodeFromRemote({ exitCode: msg.code, signal: msg.signal }));
      else if (msg.type === 'error') {
        raw?.restore();
        ctx.io.stderr.write(`error ${msg.code}: ${msg.message}\n`);
        done(EXIT.uplinkError);
      }
    });
    decoder.on('error', (err) => {
      raw?.restore();
      ctx.io.stderr.write(`error UPLINK_ERR_BAD_REQUEST: malformed stream from relay: ${err.message}\n`);
      duplex.destroy();
      done(EXIT.uplinkError);
    });
    decoder.on('end', () => {
      if (status !== undefined) return;
      raw?.restore();
      ctx.io.stderr.write('\r\nerror UPLINK_ERR_TUNNEL_CLOSED: the connection ended before the shell reported its exit status\n');
      done(EXIT.uplinkError);
    });
    duplex.on('error', () => {});
    duplex.on('close', () => decoder.end());

    const send = (frame: Buffer): void => {
      if (status !== undefined || duplex.destroyed || duplex.writableEnded) return;
      if (!duplex.write(frame)) {
        stdin.pause();
        duplex.once('drain', () => status === undefined && stdin.resume());
      }
    };
    const onStdin = (chunk: Buffer | string): void => send(encodeFrame(CHANNEL.stdin, typeof chunk === 'string' ? Buffer.from(chunk) : chunk));
    // A script's input ended: tell the remote shell as a terminal would, with Ctrl-D.
    const onStdinEnd = (): void => send(encodeFrame(CHANNEL.stdin, EOT));
    setResize((cols, rows) => send(encodeControl({ type: 'resize', cols, rows })));
    stdin.on('data', onStdin);
    stdin.once('end', onStdinEnd);
    stdin.resume();
  });
}

export const shellCommand: Command = {
  words: ['shell'],
  summary: 'open an interactive shell (PTY) on an appliance',
  usage: `Usage: uplink shell APPLIANCE [--command CMD]
  --command CMD  run CMD with the remote shell's -c instead of an interactive shell
The local terminal is in raw mode for the session (Ctrl-C, Ctrl-Z, vim, top work remotely)
and restored on exit. Exit status: the remote shell's; 128+N when killed by signal N;
255 when uplink failed.`,
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, { command: { type: 'string' } });
    const [appliance, ...extra] = positionals;
    if (!appliance || extra.length) throw new UplinkError('UPLINK_ERR_USAGE', 'shell needs exactly one APPLIANCE (use --command for a command)');
    const command = str(values.command);
    const stdout = ctx.io.stdout as NodeJS.WriteStream;
    const size = currentSize(stdout, ctx.env);
    const term = ctx.env.TERM && TERM_NAME.test(ctx.env.TERM) ? ctx.env.TERM : undefined;
    const spec = { ...(command !== undefined ? { command } : {}), cols: size.cols, rows: size.rows, ...(term ? { term } : {}) };
    const duplex = await ctx.client().openOp(appliance, 'shell', spec);
    let resize: (cols: number, rows: number) => void = () => {};
    // Raw mode only once the agent accepted: a refusal prints on a normal terminal.
    const raw = enterRawMode(ctx.io.stdin as NodeJS.ReadStream, stdout, { onResize: (s) => resize(s.cols, s.rows) });
    try {
      // The window may have changed while the agent was starting the shell.
      const now = raw.currentSize();
      if (now.cols !== size.cols || now.rows !== size.rows) duplex.write(encodeControl({ type: 'resize', cols: now.cols, rows: now.rows }));
      return await runShellSession(ctx, duplex, raw, (fn) => (resize = fn));
    } finally {
      raw.restore();
      duplex.destroy();
    }
  },
};
