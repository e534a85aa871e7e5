/**
 * The agent's one outbound connection: dial the relay's WebSocket with a signed handshake,
 * hand the socket to the HTTP/2 tunnel server, watch heartbeats, and redial with jittered
 * backoff whenever it drops, forever, until stopped or told the key is revoked.
 */
import { EventEmitter } from 'node:events';
import { X509Certificate, createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { PeerCertificate } from 'node:tls';
import { WebSocket } from 'ws';
import { webSocketStream } from '../shared/ws-stream.js';
import { clientMaskOptions } from '../shared/ws-mask.js';
import { UplinkError, errorFromBody, isUplinkError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { CLOSE_CODES, HANDSHAKE_HEADERS as H, PATHS, PROTOCOL_VERSION } from '../shared/protocol.js';
import { newNonce, signHandshake, type HandshakeClaims } from '../shared/identity.js';
import { VERSION } from '../shared/version.js';
import { agentConnectUrl, type AgentConfig } from './config.js';
import { Backoff } from './backoff.js';
import { loadIdentity, saveIdentity, type AgentIdentity } from './identity-store.js';
import type { TunnelServer } from './tunnel-server.js';

/** Relay answers that retrying cannot fix: the agent stops and says why. */
const FATAL_CODES = new Set([
  'UPLINK_ERR_ENROLL_TOKEN_INVALID',
  'UPLINK_ERR_ENROLL_TOKEN_USED',
  'UPLINK_ERR_ENROLL_TOKEN_EXPIRED',
  'UPLINK_ERR_ENROLL_WRONG_APPLIANCE',
  'UPLINK_ERR_AUTH_KEY_REVOKED',
  'UPLINK_ERR_AGENT_STATE_MISMATCH',
]);

export interface ConnectionStatus {
  connected: boolean;
  since: string | null;
  reconnects: number;
  lastError: { code: string; message: string; at: string } | null;
}

export class RelayConnection extends EventEmitter {
  private ws: WebSocket | undefined;
  private stopped = false;
  private readonly backoff: Backoff;
  private retryTimer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private lastPingAt = 0;
  /** Watchdog ticks since the last ping from the relay (see armWatchdog). */
  private watchdogTicks = 0;
  private heartbeatMs: number;
  private connectedAt = 0;
  private identity: AgentIdentity;
  readonly status: ConnectionStatus = { connected: false, since: null, reconnects: 0, lastError: null };
  private readonly relayHost: string;
  private readonly ca: Buffer | undefined;

  constructor(
    private readonly cfg: Readonly<AgentConfig>,
    identity: AgentIdentity,
    private readonly tunnel: TunnelServer,
    private readonly log: Logger,
  ) {
    super();
    this.identity = identity;
    this.backoff = new Backoff(cfg.reconnect.initialDelayMs, cfg.reconnect.maxDelayMs);
    this.heartbeatMs = cfg.heartbeat.intervalMs;
    this.relayHost = new URL(cfg.relayUrl).host.toLowerCase();
    this.ca = cfg.relayCaFile ? readFileSync(cfg.relayCaFile) : undefined;
  }

  start(): void {
    this.dial();
  }

  private handshakeHeaders(): Record<string, string> {
    const mode = this.identity.enrolledAt ? 'connect' : 'enroll';
    const claims: HandshakeClaims = {
      mode,
      appliance: this.identity.applianceId,
      relayHost: this.relayHost,
      timestamp: Date.now(),
      nonce: newNonce(),
      publicKey: this.identity.publicKey,
    };
    const headers: Record<string, string> = {
      [H.mode]: mode,
      [H.appliance]: claims.appliance,
      [H.timestamp]: String(claims.timestamp),
      [H.nonce]: claims.nonce,
      [H.publicKey]: claims.publicKey,
      [H.signature]: signHandshake(claims, Buffer.from(this.identity.secretKey, 'base64')),
      [H.agentVersion]: VERSION,
      [H.protocol]: String(PROTOCOL_VERSION),
    };
    if (mode === 'enroll') {
      if (!this.cfg.enrollmentToken) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'not enrolled yet and UPLINK_ENROLLMENT_TOKEN is not set');
      headers[H.enrollmentToken] = this.cfg.enrollmentToken;
    }
    return headers;
  }

  private checkPin = (host: string, cert: PeerCertificate): Error | undefined => {
    if (!this.cfg.relayPin) return undefined;
    const spki = new X509Certificate(cert.raw).publicKey.export({ type: 'spki', format: 'der' });
    const pin = createHash('sha256').update(spki).digest('base64');
    const want = this.cfg.relayPin.replace(/^sha256\//, '');
    if (pin !== want) return new UplinkError('UPLINK_ERR_TLS_PIN_MISMATCH', `relay ${host} presented key sha256/${pin}, pinned sha256/${want}`);
    return undefined;
  };

  private dial(): void {
    if (this.stopped) return;
    let headers: Record<string, string>;
    try {
      headers = this.handshakeHeaders();
    } catch (err) {
      this.fail(err as UplinkError);
      return;
    }
    const url = agentConnectUrl(this.cfg.relayUrl, PATHS.agentConnect);
    const ws = new WebSocket(url, {
      headers,
      handshakeTimeout: this.cfg.reconnect.connectTimeoutMs,
      maxPayload: this.cfg.limits.maxWebSocketMessageBytes,
      perMessageDeflate: false,
      ...clientMaskOptions(url),
      ...(this.ca ? { ca: this.ca } : {}),
      ...(this.cfg.relayPin ? { checkServerIdentity: this.checkPin } : {}),
    });
    this.ws = ws;
    let opened = false;

    ws.on('upgrade', (res: IncomingMessage) => {
      const hb = Number(res.headers['x-uplink-heartbeat-ms']);
      if (Number.isInteger(hb) && hb >= 100) this.heartbeatMs = hb;
    });
    ws.on('unexpected-response', (_req, res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        if (chunks.length < 64) chunks.push(c);
      });
      res.on('end', () => {
        let body: unknown;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          body = undefined;
        }
        const err = errorFromBody(body, res.statusCode ?? 0);
        ws.terminate();
        this.onRefused(err);
      });
      res.on('error', () => ws.terminate());
    });
    ws.on('open', () => {
      opened = true;
      this.onOpen(ws);
    });
    ws.on('ping', () => {
      this.lastPingAt = Date.now();
      this.watchdogTicks = 0;
    });
    ws.on('error', (err) => {
      const e = isUplinkError(err) ? err : new UplinkError('UPLINK_ERR_TUNNEL_CLOSED', err.message);
      this.recordError(e);
      if (!opened) this.log.warn({ code: e.code, err: e.message }, 'cannot reach relay');
    });
    ws.on('close', (code: number, reason: Buffer) => {
      if (!opened) {
        this.scheduleRetry();
        return;
      }
      this.onClose(code, reason.toString());
    });
  }

  private onOpen(ws: WebSocket): void {
    if (!this.identity.enrolledAt || this.identity.enrolledAt === 'unconfirmed') {
      this.identity = { ...this.identity, enrolledAt: new Date().toISOString() };
      saveIdentity(this.cfg.stateDir, this.identity);
      this.log.info({ appliance: this.identity.applianceId, keyId: this.identity.keyId }, 'enrolled with the relay');
    }
    this.connectedAt = Date.now();
    this.lastPingAt = Date.now();
    this.status.connected = true;
    this.status.since = new Date().toISOString();
    this.log.info({ relay: this.relayHost, heartbeatMs: this.heartbeatMs }, 'connected to relay');
    const duplex = webSocketStream(ws);
    duplex.on('error', () => {});
    this.tunnel.serve(duplex);
    this.armWatchdog();
    this.emit('connected');
  }

  private armWatchdog(): void {
    clearInterval(this.watchdog);
    this.watchdogTicks = 0;
    this.watchdog = setInterval(() => {
      const silent = Date.now() - this.lastPingAt;
      // Also counted in ticks: after an event-loop stall this timer runs before the pings
      // already waiting in the socket are read, and must not drop a healthy connection.
      if (silent > this.heartbeatMs * this.cfg.heartbeat.missedIntervals && ++this.watchdogTicks > this.cfg.heartbeat.missedIntervals) {
        this.log.warn({ silentMs: silent }, 'relay heartbeat lost; reconnecting');
        this.ws?.terminate();
      }
    }, this.heartbeatMs);
    this.watchdog.unref();
  }

  private onClose(code: number, reason: string): void {
    clearInterval(this.watchdog);
    this.status.connected = false;
    this.emit('disconnected', code);
    const lasted = Date.now() - this.connectedAt;
    if (lasted >= this.cfg.reconnect.stableAfterMs) this.backoff.reset();
    if (code === CLOSE_CODES.revoked) {
      this.fail(new UplinkError('UPLINK_ERR_AUTH_KEY_REVOKED', `relay revoked this agent's key (${reason})`));
      return;
    }
    if (code === CLOSE_CODES.replaced) this.log.warn('another agent with this identity connected; two agents share one state directory?');
    this.log.info({ code, reason, lastedMs: lasted }, 'disconnected from relay');
    this.scheduleRetry();
  }

  private onRefused(err: UplinkError): void {
    this.recordError(err);
    // A crash right after enrollment leaves enrolledAt unset though the relay bound the key:
    // the token then reads as used, so try a signed connect once before giving up.
    if (err.code === 'UPLINK_ERR_ENROLL_TOKEN_USED' && !this.identity.enrolledAt && !this.triedConnectAfterUsed) {
      this.triedConnectAfterUsed = true;
      this.identity = { ...this.identity, enrolledAt: 'unconfirmed' };
      this.log.info('enrollment token already used; trying the key as already enrolled');
      return;
    }
    if (this.identity.enrolledAt === 'unconfirmed') {
      this.identity = { ...this.identity, enrolledAt: null };
      this.fail(new UplinkError('UPLINK_ERR_ENROLL_TOKEN_USED', 'enrollment token was already used (by another key)'));
      return;
    }
    if (FATAL_CODES.has(err.code)) {
      this.fail(err);
      return;
    }
    this.log.warn({ code: err.code, err: err.message }, 'relay refused the connection');
  }

  private triedConnectAfterUsed = false;

  private recordError(err: UplinkError): void {
    this.status.lastError = { code: err.code, message: err.message, at: new Date().toISOString() };
  }

  private scheduleRetry(): void {
    if (this.stopped) return;
    const delay = this.backoff.next();
    this.status.reconnects++;
    this.log.debug({ delayMs: delay, attempt: this.backoff.attempts }, 'reconnecting');
    this.retryTimer = setTimeout(() => this.dial(), delay);
  }

  /** Stop for good with an error the caller reports (exit status, log line). */
  private fail(err: UplinkError): void {
    this.recordError(err);
    this.log.error({ code: err.code, err: err.message }, 'agent cannot continue');
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.watchdog);
    this.ws?.terminate();
    this.emit('fatal', err);
  }

  /** Close the connection (1001 going away) and stop redialling. Idempotent. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.watchdog);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.close(1001, 'agent stopping');
    else this.ws?.terminate();
  }

  /** Re-read identity from disk (after a key rotation by the CLI). */
  reloadIdentity(): void {
    const id = loadIdentity(this.cfg.stateDir);
    if (id) this.identity = id;
  }
}
