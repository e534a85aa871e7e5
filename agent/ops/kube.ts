/**
 * The `kube` and `kube-upgrade` operations: one Kubernetes API request from the vendor's
 * kubectl (through `uplink kubectl`'s local server, the relay and the tunnel) forwarded to
 * a configured cluster under the Operate phase.
 *
 * Wire contract on the tunnel stream (shared/frames.ts framing):
 * - in: stdin frames = request body bytes (only when spec.body), then an `eof` control
 *   frame; for an upgraded stream, stdin frames = raw bytes for the API server's socket.
 * - out: HTTP 200 with x-uplink-phase-mode, one `response` control frame {status, headers}
 *   (101 for a switched protocol), then stdout frames = response body or raw upgraded
 *   bytes, then the end of the stream. A failure after the 200 is an `error` control frame.
 *
 * `kube-upgrade` (exec, attach, port-forward) answers its refusals as HTTP statuses: the
 * upstream handshake happens before the 200, so the CLI learns the code when it opens the
 * op. Because the relay's OpsBridge carries these bytes, a tap there sees every byte of a
 * `kubectl exec` (the Kubernetes channel protocol inside stdin/stdout frames).
 *
 * Every request opens its own Operate session and writes its own audit event: the
 * customer's record shows each API call (method, path, status) by the engineer who made it.
 */
import type { ServerHttp2Stream } from 'node:http2';
import { PassThrough, type Duplex, type Readable } from 'node:stream';
import { UplinkError, toUplinkError } from '../../shared/errors.js';
import { CHANNEL, FrameDecoder, encodeControl, parseControl, writeFrame, type Frame } from '../../shared/frames.js';
import { parseKubeOpSpec, type KubeOpSpec } from '../../shared/kube-op-spec.js';
import { AGENT_PATHS, OP_HEADERS } from '../../shared/protocol.js';
import type { Agent } from '../agent.js';
import type { AgentAuditLog } from '../audit-log.js';
import type { AgentCapability } from '../capabilities.js';
import type { AgentConfig } from '../config.js';
import type { PhaseAccess } from '../phases/credentials.js';
import type { PhaseSession } from '../phases/phase-session.js';
import type { RequestContext } from '../tunnel-server.js';
import { KubeAuthCache } from './kube-eks.js';
import { forwardKubeRequest, forwardKubeUpgrade, parseKubeProxyOptions } from './kube-proxy.js';
import { resolveKubeTarget, selectKubeTarget, type ResolvedKubeTarget } from './kube-target.js';

export interface KubeOpDeps {
  cfg: Readonly<AgentConfig>;
  phases(): PhaseAccess;
  audit(): AgentAuditLog;
  applianceId(): string;
  maxFrameBytes: number;
  /** One per agent: EKS endpoints and tokens are reused across requests. */
  cache: KubeAuthCache;
  proxy: ReturnType<typeof parseKubeProxyOptions>;
}

type AuditBase = Omit<Parameters<AgentAuditLog['append']>[0], 'outcome'>;
type OpName = 'kube' | 'kube-upgrade';

interface Begun {
  spec: KubeOpSpec;
  resolved: ResolvedKubeTarget;
  session: PhaseSession;
  auditBase: AuditBase;
  /** Aborted when the relay cancels the stream or the Operate session ends. */
  abort: AbortController;
}

/** Refusals, approval, target resolution: everything before a byte reaches the cluster. */
async function begin(stream: ServerHttp2Stream, ctx: RequestContext, deps: KubeOpDeps, operation: OpName): Promise<Begun> {
  if (!deps.cfg.operations.kube.enabled) throw new UplinkError('UPLINK_ERR_OPERATION_DISABLED', 'kubectl access is disabled by the customer on this agent (operations.kube.enabled)');
  const spec = parseKubeOpSpec(ctx.spec);
  const { name, target } = selectKubeTarget(deps.cfg.kube.targets, spec.cluster);
  const auditBase: AuditBase = {
    actor: ctx.actor, appliance: deps.applianceId(), operation, phase: 'operate', requestId: ctx.requestId,
    target: `${name} ${spec.method} ${spec.path}`.slice(0, 512), start: new Date(),
  };
  let session: PhaseSession;
  try {
    // Both ops are the `kube` operation to the phase policy: one Operate decision covers kubectl.
    session = await deps.phases().open({ phase: 'operate', actor: ctx.actor, requestId: ctx.requestId, operation: 'kube' });
  } catch (err) {
    await deps.audit().append({ ...auditBase, outcome: 'denied', end: new Date(), detail: { code: toUplinkError(err).code } }).catch(() => {});
    throw err;
  }
  let resolved: ResolvedKubeTarget;
  try {
    resolved = await resolveKubeTarget(target, target.kind === 'eks' ? session.awsCredentials() : undefined, {
      cache: deps.cache,
      ...(deps.cfg.aws?.region ? { region: deps.cfg.aws.region } : {}),
      ...(deps.cfg.aws?.endpoint ? { endpoint: deps.cfg.aws.endpoint } : {}),
    });
  } catch (err) {
    await session.close();
    await deps.audit().append({ ...auditBase, outcome: 'error', end: new Date(), detail: { code: toUplinkError(err).code } }).catch(() => {});
    throw err;
  }
  const abort = new AbortController();
  stream.once('close', () => abort.abort(new UplinkError('UPLINK_ERR_TUNNEL_CLOSED', 'the relay cancelled the request')));
  // The customer revoked Operate, or its window closed: a running watch or exec ends now.
  session.once('ended', () => abort.abort(new UplinkError('UPLINK_ERR_PHASE_SESSION_ENDED', 'the Operate session ended')));
  return { spec, resolved, session, auditBase, abort };
}

