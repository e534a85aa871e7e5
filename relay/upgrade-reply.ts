/** Answer an HTTP upgrade request with an error, before any WebSocket exists. */
import type { Duplex } from 'node:stream';
import { STATUS_CODES } from 'node:http';
import type { UplinkError } from '../shared/errors.js';

export function rejectUpgrade(socket: Duplex, err: UplinkError, extraHeaders: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  const body = JSON.stringify(err.toJSON());
  const status = err.status;
  const headers = {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(body)),
    connection: 'close',
    ...extraHeaders,
  };
  const head = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)].join('\r\n');
  socket.end(`${head}\r\n\r\n${body}`);
  // A peer that never reads must not hold the socket open.
  setTimeout(() => socket.destroy(), 1000).unref();
}
