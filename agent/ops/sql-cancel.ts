/**
 * PostgreSQL's out-of-band cancel: a new TCP connection to the server carrying only a
 * CancelRequest (protocol 3.0: length 16, code 80877102, backend pid, secret key), after
 * which the server closes it. The server processes it before any authentication or TLS
 * negotiation, which is why it is sent in the clear, as libpq and pg do. Best effort by
 * design: the caller keeps a deadline and destroys the session socket if the cancel does
 * not take.
 */
import { connect } from 'node:net';

/** The CancelRequest code from the protocol specification (1234 << 16 | 5678). */
const CANCEL_REQUEST_CODE = 80877102;

export interface CancelTarget {
  host: string;
  port: number;
  processId: number;
  secretKey: number;
}

/** Send a CancelRequest; resolves true once written, false on any failure or after timeoutMs. */
export function sendCancelRequest(target: CancelTarget, timeoutMs: number): Promise<boolean> {
  const msg = Buffer.alloc(16);
  msg.writeInt32BE(16, 0);
  msg.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  msg.writeInt32BE(target.processId, 8);
  msg.writeInt32BE(target.secretKey, 12);
  return new Promise((resolve) => {
    const socket = connect({ host: target.host, port: target.port });
    let settled = false;
    const finish = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    timer.unref();
    socket.once('error', () => finish(false));
    socket.once('connect', () => socket.write(msg, (err) => (err ? finish(false) : socket.end())));
    // The server closes the connection after reading the request.
    socket.once('close', () => finish(true));
  });
}
