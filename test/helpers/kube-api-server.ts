/**
 * A small, honest Kubernetes API server for tests: no real API server can be installed on
 * the test machines, so this one serves exactly what the real `kubectl` (1.32) needs for
 * `get pods` (plain discovery plus server-side Table printing), `get pods -w` (chunked JSON
 * watch events), `logs -f` (chunked text pushed by the test), `exec` (WebSocket
 * subprotocols v5.channel.k8s.io / v4.channel.k8s.io with a tiny built-in command set) and
 * `port-forward` (spdy-portforward.ts: kubectl 1.32 tunnels SPDY/3.1 through a WebSocket
 * with the subprotocol SPDY/3.1+portforward.k8s.io, and only falls back to a plain SPDY
 * upgrade when that fails; the tunnel is what this server accepts). A pod's ports lead to
 * loopback ports the test listens on (`addPod(name, { ports: { 80: localPort } })`).
 *
 * What it does not serve it answers like the real API server: a `Status` object with the
 * matching code (401 without credentials, 404 for unknown paths, 406 when the Accept header
 * names nothing it can produce, 400 for an exec without a WebSocket upgrade, 400 for a
 * port-forward as a plain SPDY upgrade).
 *
 * TLS material (a throwaway CA, a serving certificate for 127.0.0.1/localhost and, on
 * request, client certificates) is made with the `openssl` CLI in a temporary directory.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { PORTFORWARD_TUNNEL_PROTOCOL, SpdyPortForwardSession } from './spdy-portforward.js';
import { acceptRawWebSocket, type RawWebSocket } from './raw-websocket.js';

/** Subprotocols for exec, best first (k8s.io/apimachinery/pkg/util/remotecommand). */
export const EXEC_PROTOCOL_V5 = 'v5.channel.k8s.io';
export const EXEC_PROTOCOL_V4 = 'v4.channel.k8s.io';
/** Channel numbers of the remotecommand WebSocket protocol; 255 is v5's half-close signal. */
export const CHANNEL = { stdin: 0, stdout: 1, stderr: 2, error: 3, resize: 4, close: 255 } as const;

export interface KubeApiServerOptions {
  /** Serve HTTPS with a CA made at start (default) or plain HTTP. */
  tls?: boolean;
  /** The bearer token accepted; random when not given. */
  token?: string;
}

export interface FakePod {
  name: string;
  namespace: string;
  uid: string;
  resourceVersion: string;
  creationTimestamp: string;
  labels: Record<string, string>;
  containers: string[];
  phase: 'Pending' | 'Running' | 'Succeeded' | 'Failed';
  podIP: string;
  /** Pod port -> the loopback port that answers for it (port-forward). */
  ports: Record<number, number>;
}

/** One request as the server saw it, so tests can check what a proxy forwarded. */
export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
}

interface WatchEvent { type: 'ADDED' | 'MODIFIED' | 'DELETED'; pod: FakePod; rv: number }
interface Watcher { send: (e: WatchEvent) => void }
interface LogStream { lines: string[]; followers: Set<ServerResponse>; ended: boolean }

const GIT_VERSION = 'v1.32.0-uplink-test';

export class KubeApiServer {
  readonly token: string;
  /** PEM of the CA that signed the serving certificate (undefined for plain HTTP). */
  readonly caPem: Buffer | undefined;
  readonly requests: SeenRequest[] = [];
  private readonly server: Server;
  private readonly wss = new WebSocketServer({ noServer: true, handleProtocols: (p) => pickExecProtocol(p) ?? false });
  private readonly portForwards = new Set<{ session: SpdyPortForwardSession; ws: RawWebSocket }>();
  private readonly pods = new Map<string, FakePod>();
  private readonly history: WatchEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly logs = new Map<string, LogStream>();
  private readonly sockets = new Set<Duplex>();
  private rv = 1;
  private url_ = '';
  private readonly tlsDir: string | undefined;

