/**
 * Forward one Kubernetes API request, as received from the relay, to the target cluster.
 *
 * Both directions stream: watches, `logs -f` and large lists flow as the API server sends
 * them, and the request body is piped, never buffered. Upgrade requests (exec, attach,
 * port-forward: WebSocket, or SPDY in older clients) return the raw upgraded socket, which
 * the caller splices onto its tunnel stream; the agent does not look inside.
 *
 * Trust: the caller's Authorization is always dropped and the target's credentials added,
 * so the vendor acts in the cluster only as the identity the customer configured (for EKS:
 * the Operate role). What else may cross (method, path, headers) is kube-request-check's.
 */
import { request as httpRequest, Agent as HttpAgent, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import type { Socket } from 'node:net';
import { Transform, type Duplex, type Readable, type TransformCallback } from 'node:stream';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import type { ResolvedKubeTarget } from './kube-target.js';
import { UPGRADE_RESPONSE_KEEP, badRequest, checkMethod, checkUpgradeProtocol, requestHeaders, responseHeaders, targetPath, type HeaderMap } from './kube-request-check.js';

export type { HeaderMap };

/** Defaults for forwardKubeRequest / forwardKubeUpgrade options. */
export const KUBE_PROXY_DEFAULTS = {
  /** TCP + TLS connect to the API server. */
  connectTimeoutMs: 10_000,
  /** From sending the request to the response head. Watches answer their head at once. */
  headersTimeoutMs: 60_000,
  /** Request path including the query (kubectl's longest are label-selector lists). */
  maxPathBytes: 16 * 1024,
  /** Number of request header fields accepted from the caller. */
  maxRequestHeaders: 100,
  /** Total bytes of request header names and values accepted from the caller. */
  maxRequestHeaderBytes: 64 * 1024,
  /** Request body (the API server's own limit is 3 MiB per object; apply of a big list is more). */
  maxRequestBodyBytes: 32 * 1024 * 1024,
  /** Response head from the API server (Node's maxHeaderSize). */
  maxResponseHeaderBytes: 64 * 1024,
} as const;

const limit = (def: number) => z.number().int().positive().default(def);

const optionsSchema = z.strictObject({
  connectTimeoutMs: limit(KUBE_PROXY_DEFAULTS.connectTimeoutMs),
  headersTimeoutMs: limit(KUBE_PROXY_DEFAULTS.headersTimeoutMs),
  maxPathBytes: limit(KUBE_PROXY_DEFAULTS.maxPathBytes),
  maxRequestHeaders: limit(KUBE_PROXY_DEFAULTS.maxRequestHeaders),
  maxRequestHeaderBytes: limit(KUBE_PROXY_DEFAULTS.maxRequestHeaderBytes),
  maxRequestBodyBytes: limit(KUBE_PROXY_DEFAULTS.maxRequestBodyBytes),
  maxResponseHeaderBytes: limit(KUBE_PROXY_DEFAULTS.maxResponseHeaderBytes),
  /** Connection pool for plain requests; a shared keep-alive pool when omitted. Upgrades never pool. */
  agent: z.custom<HttpAgent>((v) => v instanceof HttpAgent).optional(),
  logger: z.custom<Logger>((v) => typeof v === 'object' && v !== null && typeof (v as Logger).debug === 'function').optional(),
});
export type KubeProxyOptions = z.input<typeof optionsSchema>;
type Options = z.output<typeof optionsSchema>;

/** Validate proxy options once (at start-up); the result can be passed to every call. */
export function parseKubeProxyOptions(opts: KubeProxyOptions = {}): Readonly<Options> {
  const r = optionsSchema.safeParse(opts);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const keys = issue.code === 'unrecognized_keys' ? ` (${issue.keys.join(', ')})` : '';
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `kube proxy options.${issue.path.join('.')}: ${issue.message}${keys}`, { details: { field: issue.path.join('.') } });
  }
  return Object.freeze(r.data);
}

/** One request as the relay sent it. `path` is the path and query, e.g. `/api/v1/pods?watch=true`. */
export interface KubeRequest {
  method: string;
  path: string;
  headers: HeaderMap;
  /** Request body; omit for none. */
  body?: Readable;
  /** Aborts the request (the relay's stream was reset). */
  signal?: AbortSignal;
}

export interface KubeResponse {
  status: number;
  headers: Record<string, string | string[]>;
  /** The response body as the API server streams it; destroy it to cancel (ends a watch). */
  body: Readable;
}

/** An upgrade request (exec, attach, port-forward). */
export type KubeUpgradeRequest = Omit<KubeRequest, 'body'>;

