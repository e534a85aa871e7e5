/**
 * The server side of a WebSocket, by hand (RFC 6455), for the one subprotocol the `ws`
 * library refuses: `SPDY/3.1+portforward.k8s.io` is not an RFC 7230 token ("/" is a
 * separator), so `ws` answers 400 "Invalid Sec-WebSocket-Protocol header", while the
 * Kubernetes API server (gorilla/websocket) accepts it and kubectl 1.32 depends on it.
 *
 * Enough for a test server: the handshake, client frames unmasked and joined, ping
 * answered, close answered, binary messages sent unfragmented.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export interface RawWebSocket {
  send(data: Buffer): void;
  close(code: number): void;
  onMessage(cb: (data: Buffer, binary: boolean) => void): void;
  onClose(cb: () => void): void;
}

function frame(opcode: number, payload: Buffer): Buffer {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, len]) : len < 65_536 ? Buffer.alloc(4) : Buffer.alloc(10);
  if (len >= 126) {
    head[0] = 0x80 | opcode;
    if (len < 65_536) {
      head[1] = 126;
      head.writeUInt16BE(len, 2);
    } else {
      head[1] = 127;
      head.writeBigUInt64BE(BigInt(len), 2);
    }
  }
  return Buffer.concat([head, payload]);
}

/** Complete the handshake with `protocol` and return the connection. */
export function acceptRawWebSocket(req: IncomingMessage, socket: Duplex, head: Buffer, protocol: string): RawWebSocket {
  const accept = createHash('sha1').update(`${String(req.headers['sec-websocket-key'])}${GUID}`).digest('base64');
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: ${protocol}\r\n\r\n`);
  let onMessage: (data: Buffer, binary: boolean) => void = () => {};
  let onClose: () => void = () => {};
  let buf = head;
  let fragments: Buffer[] = [];
  let fragmentOpcode = 0;
  let closed = false;
  let closeSent = false;
  const finish = (): void => {
    if (closed) return;
    closed = true;
    socket.destroy();
    onClose();
  };
  const parse = (): void => {
    for (;;) {
      if (buf.length < 2) return;
      const fin = (buf[0]! & 0x80) !== 0;
      const opcode = buf[0]! & 0x0f;
      let len = buf[1]! & 0x7f;
      let at = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        at = 10;
      }
      const masked = (buf[1]! & 0x80) !== 0;
      const maskAt = at;
      if (masked) at += 4;
      if (buf.length < at + len) return;
      const payload = Buffer.from(buf.subarray(at, at + len));
      if (masked) for (let i = 0; i < payload.length; i++) payload[i]! ^= buf[maskAt + (i & 3)]!;
      buf = buf.subarray(at + len);
      if (opcode === 0x8) {
        if (!closeSent && !socket.destroyed) socket.write(frame(0x8, payload.subarray(0, 2)));
        return finish();
      }
      if (opcode === 0x9) {
        socket.write(frame(0xa, payload));
        continue;
      }
      if (opcode === 0xa) continue;
      if (opcode !== 0) fragmentOpcode = opcode;
      fragments.push(payload);
      if (!fin) continue;
      const message = Buffer.concat(fragments);
      fragments = [];
      onMessage(message, fragmentOpcode === 0x2);
    }
  };
  socket.on('data', (chunk: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    parse();
  });
  socket.on('error', () => {});
  socket.on('close', finish);
  // Bytes that came with the upgrade request are parsed once the caller has its listeners.
  queueMicrotask(parse);
  return {
    send(data) {
      if (!closed && !closeSent && !socket.destroyed) socket.write(frame(0x2, data));
    },
    close(code) {
      if (closed || closeSent || socket.destroyed) return;
      closeSent = true;
      const payload = Buffer.alloc(2);
      payload.writeUInt16BE(code);
      socket.write(frame(0x8, payload));
      socket.end();
    },
    onMessage(cb) {
      onMessage = cb;
    },
    onClose(cb) {
      onClose = cb;
    },
  };
}
