/**
 * One interactive PTY session on the agent (`uplink shell`), over node-pty.
 *
 * Contracts:
 * - Output is delivered as raw bytes (node-pty `encoding: null`), never re-encoded, so a
 *   recording or a client sees exactly what the program wrote to its terminal.
 * - The child's environment is only what the caller passes, plus `TERM` (from the client,
 *   default `xterm-256color`) and `PWD` (set by node-pty to the working directory). The
 *   agent's own environment (credentials, relay settings) never leaks into a shell.
 * - The child is a session leader (forkpty calls setsid), so its pid is also its process
 *   group id; termination signals go to the whole group so pipelines and jobs started in
 *   the foreground die with the shell.
 * - `exit` resolves exactly once, after all output that was read has been delivered.
 *
 * Attach `onData` in the same tick as `startPtySession` returns: output read before a
 * listener is attached is dropped (node-pty starts reading at once).
 */
import { accessSync, constants as fsConstants, readSync, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { spawn, type IPty } from 'node-pty';
import { ptyWriter } from './pty-write.js';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { formatDuration } from '../../shared/duration.js';
import { silentLogger, type Logger } from '../../shared/logger.js';

/** Largest delay setTimeout accepts; longer limits would fire at once. */
const MAX_TIMER_MS = 2_147_483_647;

/** Defaults for every PTY session limit; the agent config may override each one. */
export const PTY_SESSION_DEFAULTS = Object.freeze({
  /** End the session after this long with neither input nor output. 0 disables. */
  idleTimeoutMs: 30 * 60_000,
  /** End the session this long after it started, busy or not. 0 disables. */
  maxDurationMs: 8 * 3_600_000,
  /** After SIGHUP (or the signal given to kill()), wait this long before SIGKILL. */
  killGraceMs: 5_000,
  /**
   * After the program exits, keep reading output still buffered in the pty for up to this
   * long (see drainAtExit) before giving up on it.
   */
  exitDrainMs: 5_000,
  /** ...and at most this many bytes of it, in case a left-over child keeps writing. */
  exitDrainMaxBytes: 4 * 1024 * 1024,
  cols: 80,
  rows: 24,
  /** Largest column or row count accepted from the client (start and resize). */
  maxWindowDimension: 1000,
  /** TERM when the client sends none. */
  term: 'xterm-256color',
});

/** Used when the given env carries no PATH, to resolve a bare command name (as execvp does). */
const FALLBACK_PATH = '/usr/local/bin:/usr/bin:/bin';

/** Shells tried in order when neither `file` nor `env.SHELL` names one. */
const FALLBACK_SHELLS = ['/bin/bash', '/bin/sh'];

const msLimit = z.number().int().min(0).max(MAX_TIMER_MS);

const optionsSchema = z.strictObject({
  /** Program to run; default: env.SHELL, else /bin/bash, else /bin/sh. */
  file: z.string().min(1).optional(),
  args: z.array(z.string()).default([]),
  env: z.record(z.string(), z.string()).default({}),
  /** Working directory; default env.HOME when it is a directory, else "/". */
  cwd: z.string().min(1).optional(),
  /** TERM reported by the client; terminfo names only. */
  term: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/, 'not a terminfo name').optional(),
  cols: z.number().optional(),
  rows: z.number().optional(),
  idleTimeoutMs: msLimit.default(PTY_SESSION_DEFAULTS.idleTimeoutMs),
  maxDurationMs: msLimit.default(PTY_SESSION_DEFAULTS.maxDurationMs),
  killGraceMs: msLimit.default(PTY_SESSION_DEFAULTS.killGraceMs),
  exitDrainMs: msLimit.default(PTY_SESSION_DEFAULTS.exitDrainMs),
  exitDrainMaxBytes: z.number().int().min(0).default(PTY_SESSION_DEFAULTS.exitDrainMaxBytes),
  maxWindowDimension: z.number().int().min(1).max(65_535).default(PTY_SESSION_DEFAULTS.maxWindowDimension),
  logger: z.custom<Logger>((v) => typeof v === 'object' && v !== null && typeof (v as Logger).child === 'function').optional(),
});

/** Options for {@link startPtySession}; every limit has a default in {@link PTY_SESSION_DEFAULTS}. */
export type PtySessionOptions = z.input<typeof optionsSchema>;

/** Why the session ended. `terminated` means the caller called kill(). */
export type PtyExitReason = 'exited' | 'idle-timeout' | 'max-duration' | 'terminated';

/** How the session ended. Exactly one of exitCode and signal is non-null. */
export interface PtyExit {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  reason: PtyExitReason;
}

