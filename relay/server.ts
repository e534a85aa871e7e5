/**
 * The relay process: one HTTP(S) listener serving the vendor API, the agent gateway and
 * interactive operations (both WebSocket upgrades), plus /healthz, /readyz and /metrics.
 *
 * Lifecycle: `start()` opens the store (migrations run), makes sure an admin token exists,
 * registers this replica and listens. `close()` drains: stop accepting, GOAWAY + 1012 to
 * every agent, wait for in-flight streams up to the deadline, then release the store.
 * It is idempotent.
 */
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { UplinkError, toUplinkError } from '../shared/errors.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { PATHS } from '../shared/protocol.js';
import { VERSION } from '../shared/version.js';
import type { RelayConfig } from './config.js';
import { openStore, type Store } from './store/store.js';
import { RelayMetrics } from './metrics.js';
import { AgentGateway } from './gateway.js';
import { ApiAuthenticator } from './api-auth.js';
import { buildApiRoutes, type ApiContext } from './api-routes.js';
import { OpsBridge, type OpKind } from './ops-bridge.js';
import { matchRoute, sendError, sendJson, type Route } from './http-util.js';
import { rejectUpgrade } from './upgrade-reply.js';
import { AGENT_PATHS } from '../shared/protocol.js';
import { relayCapabilities, type RelayCapability } from './capabilities.js';
import { EventEmitter } from 'node:events';
import type { AgentSession } from './agent-session.js';

export interface RelayOptions {
  logger?: Logger;
  /** Env for the bootstrap token; defaults to process.env. */
  env?: NodeJS.ProcessEnv;
  /** Where the one-time bootstrap token is printed; defaults to stderr. */
  announce?: (line: string) => void;
}

/** Interactive operations reachable at /v1/appliances/{name}/{op}. */
export const OPS: Record<string, OpKind> = {
  exec: { name: 'exec', scope: 'operate', agentPath: AGENT_PATHS.exec },
  shell: { name: 'shell', scope: 'operate', agentPath: AGENT_PATHS.shell },
  forward: { name: 'forward', scope: 'operate', agentPath: AGENT_PATHS.forward },
  // The agent answers sql after the first row, bounded by the target's statement timeout.
  sql: { name: 'sql', scope: 'operate', agentPath: AGENT_PATHS.sql, answerTimeoutMs: 0 },
  kube: { name: 'kube', scope: 'operate', agentPath: AGENT_PATHS.kube },
  'kube-upgrade': { name: 'kube-upgrade', scope: 'operate', agentPath: AGENT_PATHS.kubeUpgrade },
};

const OP_PATH = /^\/v1\/appliances\/([a-z0-9][a-z0-9-]{0,62})\/([a-z-]+)$/;

export class Relay {
  readonly relayId: string;
  readonly log: Logger;
  readonly metrics = new RelayMetrics();
  store!: Store;
  gateway!: AgentGateway;
  ops!: OpsBridge;
  private server!: http.Server;
  private routes: Route<ApiContext>[] = [];
  private apiAuth!: ApiAuthenticator;
  private timers: NodeJS.Timeout[] = [];
  private closing: Promise<void> | undefined;
  private ready = false;
  private boundUrl = '';
  private capabilities: RelayCapability[] = [];
  /** Extra routes and ops registered by capabilities (deployments, telemetry, …). */
  readonly extensions: { routes: Route<ApiContext>[]; ops: Record<string, OpKind> } = { routes: [], ops: {} };
  /** Agent connections coming and going, for capabilities with per-agent work (telemetry pulls). */
  readonly agentEvents = new EventEmitter<{ connected: [AgentSession]; disconnected: [AgentSession] }>();

  constructor(
    readonly cfg: Readonly<RelayConfig>,
    private readonly opts: RelayOptions = {},
  ) {
    this.relayId = cfg.relayId ?? `rly_${randomBytes(6).toString('hex')}`;
    this.log = (opts.logger ?? createLogger('uplink-relay')).child({ relay: this.relayId });
  }

