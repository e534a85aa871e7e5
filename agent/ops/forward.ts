/**
 * forward: one TCP connection from the agent to a destination the customer allows, carried
 * on one tunnel stream (`uplink forward` opens one per local connection).
 *
 * Order of work: Operate phase session (the customer's approval), then the allowlist
 * (forward-policy.ts), then the dial, and only once connected the 200 response, so every
 * refusal reaches the vendor as a status and a code instead of a stream that just closes.
 *
 * Framing on the stream (shared/frames.ts):
 * - relay→agent: stdin frames are bytes for the socket; control `eof` half-closes it
 *   (socket.end()), so a client that shuts down its sending side (psql after Terminate,
 *   `nc -N`, HTTP/1.0 clients) still receives the whole answer;
 * - agent→relay: stdout frames carry socket bytes; control `eof` says the destination
 *   half-closed; the stream ends when the socket is fully closed. A reset, a timeout or a
 *   revoked session ends with a control `exit` frame whose reason says why.
 * Backpressure is end to end both ways: a full tunnel stream pauses the socket, a socket
 * that cannot take more pauses the frame decoder (and so the relay's stream).
 */
import { connect, type Socket } from 'node:net';
import type { ServerHttp2Stream } from 'node:http2';
import { UplinkError } from '../../shared/errors.js';
import { CHANNEL, encodeControl, writeFrame } from '../../shared/frames.js';
import { readInputFrames } from './input-frames.js';
import { OP_HEADERS } from '../../shared/protocol.js';
import type { AgentAuditLog } from '../audit-log.js';
import type { PhaseAccess } from '../phases/credentials.js';
import type { RequestContext } from '../tunnel-server.js';
import type { ForwardConfig, ForwardPolicy } from './forward-policy.js';

/** The live forwarded connections of one agent, for operations.forward.maxConnections. */
export interface ForwardConnections {
  active: number;
}

export interface ForwardDeps {
  cfg: Readonly<ForwardConfig>;
  policy: ForwardPolicy;
  /** One counter per agent (the capability creates it), shared by its forward requests. */
  connections: ForwardConnections;
  phases(): PhaseAccess;
  audit(): AgentAuditLog;
  applianceId(): string;
  maxFrameBytes: number;
}

export interface ForwardSpec {
  host: string;
  port: number;
}

/** Validate `{host, port}` from the relay; nothing else is accepted. */
export function parseForwardSpec(raw: unknown): ForwardSpec {
  const s = raw as Record<string, unknown> | null;
  if (!s || typeof s !== 'object' || Array.isArray(s)) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'forward spec must be an object {host, port}');
  const extra = Object.keys(s).filter((k) => k !== 'host' && k !== 'port');
  if (extra.length) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `forward spec: unknown field "${extra[0]}"`);
  if (typeof s.host !== 'string' || s.host.length === 0 || s.host.length > 253 || !/^[A-Za-z0-9.:[\]_-]+$/.test(s.host)) {
    throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'forward spec: host must be a host name or IP address');
  }
  if (typeof s.port !== 'number' || !Number.isInteger(s.port) || s.port < 1 || s.port > 65_535) {
    throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'forward spec: port must be a whole number from 1 to 65535');
  }
  return { host: s.host, port: s.port };
}

function dial(address: string, port: number, timeoutMs: number, what: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    // allowHalfOpen: the destination's FIN must not end our sending side; the client decides.
    const socket = connect({ host: address, port, allowHalfOpen: true, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new UplinkError('UPLINK_ERR_FORWARD_CONNECT', `connecting to ${what} timed out after ${timeoutMs} ms`, { details: { errno: 'ETIMEDOUT' } }));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new UplinkError('UPLINK_ERR_FORWARD_CONNECT', `cannot connect to ${what}: ${err.code ?? err.message}`, { details: { errno: err.code ?? null } }));
    });
  });
}

