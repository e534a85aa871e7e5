/**
 * shell: an interactive PTY on the agent (`uplink shell`), served at AGENT_PATHS.shell.
 *
 * Same shape as exec (the model): the customer's Operate approval is checked first, the
 * audit log gets an event on denial and at the end, the response is 200 with the phase
 * mode, then channel frames flow both ways. Differences from exec:
 * - one output channel (stdout): a terminal merges stdout and stderr before we see them;
 * - control `resize` frames resize the PTY; `signal` frames are not needed because Ctrl-C
 *   and Ctrl-Z are bytes the remote line discipline turns into signals itself;
 * - the customer bounds sessions with idleTimeoutMs and maxDurationMs (operations.shell).
 *
 * Flow control: when the tunnel stream pushes back, the PTY stops being read (the program
 * blocks in write(2)); input waits while the decoder is paused. When the relay cancels the
 * stream (the engineer's CLI went away) the shell gets SIGHUP, as a closed terminal sends.
 */
import type { ServerHttp2Stream } from 'node:http2';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { formatIssues } from '../../shared/config-validate.js';
import { CHANNEL, encodeControl, writeFrame, type ControlMessage } from '../../shared/frames.js';
import { readInputFrames } from './input-frames.js';
import { AGENT_PATHS, OP_HEADERS } from '../../shared/protocol.js';
import type { AgentCapability } from '../capabilities.js';
import { inheritedEnv } from './exec.js';
import type { AgentConfig } from '../config.js';
import type { PhaseAccess } from '../phases/credentials.js';
import type { AgentAuditLog } from '../audit-log.js';
import type { RequestContext } from '../tunnel-server.js';
import { PTY_SESSION_DEFAULTS, startPtySession, type PtySession } from './pty-session.js';

/** Longest `--command` accepted; a shell one-liner, not a script upload. */
export const MAX_SHELL_COMMAND_CHARS = 64 * 1024;

/** The shell request spec sent by the CLI (through the relay), validated here. */
export const shellSpecSchema = z.strictObject({
  /** Run this with `SHELL -c` instead of an interactive login shell. */
  command: z.string().min(1).max(MAX_SHELL_COMMAND_CHARS).optional(),
  cols: z.number().int().min(1).max(PTY_SESSION_DEFAULTS.maxWindowDimension).default(PTY_SESSION_DEFAULTS.cols),
  rows: z.number().int().min(1).max(PTY_SESSION_DEFAULTS.maxWindowDimension).default(PTY_SESSION_DEFAULTS.rows),
  term: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/).optional(),
});

export type ShellSpec = z.output<typeof shellSpecSchema>;

export function parseShellSpec(input: unknown): ShellSpec {
  const r = shellSpecSchema.safeParse(input);
  if (!r.success) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', formatIssues(r.error, 'shell spec'));
  return r.data;
}

export interface ShellDeps {
  cfg: Readonly<AgentConfig>;
  /** The allow-listed part of the agent's own environment (never AWS_*). */
  inheritEnv(): Record<string, string>;
  phases(): PhaseAccess;
  audit(): AgentAuditLog;
  applianceId(): string;
  maxFrameBytes: number;
}

