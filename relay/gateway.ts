/**
 * The agent gateway: accepts agent WebSockets on /v1/agent/connect, authenticates the
 * handshake before the upgrade completes, keeps the registry of connected agents, runs the
 * heartbeat sweep (one timer for all agents), records presence in the store, and drains on
 * shutdown.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { UplinkError, toUplinkError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { CLOSE_CODES } from '../shared/protocol.js';
import type { RelayConfig } from './config.js';
import type { Store } from './store/store.js';
import type { RelayMetrics } from './metrics.js';
import { AgentAuthenticator, type VerifiedAgent } from './agent-auth.js';
import { AgentSession } from './agent-session.js';
import { rejectUpgrade } from './upgrade-reply.js';
import { PresenceWriter } from './presence-writer.js';

export interface GatewayEvents {
  onConnected?(session: AgentSession): void;
  onDisconnected?(session: AgentSession): void;
}

export class AgentGateway {
  private readonly sessions = new Map<string, AgentSession>();
  private readonly wss: WebSocketServer;
  private readonly auth: AgentAuthenticator;
  private readonly presence: PresenceWriter;
  private sweepTimer: NodeJS.Timeout | undefined;
  private pending = 0;
  private draining = false;

  constructor(
    private readonly cfg: Readonly<RelayConfig>,
    private readonly store: Store,
    readonly relayId: string,
    private readonly log: Logger,
    private readonly metrics: RelayMetrics,
    private readonly events: GatewayEvents = {},
  ) {
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: cfg.limits.maxWebSocketMessageBytes,
      perMessageDeflate: false,
      clientTracking: false,
    });
    // Tell each agent the relay's heartbeat interval so both sides use the same dead-peer bound.
    this.wss.on('headers', (headers) => headers.push(`x-uplink-heartbeat-ms: ${cfg.heartbeat.intervalMs}`));
    this.auth = new AgentAuthenticator(store, { clockSkewMs: cfg.auth.clockSkewMs });
    this.presence = new PresenceWriter(store, log);
  }

  start(): void {
    this.sweepTimer = setInterval(() => this.sweep(), this.cfg.heartbeat.intervalMs);
    this.sweepTimer.unref();
  }

  get(applianceId: string): AgentSession | undefined {
    const s = this.sessions.get(applianceId);
    return s && s.isOpen ? s : undefined;
  }

  get size(): number {
    return this.sessions.size;
  }

  all(): AgentSession[] {
    return [...this.sessions.values()];
  }

  /** Entry point from the HTTP server's 'upgrade' event for /v1/agent/connect. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const remote = req.socket.remoteAddress ?? null;
    if (this.draining) {
      this.refuse(socket, new UplinkError('UPLINK_ERR_RELAY_SHUTTING_DOWN', 'relay is shutting down'), remote);
      return;
    }
    if (this.sessions.size + this.pending >= this.cfg.limits.maxAgents) {
      this.refuse(socket, new UplinkError('UPLINK_ERR_TOO_MANY_STREAMS', 'relay is at its agent limit'), remote);
      return;
    }
    this.pending++;
    const timer = setTimeout(() => socket.destroy(), this.cfg.limits.handshakeTimeoutMs);
    socket.on('error', () => {});
    this.auth
      .verify(req.headers, req.headers.host)
      .then((verified) => {
        clearTimeout(timer);
        if (socket.destroyed) return;
        this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, verified, remote));
      })
      .catch((err: unknown) => {
        clearTimeout(timer);
        this.refuse(socket, toUplinkError(err), remote);
      })
      .finally(() => {
        this.pending--;
      });
  }

  private refuse(socket: Duplex, err: UplinkError, remote: string | null): void {
    this.metrics.authFailures.inc({ code: err.code });
    this.log.warn({ code: err.code, remote, reason: err.message }, 'agent handshake refused');
    rejectUpgrade(socket, err);
  }

  private accept(ws: WebSocket, verified: VerifiedAgent, remote: string | null): void {
    const { appliance } = verified;
    const log = this.log.child({ appliance: appliance.name, applianceId: appliance.id });
    const session = new AgentSession(
      { applianceId: appliance.id, applianceName: appliance.name, remoteAddress: remote, agentVersion: verified.agentVersion },
      ws,
      {
        maxStreams: this.cfg.limits.maxStreamsPerAgent,
        h2SessionMemoryMiB: this.cfg.limits.h2SessionMemoryMiB,
        maxFrameBytes: this.cfg.limits.maxFrameBytes,
      },
      log,
      this.metrics,
    );
    const previous = this.sessions.get(appliance.id);
    if (previous) {
      log.info({ previous: previous.connectionId }, 'new connection replaces the previous one');
      previous.close(CLOSE_CODES.replaced, 'replaced by a newer connection');
      previous.destroy();
    }
    this.sessions.set(appliance.id, session);
    this.metrics.agentsConnected.set(this.sessions.size);
    this.metrics.connections.inc({ mode: verified.mode });
    log.info({ mode: verified.mode, remote, agentVersion: verified.agentVersion, connection: session.connectionId }, 'agent connected');

    const now = new Date();
    // The appliance row was just read for the handshake: version and address are written only
    // when they changed (last-seen is kept fresh by the heartbeat sweep and the disconnect).
    const seenChanged = appliance.agentVersion !== verified.agentVersion || appliance.lastRemoteAddress !== remote;
    this.presence.connected(
      { applianceId: appliance.id, relayId: this.relayId, connectionId: session.connectionId, connectedAt: now, remoteAddress: remote, agentVersion: verified.agentVersion },
      seenChanged ? { agentVersion: verified.agentVersion, remoteAddress: remote, at: now } : undefined,
    );

    ws.on('error', (err) => log.debug({ err: err.message }, 'agent websocket error'));
    ws.once('close', (code: number, reason: Buffer) => {
      if (this.sessions.get(appliance.id) === session) {
        this.sessions.delete(appliance.id);
        this.metrics.agentsConnected.set(this.sessions.size);
      }
      session.destroy();
      this.metrics.disconnections.inc({ reason: String(code) });
      log.info({ code, reason: reason.toString(), connection: session.connectionId }, 'agent disconnected');
      // While draining, drain() stamps last-seen for all at once and the relay's presence rows go with it.
      if (!this.draining) this.presence.disconnected(appliance.id, session.connectionId, new Date()).catch((err) => log.error({ err: String(err) }, 'cannot clear presence'));
      this.events.onDisconnected?.(session);
    });
    this.events.onConnected?.(session);
  }

  /**
   * One pass over every agent: terminate those silent for `missedIntervals` intervals, ping
   * the rest, fold byte counters into metrics, and refresh last-seen in one statement.
   */
  private sweep(): void {
    const now = Date.now();
    const deadAfter = this.cfg.heartbeat.intervalMs * this.cfg.heartbeat.missedIntervals;
    const alive: string[] = [];
    for (const [id, s] of this.sessions) {
      s.accountBytes();
      // Both: silent for the whole bound by the clock AND for that many sweeps (see missedPongs).
      if (now - s.lastPongAt > deadAfter && s.missedPongs >= this.cfg.heartbeat.missedIntervals) {
        this.log.warn({ appliance: s.info.applianceName, silentMs: now - s.lastPongAt }, 'agent heartbeat lost');
        s.close(CLOSE_CODES.heartbeatTimeout, 'heartbeat lost');
        s.destroy();
        continue;
      }
      s.missedPongs++;
      s.ping();
      alive.push(id);
    }
    void this.store.appliances.touchLastSeen(alive, new Date(now)).catch((err) => this.log.error({ err: String(err) }, 'cannot update last seen'));
  }

  /** Refuse new streams on and cut the agent of a revoked appliance. */
  revoke(applianceId: string): void {
    this.sessions.get(applianceId)?.revoke();
  }

  /** Stop accepting agents, drain every session in parallel within the deadline. */
  async drain(deadlineMs: number): Promise<void> {
    this.draining = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    const held = [...this.sessions.keys()];
    await Promise.all([...this.sessions.values()].map((s) => s.drain(deadlineMs)));
    this.sessions.clear();
    this.metrics.agentsConnected.set(0);
    this.wss.close();
    await this.presence.flush();
    await this.store.appliances.touchLastSeen(held, new Date()).catch((err) => this.log.error({ err: String(err) }, 'cannot update last seen'));
  }
}