/** Write bytes as stdout frames no larger than the frame limit; false when the stream pushes back. */
function writeOut(stream: ServerHttp2Stream, chunk: Buffer, maxFrameBytes: number): boolean {
  let ok = true;
  for (let at = 0; at < chunk.length; at += maxFrameBytes) ok = writeFrame(stream, CHANNEL.stdout, chunk.subarray(at, at + maxFrameBytes));
  return ok;
}

/** Pump a readable (a response body or upgraded socket) out as stdout frames, with backpressure. */
function pumpOut(from: Readable, stream: ServerHttp2Stream, maxFrameBytes: number): Promise<{ bytes: number; error?: UplinkError }> {
  return new Promise((resolve) => {
    let bytes = 0;
    let settled = false;
    const done = (error?: UplinkError): void => {
      if (settled) return;
      settled = true;
      stream.off('drain', onDrain);
      resolve({ bytes, ...(error ? { error } : {}) });
    };
    const onDrain = (): void => { from.resume(); };
    stream.on('drain', onDrain);
    from.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (stream.destroyed) return;
      if (!writeOut(stream, chunk, maxFrameBytes)) from.pause();
    });
    from.once('end', () => done());
    from.once('error', (err) => done(err instanceof UplinkError ? err : new UplinkError('UPLINK_ERR_KUBE_UNREACHABLE', `the API server connection failed: ${err.message}`)));
    from.once('close', () => done());
  });
}

/** Frames from the relay: stdin bytes to `sink`, `eof` ends it. */
function pumpIn(stream: ServerHttp2Stream, ctx: RequestContext, deps: KubeOpDeps, sink: NodeJS.WritableStream & { destroyed?: boolean; writableEnded?: boolean }, onBytes: (n: number) => void): void {
  const decoder = new FrameDecoder({ maxFrameBytes: deps.maxFrameBytes, streamData: true });
  stream.pipe(decoder);
  const end = (): void => { if (!sink.writableEnded) sink.end(); };
  decoder.on('data', (frame: Frame) => {
    if (frame.channel === CHANNEL.stdin) {
      onBytes(frame.payload.length);
      if (sink.destroyed || sink.writableEnded) return;
      if (!sink.write(frame.payload)) {
        decoder.pause();
        sink.once('drain', () => decoder.resume());
      }
      return;
    }
    if (frame.channel !== CHANNEL.control) return;
    try {
      if (parseControl(frame.payload).type === 'eof') end();
    } catch (err) {
      ctx.log.info({ err: (err as Error).message }, 'bad control frame ignored');
    }
  });
  decoder.on('error', (err) => {
    ctx.log.info({ err: err.message }, 'malformed input from relay; ending the request');
    stream.destroy();
  });
  decoder.on('end', end);
}

async function finish(b: Begun, stream: ServerHttp2Stream, deps: KubeOpDeps, ctx: RequestContext, r: { status?: number; bytesIn: number; bytesOut: number; error?: UplinkError }): Promise<void> {
  const cancelled = b.abort.signal.aborted;
  if (r.error && !stream.destroyed && !stream.closed) stream.end(encodeControl({ type: 'error', code: r.error.code, message: r.error.message }));
  else if (!stream.destroyed && !stream.closed) stream.end();
  await b.session.close();
  const outcome = r.error ? (cancelled ? 'cancelled' : 'error') : r.status !== undefined && r.status < 400 ? 'ok' : 'error';
  await deps.audit()
    .append({ ...b.auditBase, outcome, end: new Date(), bytesIn: r.bytesIn, bytesOut: r.bytesOut, detail: { ...(r.status !== undefined ? { status: r.status } : {}), ...(r.error ? { code: r.error.code } : {}) } })
    .catch((err: unknown) => ctx.log.error({ err: String(err) }, 'cannot append audit event'));
}