  get url(): string {
    return this.boundUrl;
  }

  publicUrl(): string {
    return this.cfg.publicUrl ?? this.boundUrl;
  }

  async start(): Promise<void> {
    this.store = await openStore({ databaseUrl: this.cfg.databaseUrl, dataDir: this.cfg.dataDir });
    await this.ensureAdminToken();
    this.gateway = new AgentGateway(this.cfg, this.store, this.relayId, this.log, this.metrics, {
      onConnected: (s) => this.agentEvents.emit('connected', s),
      onDisconnected: (s) => this.agentEvents.emit('disconnected', s),
    });
    this.ops = new OpsBridge(this.cfg, this.store, this.gateway, this.log, this.metrics);
    this.apiAuth = new ApiAuthenticator(this.store);
    this.routes = buildApiRoutes({ cfg: this.cfg, store: this.store, gateway: this.gateway, publicUrl: () => this.publicUrl() });
    for (const cap of relayCapabilities()) {
      await cap.start(this);
      this.capabilities.push(cap);
    }

    this.server = this.cfg.tls
      ? https.createServer({ cert: readFileSync(this.cfg.tls.certFile), key: readFileSync(this.cfg.tls.keyFile) })
      : http.createServer();
    this.server.headersTimeout = 15_000;
    this.server.requestTimeout = 0; // long-lived streams (logs --follow) are allowed
    this.server.maxHeadersCount = 100;
    this.server.on('request', (req, res) => void this.onRequest(req, res));
    this.server.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket, head));
    this.server.on('clientError', (err, socket) => {
      if (!socket.destroyed) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
      this.log.debug({ err: err.message }, 'client error');
    });

    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.cfg.listen.port, this.cfg.listen.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const addr = this.server.address() as AddressInfo;
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    this.boundUrl = `${this.cfg.tls ? 'https' : 'http'}://${host === '0.0.0.0' ? '127.0.0.1' : host}:${addr.port}`;

    const now = new Date();
    await this.store.presence.registerRelay(this.relayId, this.publicUrl(), now);
    this.gateway.start();
    this.every(this.cfg.presence.relayHeartbeatMs, () => this.store.presence.heartbeatRelay(this.relayId, new Date()));
    this.every(60_000, () => this.store.nonces.purge(new Date()));
    this.ready = true;
    this.log.info({ url: this.boundUrl, publicUrl: this.publicUrl(), version: VERSION, store: this.store.db.kind }, 'relay listening');
  }

  private every(ms: number, fn: () => Promise<unknown>): void {
    const t = setInterval(() => void fn().catch((err) => this.log.error({ err: String(err) }, 'periodic task failed')), ms);
    t.unref();
    this.timers.push(t);
  }

  /** If no active admin token exists, create one (UPLINK_BOOTSTRAP_TOKEN or random, printed once). */
  private async ensureAdminToken(): Promise<void> {
    if ((await this.store.tokens.countActiveAdmins()) > 0) return;
    const env = this.opts.env ?? process.env;
    const given = env.UPLINK_BOOTSTRAP_TOKEN;
    if (given !== undefined && given.length < 16) {
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'UPLINK_BOOTSTRAP_TOKEN must be at least 16 characters');
    }
    const created = await this.store.tokens.create({ name: 'bootstrap-admin', scopes: ['admin'], createdBy: null, ...(given ? { value: given } : {}) });
    if (given) {
      this.log.info({ tokenId: created.token.id }, 'created admin token from UPLINK_BOOTSTRAP_TOKEN');
    } else {
      const announce = this.opts.announce ?? ((line: string) => process.stderr.write(`${line}\n`));
      announce(`uplink-relay: created admin token (shown once, store it now): ${created.value}`);
      this.log.info({ tokenId: created.token.id }, 'created random admin token');
    }
  }

  private async onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const requestId = randomUUID();
    res.setHeader('x-uplink-request-id', requestId);
    const path = (req.url ?? '/').split('?')[0]!;
    let routeName = 'unknown';
    try {
      if (req.method === 'GET' && path === PATHS.healthz) return sendJson(res, 200, { status: 'ok', version: VERSION, relay: this.relayId });
      if (req.method === 'GET' && path === PATHS.readyz) return await this.readyz(res);
      if (req.method === 'GET' && path === PATHS.metrics) {
        for (const s of this.gateway.all()) s.accountBytes();
        res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
        res.end(await this.metrics.registry.metrics());
        return;
      }
      const match = matchRoute([...this.routes, ...this.extensions.routes], req.method ?? 'GET', path);
      if (match === 'method') throw new UplinkError('UPLINK_ERR_NOT_FOUND', `method ${req.method} not allowed on ${path}`);
      if (!match) throw new UplinkError('UPLINK_ERR_NOT_FOUND', `no such path: ${path}`);
      routeName = match.route.name;
      const token = await this.apiAuth.authenticate(req);
      const log = this.log.child({ request: requestId, actor: token.name });
      await match.route.handler({ req, res, token, requestId, log }, match.params);
    } catch (err) {
      const e = sendError(res, err, requestId);
      if (e.code === 'UPLINK_ERR_UNAUTHENTICATED' || e.code === 'UPLINK_ERR_FORBIDDEN') this.metrics.authFailures.inc({ code: e.code });
      if (e.status >= 500) this.log.error({ request: requestId, code: e.code, err: e.message, cause: String(e.cause ?? '') }, 'request failed');
    } finally {
      this.metrics.apiRequests.inc({ route: routeName, status: String(res.statusCode) });
    }
  }

  private async readyz(res: http.ServerResponse): Promise<void> {
    if (!this.ready || this.closing) return sendJson(res, 503, { status: 'draining' });
    try {
      await this.store.ping();
      sendJson(res, 200, { status: 'ready', agents: this.gateway.size, store: this.store.db.kind });
    } catch (err) {
      sendJson(res, 503, { status: 'store unavailable', error: toUplinkError(err).message });
    }
  }

  private onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === PATHS.agentConnect) {
      this.gateway.handleUpgrade(req, socket, head);
      return;
    }
    const m = OP_PATH.exec(path);
    const op = m ? (OPS[m[2]!] ?? this.extensions.ops[m[2]!]) : undefined;
    if (!m || !op) {
      rejectUpgrade(socket, new UplinkError('UPLINK_ERR_NOT_FOUND', `no such WebSocket endpoint: ${path}`));
      return;
    }
    if (this.closing) {
      rejectUpgrade(socket, new UplinkError('UPLINK_ERR_RELAY_SHUTTING_DOWN', 'relay is shutting down'));
      return;
    }
    this.ops.handleUpgrade(req, socket, head, op, m[1]!);
  }

  /** Graceful, idempotent shutdown within `cfg.shutdown.drainTimeoutMs`. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.ready = false;
    for (const t of this.timers) clearInterval(t);
    this.log.info({ agents: this.gateway?.size ?? 0 }, 'relay draining');
    for (const cap of [...this.capabilities].reverse()) {
      await Promise.resolve(cap.stop?.()).catch((err) => this.log.error({ err: String(err), capability: cap.name }, 'capability stop failed'));
    }
    const serverClosed = this.server ? new Promise<void>((r) => this.server.close(() => r())) : Promise.resolve();
    if (this.gateway) await this.gateway.drain(this.cfg.shutdown.drainTimeoutMs);
    this.server?.closeIdleConnections?.();
    setTimeout(() => this.server?.closeAllConnections?.(), 1000).unref();
    await serverClosed;
    if (this.store) {
      await this.store.presence.unregisterRelay(this.relayId).catch(() => {});
      await this.store.close();
    }
    this.log.info('relay stopped');
  }
}
