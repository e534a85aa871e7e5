/**
 * What of a relay request may reach the Kubernetes API server: method, origin-form path
 * (joined under the target's own path prefix), and end-to-end headers within their limits.
 * Pure functions, no I/O, so kube-proxy's transport code stays about sockets.
 *
 * Dropped in both directions: hop-by-hop headers (RFC 9110 §7.6.1) and whatever the
 * Connection header lists. Dropped from requests: the caller's Authorization (the target's
 * credentials replace it) and HTTP/2 pseudo-headers from the tunnel.
 */
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { UplinkError } from '../../shared/errors.js';

/** The request limits these checks enforce (defaults live in kube-proxy's options). */
export interface KubeRequestLimits {
  maxPathBytes: number;
  maxRequestHeaders: number;
  maxRequestHeaderBytes: number;
}

/** Request headers as Node or an HTTP/2 stream hands them over. */
export type HeaderMap = Record<string, string | string[] | undefined>;

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'http2-settings']);
/** Upgrade protocols the API server speaks: WebSocket (kubectl ≥ 1.30) and SPDY (older clients). */
const UPGRADE_PROTOCOL = /^(websocket|SPDY\/3\.1)$/i;
const TOKEN_OR_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

const NONE: ReadonlySet<string> = new Set();

/** Headers kept on a 101 answer: the client needs them to finish its handshake. */
export const UPGRADE_RESPONSE_KEEP: ReadonlySet<string> = new Set(['connection', 'upgrade']);

/** Check the Upgrade header of an exec/attach/port-forward request. */
export function checkUpgradeProtocol(value: string | string[] | undefined): string {
  const upgrade = String(value ?? '');
  if (!UPGRADE_PROTOCOL.test(upgrade)) throw badRequest(`upgrade "${upgrade.slice(0, 40)}" is not forwarded (websocket or SPDY/3.1 only)`, { upgrade: upgrade.slice(0, 40) });
  return upgrade;
}

/** The field names a Connection header lists (they are hop-by-hop too). */
function listed(connection: string | string[]): Set<string> {
  return new Set((Array.isArray(connection) ? connection : [connection]).join(',').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean));
}

/** UPLINK_ERR_BAD_REQUEST with details, for a request the agent will not forward. */
export function badRequest(message: string, details: Record<string, unknown> = {}): UplinkError {
  return new UplinkError('UPLINK_ERR_BAD_REQUEST', message, { details });
}


/** Check the caller's path and join it to the server URL's own path prefix. */
export function targetPath(server: URL, path: string, o: Pick<KubeRequestLimits, 'maxPathBytes'>): string {
  if (Buffer.byteLength(path) > o.maxPathBytes) throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `request path exceeds maxPathBytes (${o.maxPathBytes})`, { details: { limit: 'maxPathBytes' } });
  if (!path.startsWith('/') || path.startsWith('//') || !/^[\x21-\x7e]+$/.test(path) || path.includes('#')) {
    throw badRequest('request path must be an origin-form path such as /api/v1/pods', { path: path.slice(0, 200) });
  }
  const pathname = path.split('?', 1)[0]!;
  for (const seg of pathname.split('/')) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(seg);
    } catch {
      throw badRequest('request path has a malformed percent-encoding', { path: pathname.slice(0, 200) });
    }
    if (decoded === '.' || decoded === '..' || decoded.includes('/')) throw badRequest('request path must not contain dot segments or encoded slashes', { path: pathname.slice(0, 200) });
  }
  const prefix = server.pathname.replace(/\/+$/, '');
  return prefix + path;
}

/** Copy end-to-end request headers, enforcing the header limits; drops Authorization. */
export function requestHeaders(headers: HeaderMap, o: Pick<KubeRequestLimits, 'maxRequestHeaders' | 'maxRequestHeaderBytes'>, keep: ReadonlySet<string> = NONE): OutgoingHttpHeaders {
  const entries = Object.entries(headers);
  if (entries.length > o.maxRequestHeaders) throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `more than maxRequestHeaders (${o.maxRequestHeaders}) request headers`, { details: { limit: 'maxRequestHeaders' } });
  const connection = entries.filter(([k]) => k.toLowerCase() === 'connection').flatMap(([, v]) => v ?? []);
  const connectionListed = listed(connection);
  const out: OutgoingHttpHeaders = {};
  let bytes = 0;
  for (const [rawName, value] of entries) {
    if (value === undefined) continue;
    const name = rawName.toLowerCase();
    if (name.startsWith(':')) continue; // HTTP/2 pseudo-headers from the tunnel
    const values = Array.isArray(value) ? value : [value];
    for (const v of values) bytes += name.length + v.length;
    if (!HEADER_NAME.test(name) || !values.every((v) => TOKEN_OR_VALUE.test(v))) throw badRequest(`request header "${rawName.slice(0, 100)}" is malformed`);
    if (name === 'authorization' || ((HOP_BY_HOP.has(name) || connectionListed.has(name)) && !keep.has(name))) continue;
    out[name] = value;
  }
  if (bytes > o.maxRequestHeaderBytes) throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `request headers exceed maxRequestHeaderBytes (${o.maxRequestHeaderBytes})`, { details: { limit: 'maxRequestHeaderBytes' } });
  return out;
}

/** Copy end-to-end response headers (Node has already lowercased and joined them). */
export function responseHeaders(res: IncomingMessage, keep: ReadonlySet<string> = NONE): Record<string, string | string[]> {
  const connectionListed = listed(res.headers.connection ?? []);
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(res.headers)) {
    if (value === undefined) continue;
    if ((HOP_BY_HOP.has(name) || connectionListed.has(name)) && !keep.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** Methods the API server takes; CONNECT and TRACE never cross. */
export function checkMethod(method: string): string {
  const m = method.toUpperCase();
  if (!METHODS.has(m)) throw badRequest(`method ${method.slice(0, 20)} is not forwarded to the Kubernetes API`, { method: method.slice(0, 20) });
  return m;
}
