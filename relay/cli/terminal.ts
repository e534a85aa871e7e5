/**
 * The local terminal of `uplink shell`: raw mode in, restored on every way out.
 *
 * In raw mode the local tty stops interpreting keys (no line editing, no echo, no
 * SIGINT/SIGTSTP from Ctrl-C/Ctrl-Z): every byte goes to the remote PTY, whose own line
 * discipline does the interpreting. That is what makes Ctrl-C, Ctrl-Z, vim, top and less
 * behave remotely as they do locally. The price is that a CLI which dies in raw mode
 * leaves the user's shell unusable, so restore() is wired to every exit path:
 *
 * - normal return and thrown errors: the caller's `finally` (or {@link withRawMode});
 * - `process.exit()` anywhere: the 'exit' event (restore is synchronous);
 * - uncaught exceptions and unhandled rejections: 'uncaughtExceptionMonitor', which
 *   observes without changing Node's crash behaviour;
 * - SIGINT, SIGTERM, SIGHUP, SIGQUIT sent to the CLI: restore, drop our listener, then
 *   re-raise the signal. With no other listener Node has put back the default action, so
 *   the process ends by that signal and the parent sees the true cause (status 128+n).
 *   Other listeners see the signal a second time; that is what lets chained handlers such
 *   as signal-exit (which stay passive while another listener exists) reach the default
 *   action too, instead of each waiting for the other and leaving the CLI hanging.
 *
 * SIGKILL cannot be caught; after `kill -9` the user needs `stty sane` (or `reset`).
 */
import { constants as osConstants } from 'node:os';

/** Window size in character cells. */
export interface TerminalSize {
  cols: number;
  rows: number;
}

/** Used when neither stdout nor COLUMNS/LINES tell the size (output is not a terminal). */
export const DEFAULT_TERMINAL_SIZE: Readonly<TerminalSize> = Object.freeze({ cols: 80, rows: 24 });

/** Signals after which the terminal is restored and the signal re-raised. */
export const RESTORE_SIGNALS: readonly NodeJS.Signals[] = Object.freeze(['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT']);

/** Exit status when the remote status is unknown (tunnel lost); ssh uses the same. */
export const UNKNOWN_REMOTE_EXIT = 255;

export interface RawModeOptions {
  /** Called on SIGWINCH (stdout 'resize') with the new size. */
  onResize?: (size: TerminalSize) => void;
}

export interface RawModeHandle {
  /** True when stdin is a TTY and raw mode was actually entered. */
  readonly raw: boolean;
  /** Put the terminal back as it was and drop every hook. Idempotent, synchronous. */
  restore(): void;
  currentSize(): TerminalSize;
}

function positiveInt(text: string | undefined): number | undefined {
  if (text === undefined || !/^\d{1,5}$/.test(text)) return undefined;
  const n = Number(text);
  return n > 0 ? n : undefined;
}

/**
 * The terminal's size: from stdout when it is a TTY, else COLUMNS/LINES, else 80x24.
 * (A piped stdout has no size; the remote PTY still needs one.)
 */
export function currentSize(stdout: NodeJS.WriteStream, env: NodeJS.ProcessEnv = process.env): TerminalSize {
  if (stdout.isTTY && stdout.columns > 0 && stdout.rows > 0) return { cols: stdout.columns, rows: stdout.rows };
  return {
    cols: positiveInt(env.COLUMNS) ?? DEFAULT_TERMINAL_SIZE.cols,
    rows: positiveInt(env.LINES) ?? DEFAULT_TERMINAL_SIZE.rows,
  };
}

/**
 * Enter raw mode on `stdin` (when it is a TTY; otherwise nothing changes and `raw` is
 * false) and install the restore hooks described in the file comment. The caller still
 * owns reading stdin (resume/pause) and must call restore() when the session ends.
 */
export function enterRawMode(stdin: NodeJS.ReadStream, stdout: NodeJS.WriteStream, opts: RawModeOptions = {}): RawModeHandle {
  const canRaw = stdin.isTTY === true && typeof stdin.setRawMode === 'function';
  const wasRaw = canRaw ? stdin.isRaw : false;
  let active = canRaw;
  if (canRaw) stdin.setRawMode(true);

  const size = (): TerminalSize => currentSize(stdout);
  const onResize = (): void => opts.onResize?.(size());
  // A job-control shell may reset the tty when it continues us after Ctrl-Z of the CLI
  // itself (kill -STOP); put raw mode back.
  const onCont = (): void => {
    if (active) stdin.setRawMode(true);
  };
  const onExit = (): void => restore();
  const onCrash = (): void => restore();
  const signalHandlers = new Map<NodeJS.Signals, () => void>();
  let hooked = false;

  function restore(): void {
    if (!hooked && !active) return;
    hooked = false;
    if (active) {
      active = false;
      try {
        stdin.setRawMode(wasRaw);
      } catch {
        // The tty may already be gone (terminal closed: SIGHUP); nothing left to restore.
      }
    }
    if (resizeHooked) stdout.off('resize', onResize);
    process.off('SIGCONT', onCont);
    process.off('exit', onExit);
    process.off('uncaughtExceptionMonitor', onCrash);
    for (const [signal, handler] of signalHandlers) process.off(signal, handler);
    signalHandlers.clear();
  }

  for (const signal of RESTORE_SIGNALS) {
    const handler = (): void => {
      restore();
      process.kill(process.pid, signal);
    };
    signalHandlers.set(signal, handler);
    process.on(signal, handler);
  }
  const resizeHooked = stdout.isTTY === true;
  if (resizeHooked) stdout.on('resize', onResize);
  if (canRaw) process.on('SIGCONT', onCont);
  process.on('exit', onExit);
  process.on('uncaughtExceptionMonitor', onCrash);
  hooked = true;

  return {
    get raw() {
      return canRaw;
    },
    restore,
    currentSize: size,
  };
}

/** Run `fn` with the terminal in raw mode; restores on return and on throw. */
export async function withRawMode<T>(
  stdin: NodeJS.ReadStream,
  stdout: NodeJS.WriteStream,
  opts: RawModeOptions,
  fn: (handle: RawModeHandle) => Promise<T> | T,
): Promise<T> {
  const handle = enterRawMode(stdin, stdout, opts);
  try {
    return await fn(handle);
  } finally {
    handle.restore();
  }
}

/**
 * The CLI's exit status for a remote process: its exit code, or 128 + the signal number
 * when a signal killed it (as shells report it: SIGKILL → 137). `signal` may be a name
 * ("SIGTERM") or a number. Unknown signal names, codes outside 0..255 and a missing
 * status give {@link UNKNOWN_REMOTE_EXIT}.
 */
export function exitCodeFromRemote(status: { exitCode: number | null | undefined; signal: NodeJS.Signals | string | number | null | undefined }): number {
  const { exitCode, signal } = status;
  if (signal !== null && signal !== undefined && signal !== 0 && signal !== '') {
    const num = typeof signal === 'number' ? signal : (osConstants.signals as Record<string, number | undefined>)[signal];
    return num !== undefined && Number.isInteger(num) && num > 0 && num < 128 ? 128 + num : UNKNOWN_REMOTE_EXIT;
  }
  if (typeof exitCode === 'number' && Number.isInteger(exitCode) && exitCode >= 0 && exitCode <= 255) return exitCode;
  return UNKNOWN_REMOTE_EXIT;
}
