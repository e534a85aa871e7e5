/**
 * The vendor CLI's client for the relay API: JSON requests with undici, and WebSocket
 * upgrades for interactive operations. Errors come back as UplinkError with the relay's
 * code; connection failures as UPLINK_ERR_RELAY_UNREACHABLE.
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { Agent, request } from 'undici';
import { WebSocket } from 'ws';
import { webSocketStream } from '../../shared/ws-stream.js';
import { clientMaskOptions } from '../../shared/ws-mask.js';
import { UplinkError, errorFromBody } from '../../shared/errors.js';
import { OP_HEADERS, encodeSpec } from '../../shared/protocol.js';
import type { ClientConfig } from './client-config.js';

export class ApiClient {
  private readonly dispatcher: Agent;
  private readonly ca: Buffer | undefined;

  constructor(readonly cfg: ClientConfig) {
    this.ca = cfg.caFile ? readFileSync(cfg.caFile) : undefined;
    this.dispatcher = new Agent({ connect: this.ca ? { ca: this.ca } : {}, keepAliveTimeout: 1000 });
  }

  async call<T = Record<string, unknown>>(method: 'GET' | 'POST' | 'DELETE' | 'PUT', path: string, body?: unknown): Promise<T> {
    let res;
    try {
      res = await request(`${this.cfg.url}${path}`, {
        method,
        dispatcher: this.dispatcher,
        headers: {
          authorization: `Bearer ${this.cfg.token}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (err) {
      throw new UplinkError('UPLINK_ERR_RELAY_UNREACHABLE', `cannot reach ${this.cfg.url}: ${(err as Error).message}`, { cause: err });
    }
    const text = await res.body.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      parsed = undefined;
    }
    if (res.statusCode >= 400) throw errorFromBody(parsed, res.statusCode);
    if (parsed === undefined) throw new UplinkError('UPLINK_ERR_REMOTE', `relay answered ${res.statusCode} with a non-JSON body`);
    return parsed as T;
  }

  /**
   * GET a byte stream (a recording). Resolves once the status is 200, with the body to read
   * at the caller's pace and the response headers; rejects with the relay's code otherwise.
   */
  async stream(path: string): Promise<{ body: AsyncIterable<Buffer>; headers: Record<string, string | string[] | undefined> }> {
    let res;
    try {
      res = await request(`${this.cfg.url}${path}`, { method: 'GET', dispatcher: this.dispatcher, headers: { authorization: `Bearer ${this.cfg.token}` } });
    } catch (err) {
      throw new UplinkError('UPLINK_ERR_RELAY_UNREACHABLE', `cannot reach ${this.cfg.url}: ${(err as Error).message}`, { cause: err });
    }
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      throw errorFromBody(parsed, res.statusCode);
    }
    return { body: res.body, headers: res.headers };
  }

  /**
   * Open an interactive operation. Resolves with the byte stream once the agent accepted;
   * rejects with the relay's or agent's error code otherwise.
   */
  /** `onHeaders` sees the upgrade response headers (e.g. x-uplink-phase-mode) before any byte flows. */
  openOp(appliance: string, op: string, spec: unknown, opts: { onHeaders?(headers: IncomingMessage['headers']): void } = {}): Promise<Duplex> {
    const url = new URL(`${this.cfg.url}/v1/appliances/${encodeURIComponent(appliance)}/${op}`);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, {
        headers: { authorization: `Bearer ${this.cfg.token}`, [OP_HEADERS.spec]: encodeSpec(spec) },
        perMessageDeflate: false,
        maxPayload: 64 * 1024 * 1024,
        ...clientMaskOptions(url),
        ...(this.ca ? { ca: this.ca } : {}),
      });
      if (opts.onHeaders) ws.once('upgrade', (res: IncomingMessage) => opts.onHeaders!(res.headers));
      ws.once('open', () => {
        const duplex = webSocketStream(ws);
        resolve(duplex);
      });
      ws.once('unexpected-response', (_req, res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let body: unknown;
          try {
            body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            body = undefined;
          }
          ws.terminate();
          reject(errorFromBody(body, res.statusCode ?? 0));
        });
      });
      ws.once('error', (err) => reject(new UplinkError('UPLINK_ERR_RELAY_UNREACHABLE', `cannot reach ${this.cfg.url}: ${err.message}`, { cause: err })));
    });
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}