/**
 * The API server either switched protocols (`upgraded: true`: splice `head` then `socket`
 * onto the caller's stream, both ways) or answered normally, e.g. 401, 403, 404 or a 400
 * Status for an unsupported protocol (`upgraded: false`: relay status, headers and body).
 */
export type KubeUpgradeResult =
  | { upgraded: true; status: 101; headers: Record<string, string | string[]>; socket: Duplex; head: Buffer }
  | { upgraded: false; status: number; headers: Record<string, string | string[]>; body: Readable };

let sharedAgents: { http: HttpAgent; https: HttpsAgent } | undefined;
function defaultAgent(protocol: string): HttpAgent {
  // One keep-alive pool per process: kubectl sends a burst of discovery requests per command.
  // The https pool keys connections by CA, client certificate and server name, so targets
  // never share a connection they should not.
  sharedAgents ??= { http: new HttpAgent({ keepAlive: true }), https: new HttpsAgent({ keepAlive: true }) };
  return protocol === 'https:' ? sharedAgents.https : sharedAgents.http;
}

/** Counts body bytes and fails the stream past the limit. */
class BodyLimit extends Transform {
  private seen = 0;
  constructor(private readonly max: number) { super(); }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.max) return cb(new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `request body exceeds maxRequestBodyBytes (${this.max})`, { details: { limit: 'maxRequestBodyBytes' } }));
    cb(null, chunk);
  }
}

type Outcome = { kind: 'response'; res: IncomingMessage } | { kind: 'upgrade'; res: IncomingMessage; socket: Socket; head: Buffer };

interface Outgoing {
  method: string;
  path: string;
  headers: OutgoingHttpHeaders;
  body: Readable | undefined;
  /** Wait for a 101 as well as for a plain response. */
  upgrade: boolean;
  signal: AbortSignal | undefined;
}

/**
 * Send one request and wait for the response head (or the 101), with the connect and
 * headers timeouts and the abort signal. Errors are UplinkErrors with stable codes.
 */
function send(resolved: ResolvedKubeTarget, { method, path, headers, body, upgrade, signal }: Outgoing, o: Options): Promise<Outcome> {
  const log = (o.logger ?? silentLogger).child({ component: 'kube-proxy', server: resolved.server.host });
  return new Promise<Outcome>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const https = resolved.server.protocol === 'https:';
    const options = {
      method, path, headers, maxHeaderSize: o.maxResponseHeaderBytes,
      host: resolved.server.hostname.replace(/^\[|\]$/g, ''), port: resolved.server.port || (https ? 443 : 80),
      agent: upgrade ? false : (o.agent ?? defaultAgent(resolved.server.protocol)),
      ...(https ? {
        ...(resolved.ca ? { ca: resolved.ca } : {}),
        ...(resolved.clientCert && resolved.clientKey ? { cert: resolved.clientCert, key: resolved.clientKey } : {}),
        ...(resolved.tlsServerName ? { servername: resolved.tlsServerName } : {}),
        rejectUnauthorized: true,
      } : {}),
    };
    let req: ClientRequest;
    try {
      req = (https ? httpsRequest : httpRequest)(options);
    } catch (err) {
      // Node validates the TLS material here, synchronously: a CA, certificate or key that
      // is not usable PEM.
      return reject(new UplinkError('UPLINK_ERR_KUBE_TARGET_UNUSABLE', `TLS material for ${resolved.server.host} is unusable: ${(err as Error).message}`, { details: { reason: 'tls' }, cause: err }));
    }
    let settled = false;
    const fail = (err: UplinkError | unknown): void => {
      if (settled) return;
      settled = true;
      cleanup();
      req.destroy();
      reject(err);
    };
    const timeout = (phase: 'connect' | 'headers', ms: number, what: string) => (): void =>
      fail(new UplinkError('UPLINK_ERR_KUBE_TIMEOUT', `${what} ${resolved.server.host} within ${ms} ms`, { details: { phase, limit: `${phase}TimeoutMs` } }));
    const connectTimer = setTimeout(timeout('connect', o.connectTimeoutMs, 'no connection to'), o.connectTimeoutMs);
    const headersTimer = setTimeout(timeout('headers', o.headersTimeoutMs, 'no response head from'), o.headersTimeoutMs);
    const onAbort = (): void => fail(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const cleanup = (): void => {
      clearTimeout(connectTimer);
      clearTimeout(headersTimer);
      signal?.removeEventListener('abort', onAbort);
    };
    req.on('socket', (socket: Socket) => {
      // A pooled socket is connected (and its TLS done) already; a new one reports
      // secureConnect (https) or connect (http) once the handshake is over.
      if (!socket.connecting) clearTimeout(connectTimer);
      else socket.once(https ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (settled) return;
      log.debug({ err: err.message, code: err.code }, 'kube API request failed');
      fail(err instanceof UplinkError ? err : new UplinkError('UPLINK_ERR_KUBE_UNREACHABLE', `${resolved.server.host}: ${err.message}`, { details: { reason: err.code ?? err.message }, cause: err }));
    });
    req.on('response', (res: IncomingMessage) => {
      if (settled) { res.destroy(); return; }
      settled = true;
      cleanup();
      cancelLater(res, signal);
      resolve({ kind: 'response', res });
    });
    if (upgrade) {
      req.on('upgrade', (res: IncomingMessage, socket: Socket, head: Buffer) => {
        if (settled) { socket.destroy(); return; }
        settled = true;
        cleanup();
        socket.setNoDelay(true);
        cancelLater(socket, signal);
        resolve({ kind: 'upgrade', res, socket, head });
      });
    }
    if (!body) {
      req.end();
      return;
    }
    const limiter = new BodyLimit(o.maxRequestBodyBytes);
    const onBodyError = (err: unknown): void => fail(err instanceof UplinkError ? err : badRequest(`request body failed: ${(err as Error).message}`));
    body.on('error', onBodyError);
    limiter.on('error', onBodyError);
    body.pipe(limiter).pipe(req);
  });
}

