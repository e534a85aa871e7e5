/**
 * The vendor-side end of `uplink kubectl` / `uplink kubeconfig`: a plain HTTP server on
 * 127.0.0.1 (random port) that kubectl talks to as its cluster. Each request becomes one
 * operation WebSocket to the relay (op `kube`), each upgrade (exec, attach, port-forward)
 * one `kube-upgrade` op; the agent forwards it to the cluster under the Operate phase.
 *
 * One WebSocket per kubectl request costs a round trip per call (kubectl sends a handful of
 * discovery requests per command); acceptable for interactive use, and the relay then
 * authenticates and authorises every single API call. Pooling is a later optimisation.
 *
 * Recordings: `kubectl exec` travels as the `kube-upgrade` op through the relay's
 * OpsBridge, so a tap there sees its bytes: stdin frames carry kubectl→pod WebSocket frames
 * (Kubernetes channel protocol), stdout frames pod→kubectl.
 *
 * The server listens on loopback only and serves nothing outside a random path prefix made
 * per run (`http://127.0.0.1:PORT/<secret>`, in the owner-only kubeconfig), so another user
 * on the same machine cannot borrow the engineer's relay access. A path secret rather than a
 * bearer token because kubectl does not send tokens to a plain-http server, and loopback
 * TLS would need a certificate the engineer's kubectl trusts.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { UplinkError, errorFromBody, toUplinkError } from '../../shared/errors.js';
import { CHANNEL, FrameDecoder, encodeControl, parseControl, writeFrame, type ControlMessage, type Frame } from '../../shared/frames.js';
import { kubeSpecHeaders, type KubeOpSpec } from '../../shared/kube-op-spec.js';

/** Frames from the relay are bounded like exec's (bulk list responses are large). */
export const KUBE_LOCAL_MAX_FRAME_BYTES = 16 * 1024 * 1024;
/** Bytes of the per-run path secret (hex-encoded in the kubeconfig's server URL). */
const TOKEN_BYTES = 32;

/** Opens one operation on the relay (ApiClient.openOp bound to an appliance). */
export type OpenKubeOp = (op: 'kube' | 'kube-upgrade', spec: KubeOpSpec) => Promise<Duplex>;

export interface KubeLocalServerOptions {
  open: OpenKubeOp;
  /** The agent's kube target; omitted when the agent has exactly one. */
  cluster?: string;
}

/** A Kubernetes `Status` body, so kubectl prints uplink's refusals like the API server's own. */
export function kubeStatus(err: UplinkError): { status: number; body: string } {
  const status = err.status >= 400 && err.status <= 599 ? err.status : 502;
  const body = JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `uplink: ${err.code}: ${err.message}`, reason: err.code, code: status });
  return { status, body };
}

export class KubeLocalServer {
  /** The path prefix every request must carry; part of the server URL in the kubeconfig. */
  readonly secret = randomBytes(TOKEN_BYTES).toString('hex');
  private readonly server: Server;
  private readonly sockets = new Set<Duplex>();
  private closed = false;

