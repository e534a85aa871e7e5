/**
 * Interactive operations: the vendor CLI opens a WebSocket to
 * `/v1/appliances/{name}/{op}`; the relay authenticates the token, checks the scope and the
 * appliance (on every request, so a revoked key or token stops new work at once), opens an
 * HTTP/2 stream to the agent carrying the spec, and only when the agent accepts (HTTP 200)
 * completes the upgrade. From then on bytes flow both ways with backpressure: the relay
 * does not parse them unless a tap (recording) asks to.
 *
 * Errors before the upgrade are HTTP status + `{code, message}`, exactly as the agent or
 * the relay produced them.
 */
import type { IncomingMessage } from 'node:http';
import http2, { type ClientHttp2Stream, type IncomingHttpHeaders as H2Headers } from 'node:http2';
import { randomUUID } from 'node:crypto';
import { Transform, type Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { webSocketStream } from '../shared/ws-stream.js';
import { UplinkError, errorFromBody, toUplinkError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { OP_HEADERS } from '../shared/protocol.js';
import type { RelayConfig } from './config.js';
import type { Store } from './store/store.js';
import type { AgentGateway } from './gateway.js';
import type { RelayMetrics } from './metrics.js';
import { ApiAuthenticator } from './api-auth.js';
import type { ApiToken, Scope } from './store/tokens-repo.js';
import { rejectUpgrade } from './upgrade-reply.js';

export interface OpKind {
  name: string;
  scope: Scope;
  agentPath: string;
  /**
   * How long the relay waits for the agent's answer (its response headers). 0: as long as
   * the CLI stays connected, for operations whose agent side bounds the wait itself (sql
   * answers after the first row, within the target's statement timeout). Default 30 s.
   */
  answerTimeoutMs?: number;
}

export interface OpStartInfo {
  op: OpKind;
  token: ApiToken;
  applianceId: string;
  applianceName: string;
  requestId: string;
  spec: unknown;
}

/** Optional observer of a running operation (recordings, audit). */
export interface OpTap {
  onStart?(info: OpStartInfo): void;
  /**
   * Bytes relay→CLI (agent output), as they pass. A promise holds the agent's output (and,
   * through HTTP/2 flow control, the remote process) until it settles: a tap that cannot
   * keep up, such as a recording waiting on the store, slows the session instead of
   * buffering it.
   */
  onAgentData?(chunk: Buffer): Promise<void> | void;
  /** Bytes CLI→agent, as they pass. */
  onClientData?(chunk: Buffer): void;
  onEnd?(outcome: { error?: UplinkError; bytesIn: number; bytesOut: number }): void;
}

/** An operation the relay or the agent refused before the upgrade. */
export interface OpRefusal {
  op: string;
  applianceName: string;
  code: string;
}

const AGENT_RESPONSE_TIMEOUT_MS = 30_000;
const MAX_ERROR_BODY = 64 * 1024;

export class OpsBridge {
  private readonly wss: WebSocketServer;
  private readonly apiAuth: ApiAuthenticator;
  private readonly refusalListeners: Array<(refusal: OpRefusal) => void> = [];

  constructor(
    private readonly cfg: Readonly<RelayConfig>,
    private readonly store: Store,
    private readonly gateway: AgentGateway,
    private readonly log: Logger,
    private readonly metrics: RelayMetrics,
    private readonly taps: Array<(info: OpStartInfo) => OpTap | undefined> = [],
  ) {
    this.wss = new WebSocketServer({ noServer: true, maxPayload: cfg.limits.maxWebSocketMessageBytes, perMessageDeflate: false, clientTracking: false });
    this.apiAuth = new ApiAuthenticator(store);
  }

  addTap(factory: (info: OpStartInfo) => OpTap | undefined): void {
    this.taps.push(factory);
  }

  /** Observe refused operations (the phase summary refreshes after a phase refusal). */
  onRefused(listener: (refusal: OpRefusal) => void): void {
    this.refusalListeners.push(listener);
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, op: OpKind, applianceName: string): void {
    socket.on('error', () => {});
    const requestId = randomUUID();
    const log = this.log.child({ request: requestId, op: op.name, appliance: applianceName });
    const watch = watchAbandon(socket);
    this.open(req, op, applianceName, requestId, log, watch.signal)
      .then(({ stream, info, phaseMode }) => {
        watch.stop();
        if (socket.destroyed) {
          stream.close();
          return;
        }
        // The agent's phase mode rides on the upgrade response so the CLI can say "local
        // mode". ws emits 'headers' synchronously inside handleUpgrade, so this listener sees
        // only this request's response.
        const addMode = (headers: string[]) => {
          if (phaseMode) headers.push(`${OP_HEADERS.phaseMode}: ${phaseMode}`);
        };
        this.wss.on('headers', addMode);
        try {
          this.wss.handleUpgrade(req, socket, head, (ws) => this.bridge(ws, stream, info, log));
        } finally {
          this.wss.off('headers', addMode);
        }
      })
      .catch((err: unknown) => {
        watch.stop();
        if (watch.signal.aborted) {
          log.info('operation abandoned by the client before the agent answered');
          socket.destroy();
          return;
        }
        const e = toUplinkError(err);
        if (e.code === 'UPLINK_ERR_UNAUTHENTICATED' || e.code === 'UPLINK_ERR_FORBIDDEN') this.metrics.authFailures.inc({ code: e.code });
        log.info({ code: e.code, reason: e.message }, 'operation refused');
        rejectUpgrade(socket, e, { 'x-uplink-request-id': requestId });
        for (const l of this.refusalListeners) l({ op: op.name, applianceName, code: e.code });
      });
  }

  private async open(req: IncomingMessage, op: OpKind, applianceName: string, requestId: string, log: Logger, abandoned: AbortSignal): Promise<{ stream: ClientHttp2Stream; info: OpStartInfo; phaseMode: string | undefined }> {
    const token = await this.apiAuth.authenticate(req);
    ApiAuthenticator.require(token, op.scope);
    const rawSpec = req.headers[OP_HEADERS.spec];
    if (typeof rawSpec !== 'string' || rawSpec.length === 0) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `missing ${OP_HEADERS.spec} header`);
    if (rawSpec.length > this.cfg.limits.maxSpecBytes) throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `operation spec exceeds ${this.cfg.limits.maxSpecBytes} bytes`);
    let spec: unknown;
    try {
      spec = JSON.parse(Buffer.from(rawSpec, 'base64url').toString('utf8'));
    } catch {
      throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `${OP_HEADERS.spec} is not base64url JSON`);
    }
    const appliance = await this.store.appliances.byName(applianceName);
    if (!appliance) throw new UplinkError('UPLINK_ERR_NOT_FOUND', `no appliance named "${applianceName}"`);
    if (appliance.keyRevokedAt) {
      this.gateway.revoke(appliance.id);
      throw new UplinkError('UPLINK_ERR_AUTH_KEY_REVOKED', `the agent key of "${applianceName}" was revoked`);
    }
    const session = this.gateway.get(appliance.id);
    if (!session) throw new UplinkError('UPLINK_ERR_AGENT_OFFLINE', `no agent is connected for "${applianceName}"`);
    if (abandoned.aborted) throw new UplinkError('UPLINK_ERR_TUNNEL_CLOSED', 'the client went away');
    const stream = session.request(
      {
        ':path': op.agentPath,
        [OP_HEADERS.spec]: rawSpec,
        [OP_HEADERS.actor]: token.name,
        [OP_HEADERS.requestId]: requestId,
      },
      op.name,
    );
    log.info({ actor: token.name }, 'operation requested');
    const cancel = (): void => {
      if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
    };
    abandoned.addEventListener('abort', cancel, { once: true });
    let headers: H2Headers;
    try {
      headers = await awaitResponse(stream, op.answerTimeoutMs ?? AGENT_RESPONSE_TIMEOUT_MS);
    } finally {
      abandoned.removeEventListener('abort', cancel);
    }
    const status = Number(headers[':status']);
    if (status !== 200) {
      const body = await readSmallBody(stream, MAX_ERROR_BODY);
      let parsed: unknown;
      try {
        parsed = JSON.parse(body);
      } catch {
        parsed = undefined;
      }
      stream.close();
      throw errorFromBody(parsed, status);
    }
    const mode = headers[OP_HEADERS.phaseMode];
    // Only the two values the agent sends pass through: nothing else reaches a response header.
    const phaseMode = mode === 'aws' || mode === 'local' ? mode : undefined;
    return { stream, info: { op, token, applianceId: appliance.id, applianceName, requestId, spec }, phaseMode };
  }

  private bridge(ws: WebSocket, stream: ClientHttp2Stream, info: OpStartInfo, log: Logger): void {
    const client = webSocketStream(ws);
    const taps = this.taps.map((f) => f(info)).filter((t): t is OpTap => t !== undefined);
    for (const t of taps) t.onStart?.(info);
    let bytesIn = 0;
    let bytesOut = 0;
    let finished = false;
    const finish = (err?: UplinkError): void => {
      if (finished) return;
      finished = true;
      for (const t of taps) t.onEnd?.({ ...(err ? { error: err } : {}), bytesIn, bytesOut });
      log.info({ bytesFromAgent: bytesIn, bytesToAgent: bytesOut, ...(err ? { code: err.code } : {}) }, 'operation ended');
    };
    stream.on('data', (chunk: Buffer) => (bytesIn += chunk.length));
    client.on('data', (chunk: Buffer) => {
      bytesOut += chunk.length;
      for (const t of taps) t.onClientData?.(chunk);
    });
    // pipe() gives backpressure both ways: a slow CLI pauses the agent's stream (HTTP/2 flow
    // control then pauses the process), a slow agent pauses the CLI's WebSocket.
    // Without a tap that reads the output (forward, sql), nothing stands between the two.
    const readers = taps.filter((t) => t.onAgentData);
    if (readers.length > 0) stream.pipe(tapOutput(readers)).pipe(client);
    else stream.pipe(client);
    client.pipe(stream);
    // The end travels the pipe: the client's side ends after the last chunk passed the taps.
    stream.on('error', (err) => {
      log.debug({ err: err.message }, 'agent stream error');
      client.destroy();
      finish(new UplinkError('UPLINK_ERR_TUNNEL_CLOSED', 'the agent stream failed'));
    });
    stream.on('close', () => {
      if (!client.destroyed && !stream.readableEnded) client.destroy();
      finish(stream.rstCode && stream.rstCode !== 0 ? new UplinkError('UPLINK_ERR_TUNNEL_CLOSED', `agent stream reset (${stream.rstCode})`) : undefined);
    });
    client.on('error', (err) => log.debug({ err: err.message }, 'client websocket error'));
    ws.once('close', () => {
      // The engineer went away before the agent finished: RST_STREAM(CANCEL) so the agent
      // stops the work. Only while the agent's side is still open: resetting a stream that
      // already ended both ways sends nghttp2 over a JS stream into a runaway allocation
      // loop on Node 20 (seen here; reproduced by test/relay/ops-bridge.test.ts).
      if (!stream.closed && !stream.readableEnded) stream.close(http2.constants.NGHTTP2_CANCEL);
    });
  }
}

