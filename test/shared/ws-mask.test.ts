/**
 * shared/ws-mask.ts: what a client configured with it puts on the wire, read from the
 * server's socket after TLS (the bytes the WebSocket layer sees), next to what the server's
 * WebSocket delivers. Over wss: the masking key is four zero bytes and the payload travels as
 * is; over ws: the key is random and the payload is masked.
 */
import t, { type Test } from 'tap';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { clientMaskOptions } from '../../shared/ws-mask.js';
import { selfSignedCert } from '../helpers/tls.js';

const PAYLOAD = Buffer.from('uplink frame payload, long enough to see a mask in it');

interface Seen {
  wire: Buffer;
  message: Buffer;
}

/** Serve one WebSocket on `server`, send it PAYLOAD from a client made with clientMaskOptions, and return what arrived. */
async function sendOne(t: Test, server: Server, scheme: 'ws' | 'wss', ca?: Buffer): Promise<Seen> {
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  const wire: Buffer[] = [];
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    // Copies: the server's WebSocket unmasks the received buffers in place.
    socket.on('data', (chunk: Buffer) => wire.push(Buffer.from(chunk)));
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const url = `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  const client = new WebSocket(url, { perMessageDeflate: false, ...clientMaskOptions(url), ...(ca ? { ca } : {}) });
  t.teardown(() => client.terminate());
  const [ws] = (await once(wss, 'connection')) as [WebSocket];
  if (client.readyState !== client.OPEN) await once(client, 'open');
  const got = once(ws, 'message') as Promise<[Buffer]>;
  client.send(Buffer.from(PAYLOAD), { binary: true }); // a copy: ws masks a Buffer it was given in place
  const [message] = await got;
  ws.terminate();
  return { wire: Buffer.concat(wire), message };
}

/** The one client frame: [0x82, 0x80 | length, key(4), payload]. */
function parseFrame(t: Test, wire: Buffer): { key: Buffer; payload: Buffer } {
  t.equal(wire[0], 0x82, 'a final binary frame');
  t.equal(wire[1], 0x80 | PAYLOAD.length, 'masked bit set, length in the first byte');
  return { key: wire.subarray(2, 6), payload: wire.subarray(6, 6 + PAYLOAD.length) };
}

t.test('over wss the client sends the zero key and the payload unmasked', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'uplink-ws-mask-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { certFile, keyFile } = selfSignedCert(dir);
  const cert = readFileSync(certFile);
  const server = createHttpsServer({ cert, key: readFileSync(keyFile) });
  const { wire, message } = await sendOne(t, server, 'wss', cert);
  const { key, payload } = parseFrame(t, wire);
  t.same([...key], [0, 0, 0, 0]);
  t.same(payload, PAYLOAD, 'payload on the wire as sent');
  t.same(message, PAYLOAD, 'the server WebSocket delivers it unchanged');
});

t.test('over plain ws the key is random and the payload masked', async (t) => {
  const { wire, message } = await sendOne(t, createHttpServer(), 'ws');
  const { key, payload } = parseFrame(t, wire);
  t.not(key.readUInt32BE(0), 0, 'a non-zero key');
  t.notSame(payload, PAYLOAD, 'payload masked on the wire');
  t.same(Buffer.from(payload.map((b, i) => b ^ key[i & 3]!)), PAYLOAD, 'unmasking with the key gives the payload');
  t.same(message, PAYLOAD);
});

t.test('only TLS schemes get the zero key', async (t) => {
  for (const url of ['wss://relay.example.com/v1', 'https://relay.example.com', new URL('wss://127.0.0.1:8443/')]) {
    const opts = clientMaskOptions(url);
    t.type(opts.generateMask, 'function', String(url));
    const key = Buffer.from([1, 2, 3, 4]);
    opts.generateMask!(key);
    t.same([...key], [0, 0, 0, 0], `${String(url)}: the key it writes is zero`);
  }
  for (const url of ['ws://relay.example.com/v1', 'http://127.0.0.1:8080']) t.same(clientMaskOptions(url), {}, url);
});
