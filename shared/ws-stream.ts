/**
 * The tunnel's byte stream: a Duplex over one WebSocket, handed to `node:http2` as its
 * connection on both ends (the relay's client session, the agent's server session).
 *
 * Why not `ws`'s own `createWebSocketStream`: `node:http2` wraps any non-socket stream in
 * Node's JSStreamSocket, which allows one write in flight and finishes it a turn of the event
 * loop after the stream's write callback. Two properties of the stock adapter hurt there:
 *
 * - Throughput. Each buffer's callback waited for the socket to flush, so a bulk stream
 *   moved a few frames per event-loop turn: about six times slower than either plain HTTP/2
 *   or plain WebSocket on the same machine. Here the buffers of one HTTP/2 write go out
 *   under one cork of the socket (`_writev`), and the write is acknowledged at once while
 *   the WebSocket's send buffer is under `highWaterMark`; above it, when its last message
 *   reaches the socket. Memory stays bounded by HTTP/2 flow control plus `highWaterMark`.
 * - Safety. When the WebSocket is already closing, the stock adapter fails every buffer of a
 *   write with its own error; JSStreamSocket then finishes the same write request more than
 *   once and its bookkeeping can fall out of step with the native session, which ends in
 *   ERR_INTERNAL_ASSERTION and a dead process. Here a write never fails: bytes for a closing
 *   WebSocket are dropped (the peer is gone; HTTP/2 learns it from the end of the readable
 *   side), and a write request is acknowledged exactly once.
 *
 * Reading pauses the WebSocket (and so the TCP socket) when the consumer stops reading;
 * whatever was received before the WebSocket closed is still delivered before the end.
 */
import { Duplex } from 'node:stream';
import type { WebSocket, RawData } from 'ws';

export const WS_STREAM_DEFAULTS = Object.freeze({
  /** WebSocket send buffer (bytes) under which a write is acknowledged without waiting. */
  highWaterMark: 1024 * 1024,
});

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/** A Duplex whose written bytes are WebSocket binary messages and whose reads are the messages received. */
export function webSocketStream(ws: WebSocket, opts: { highWaterMark?: number } = {}): Duplex {
  const highWaterMark = opts.highWaterMark ?? WS_STREAM_DEFAULTS.highWaterMark;
  const socket = (ws as unknown as { _socket: (NodeJS.WritableStream & { writableFinished: boolean; cork(): void; uncork(): void }) | null })._socket;

  const send = (data: Buffer, done: () => void): void => {
    // Bytes for a closing WebSocket go nowhere, and the write still succeeds: see above.
    if (ws.readyState !== ws.OPEN) return done();
    let acked = false;
    const ack = (): void => {
      if (acked) return;
      acked = true;
      done();
    };
    // The callback runs once the message reached the socket, or with an error when the
    // connection failed; either way this write is over. A failure surfaces as 'close'.
    ws.send(data, { binary: true, compress: false }, () => ack());
    if (ws.bufferedAmount <= highWaterMark) ack();
  };

  // As in ws's own adapter: no autoDestroy, so ending our side does not cut off reading,
  // and 'close' comes only once the WebSocket itself has closed.
  const duplex = new Duplex({
    autoDestroy: false,
    emitClose: false,
    // The buffers of an HTTP/2 write arrive here together, with one callback, so a write
    // request is finished exactly once. Each buffer is its own message (message boundaries
    // mean nothing here), sent under one cork of the socket: one syscall, no copy.
    writev(chunks, callback) {
      if (ws.readyState !== ws.OPEN) return callback();
      socket?.cork();
      for (let i = 0; i < chunks.length - 1; i++) ws.send(chunks[i]!.chunk as Buffer, { binary: true, compress: false });
      send(chunks[chunks.length - 1]!.chunk as Buffer, () => callback());
      socket?.uncork();
    },
    write(chunk: Buffer, _encoding, callback) {
      send(chunk, () => callback());
    },
    read() {
      if (ws.isPaused) ws.resume();
    },
    final(callback) {
      // Our side is done: close the WebSocket once what was queued reached the socket.
      if (ws.readyState !== ws.OPEN || !socket || socket.writableFinished) return callback();
      socket.once('finish', () => callback());
      ws.close();
    },
    destroy(err, callback) {
      if (ws.readyState === ws.CLOSED) {
        callback(err);
        process.nextTick(() => duplex.emit('close'));
        return;
      }
      ws.once('close', () => {
        callback(err);
        process.nextTick(() => duplex.emit('close'));
      });
      ws.terminate();
    },
  });

  ws.on('message', (data: RawData) => {
    if (duplex.destroyed) return;
    if (!duplex.push(toBuffer(data))) ws.pause();
  });
  ws.once('close', () => {
    if (!duplex.destroyed) duplex.push(null);
  });
  // An error is followed by 'close'; the owner of the WebSocket logs it. Destroying without
  // the error keeps it from being thrown a second time on the stream.
  ws.on('error', () => {
    if (!duplex.destroyed) duplex.destroy();
  });
  // The end of input is pushed only once the WebSocket closed: nothing can be written any
  // more either, so the stream is done once its reader saw everything.
  duplex.on('end', () => {
    if (!duplex.destroyed) duplex.destroy();
  });
  return duplex;
}