/**
 * Notice a CLI that gives up before the agent answers (Ctrl-C while a query computes its
 * first row), so the agent's stream is cancelled and its work stops now, not at a timeout.
 * A socket nobody reads never sees the peer's FIN, so it is read meanwhile: a WebSocket
 * client sends nothing before the 101, and anything it did send is put back (unshift) for
 * the WebSocket to read, in order. Call `stop()` in the same tick as the hand-over to ws,
 * which attaches its own reader synchronously. The socket is not paused: an explicit
 * pause() would keep ws's 'data' listener from resuming it, and the CLI's frames (its close
 * frame included) would go unread.
 */
function watchAbandon(socket: Duplex): { signal: AbortSignal; stop(): void } {
  const abandoned = new AbortController();
  const early: Buffer[] = [];
  const onData = (chunk: Buffer): void => void early.push(chunk);
  const onGone = (): void => abandoned.abort();
  socket.on('data', onData);
  socket.once('end', onGone);
  socket.once('close', onGone);
  return {
    signal: abandoned.signal,
    stop() {
      socket.off('data', onData);
      socket.off('end', onGone);
      socket.off('close', onGone);
      if (early.length) socket.unshift(Buffer.concat(early));
    },
  };
}

/** Passes agent output on once every reading tap has taken it (and let it go on). */
function tapOutput(taps: OpTap[]): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      const waits: Promise<void>[] = [];
      for (const t of taps) {
        const w = t.onAgentData?.(chunk);
        if (w) waits.push(w);
      }
      if (waits.length === 0) done(null, chunk);
      else void Promise.allSettled(waits).then(() => done(null, chunk));
    },
  });
}