/** After the head, an abort still cancels: it destroys the body or upgraded socket. */
function cancelLater(stream: Readable | Duplex, signal: AbortSignal | undefined): void {
  if (!signal) return;
  const onAbort = (): void => { stream.destroy(); };
  signal.addEventListener('abort', onAbort, { once: true });
  stream.once('close', () => signal.removeEventListener('abort', onAbort));
}

function addAuth(headers: OutgoingHttpHeaders, resolved: ResolvedKubeTarget): void {
  if (resolved.headers.authorization) headers.authorization = resolved.headers.authorization;
}

/**
 * Forward a plain request and resolve with the response head; the body streams.
 * @throws UplinkError UPLINK_ERR_BAD_REQUEST | UPLINK_ERR_PAYLOAD_TOO_LARGE |
 *   UPLINK_ERR_KUBE_UNREACHABLE | UPLINK_ERR_KUBE_TIMEOUT, or the signal's reason.
 */
export async function forwardKubeRequest(resolved: ResolvedKubeTarget, request: KubeRequest, opts: KubeProxyOptions | Readonly<Options> = {}): Promise<KubeResponse> {
  const o = parseKubeProxyOptions(opts);
  const method = checkMethod(request.method);
  const path = targetPath(resolved.server, request.path, o);
  const headers = requestHeaders(request.headers, o);
  const declared = headers['content-length'];
  if (declared !== undefined && !/^\d{1,15}$/.test(String(declared))) throw badRequest('content-length is not a single decimal number');
  if (Number(declared ?? 0) > o.maxRequestBodyBytes) throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `request body exceeds maxRequestBodyBytes (${o.maxRequestBodyBytes})`, { details: { limit: 'maxRequestBodyBytes' } });
  addAuth(headers, resolved);
  const outcome = await send(resolved, { method, path, headers, body: request.body, upgrade: false, signal: request.signal }, o);
  const res = outcome.res;
  return { status: res.statusCode ?? 502, headers: responseHeaders(res), body: res };
}

/**
 * Forward an upgrade request (exec, attach, port-forward) and resolve when the API server
 * switched protocols or answered otherwise. Upgrade connections are never pooled.
 * @throws UplinkError as forwardKubeRequest.
 */
export async function forwardKubeUpgrade(resolved: ResolvedKubeTarget, request: KubeUpgradeRequest, opts: KubeProxyOptions | Readonly<Options> = {}): Promise<KubeUpgradeResult> {
  const o = parseKubeProxyOptions(opts);
  const method = checkMethod(request.method);
  const path = targetPath(resolved.server, request.path, o);
  const upgrade = checkUpgradeProtocol(request.headers.upgrade);
  const headers = requestHeaders(request.headers, o);
  headers.connection = 'Upgrade';
  headers.upgrade = upgrade;
  addAuth(headers, resolved);
  const outcome = await send(resolved, { method, path, headers, body: undefined, upgrade: true, signal: request.signal }, o);
  if (outcome.kind === 'upgrade') {
    return { upgraded: true, status: 101, headers: responseHeaders(outcome.res, UPGRADE_RESPONSE_KEEP), socket: outcome.socket, head: outcome.head };
  }
  const res = outcome.res;
  return { upgraded: false, status: res.statusCode ?? 502, headers: responseHeaders(res), body: res };
}