  private constructor(opts: KubeApiServerOptions) {
    this.token = opts.token ?? randomBytes(16).toString('hex');
    const handler = (req: IncomingMessage, res: ServerResponse): void => this.handle(req, res);
    if (opts.tls === false) {
      this.server = createHttpServer(handler);
      this.caPem = undefined;
    } else {
      this.tlsDir = mkdtempSync(join(tmpdir(), 'kube-api-tls-'));
      const tls = makeServingTls(this.tlsDir);
      this.caPem = tls.ca;
      // Client certificates are optional, as on the real API server: a valid one
      // authenticates, otherwise the bearer token must.
      this.server = createHttpsServer({ key: tls.key, cert: tls.cert, ca: tls.ca, requestCert: true, rejectUnauthorized: false }, handler);
    }
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.handleUpgrade(req, socket, head));
    this.server.on('connection', (s: Duplex) => { this.sockets.add(s); s.on('close', () => this.sockets.delete(s)); });
    this.server.on('secureConnection', (s: Duplex) => { this.sockets.add(s); s.on('close', () => this.sockets.delete(s)); });
  }

  /** Start on 127.0.0.1 and a free port. */
  static async start(opts: KubeApiServerOptions = {}): Promise<KubeApiServer> {
    const s = new KubeApiServer(opts);
    await new Promise<void>((resolve) => s.server.listen(0, '127.0.0.1', resolve));
    const addr = s.server.address();
    const port = typeof addr === 'object' && addr ? addr.port : 0;
    s.url_ = `${opts.tls === false ? 'http' : 'https'}://127.0.0.1:${port}`;
    return s;
  }

  get url(): string { return this.url_; }

  /** A client certificate the server accepts in place of the token (HTTPS only). */
  issueClientCert(commonName: string): { cert: Buffer; key: Buffer } {
    if (!this.tlsDir) throw new Error('client certificates need the TLS server');
    return makeClientCert(this.tlsDir, commonName);
  }

  addPod(name: string, opts: { namespace?: string; containers?: string[]; labels?: Record<string, string>; phase?: FakePod['phase']; ports?: Record<number, number> } = {}): FakePod {
    const namespace = opts.namespace ?? 'default';
    if (this.pods.has(`${namespace}/${name}`)) throw new Error(`pod ${namespace}/${name} exists`);
    const pod: FakePod = {
      name, namespace, uid: randomUUID(), resourceVersion: String(++this.rv), creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      labels: opts.labels ?? {}, containers: opts.containers ?? ['main'], phase: opts.phase ?? 'Running', podIP: `10.0.0.${this.pods.size + 10}`,
      ports: opts.ports ?? {},
    };
    this.pods.set(`${namespace}/${name}`, pod);
    this.logs.set(`${namespace}/${name}`, { lines: [], followers: new Set(), ended: false });
    this.emit({ type: 'ADDED', pod, rv: this.rv });
    return pod;
  }

  deletePod(name: string, namespace = 'default'): void {
    const pod = this.pods.get(`${namespace}/${name}`);
    if (!pod) throw new Error(`no pod ${namespace}/${name}`);
    this.pods.delete(`${namespace}/${name}`);
    const gone = { ...pod, resourceVersion: String(++this.rv) };
    this.emit({ type: 'DELETED', pod: gone, rv: this.rv });
    this.endLog(name, namespace);
  }

  /** Append one line to a pod's log; followers (`logs -f`) receive it at once. */
  appendLog(name: string, line: string, namespace = 'default'): void {
    const log = this.logs.get(`${namespace}/${name}`);
    if (!log) throw new Error(`no pod ${namespace}/${name}`);
    log.lines.push(line);
    for (const res of log.followers) res.write(`${line}\n`);
  }

  /** The container stopped: end every follower's stream. */
  endLog(name: string, namespace = 'default'): void {
    const log = this.logs.get(`${namespace}/${name}`);
    if (!log) return;
    log.ended = true;
    for (const res of log.followers) res.end();
    log.followers.clear();
  }

  /** How many `logs -f` streams are open for a pod (tests wait on this before pushing lines). */
  followers(name: string, namespace = 'default'): number {
    return this.logs.get(`${namespace}/${name}`)?.followers.size ?? 0;
  }

  /** How many watches are open. */
  get watchCount(): number { return this.watchers.size; }

  /** How many port-forward tunnels are open. */
  get portForwardCount(): number { return this.portForwards.size; }

  /** Every forwarded pod goes away: GOAWAY, then the tunnel closes (kubectl says "lost connection to pod"). */
  endPortForwards(): void {
    for (const { session, ws } of this.portForwards) {
      session.shutdown();
      ws.close(1000);
    }
  }

  async close(): Promise<void> {
    for (const ws of this.wss.clients) ws.terminate();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.tlsDir) rmSync(this.tlsDir, { recursive: true, force: true });
  }

  // ---- request handling ----

  private authenticated(req: IncomingMessage): boolean {
    const sock = req.socket as Partial<TLSSocket>;
    if (sock.authorized === true && sock.getPeerCertificate?.().subject) return true;
    return req.headers.authorization === `Bearer ${this.token}`;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    if (!this.authenticated(req)) return sendStatus(res, 401, 'Unauthorized', 'Unauthorized');
    const url = new URL(req.url ?? '/', 'http://x');
    const parts = url.pathname.split('/').filter(Boolean);
    const accept = parseAccept(req.headers.accept);
    if (!accept.json && !accept.table) return sendStatus(res, 406, 'NotAcceptable', `only application/json is served, not ${req.headers.accept}`);
    if (req.method !== 'GET') {
      if (parts.at(-1) === 'exec') return sendStatus(res, 400, 'BadRequest', 'Upgrade request required');
      return sendStatus(res, 405, 'MethodNotAllowed', `${req.method} is not supported by this test server`);
    }
    const path = url.pathname;
    if (path === '/version') return sendJson(res, 200, { major: '1', minor: '32', gitVersion: GIT_VERSION, gitCommit: '0'.repeat(40), gitTreeState: 'clean', buildDate: '2025-01-01T00:00:00Z', goVersion: 'go1.23.4', compiler: 'gc', platform: 'linux/amd64' });
    // Aggregated discovery may be asked for in Accept; the plain forms are the fallback
    // every client must accept, and the content type tells the client which it got.
    if (path === '/api') return sendJson(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: new URL(this.url_).host }] });
    if (path === '/apis') return sendJson(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: [] });
    if (path === '/api/v1') return sendJson(res, 200, API_V1_RESOURCES);
    // /api/v1/pods  |  /api/v1/namespaces/NS/pods[/NAME[/log]]
    if (parts[0] !== 'api' || parts[1] !== 'v1') return notFound(res, path);
    let ns: string | undefined;
    let rest = parts.slice(2);
    if (rest[0] === 'namespaces' && rest.length >= 3) { ns = rest[1]; rest = rest.slice(2); }
    if (rest[0] !== 'pods') return notFound(res, path);
    if (rest.length === 1) return this.listOrWatch(req, res, url, ns, accept.table);
    if (ns === undefined) return notFound(res, path);
    const pod = this.pods.get(`${ns}/${rest[1]}`);
    if (!pod) return sendStatus(res, 404, 'NotFound', `pods "${rest[1]}" not found`, { name: rest[1], kind: 'pods' });
    if (rest.length === 2) return sendJson(res, 200, accept.table ? podTable([pod], String(this.rv), true) : podObject(pod));
    if (rest.length === 3 && rest[2] === 'log') return this.serveLog(res, url, pod);
    return notFound(res, path);
  }

  private listOrWatch(req: IncomingMessage, res: ServerResponse, url: URL, ns: string | undefined, table: boolean): void {
    const filter = parseSelectors(url.searchParams);
    if (typeof filter === 'string') return sendStatus(res, 400, 'BadRequest', filter);
    const inScope = (p: FakePod): boolean => (ns === undefined || p.namespace === ns) && filter(p);
    const watch = url.searchParams.get('watch');
    if (watch !== 'true' && watch !== '1') {
      const items = [...this.pods.values()].filter(inScope);
      if (table) return sendJson(res, 200, podTable(items, String(this.rv), true));
      return sendJson(res, 200, { kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) }, items: items.map(podObject) });
    }
    const since = url.searchParams.get('resourceVersion');
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked', 'cache-control': 'no-cache, private' });
    res.flushHeaders();
    let columnsSent = false;
    const send = (e: WatchEvent): void => {
      if (!inScope(e.pod)) return;
      // As the real server does, only the first Table event carries the column definitions.
      const object = table ? podTable([e.pod], e.pod.resourceVersion, !columnsSent) : podObject(e.pod);
      columnsSent = true;
      res.write(`${JSON.stringify({ type: e.type, object })}\n`);
    };
    if (since === null || since === '' || since === '0') {
      for (const pod of this.pods.values()) send({ type: 'ADDED', pod, rv: Number(pod.resourceVersion) });
    } else {
      const from = Number(since);
      if (!Number.isSafeInteger(from)) { res.end(); return; }
      for (const e of this.history) if (e.rv > from) send(e);
    }
    const watcher: Watcher = { send };
    this.watchers.add(watcher);
    const timeout = Number(url.searchParams.get('timeoutSeconds') ?? '0');
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    const stop = (): void => { this.watchers.delete(watcher); if (timer) clearTimeout(timer); };
    req.on('close', stop);
    res.on('close', stop);
  }

  private serveLog(res: ServerResponse, url: URL, pod: FakePod): void {
    const container = url.searchParams.get('container');
    if (container === null && pod.containers.length > 1) {
      return sendStatus(res, 400, 'BadRequest', `a container name must be specified for pod ${pod.name}, choose one of: [${pod.containers.join(' ')}]`);
    }
    if (container !== null && !pod.containers.includes(container)) {
      return sendStatus(res, 400, 'BadRequest', `container ${container} is not valid for pod ${pod.name}`);
    }
    const log = this.logs.get(`${pod.namespace}/${pod.name}`)!;
    const tail = url.searchParams.get('tailLines');
    const lines = tail === null ? log.lines : log.lines.slice(Math.max(0, log.lines.length - Number(tail)));
    res.writeHead(200, { 'content-type': 'text/plain', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    for (const line of lines) res.write(`${line}\n`);
    const follow = url.searchParams.get('follow') === 'true';
    if (!follow || log.ended) { res.end(); return; }
    log.followers.add(res);
    res.on('close', () => log.followers.delete(res));
  }

  private handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const reject = (code: number, reason: string, message: string): void => {
      const body = JSON.stringify(statusBody(code, reason, message));
      socket.end(`HTTP/1.1 ${code} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    };
    if (!this.authenticated(req)) return reject(401, 'Unauthorized', 'Unauthorized');
    const url = new URL(req.url ?? '/', 'http://x');
    const pf = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/portforward$/.exec(url.pathname);
    if (pf) {
      const pod = this.pods.get(`${pf[1]}/${pf[2]}`);
      if (!pod) return reject(404, 'NotFound', `pods "${pf[2]}" not found`);
      if (String(req.headers.upgrade).toLowerCase() !== 'websocket') return reject(400, 'BadRequest', `upgrade "${req.headers.upgrade}" not supported: this test server tunnels port-forward through WebSocket only`);
      const offered = String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim());
      if (!offered.includes(PORTFORWARD_TUNNEL_PROTOCOL)) return reject(400, 'BadRequest', `no supported subprotocol in "${offered.join(', ')}"`);
      // By hand: `ws` refuses this subprotocol name ("/" is not a token character).
      return this.portForward(acceptRawWebSocket(req, socket, head, PORTFORWARD_TUNNEL_PROTOCOL), pod);
    }
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/exec$/.exec(url.pathname);
    if (!m) return reject(404, 'NotFound', `the server could not find the requested resource (${url.pathname})`);
    const pod = this.pods.get(`${m[1]}/${m[2]}`);
    if (!pod) return reject(404, 'NotFound', `pods "${m[2]}" not found`);
    if (String(req.headers.upgrade).toLowerCase() !== 'websocket') return reject(400, 'BadRequest', `upgrade "${req.headers.upgrade}" not supported: this test server speaks WebSocket only`);
    const offered = new Set(String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim()).filter(Boolean));
    if (!pickExecProtocol(offered)) return reject(400, 'BadRequest', `no supported subprotocol in "${[...offered].join(', ')}"`);
    const command = url.searchParams.getAll('command');
    if (command.length === 0) return reject(400, 'BadRequest', 'you must specify at least 1 command');
    const container = url.searchParams.get('container') ?? pod.containers[0];
    if (!container || !pod.containers.includes(container)) return reject(400, 'BadRequest', `container ${container} is not valid for pod ${pod.name}`);
    const stdin = url.searchParams.get('stdin') === 'true';
    // kubectl (client-go's WebSocket executor) starts reading frames before it has registered
    // its stdout/stderr streams, and drops a frame that arrives in that gap ("Unknown stream id
    // 1, discarding message"). A real kubelet never answers that fast: starting a process in a
    // container takes milliseconds. Give the client the same head start a runtime would.
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      ws.pause(); // stdin waits in the socket meanwhile, as it would in the runtime
      setTimeout(() => { runExec(ws, command, stdin); ws.resume(); }, EXEC_START_DELAY_MS);
    });
  }

  /** SPDY over the WebSocket: every binary message is a piece of the SPDY byte stream. */
  private portForward(ws: RawWebSocket, pod: FakePod): void {
    const entry = {
      ws,
      session: new SpdyPortForwardSession((port) => pod.ports[port], (bytes) => ws.send(bytes), () => ws.close(1002)),
    };
    this.portForwards.add(entry);
    ws.onMessage((data, binary) => (binary ? entry.session.receive(data) : ws.close(1003)));
    ws.onClose(() => {
      entry.session.close();
      this.portForwards.delete(entry);
    });
  }

  private emit(e: WatchEvent): void {
    this.history.push(e);
    for (const w of this.watchers) w.send(e);
  }
}

/** How long a "container process" takes to start; see handleUpgrade. */
const EXEC_START_DELAY_MS = 50;

/** Pick the best exec subprotocol the client offers. */
function pickExecProtocol(offered: Set<string>): string | undefined {
  if (offered.has(EXEC_PROTOCOL_V5)) return EXEC_PROTOCOL_V5;
  if (offered.has(EXEC_PROTOCOL_V4)) return EXEC_PROTOCOL_V4;
  return undefined;
}

/**
 * "Execute" a command from a tiny built-in set, honestly: output goes on the stdout
 * channel, the outcome is a Status on the error channel (how kubectl learns the exit code),
 * then the socket closes. `cat` echoes stdin until the v5 half-close (or the socket ends).
 */
function runExec(ws: WebSocket, command: string[], stdin: boolean): void {
  const out = (channel: number, data: Buffer | string): void => { ws.send(Buffer.concat([Buffer.from([channel]), Buffer.from(data)])); };
  const finish = (exitCode: number | string): void => {
    if (ws.readyState !== ws.OPEN) return;
    const status = exitCode === 0
      ? { metadata: {}, status: 'Success' }
      : typeof exitCode === 'string'
        ? { metadata: {}, status: 'Failure', message: exitCode, reason: 'InternalError', details: { causes: [{ message: exitCode }] } }
        : {
            metadata: {}, status: 'Failure', reason: 'NonZeroExitCode',
            message: `command terminated with non-zero exit code: error executing command [${command.join(' ')}], exit code ${exitCode}`,
            details: { causes: [{ reason: 'ExitCode', message: String(exitCode) }] },
          };
    out(CHANNEL.error, JSON.stringify(status));
    ws.close(1000);
  };
  const [cmd, ...args] = command;
  if (cmd === 'echo') { out(CHANNEL.stdout, `${args.join(' ')}\n`); return finish(0); }
  if (cmd === 'true') return finish(0);
  if (cmd === 'false') return finish(1);
  if (cmd === 'sh' && args[0] === '-c' && args.length === 2) {
    const exit = /^\s*exit\s+(\d{1,3})\s*$/.exec(args[1]!);
    if (exit) return finish(Number(exit[1]) & 0xff);
    out(CHANNEL.stderr, `sh: this test server only runs "exit N"\n`);
    return finish(127);
  }
  if (cmd === 'cat' && args.length === 0) {
    if (!stdin) return finish(0);
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary || data.length === 0) return;
      if (data[0] === CHANNEL.stdin) out(CHANNEL.stdout, data.subarray(1));
      else if (data[0] === CHANNEL.close && data[1] === CHANNEL.stdin && ws.protocol === EXEC_PROTOCOL_V5) finish(0);
    });
    return undefined;
  }
  return finish(`failed to exec in container: exec: "${cmd}": executable file not found in $PATH: unknown`);
}

function parseAccept(header: string | undefined): { json: boolean; table: boolean } {
  if (!header) return { json: true, table: false };
  let json = false;
  let table = false;
  for (const part of header.split(',')) {
    const [type, ...params] = part.split(';').map((s) => s.trim());
    const p = new Map(params.map((kv) => kv.split('=') as [string, string]));
    if (type !== 'application/json' && type !== '*/*' && type !== 'application/*') continue;
    if (!p.has('as')) json = true;
    else if (p.get('as') === 'Table' && p.get('g') === 'meta.k8s.io' && p.get('v') === 'v1') table = true;
  }
  return { json, table };
}

/** Field selectors on name/namespace and equality label selectors; anything else is a 400. */
function parseSelectors(q: URLSearchParams): ((p: FakePod) => boolean) | string {
  const checks: Array<(p: FakePod) => boolean> = [];
  for (const term of (q.get('fieldSelector') ?? '').split(',').filter(Boolean)) {
    const [k, v] = term.split('=');
    if (k === 'metadata.name' && v !== undefined) checks.push((p) => p.name === v);
    else if (k === 'metadata.namespace' && v !== undefined) checks.push((p) => p.namespace === v);
    else return `field selector "${term}" is not supported by this test server`;
  }
  for (const term of (q.get('labelSelector') ?? '').split(',').filter(Boolean)) {
    const m = /^([\w./-]+)==?([\w.-]*)$/.exec(term);
    if (!m) return `label selector "${term}" is not supported by this test server`;
    checks.push((p) => p.labels[m[1]!] === m[2]);
  }
  return (p) => checks.every((c) => c(p));
}

function podObject(p: FakePod): Record<string, unknown> {
  return {
    kind: 'Pod', apiVersion: 'v1',
    metadata: { name: p.name, namespace: p.namespace, uid: p.uid, resourceVersion: p.resourceVersion, creationTimestamp: p.creationTimestamp, labels: p.labels },
    spec: { nodeName: 'node-1', containers: p.containers.map((name) => ({ name, image: 'busybox:1.36' })) },
    status: {
      phase: p.phase, podIP: p.podIP, hostIP: '192.168.0.1', startTime: p.creationTimestamp,
      containerStatuses: p.containers.map((name) => ({ name, ready: p.phase === 'Running', restartCount: 0, image: 'busybox:1.36', imageID: '', started: true, state: { running: { startedAt: p.creationTimestamp } } })),
    },
  };
}

const POD_COLUMNS = [
  { name: 'Name', type: 'string', format: 'name', description: 'Name must be unique within a namespace.', priority: 0 },
  { name: 'Ready', type: 'string', format: '', description: 'The aggregate readiness state of this pod for accepting traffic.', priority: 0 },
  { name: 'Status', type: 'string', format: '', description: 'The aggregate status of the containers in this pod.', priority: 0 },
  { name: 'Restarts', type: 'string', format: '', description: 'The number of times the containers in this pod have been restarted.', priority: 0 },
  { name: 'Age', type: 'string', format: '', description: 'CreationTimestamp is a timestamp representing the server time when this object was created.', priority: 0 },
  { name: 'IP', type: 'string', format: '', description: 'IP address allocated to the pod.', priority: 1 },
  { name: 'Node', type: 'string', format: '', description: 'Name of the node this pod runs on.', priority: 1 },
];

/** A meta.k8s.io/v1 Table, as the server-side printer makes for pods. */
function podTable(pods: FakePod[], resourceVersion: string, withColumns: boolean): Record<string, unknown> {
  const age = (p: FakePod): string => `${Math.max(0, Math.floor((Date.now() - Date.parse(p.creationTimestamp)) / 1000))}s`;
  return {
    kind: 'Table', apiVersion: 'meta.k8s.io/v1', metadata: { resourceVersion },
    ...(withColumns ? { columnDefinitions: POD_COLUMNS } : {}),
    rows: pods.map((p) => ({
      cells: [p.name, `${p.phase === 'Running' ? p.containers.length : 0}/${p.containers.length}`, p.phase, '0', age(p), p.podIP, 'node-1'],
      object: { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: { name: p.name, namespace: p.namespace, uid: p.uid, resourceVersion: p.resourceVersion, creationTimestamp: p.creationTimestamp, labels: p.labels } },
    })),
  };
}

const API_V1_RESOURCES = {
  kind: 'APIResourceList', apiVersion: 'v1', groupVersion: 'v1',
  resources: [
    { name: 'pods', singularName: 'pod', namespaced: true, kind: 'Pod', verbs: ['get', 'list', 'watch'], shortNames: ['po'], categories: ['all'] },
    { name: 'pods/exec', singularName: '', namespaced: true, kind: 'PodExecOptions', verbs: ['create', 'get'] },
    { name: 'pods/log', singularName: '', namespaced: true, kind: 'Pod', verbs: ['get'] },
  ],
};

function statusBody(code: number, reason: string, message: string, details?: Record<string, unknown>): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

function sendStatus(res: ServerResponse, code: number, reason: string, message: string, details?: Record<string, unknown>): void {
  sendJson(res, code, statusBody(code, reason, message, details));
}

function notFound(res: ServerResponse, path: string): void {
  sendStatus(res, 404, 'NotFound', `the server could not find the requested resource (${path})`);
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeServingTls(dir: string): { ca: Buffer; cert: Buffer; key: Buffer } {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=uplink-test-kube-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  openssl(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=kube-apiserver'], dir);
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
  openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'server.ext'], dir);
  return { ca: readFileSync(join(dir, 'ca.crt')), cert: readFileSync(join(dir, 'server.crt')), key: readFileSync(join(dir, 'server.key')) };
}

function makeClientCert(dir: string, commonName: string): { cert: Buffer; key: Buffer } {
  const base = `client-${randomBytes(4).toString('hex')}`;
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/CN=${commonName}/O=system:masters`], dir);
  writeFileSync(join(dir, `${base}.ext`), 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n');
  openssl(['x509', '-req', '-in', `${base}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${base}.crt`, '-days', '2', '-extfile', `${base}.ext`], dir);
  return { cert: readFileSync(join(dir, `${base}.crt`)), key: readFileSync(join(dir, `${base}.key`)) };
}
