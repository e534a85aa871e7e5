/**
 * exec: run a command on the agent without a shell (unless the command is one), streaming
 * stdout and stderr as separate channels, stdin in, signals forwarded to the process group,
 * and the exit status (or signal) out as the last control frame.
 *
 * Flow control is end to end: when the tunnel stream cannot take more output, the child's
 * pipes are paused, so a command producing 200 MB waits for a slow reader instead of
 * filling memory. When the relay cancels the stream (the engineer hit Ctrl-C twice or lost
 * the connection), the process group gets SIGTERM, then SIGKILL after the grace period.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import type { ServerHttp2Stream } from 'node:http2';
import { UplinkError } from '../../shared/errors.js';
import { CHANNEL, encodeControl, writeFrame, type ControlMessage } from '../../shared/frames.js';
import { readInputFrames } from './input-frames.js';
import type { AgentConfig } from '../config.js';
import type { PhaseAccess } from '../phases/credentials.js';
import type { AgentAuditLog } from '../audit-log.js';
import { OP_HEADERS } from '../../shared/protocol.js';
import type { RequestContext } from '../tunnel-server.js';
import { parseExecSpec } from './exec-spec.js';

/** Signals a vendor may send to a running command. */
export const FORWARDABLE_SIGNALS = new Set(['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGKILL', 'SIGUSR1', 'SIGUSR2', 'SIGTSTP', 'SIGCONT', 'SIGWINCH']);

export interface ExecDeps {
  cfg: Readonly<AgentConfig>;
  /** The allow-listed part of the agent's own environment (never AWS_*). */
  inheritEnv(): Record<string, string>;
  phases(): PhaseAccess;
  audit(): AgentAuditLog;
  applianceId(): string;
  maxFrameBytes: number;
}

/** Build the allow-listed part of the child environment. AWS_* never passes through. */
export function inheritedEnv(names: readonly string[], from: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of names) {
    if (name.startsWith('AWS_')) continue;
    const v = from[name];
    if (v !== undefined) env[name] = v;
  }
  return env;
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

export function signalNumber(signal: string | null): number | null {
  if (!signal) return null;
  return (osConstants.signals as Record<string, number>)[signal] ?? null;
}