  constructor(private readonly opts: KubeLocalServerOptions) {
    this.server = createServer((req, res) => this.onRequest(req, res));
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket, head));
    this.server.on('connection', (s: Duplex) => {
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
    });
  }

  /** Listen on 127.0.0.1 at a port the OS picks; resolves the server URL for the kubeconfig. */
  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    const addr = this.server.address();
    if (!addr || typeof addr === 'string') throw new Error('local kube server has no TCP address');
    return `http://127.0.0.1:${addr.port}/${this.secret}`;
  }

  /** Stop listening and drop every connection (running watches and execs end). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** The request path without the secret prefix, or undefined when the prefix is wrong. */
  private strip(req: IncomingMessage): string | undefined {
    const url = req.url ?? '/';
    const want = Buffer.from(`/${this.secret}`);
    const got = Buffer.from(url.slice(0, want.length));
    if (got.length !== want.length || !timingSafeEqual(got, want)) return undefined;
    const rest = url.slice(want.length);
    if (rest === '') return '/';
    return rest.startsWith('/') || rest.startsWith('?') ? (rest.startsWith('?') ? `/${rest}` : rest) : undefined;
  }

  private spec(req: IncomingMessage, path: string, upgrade: boolean): KubeOpSpec {
    const hasBody = !upgrade && (req.headers['content-length'] !== undefined ? req.headers['content-length'] !== '0' : req.headers['transfer-encoding'] !== undefined);
    return {
      ...(this.opts.cluster ? { cluster: this.opts.cluster } : {}),
      method: req.method ?? 'GET', path, headers: kubeSpecHeaders(req.headers, upgrade), body: hasBody,
    };
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const path = this.strip(req);
    if (path === undefined) {
      sendStatus(res, new UplinkError('UPLINK_ERR_UNAUTHENTICATED', 'this local uplink kube server serves only the URL in its kubeconfig'));
      return;
    }
    const spec = this.spec(req, path, false);
    this.opts.open('kube', spec).then(
      (duplex) => this.serveResponse(req, res, duplex, spec.body),
      (err: unknown) => sendStatus(res, toUplinkError(err)),
    );
  }

  /** Request body → stdin frames; response control frame → head; stdout frames → body. */
  private serveResponse(req: IncomingMessage, res: ServerResponse, duplex: Duplex, body: boolean): void {
    duplex.on('error', () => {});
    // kubectl left (a watch or logs -f ended with Ctrl-C): closing the WebSocket makes the
    // relay reset the agent's stream, which ends the upstream request.
    res.once('close', () => duplex.destroy());
    if (body) {
      req.on('data', (chunk: Buffer) => {
        if (!writeFrame(duplex, CHANNEL.stdin, chunk)) {
          req.pause();
          duplex.once('drain', () => req.resume());
        }
      });
      req.once('end', () => duplex.write(encodeControl({ type: 'eof' })));
    }
    // Without a body nothing is sent at all: the agent does not wait for input then, and a
    // write could race the relay closing a finished op.
    const decoder = new FrameDecoder({ maxFrameBytes: KUBE_LOCAL_MAX_FRAME_BYTES, streamData: true });
    duplex.pipe(decoder);
    decoder.on('data', (frame: Frame) => {
      if (frame.channel === CHANNEL.stdout) {
        if (!res.headersSent || res.destroyed) return;
        if (!res.write(frame.payload)) {
          decoder.pause();
          res.once('drain', () => decoder.resume());
        }
        return;
      }
      if (frame.channel !== CHANNEL.control) return;
      const msg = parseControl(frame.payload);
      if (msg.type === 'response' && !res.headersSent) {
        res.writeHead(msg.status, msg.headers);
        // Watches and logs -f answer their head at once; kubectl must see it before any event.
        res.flushHeaders();
      } else if (msg.type === 'error') {
        if (!res.headersSent) sendStatus(res, errorFromBody(msg, 502));
        else res.destroy();
      }
    });
    decoder.on('error', () => { duplex.destroy(); res.destroy(); });
    decoder.on('end', () => {
      if (!res.headersSent) sendStatus(res, new UplinkError('UPLINK_ERR_TUNNEL_CLOSED', 'the operation ended before the API server answered'));
      else if (!res.writableEnded) res.end();
    });
    duplex.once('close', () => decoder.end());
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {});
    const path = this.strip(req);
    if (path === undefined) {
      writeRaw(socket, 401, { 'content-type': 'application/json' }, kubeStatus(new UplinkError('UPLINK_ERR_UNAUTHENTICATED', 'this local uplink kube server serves only the URL in its kubeconfig')).body);
      return;
    }
    this.opts.open('kube-upgrade', this.spec(req, path, true)).then(
      (duplex) => this.splice(socket, head, duplex),
      (err: unknown) => {
        const s = kubeStatus(toUplinkError(err));
        writeRaw(socket, s.status, { 'content-type': 'application/json' }, s.body);
      },
    );
  }

  /** Relay the 101 (or the refusal), then raw bytes both ways as stdin/stdout frames. */
  private splice(socket: Duplex, head: Buffer, duplex: Duplex): void {
    duplex.on('error', () => {});
    let response: Extract<ControlMessage, { type: 'response' }> | undefined;
    const decoder = new FrameDecoder({ maxFrameBytes: KUBE_LOCAL_MAX_FRAME_BYTES, streamData: true });
    duplex.pipe(decoder);
    const end = (): void => { socket.destroy(); duplex.destroy(); };
    socket.once('close', end);
    decoder.on('data', (frame: Frame) => {
      if (frame.channel === CHANNEL.stdout) {
        if (!response || socket.destroyed) return;
        if (!socket.write(frame.payload)) {
          decoder.pause();
          socket.once('drain', () => decoder.resume());
        }
        return;
      }
      if (frame.channel !== CHANNEL.control) return;
      const msg = parseControl(frame.payload);
      if (msg.type === 'response' && !response) {
        response = msg;
        // A refusal (401, 403, 404, 400 Status) keeps its body: the connection closes after it.
        socket.write(httpHead(msg.status, msg.status === 101 ? msg.headers : { ...msg.headers, connection: 'close' }));
        if (msg.status !== 101) return;
        if (head.length > 0) writeFrame(duplex, CHANNEL.stdin, head);
        socket.on('data', (chunk: Buffer) => {
          if (!writeFrame(duplex, CHANNEL.stdin, chunk)) {
            socket.pause();
            duplex.once('drain', () => socket.resume());
          }
        });
        socket.once('end', () => duplex.write(encodeControl({ type: 'eof' })));
      } else if (msg.type === 'error') {
        if (!response) writeRaw(socket, 502, { 'content-type': 'application/json' }, kubeStatus(errorFromBody(msg, 502)).body);
        else end();
      }
    });
    decoder.on('error', end);
    decoder.on('end', () => socket.end());
    duplex.once('close', () => decoder.end());
  }
}

function sendStatus(res: ServerResponse, err: UplinkError): void {
  if (res.headersSent) { res.destroy(); return; }
  const s = kubeStatus(err);
  res.writeHead(s.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s.body) }).end(s.body);
}

const REASONS: Record<number, string> = { 101: 'Switching Protocols', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout' };

function httpHead(status: number, headers: Record<string, string | string[]>): string {
  const lines = [`HTTP/1.1 ${status} ${REASONS[status] ?? 'Status'}`];
  for (const [k, v] of Object.entries(headers)) for (const one of Array.isArray(v) ? v : [v]) lines.push(`${k}: ${one.replace(/[\r\n]/g, '')}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}

function writeRaw(socket: Duplex, status: number, headers: Record<string, string>, body: string): void {
  if (socket.destroyed) return;
  socket.end(httpHead(status, { ...headers, 'content-length': String(Buffer.byteLength(body)), connection: 'close' }) + body);
}