export async function handleForward(stream: ServerHttp2Stream, ctx: RequestContext, deps: ForwardDeps): Promise<void> {
  if (!deps.cfg.enabled) throw new UplinkError('UPLINK_ERR_OPERATION_DISABLED', 'forward is disabled by the customer on this agent (operations.forward.enabled)');
  const spec = parseForwardSpec(ctx.spec);
  const target = `${spec.host}:${spec.port}`;
  const auditBase = { actor: ctx.actor, appliance: deps.applianceId(), operation: 'forward', phase: 'operate' as const, requestId: ctx.requestId, target, start: new Date() };
  const refuse = async (err: unknown, outcome: 'denied' | 'error'): Promise<never> => {
    await deps.audit().append({ ...auditBase, outcome, end: new Date(), detail: { code: (err as UplinkError).code ?? 'UPLINK_ERR_INTERNAL' } }).catch(() => {});
    throw err;
  };

  let session;
  try {
    session = await deps.phases().open({ phase: 'operate', actor: ctx.actor, requestId: ctx.requestId, operation: 'forward' });
  } catch (err) {
    return refuse(err, 'denied');
  }
  let socket: Socket;
  let rule: string;
  const conns = deps.connections;
  if (conns.active >= deps.cfg.maxConnections) {
    await session.close();
    return refuse(new UplinkError('UPLINK_ERR_FORWARD_LIMIT', `the agent already carries ${conns.active} forwarded connections (operations.forward.maxConnections)`, { details: { limit: deps.cfg.maxConnections } }), 'denied');
  }
  conns.active++;
  try {
    const decision = await deps.policy.check(spec.host, spec.port);
    rule = decision.rule;
    socket = await dial(decision.address, spec.port, deps.cfg.connectTimeoutMs, decision.address === spec.host ? target : `${target} (${decision.address})`);
  } catch (err) {
    conns.active--;
    await session.close();
    return refuse(err, (err as UplinkError).code === 'UPLINK_ERR_FORWARD_DENIED' ? 'denied' : 'error');
  }
  ctx.log.info({ target, rule, phaseMode: session.mode }, 'forward connected');
  stream.respond({ ':status': 200, 'content-type': 'application/x-uplink-frames', [OP_HEADERS.phaseMode]: session.mode });

  let bytesOut = 0;
  let reason: string | undefined;
  const stop = (why: string): void => {
    reason ??= why;
    socket.destroy();
  };
  // The customer revoked Operate or its window closed: the connection ends now.
  session.once('ended', () => stop('access-revoked'));

  // Destination → relay.
  socket.on('data', (chunk: Buffer) => {
    if (stream.destroyed) return;
    bytesOut += chunk.length;
    if (!writeFrame(stream, CHANNEL.stdout, chunk)) socket.pause();
  });
  stream.on('drain', () => socket.resume());
  socket.on('end', () => {
    if (!stream.destroyed && !stream.writableEnded) stream.write(encodeControl({ type: 'eof' }));
  });
  socket.on('error', (err: NodeJS.ErrnoException) => {
    reason ??= `socket-error:${err.code ?? 'ERROR'}`;
  });

  // Relay → destination.
  const input = readInputFrames(stream, { maxFrameBytes: deps.maxFrameBytes, log: ctx.log }, {
    stdin: () => (socket.destroyed || socket.writableEnded ? undefined : socket),
    control: (msg) => {
      if (msg.type === 'eof' && !socket.writableEnded) socket.end();
    },
    error: (err) => {
      ctx.log.info({ err: err.message }, 'malformed input from relay; closing the forward');
      stop('protocol-error');
    },
  });
  // The relay cancelled (RST_STREAM), the CLI went away or the tunnel died.
  stream.once('close', () => {
    if (!socket.destroyed) stop('cancelled');
  });

  await new Promise<void>((resolve) => socket.once('close', () => resolve()));
  conns.active--;
  ctx.log.info({ target, bytesIn: input.bytesIn, bytesOut, reason: reason ?? 'closed' }, 'forward ended');
  await session.close();
  await deps
    .audit()
    .append({ ...auditBase, outcome: reason && reason !== 'cancelled' ? 'error' : 'ok', end: new Date(), bytesIn: input.bytesIn, bytesOut, detail: { rule, reason: reason ?? 'closed' } })
    .catch((err: unknown) => ctx.log.error({ err: String(err) }, 'cannot append audit event'));
  if (!stream.destroyed && !stream.closed) {
    if (reason && reason !== 'cancelled') stream.end(encodeControl({ type: 'exit', code: null, signal: null, reason }));
    else stream.end();
  }
}