/** The agent's response headers; `timeoutMs` 0 waits as long as the stream lives. */
function awaitResponse(stream: ClientHttp2Stream, timeoutMs: number): Promise<H2Headers> {
  return new Promise((resolve, reject) => {
    const timer =
      timeoutMs > 0
        ? setTimeout(() => {
            stream.close();
            reject(new UplinkError('UPLINK_ERR_TUNNEL_CLOSED', `agent did not answer within ${timeoutMs} ms`));
          }, timeoutMs)
        : undefined;
    stream.once('response', (headers) => {
      clearTimeout(timer);
      resolve(headers);
    });
    stream.once('error', (err) => {
      clearTimeout(timer);
      reject(new UplinkError('UPLINK_ERR_TUNNEL_CLOSED', `agent stream failed: ${err.message}`, { cause: err }));
    });
    stream.once('close', () => {
      clearTimeout(timer);
      reject(new UplinkError('UPLINK_ERR_TUNNEL_CLOSED', 'agent stream closed before answering'));
    });
  });
}

/**
 * Collect a short error body. The agent may reset the stream right after its response (its
 * side is done while ours is still open), so whatever arrived before 'close' counts.
 */
export function readSmallBody(stream: NodeJS.ReadableStream, limit: number): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => resolve(Buffer.concat(chunks).toString('utf8'));
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
    });
    stream.once('end', done);
    stream.once('close', done);
    stream.once('error', done);
  });
}