function respond200(stream: ServerHttp2Stream, session: PhaseSession): void {
  stream.respond({ ':status': 200, 'content-type': 'application/x-uplink-frames', [OP_HEADERS.phaseMode]: session.mode });
}

/** AGENT_PATHS.kube: a plain request (get, list, watch, logs -f, apply…). */
export async function handleKube(stream: ServerHttp2Stream, ctx: RequestContext, deps: KubeOpDeps): Promise<void> {
  const b = await begin(stream, ctx, deps, 'kube');
  // 200 first: the relay completes the CLI's WebSocket only then, and the body follows it.
  respond200(stream, b.session);
  let bytesIn = 0;
  const body = b.spec.body ? new PassThrough() : new PassThrough().resume();
  pumpIn(stream, ctx, deps, body, (n) => { bytesIn += n; });
  let res;
  try {
    res = await forwardKubeRequest(b.resolved, { method: b.spec.method, path: b.spec.path, headers: b.spec.headers, ...(b.spec.body ? { body } : {}), signal: b.abort.signal }, deps.proxy);
  } catch (err) {
    return finish(b, stream, deps, ctx, { bytesIn, bytesOut: 0, error: toUplinkError(err) });
  }
  ctx.log.debug({ status: res.status, method: b.spec.method }, 'kube response');
  if (!stream.destroyed) stream.write(encodeControl({ type: 'response', status: res.status, headers: res.headers }));
  const out = await pumpOut(res.body, stream, deps.maxFrameBytes);
  return finish(b, stream, deps, ctx, { status: res.status, bytesIn, bytesOut: out.bytes, ...(out.error ? { error: out.error } : {}) });
}

/** AGENT_PATHS.kubeUpgrade: exec, attach, port-forward (WebSocket or SPDY upgrades). */
export async function handleKubeUpgrade(stream: ServerHttp2Stream, ctx: RequestContext, deps: KubeOpDeps): Promise<void> {
  const b = await begin(stream, ctx, deps, 'kube-upgrade');
  let up;
  try {
    up = await forwardKubeUpgrade(b.resolved, { method: b.spec.method, path: b.spec.path, headers: b.spec.headers, signal: b.abort.signal }, deps.proxy);
  } catch (err) {
    await b.session.close();
    await deps.audit().append({ ...b.auditBase, outcome: 'error', end: new Date(), detail: { code: toUplinkError(err).code } }).catch(() => {});
    throw err;
  }
  respond200(stream, b.session);
  stream.write(encodeControl({ type: 'response', status: up.status, headers: up.headers }));
  if (!up.upgraded) {
    const out = await pumpOut(up.body, stream, deps.maxFrameBytes);
    return finish(b, stream, deps, ctx, { status: up.status, bytesIn: 0, bytesOut: out.bytes, ...(out.error ? { error: out.error } : {}) });
  }
  const socket: Duplex = up.socket;
  let bytesIn = 0;
  socket.on('error', (err) => ctx.log.debug({ err: err.message }, 'upgraded API server socket error'));
  if (up.head.length > 0) writeOut(stream, up.head, deps.maxFrameBytes);
  pumpIn(stream, ctx, deps, socket, (n) => { bytesIn += n; });
  stream.once('close', () => socket.destroy());
  const out = await pumpOut(socket, stream, deps.maxFrameBytes);
  socket.destroy();
  return finish(b, stream, deps, ctx, { status: 101, bytesIn, bytesOut: out.bytes + up.head.length, ...(out.error && !b.abort.signal.aborted ? { error: out.error } : {}) });
}

/** Registers both handlers with one KubeAuthCache per agent; cleared when the agent stops. */
export function kubeCapability(): AgentCapability {
  const cache = new KubeAuthCache();
  return {
    name: 'kube',
    start(agent: Agent) {
      const deps: KubeOpDeps = {
        cfg: agent.cfg, cache, proxy: parseKubeProxyOptions({ logger: agent.log }), maxFrameBytes: agent.cfg.limits.maxFrameBytes,
        phases: () => agent.phases, audit: () => agent.audit, applianceId: () => agent.identity.applianceId,
      };
      agent.tunnel.handle(AGENT_PATHS.kube, (stream, ctx) => handleKube(stream, ctx, deps));
      agent.tunnel.handle(AGENT_PATHS.kubeUpgrade, (stream, ctx) => handleKubeUpgrade(stream, ctx, deps));
    },
    stop() {
      cache.clear();
    },
  };
}