/** A running PTY session. */
export interface PtySession {
  readonly pid: number;
  readonly cols: number;
  readonly rows: number;
  /** Subscribe to output bytes; returns an unsubscribe function. */
  onData(cb: (chunk: Buffer) => void): () => void;
  /** Send input bytes (keystrokes, pastes). Ignored once the process has exited. */
  write(data: Buffer): void;
  /** Change the window size; throws UPLINK_ERR_PTY_SIZE_INVALID outside 1..maxWindowDimension. */
  resize(cols: number, rows: number): void;
  /**
   * Stop reading output (backpressure): the kernel pty buffer fills and the program blocks
   * in write(2). Idle time does not accrue while paused. If the program exits while
   * paused, its unread output is kept for up to exitDrainMs, then dropped.
   */
  pause(): void;
  resume(): void;
  /**
   * End the session: send `signal` (default SIGHUP, what a closed terminal sends) to the
   * process group, SIGKILL after killGraceMs. The exit reason becomes `terminated`.
   */
  kill(signal?: NodeJS.Signals): void;
  /** Resolves once, when the process has exited and its output has been delivered. */
  readonly exit: Promise<PtyExit>;
}

function validateSize(cols: number, rows: number, max: number): void {
  const ok = (n: number): boolean => Number.isInteger(n) && n >= 1 && n <= max;
  if (!ok(cols) || !ok(rows)) {
    throw new UplinkError('UPLINK_ERR_PTY_SIZE_INVALID', `window size ${String(cols)}x${String(rows)} is not within 1..${max}`, {
      details: { cols, rows, max },
    });
  }
}

function spawnError(message: string, code: string, target: string, cause?: unknown): UplinkError {
  return new UplinkError('UPLINK_ERR_EXEC_SPAWN', `${message}: ${target} (${code})`, { details: { errno: code, path: target }, cause });
}

function isExecutableFile(file: string): boolean {
  try {
    accessSync(file, fsConstants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * Resolve the program the way execvp would with the child's PATH, so a missing or
 * non-executable program is a clean UPLINK_ERR_EXEC_SPAWN here instead of a child that
 * prints "execvp(3) failed" into the terminal and exits 1.
 */
function resolveProgram(file: string, env: Record<string, string>): string {
  if (file.includes('/')) {
    const abs = path.resolve(file);
    try {
      accessSync(abs, fsConstants.X_OK);
    } catch (err) {
      throw spawnError('cannot execute', (err as NodeJS.ErrnoException).code ?? 'EACCES', abs, err);
    }
    if (!statSync(abs).isFile()) throw spawnError('cannot execute', 'EACCES', abs);
    return abs;
  }
  for (const dir of (env.PATH ?? FALLBACK_PATH).split(':')) {
    const candidate = path.join(dir === '' ? '.' : dir, file);
    if (isExecutableFile(candidate)) return path.resolve(candidate);
  }
  throw spawnError('command not found in PATH', 'ENOENT', file);
}

function defaultShell(env: Record<string, string>): string {
  if (env.SHELL && isExecutableFile(env.SHELL)) return env.SHELL;
  const found = FALLBACK_SHELLS.find(isExecutableFile);
  if (!found) throw spawnError('no shell found', 'ENOENT', FALLBACK_SHELLS.join(', '));
  return found;
}

function resolveCwd(cwd: string | undefined, env: Record<string, string>): string {
  if (cwd === undefined) {
    const home = env.HOME;
    if (home && path.isAbsolute(home) && statSync(home, { throwIfNoEntry: false })?.isDirectory()) return home;
    return '/';
  }
  const abs = path.resolve(cwd);
  const st = statSync(abs, { throwIfNoEntry: false });
  if (!st) throw spawnError('working directory does not exist', 'ENOENT', abs);
  if (!st.isDirectory()) throw spawnError('working directory is not a directory', 'ENOTDIR', abs);
  return abs;
}

const SIGNAL_NAMES = new Map<number, NodeJS.Signals>(
  Object.entries(osConstants.signals).map(([name, num]) => [num, name as NodeJS.Signals]),
);

/** No output for this long after exit means the pty buffer is empty (node-pty's own figure). */
const DRAIN_QUIET_MS = 200;
/** Read size when draining the pty by hand at exit. */
const DRAIN_CHUNK_BYTES = 64 * 1024;
/** Retry interval while the kernel has not yet handed over the last output. */
const DRAIN_RETRY_MS = 5;

interface DrainState {
  lastOutput(): number;
  paused(): boolean;
  deliver(chunk: Buffer): void;
}

/**
 * Keep the tail of the output when the program exits. node-pty loses it in two ways:
 * - Linux can report end-of-file on the pty master while the last output is still on its
 *   way through the tty layer; the socket then stops reading and those bytes (often the
 *   last few KB, e.g. the end of a `cat bigfile`) are never delivered. So on 'end' we read
 *   the master fd ourselves until EIO, which Linux returns once the buffer is truly empty.
 * - node-pty destroys the socket 200 ms after the child exits (for platforms where it never
 *   closes); under load, or while the session is paused for backpressure, unread output is
 *   dropped. We defer that destroy while output is still arriving or the reader is paused.
 * Both are bounded by `maxMs` and `maxBytes`. This reaches into node-pty's private
 * `_socket` and `_fd`; when they are absent (a future node-pty) its behaviour is kept and a
 * debug line says so. The tests check the drained tail byte for byte, so such an upgrade
 * fails loudly.
 */
function drainAtExit(pty: IPty, state: DrainState, maxMs: number, maxBytes: number, log: Logger): void {
  type Sock = { destroy: (err?: Error) => unknown; destroyed: boolean; once(ev: 'end', cb: () => void): unknown };
  const internals = pty as unknown as { _socket?: Sock; _fd?: number };
  const socket = internals._socket;
  const fd = internals._fd;
  if (!socket || typeof socket.destroy !== 'function' || typeof fd !== 'number') {
    log.debug('node-pty internals changed: output buffered at exit may be lost');
    return;
  }
  const realDestroy = socket.destroy.bind(socket);
  let firstDeferral: number | undefined;
  socket.destroy = (err?: Error): unknown => {
    // Errors take the normal path at once; only node-pty's argument-less timer call waits.
    if (err !== undefined || socket.destroyed) return realDestroy(err);
    const now = performance.now();
    firstDeferral ??= now;
    const busy = state.paused() || now - state.lastOutput() < DRAIN_QUIET_MS;
    if (busy && now - firstDeferral < maxMs) {
      setTimeout(() => socket.destroy(), DRAIN_QUIET_MS);
      return socket;
    }
    if (busy) log.warn({ exitDrainMs: maxMs }, 'pty output still pending after exitDrainMs; dropping it');
    return realDestroy();
  };

  socket.once('end', () => {
    const started = performance.now();
    const buf = Buffer.allocUnsafe(DRAIN_CHUNK_BYTES);
    let drained = 0;
    const drain = (): void => {
      for (;;) {
        // destroy() closes the fd; after that the number may belong to another file.
        if (socket.destroyed) return;
        let n: number;
        try {
          n = readSync(fd, buf, 0, buf.length, null);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'EAGAIN' && performance.now() - started < maxMs) {
            setTimeout(drain, DRAIN_RETRY_MS);
            return;
          }
          break; // EIO: the buffer is empty and the slave side is closed.
        }
        if (n <= 0) break;
        drained += n;
        state.deliver(Buffer.from(buf.subarray(0, n)));
        if (drained >= maxBytes) {
          log.warn({ drained }, 'pty still producing output after exit; stopped draining');
          break;
        }
      }
      if (drained > 0) log.debug({ drained }, 'drained pty output after end-of-file');
      realDestroy();
    };
    drain();
  });
}

/** Send a signal to the process group and, in case the child left it, to the child. */
function signalTree(pid: number, signal: NodeJS.Signals): void {
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, signal);
    } catch {
      // ESRCH: already gone. Nothing else is possible for our own child.
    }
  }
}