export async function handleExec(stream: ServerHttp2Stream, ctx: RequestContext, deps: ExecDeps): Promise<void> {
  const ecfg = deps.cfg.operations.exec;
  if (!ecfg.enabled) throw new UplinkError('UPLINK_ERR_OPERATION_DISABLED', 'exec is disabled by the customer on this agent (operations.exec.enabled)');
  const spec = parseExecSpec(ctx.spec, ecfg);
  const started = new Date();
  const auditBase = {
    actor: ctx.actor,
    appliance: deps.applianceId(),
    operation: 'exec',
    phase: 'operate',
    requestId: ctx.requestId,
    target: [spec.command, ...spec.args].join(' ').slice(0, 512),
    start: started,
  };
  // The customer's approval is checked here, on the agent, for every request.
  let session;
  try {
    session = await deps.phases().open({ phase: 'operate', actor: ctx.actor, requestId: ctx.requestId, operation: 'exec' });
  } catch (err) {
    await deps.audit().append({ ...auditBase, outcome: 'denied', end: new Date(), detail: { code: (err as UplinkError).code ?? 'UPLINK_ERR_INTERNAL' } }).catch(() => {});
    throw err;
  }
  // Only the allow-list, the phase's own credentials and what the engineer set: the agent's
  // base credentials never reach the command.
  const env = { ...deps.inheritEnv(), ...session.env, ...spec.env };
  const timeoutMs = Math.min(spec.timeoutMs || ecfg.defaultTimeoutMs || ecfg.maxTimeoutMs, ecfg.maxTimeoutMs);

  const child = spawn(spec.command, spec.args, {
    cwd: spec.cwd ?? env.HOME ?? '/',
    env,
    detached: true, // own process group: signals reach the whole pipeline, not the agent
    stdio: ['pipe', 'pipe', 'pipe'],
    shell: false,
  });

  try {
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (err: NodeJS.ErrnoException) =>
        reject(new UplinkError('UPLINK_ERR_EXEC_SPAWN', `cannot start "${spec.command}": ${err.code ?? err.message}`, { details: { errno: err.code } })),
      );
    });
  } catch (err) {
    await session.close();
    await deps.audit().append({ ...auditBase, outcome: 'error', end: new Date(), detail: { code: 'UPLINK_ERR_EXEC_SPAWN' } }).catch(() => {});
    throw err;
  }
  ctx.log.info({ command: spec.command, argc: spec.args.length, pid: child.pid, timeoutMs, phaseMode: session.mode }, 'exec started');

  stream.respond({ ':status': 200, 'content-type': 'application/x-uplink-frames', [OP_HEADERS.phaseMode]: session.mode });
  // The customer revoked Operate, or its window closed: the command ends now.
  session.once('ended', () => terminate('access-revoked'));
  let bytesOut = 0;

  let reason: string | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  const terminate = (why: string): void => {
    if (reason) return;
    reason = why;
    signalGroup(child, 'SIGTERM');
    killTimer = setTimeout(() => signalGroup(child, 'SIGKILL'), ecfg.killGraceMs);
    killTimer.unref();
  };
  const timer = setTimeout(() => terminate('timeout'), timeoutMs);
  timer.unref();

  // Output → frames, pausing the pipes when the stream pushes back.
  const out = (channel: number) => (chunk: Buffer) => {
    if (stream.destroyed) return;
    bytesOut += chunk.length;
    if (!writeFrame(stream, channel, chunk)) {
      child.stdout?.pause();
      child.stderr?.pause();
    }
  };
  stream.on('drain', () => {
    child.stdout?.resume();
    child.stderr?.resume();
  });
  child.stdout!.on('data', out(CHANNEL.stdout));
  child.stderr!.on('data', out(CHANNEL.stderr));
  child.stdin!.on('error', () => {}); // EPIPE when the command does not read stdin

  // Input frames → stdin, signals.
  const input = readInputFrames(stream, { maxFrameBytes: deps.maxFrameBytes, log: ctx.log }, {
    stdin: () => (child.stdin!.destroyed || child.stdin!.writableEnded ? undefined : child.stdin!),
    control: (msg) => {
      if (msg.type === 'eof') child.stdin!.end();
      else if (msg.type === 'signal') {
        if (FORWARDABLE_SIGNALS.has(msg.signal)) signalGroup(child, msg.signal as NodeJS.Signals);
        else ctx.log.info({ signal: msg.signal }, 'signal not forwardable; ignored');
      }
    },
    error: (err) => {
      ctx.log.info({ err: err.message }, 'malformed input from relay; ending command');
      terminate('protocol-error');
    },
    end: () => {
      if (!child.stdin!.writableEnded) child.stdin!.end();
    },
  });

  // The relay cancelled (RST_STREAM) or the tunnel died: stop the work.
  stream.once('close', () => {
    if (child.exitCode === null && child.signalCode === null) terminate('cancelled');
  });

  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('close', (c, s) => resolve([c, s])));
  clearTimeout(timer);
  if (killTimer) clearTimeout(killTimer);
  ctx.log.info({ code, signal, reason: reason ?? 'exited' }, 'exec finished');
  await session.close();
  await deps
    .audit()
    .append({ ...auditBase, outcome: code === 0 ? 'ok' : 'error', end: new Date(), bytesIn: input.bytesIn, bytesOut, detail: { exitCode: code, signal, reason: reason ?? 'exited' } })
    .catch((err: unknown) => ctx.log.error({ err: String(err) }, 'cannot append audit event'));
  if (!stream.destroyed && !stream.closed) {
    const exit: ControlMessage = { type: 'exit', code, signal, ...(reason ? { reason } : {}) };
    stream.end(encodeControl(exit));
  }
}
