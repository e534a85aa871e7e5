/**
 * The agent's HTTP/2 server. It never listens on a network interface: each WebSocket the
 * agent dialled is handed to it as a connection, and the relay (the HTTP/2 client) sends
 * requests over it. This module routes streams to handlers and turns thrown errors into
 * `HTTP status + {code, message}` while headers have not been sent, or RST_STREAM after.
 */
import http2, { type Http2Server, type Http2Session, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
import { UplinkError, toUplinkError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { H2_WINDOWS, OP_HEADERS } from '../shared/protocol.js';

export interface RequestContext {
  requestId: string;
  /** The engineer the relay says asked; recorded, never trusted for authorisation. */
  actor: string;
  spec: unknown;
  headers: IncomingHttpHeaders;
  log: Logger;
}

export type StreamHandler = (stream: ServerHttp2Stream, ctx: RequestContext) => Promise<void>;

export interface TunnelServerOptions {
  maxConcurrentStreams: number;
  maxSpecBytes: number;
  h2SessionMemoryMiB: number;
}

export function respondError(stream: ServerHttp2Stream, err: unknown): UplinkError {
  const e = toUplinkError(err);
  if (stream.destroyed || stream.closed) return e;
  if (!stream.headersSent) {
    const body = JSON.stringify(e.toJSON());
    stream.respond({ ':status': e.status, 'content-type': 'application/json' });
    stream.end(body);
  } else {
    stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  }
  return e;
}

export class TunnelServer {
  private readonly server: Http2Server;
  private readonly handlers = new Map<string, StreamHandler>();
  private readonly sessions = new Set<Http2Session>();

  constructor(
    private readonly opts: TunnelServerOptions,
    private readonly log: Logger,
  ) {
    this.server = http2.createServer({
      maxSessionMemory: opts.h2SessionMemoryMiB,
      settings: { maxConcurrentStreams: opts.maxConcurrentStreams, enablePush: false, initialWindowSize: H2_WINDOWS.streamBytes, maxFrameSize: H2_WINDOWS.maxFrameBytes },
    });
    this.server.on('stream', (stream, headers) => this.route(stream, headers));
    this.server.on('session', (session) => {
      this.sessions.add(session);
      session.setLocalWindowSize(H2_WINDOWS.connectionBytes);
      session.on('error', (err) => log.debug({ err: err.message }, 'tunnel session error'));
      session.once('close', () => this.sessions.delete(session));
    });
  }

  handle(path: string, handler: StreamHandler): void {
    this.handlers.set(path, handler);
  }

  /** Serve HTTP/2 on a connected byte stream (the WebSocket). */
  serve(duplex: Duplex): void {
    this.server.emit('connection', duplex);
  }

  get openSessions(): number {
    return this.sessions.size;
  }

  private route(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', (err) => this.log.debug({ err: err.message }, 'stream error'));
    const path = String(headers[':path'] ?? '');
    const requestId = String(headers[OP_HEADERS.requestId] ?? 'none').slice(0, 64);
    const actor = String(headers[OP_HEADERS.actor] ?? 'unknown').slice(0, 128);
    const log = this.log.child({ request: requestId, path, actor });
    const handler = this.handlers.get(path);
    if (!handler) {
      respondError(stream, new UplinkError('UPLINK_ERR_NOT_FOUND', `agent has no handler for ${path}`));
      return;
    }
    let spec: unknown;
    const raw = headers[OP_HEADERS.spec];
    if (typeof raw === 'string' && raw.length > 0) {
      if (raw.length > this.opts.maxSpecBytes) {
        respondError(stream, new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `spec exceeds ${this.opts.maxSpecBytes} bytes`));
        return;
      }
      try {
        spec = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
      } catch {
        respondError(stream, new UplinkError('UPLINK_ERR_BAD_REQUEST', 'spec is not base64url JSON'));
        return;
      }
    }
    handler(stream, { requestId, actor, spec, headers, log }).catch((err: unknown) => {
      const e = respondError(stream, err);
      if (e.status >= 500) log.error({ code: e.code, err: e.message }, 'handler failed');
      else log.info({ code: e.code, reason: e.message }, 'request refused');
    });
  }

  /** Close every tunnel session gracefully. */
  close(): void {
    for (const s of this.sessions) s.close();
    this.server.close();
  }
}