/**
 * Start a PTY session. Throws UPLINK_ERR_CONFIG_INVALID for bad options,
 * UPLINK_ERR_PTY_SIZE_INVALID for a bad initial size, UPLINK_ERR_EXEC_SPAWN when the
 * program or working directory is unusable.
 */
export function startPtySession(options: PtySessionOptions): PtySession {
  const parsed = optionsSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.join('.') || '(options)';
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `pty session option ${field}: ${issue.message}`, { details: { field } });
  }
  const opts = parsed.data;
  const cols = opts.cols ?? PTY_SESSION_DEFAULTS.cols;
  const rows = opts.rows ?? PTY_SESSION_DEFAULTS.rows;
  validateSize(cols, rows, opts.maxWindowDimension);

  const env: Record<string, string> = { ...opts.env, TERM: opts.term ?? opts.env.TERM ?? PTY_SESSION_DEFAULTS.term };
  const file = opts.file === undefined ? defaultShell(env) : resolveProgram(opts.file, env);
  const cwd = resolveCwd(opts.cwd, env);

  let pty: IPty;
  try {
    pty = spawn(file, opts.args, { name: env.TERM!, cols, rows, cwd, env, encoding: null });
  } catch (err) {
    // forkpty(3) failing means the host is out of ptys or processes (EAGAIN, ENOENT on /dev/ptmx).
    throw spawnError('could not start', (err as NodeJS.ErrnoException).code ?? 'EAGAIN', file, err);
  }
  const log = (opts.logger ?? silentLogger).child({ ptyPid: pty.pid });
  const writeInput = ptyWriter(pty);
  log.info({ file, cols, rows, idleTimeoutMs: opts.idleTimeoutMs, maxDurationMs: opts.maxDurationMs }, 'pty session started');

  const listeners = new Set<(chunk: Buffer) => void>();
  let exited = false;
  let paused = false;
  let endReason: PtyExitReason | undefined;
  let lastActivity = performance.now();
  let lastOutput = lastActivity;
  let idleTimer: NodeJS.Timeout | undefined;
  let maxTimer: NodeJS.Timeout | undefined;
  let killTimer: NodeJS.Timeout | undefined;

  const emit = (chunk: Buffer): void => {
    for (const cb of listeners) cb(chunk);
  };

  const terminate = (reason: PtyExitReason, signal: NodeJS.Signals): void => {
    if (exited || endReason !== undefined) return;
    endReason = reason;
    log.info({ reason, signal }, 'ending pty session');
    signalTree(pty.pid, signal);
    killTimer = setTimeout(() => {
      log.warn({ reason, graceMs: opts.killGraceMs }, 'pty session ignored the signal; sending SIGKILL');
      signalTree(pty.pid, 'SIGKILL');
    }, opts.killGraceMs);
  };

  // Why a notice: the user should see why their shell vanished, in the terminal itself.
  const endWithNotice = (reason: 'idle-timeout' | 'max-duration', text: string): void => {
    if (exited || endReason !== undefined) return;
    emit(Buffer.from(`\r\n[uplink] ${text}; closing the session.\r\n`, 'utf8'));
    terminate(reason, 'SIGHUP');
  };

  // One timer re-armed at its deadline instead of a clearTimeout per keystroke or chunk.
  const armIdle = (delay: number): void => {
    idleTimer = setTimeout(() => {
      const quiet = performance.now() - lastActivity;
      // Paused means the client is slow to read, which is not idleness.
      if (paused || quiet < opts.idleTimeoutMs) {
        armIdle(paused ? opts.idleTimeoutMs : opts.idleTimeoutMs - quiet);
        return;
      }
      endWithNotice('idle-timeout', `no input or output for ${formatDuration(opts.idleTimeoutMs)}`);
    }, Math.max(1, Math.ceil(delay)));
  };
  if (opts.idleTimeoutMs > 0) armIdle(opts.idleTimeoutMs);
  if (opts.maxDurationMs > 0) {
    maxTimer = setTimeout(() => endWithNotice('max-duration', `maximum session length ${formatDuration(opts.maxDurationMs)} reached`), opts.maxDurationMs);
  }

  const onOutput = (chunk: Buffer): void => {
    lastActivity = performance.now();
    lastOutput = lastActivity;
    emit(chunk);
  };
  drainAtExit(pty, { lastOutput: () => lastOutput, paused: () => paused, deliver: onOutput }, opts.exitDrainMs, opts.exitDrainMaxBytes, log);
  // encoding: null makes node-pty hand out Buffers; the typings still say string.
  pty.onData((data: string | Buffer) => onOutput(typeof data === 'string' ? Buffer.from(data, 'utf8') : data));

  const exit = new Promise<PtyExit>((resolve) => {
    pty.onExit(({ exitCode, signal }) => {
      exited = true;
      clearTimeout(idleTimer);
      clearTimeout(maxTimer);
      clearTimeout(killTimer);
      listeners.clear();
      const signalName = signal ? (SIGNAL_NAMES.get(signal) ?? null) : null;
      const result: PtyExit = signalName
        ? { exitCode: null, signal: signalName, reason: endReason ?? 'exited' }
        : { exitCode, signal: null, reason: endReason ?? 'exited' };
      log.info(result, 'pty session ended');
      resolve(result);
    });
  });

  return {
    get pid() {
      return pty.pid;
    },
    get cols() {
      return pty.cols;
    },
    get rows() {
      return pty.rows;
    },
    onData(cb) {
      listeners.add(cb);
      return () => {
        listeners.delete(cb);
      };
    },
    write(data) {
      if (exited || data.length === 0) return;
      lastActivity = performance.now();
      writeInput(data);
    },
    resize(newCols, newRows) {
      validateSize(newCols, newRows, opts.maxWindowDimension);
      if (exited) return;
      try {
        pty.resize(newCols, newRows);
      } catch (err) {
        // The pty fd closes as the child exits; a resize racing that is harmless.
        log.debug({ err }, 'resize after the pty closed');
      }
    },
    pause() {
      if (exited || paused) return;
      paused = true;
      pty.pause();
    },
    resume() {
      if (!paused) return;
      paused = false;
      lastActivity = performance.now();
      if (!exited) pty.resume();
    },
    kill(signal: NodeJS.Signals = 'SIGHUP') {
      if (!(signal in osConstants.signals)) {
        throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `unknown signal ${String(signal)}`, { details: { signal } });
      }
      terminate('terminated', signal);
    },
    exit,
  };
}
