/** Small HTTP helpers for the vendor API: JSON replies, bounded JSON bodies, errors. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { UplinkError, toUplinkError } from '../shared/errors.js';

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

export function sendError(res: ServerResponse, err: unknown, requestId?: string): UplinkError {
  const e = toUplinkError(err);
  if (!res.headersSent) {
    const body = e.code === 'UPLINK_ERR_INTERNAL' ? { code: e.code, message: 'internal error', details: { requestId } } : e.toJSON();
    sendJson(res, e.status, body);
  } else {
    res.destroy();
  }
  return e;
}

/** Read a JSON object body, refusing more than `limit` bytes before buffering them. */
export async function readJsonBody(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `request body of ${declared} bytes exceeds ${limit}`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `request body exceeds ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'request body is not valid JSON');
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'request body must be a JSON object');
  return parsed as Record<string, unknown>;
}

export interface Route<C> {
  method: string;
  pattern: RegExp;
  name: string;
  handler: (ctx: C, params: string[]) => Promise<void>;
}

/** Match a path against routes; returns the route and its decoded parameters. */
export function matchRoute<C>(routes: readonly Route<C>[], method: string, path: string): { route: Route<C>; params: string[] } | 'method' | undefined {
  let pathMatched = false;
  for (const route of routes) {
    const m = route.pattern.exec(path);
    if (!m) continue;
    pathMatched = true;
    if (route.method !== method) continue;
    try {
      return { route, params: m.slice(1).map((p) => decodeURIComponent(p)) };
    } catch {
      return undefined;
    }
  }
  return pathMatched ? 'method' : undefined;
}

const LIST_LIMIT = /^[1-9]\d{0,5}$/;

/**
 * The query of a list route (`?appliance=NAME&limit=N`): `limit`, when given, must be a
 * positive integer below a million (UPLINK_ERR_BAD_REQUEST otherwise).
 */
export function listQuery(req: IncomingMessage): { appliance: string | null; limit?: number } {
  const q = new URL(req.url ?? '/', 'http://x').searchParams;
  const limitText = q.get('limit');
  if (limitText !== null && !LIST_LIMIT.test(limitText)) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'limit must be a positive integer');
  return { appliance: q.get('appliance'), ...(limitText !== null ? { limit: Number(limitText) } : {}) };
}