export async function handleShell(stream: ServerHttp2Stream, ctx: RequestContext, deps: ShellDeps): Promise<void> {
  const scfg = deps.cfg.operations.shell;
  if (!scfg.enabled) throw new UplinkError('UPLINK_ERR_OPERATION_DISABLED', 'shell is disabled by the customer on this agent (operations.shell.enabled)');
  const spec = parseShellSpec(ctx.spec);
  const auditBase = {
    actor: ctx.actor,
    appliance: deps.applianceId(),
    operation: 'shell',
    phase: 'operate',
    requestId: ctx.requestId,
    target: (spec.command ?? '(interactive)').slice(0, 512),
    start: new Date(),
  };
  let session;
  try {
    session = await deps.phases().open({ phase: 'operate', actor: ctx.actor, requestId: ctx.requestId, operation: 'shell' });
  } catch (err) {
    await deps.audit().append({ ...auditBase, outcome: 'denied', end: new Date(), detail: { code: (err as UplinkError).code ?? 'UPLINK_ERR_INTERNAL' } }).catch(() => {});
    throw err;
  }
  const env = { ...deps.inheritEnv(), ...session.env };
  let pty: PtySession;
  try {
    const shellFile = scfg.shell ?? env.SHELL;
    pty = startPtySession({
      ...(shellFile ? { file: shellFile } : {}),
      args: spec.command ? ['-c', spec.command] : [],
      env,
      cols: spec.cols,
      rows: spec.rows,
      ...(spec.term ? { term: spec.term } : {}),
      idleTimeoutMs: scfg.idleTimeoutMs,
      maxDurationMs: scfg.maxDurationMs,
      killGraceMs: deps.cfg.operations.exec.killGraceMs,
      logger: ctx.log,
    });
  } catch (err) {
    await session.close();
    await deps.audit().append({ ...auditBase, outcome: 'error', end: new Date(), detail: { code: (err as UplinkError).code ?? 'UPLINK_ERR_INTERNAL' } }).catch(() => {});
    throw err;
  }
  let bytesOut = 0;
  // Attach in the same tick as the spawn: node-pty drops output read before a listener.
  // Until the 200 is sent nothing may be written, so early output waits in `early`.
  const early: Buffer[] = [];
  let responded = false;
  const send = (chunk: Buffer): void => {
    if (stream.destroyed || stream.writableEnded) return;
    bytesOut += chunk.length;
    if (!writeFrame(stream, CHANNEL.stdout, chunk)) pty.pause();
  };
  pty.onData((chunk) => (responded ? send(chunk) : early.push(chunk)));
  stream.on('drain', () => pty.resume());

  stream.respond({ ':status': 200, 'content-type': 'application/x-uplink-frames', [OP_HEADERS.phaseMode]: session.mode });
  responded = true;
  for (const chunk of early.splice(0)) send(chunk);
  ctx.log.info({ pid: pty.pid, cols: spec.cols, rows: spec.rows, command: spec.command !== undefined, phaseMode: session.mode }, 'shell started');

  let reason: string | undefined;
  const end = (why: string): void => {
    reason ??= why;
    pty.kill('SIGHUP');
  };
  // The customer revoked Operate, or its window closed: the shell ends now.
  session.once('ended', () => end('access-revoked'));

  const input = readInputFrames(stream, { maxFrameBytes: deps.maxFrameBytes, log: ctx.log }, {
    stdin: () => (chunk) => pty.write(chunk),
    control: (msg) => {
      if (msg.type === 'resize') {
        try {
          pty.resize(msg.cols, msg.rows);
        } catch (err) {
          ctx.log.info({ err: (err as Error).message }, 'resize refused');
        }
      }
      // 'eof' has no meaning for a terminal (Ctrl-D is a byte); 'signal' is not needed.
    },
    error: (err) => {
      ctx.log.info({ err: err.message }, 'malformed input from relay; ending shell');
      end('protocol-error');
    },
  });
  // The relay cancelled (RST_STREAM) or the tunnel died: hang up, like a closed terminal.
  stream.once('close', () => end('cancelled'));

  const exit = await pty.exit;
  const why = exit.reason === 'exited' ? reason : exit.reason;
  ctx.log.info({ code: exit.exitCode, signal: exit.signal, reason: why ?? 'exited' }, 'shell finished');
  await session.close();
  const outcome = why === 'idle-timeout' || why === 'max-duration' ? 'timeout' : why === 'cancelled' ? 'cancelled' : exit.exitCode === 0 ? 'ok' : 'error';
  await deps
    .audit()
    .append({ ...auditBase, outcome, end: new Date(), bytesIn: input.bytesIn, bytesOut, detail: { exitCode: exit.exitCode, signal: exit.signal, reason: why ?? 'exited' } })
    .catch((err: unknown) => ctx.log.error({ err: String(err) }, 'cannot append audit event'));
  if (!stream.destroyed && !stream.writableEnded) {
    // node-pty reports exitCode 0 alongside the signal for a process killed by one; the
    // protocol says code is null then, so the CLI exits 128+N like a local shell would.
    const msg: ControlMessage = { type: 'exit', code: exit.signal ? null : exit.exitCode, signal: exit.signal, ...(why ? { reason: why } : {}) };
    stream.end(encodeControl(msg));
  }
}

/** Registers the shell handler on the agent's tunnel. */
export const shellCapability: AgentCapability = {
  name: 'shell',
  start(agent) {
    const cfg = agent.cfg;
    agent.tunnel.handle(AGENT_PATHS.shell, (stream, ctx) =>
      handleShell(stream, ctx, {
        cfg,
        maxFrameBytes: cfg.limits.maxFrameBytes,
        inheritEnv: () => inheritedEnv(cfg.operations.exec.inheritEnv),
        phases: () => agent.phases,
        audit: () => agent.audit,
        applianceId: () => agent.identity.applianceId,
      }),
    );
  },
};
