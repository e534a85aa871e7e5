/**
 * One connected agent: its WebSocket, and the HTTP/2 client session the relay runs over it.
 *
 * The relay is the HTTP/2 *client*; the agent serves. Every operation is a request the
 * relay opens here. `request()` checks, on every stream and not only at the handshake, that
 * the session is still authorised (not revoked, not draining) and under its stream limit.
 */
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type OutgoingHttpHeaders } from 'node:http2';
import type { WebSocket } from 'ws';
import { webSocketStream } from '../shared/ws-stream.js';
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { UplinkError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { CLOSE_CODES, H2_WINDOWS } from '../shared/protocol.js';
import type { RelayMetrics } from './metrics.js';

export interface AgentSessionInfo {
  applianceId: string;
  applianceName: string;
  remoteAddress: string | null;
  agentVersion: string | null;
}

export interface AgentSessionOptions {
  maxStreams: number;
  h2SessionMemoryMiB: number;
  maxFrameBytes: number;
}

export class AgentSession {
  readonly connectionId = `con_${randomBytes(8).toString('hex')}`;
  readonly connectedAt = new Date();
  lastPongAt = Date.now();
  /**
   * Heartbeat sweeps since the last pong. Counted in sweeps, not wall time: after an event
   * loop stall the sweep timer runs before the pong already waiting in the socket is read,
   * and a wall-clock check would then cut every healthy agent at once.
   */
  missedPongs = 0;
  private readonly h2: ClientHttp2Session;
  private readonly duplex: Duplex;
  private openStreams = 0;
  private readonly openByOp = new Map<string, number>();
  private revoked = false;
  private draining = false;
  private closedPromise: Promise<void>;
  private bytesIn = 0;
  private bytesOut = 0;
  private readonly socket: Socket | undefined;

  constructor(
    readonly info: AgentSessionInfo,
    private readonly ws: WebSocket,
    private readonly opts: AgentSessionOptions,
    log: Logger,
    private readonly metrics: RelayMetrics,
  ) {
    this.duplex = webSocketStream(ws);
    this.socket = (ws as unknown as { _socket?: Socket })._socket;
    ws.on('pong', () => {
      this.lastPongAt = Date.now();
      this.missedPongs = 0;
    });
    this.duplex.on('error', (err) => log.debug({ err }, 'tunnel stream error'));
    this.h2 = http2.connect('http://agent.uplink.invalid', {
      createConnection: () => this.duplex,
      maxSessionMemory: opts.h2SessionMemoryMiB,
      settings: { enablePush: false, initialWindowSize: H2_WINDOWS.streamBytes, maxFrameSize: H2_WINDOWS.maxFrameBytes },
    });
    this.h2.once('connect', () => {
      if (!this.h2.destroyed) this.h2.setLocalWindowSize(H2_WINDOWS.connectionBytes);
    });
    this.h2.on('error', (err) => log.warn({ err: err.message }, 'agent HTTP/2 session error'));
    this.closedPromise = new Promise((resolve) =>
      ws.once('close', () => {
        this.accountBytes();
        resolve();
      }),
    );
    this.h2.once('close', () => {
      if (ws.readyState === ws.OPEN) ws.close(CLOSE_CODES.normal, 'session closed');
    });
  }

  /**
   * Fold the socket's byte counters into the metrics. Called from the heartbeat sweep and at
   * close, so counting costs nothing per chunk.
   */
  accountBytes(): void {
    const s = this.socket;
    if (!s) return;
    const read = s.bytesRead, written = s.bytesWritten;
    if (read > this.bytesIn) this.metrics.bytes.inc({ direction: 'from_agent' }, read - this.bytesIn);
    if (written > this.bytesOut) this.metrics.bytes.inc({ direction: 'to_agent' }, written - this.bytesOut);
    this.bytesIn = read;
    this.bytesOut = written;
  }

  get streamsOpen(): number {
    return this.openStreams;
  }

  /** Streams open for one kind of operation (background polls count in streamsOpen too). */
  streamsOpenFor(op: string): number {
    return this.openByOp.get(op) ?? 0;
  }

  get stats(): { bytesIn: number; bytesOut: number; streams: number } {
    return { bytesIn: this.bytesIn, bytesOut: this.bytesOut, streams: this.openStreams };
  }

  get isOpen(): boolean {
    return !this.h2.closed && !this.h2.destroyed && this.ws.readyState === this.ws.OPEN;
  }

  /**
   * Open a request stream to the agent. Throws (before any byte is sent) when the session is
   * revoked, draining, closed or at its stream limit.
   */
  request(headers: OutgoingHttpHeaders, op: string, opts: { endStream?: boolean } = {}): ClientHttp2Stream {
    if (this.revoked) throw new UplinkError('UPLINK_ERR_AUTH_KEY_REVOKED', "the appliance's agent key was revoked");
    if (this.draining) throw new UplinkError('UPLINK_ERR_RELAY_SHUTTING_DOWN', 'relay is draining; retry shortly');
    if (!this.isOpen) throw new UplinkError('UPLINK_ERR_AGENT_OFFLINE', 'agent connection is closed');
    if (this.openStreams >= this.opts.maxStreams) {
      throw new UplinkError('UPLINK_ERR_TOO_MANY_STREAMS', `appliance has ${this.openStreams} streams open (limit ${this.opts.maxStreams})`);
    }
    let stream: ClientHttp2Stream;
    try {
      stream = this.h2.request({ ':method': 'POST', ...headers }, { endStream: opts.endStream ?? false });
    } catch (err) {
      throw new UplinkError('UPLINK_ERR_TUNNEL_CLOSED', `cannot open a stream to the agent: ${(err as Error).message}`, { cause: err });
    }
    this.openStreams++;
    this.openByOp.set(op, (this.openByOp.get(op) ?? 0) + 1);
    this.metrics.streamsOpen.inc({ op });
    stream.once('close', () => {
      this.openStreams--;
      this.openByOp.set(op, (this.openByOp.get(op) ?? 1) - 1);
      this.metrics.streamsOpen.dec({ op });
    });
    return stream;
  }

  ping(): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.ping();
  }

  /** Key revoked: refuse new streams at once and cut the connection. */
  revoke(): void {
    this.revoked = true;
    this.ws.close(CLOSE_CODES.revoked, 'key revoked');
    setTimeout(() => this.destroy(), 1000).unref();
  }

  /**
   * Graceful: send GOAWAY (no new streams), wait for in-flight streams up to the deadline,
   * then close the WebSocket with 1012 so the agent comes back after a jittered backoff.
   */
  async drain(deadlineMs: number): Promise<void> {
    this.draining = true;
    if (!this.h2.closed && !this.h2.destroyed) {
      this.h2.close();
    }
    const deadline = Date.now() + deadlineMs;
    while (this.openStreams > 0 && Date.now() < deadline && this.isOpenSocket()) {
      await new Promise((r) => setTimeout(r, 25));
    }
    if (this.ws.readyState === this.ws.OPEN) this.ws.close(CLOSE_CODES.serviceRestart, 'relay restarting');
    await Promise.race([this.closedPromise, new Promise((r) => setTimeout(r, 1000))]);
    this.destroy();
  }

  private isOpenSocket(): boolean {
    return this.ws.readyState === this.ws.OPEN;
  }

  close(code: number, reason: string): void {
    if (this.ws.readyState === this.ws.OPEN || this.ws.readyState === this.ws.CONNECTING) this.ws.close(code, reason);
  }

  /** Abort everything now (heartbeat lost, replaced, shutdown deadline). Idempotent. */
  destroy(): void {
    if (!this.h2.destroyed) this.h2.destroy();
    this.ws.terminate();
  }

  closed(): Promise<void> {
    return this.closedPromise;
  }
}
