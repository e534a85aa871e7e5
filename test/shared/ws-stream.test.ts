/**
 * shared/ws-stream.ts against real WebSockets on loopback: a corked write's buffers arrive
 * in order with one callback each, writes to a closing WebSocket succeed exactly once and go nowhere, what arrived
 * before the close is still read, a reader that stops reading pauses the socket, and
 * HTTP/2 runs over it both ways.
 */
import t, { type Test } from 'tap';
import http2 from 'node:http2';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { webSocketStream } from '../../shared/ws-stream.js';
import { waitFor } from '../helpers/cluster.js';

async function pair(t: Test): Promise<{ client: WebSocket; server: WebSocket }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
  await once(wss, 'listening');
  t.teardown(() => new Promise<void>((r) => wss.close(() => r())));
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/`, { perMessageDeflate: false });
  const [server] = (await once(wss, 'connection')) as [WebSocket];
  if (client.readyState !== client.OPEN) await once(client, 'open');
  t.teardown(() => { client.terminate(); server.terminate(); });
  return { client, server };
}

t.test('the buffers of a corked write arrive in order, each once, with one callback each', async (t) => {
  const { client, server } = await pair(t);
  const got: Buffer[] = [];
  server.on('message', (m: Buffer) => got.push(m));
  const d = webSocketStream(client);
  const acks: string[] = [];
  d.cork();
  d.write(Buffer.from('frame-header:'), () => acks.push('a'));
  d.write(Buffer.from('payload'), () => acks.push('b'));
  d.uncork();
  d.write(Buffer.from('second'), () => acks.push('c'));
  await waitFor(() => got.length === 3 && acks.length === 3, 5000, 'three messages and three acks');
  t.equal(Buffer.concat(got).toString(), 'frame-header:payloadsecond');
  t.same(acks, ['a', 'b', 'c']);
});

t.test('writes after the WebSocket closed succeed once each and send nothing', async (t) => {
  const { client, server } = await pair(t);
  const d = webSocketStream(client);
  d.on('error', (err) => t.fail(`no error expected: ${err.message}`));
  client.close();
  await once(client, 'close');
  let sends = 0;
  const send = client.send.bind(client);
  client.send = ((...args: Parameters<typeof send>) => {
    sends++;
    return send(...args);
  }) as typeof client.send;
  const results: unknown[] = [];
  d.cork();
  d.write(Buffer.from('a'), (err) => results.push(err ?? 'ok'));
  d.write(Buffer.from('b'), (err) => results.push(err ?? 'ok'));
  d.uncork();
  await waitFor(() => results.length >= 2, 5000, 'both write callbacks');
  await new Promise((r) => setImmediate(r)); // a second callback for the same write would come by now
  t.same(results, ['ok', 'ok'], 'one success per write, no error');
  t.equal(sends, 0, 'nothing was handed to the closed WebSocket');
  t.equal(server.readyState === server.OPEN, false);
});

t.test('data received before the close is read in full, even when the reader was paused', async (t) => {
  const { client, server } = await pair(t);
  const d = webSocketStream(client);
  d.pause();
  for (let i = 0; i < 50; i++) server.send(Buffer.alloc(10_000, i));
  server.close();
  // The paused socket holds the close frame behind the data, as it should: everything has
  // left the server, and the client stopped reading with the close still unread.
  await waitFor(() => server.bufferedAmount === 0 && client.isPaused, 5000, 'all sent, the reader paused');
  t.equal(client.readyState, client.OPEN, 'the close frame is not read yet');
  let n = 0;
  d.on('data', (c: Buffer) => (n += c.length));
  const closed = once(d, 'close');
  d.resume();
  await once(d, 'end');
  t.equal(n, 500_000, 'nothing lost');
  await closed;
  t.pass('closed after the end was read');
});

t.test('a reader that stops reading pauses the WebSocket; reading again resumes it', async (t) => {
  const { client, server } = await pair(t);
  const d = webSocketStream(client);
  d.pause();
  // More than the readable buffer holds: push() says stop, the socket is paused.
  for (let i = 0; i < 10; i++) server.send(Buffer.alloc(64 * 1024));
  await waitFor(() => client.isPaused, 5000, 'the WebSocket paused');
  t.equal(client.isPaused, true, 'paused');
  let n = 0;
  d.on('data', (c: Buffer) => (n += c.length));
  d.resume();
  await waitFor(() => n === 10 * 64 * 1024, 5000, 'every byte read');
  t.equal(client.isPaused, false, 'resumed');
  t.equal(n, 10 * 64 * 1024);
});

t.test('HTTP/2 runs over it: a 20 MB response and a request body arrive intact', async (t) => {
  const { client, server } = await pair(t);
  const h2server = http2.createServer();
  h2server.on('stream', (stream) => {
    const parts: Buffer[] = [];
    stream.on('data', (c: Buffer) => parts.push(c));
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'x-got': String(Buffer.concat(parts).length) });
      const chunk = Buffer.alloc(1 << 20, 7);
      let left = 20;
      const pump = (): void => {
        while (left > 0) {
          left--;
          if (!stream.write(chunk)) return void stream.once('drain', pump);
        }
        stream.end();
      };
      pump();
    });
  });
  h2server.emit('connection', webSocketStream(client));
  const session = http2.connect('http://tunnel.invalid', { createConnection: () => webSocketStream(server) as never });
  t.teardown(() => session.destroy());
  const req = session.request({ ':method': 'POST', ':path': '/' });
  req.end(Buffer.alloc(3_000_000, 1));
  const [headers] = (await once(req, 'response')) as [http2.IncomingHttpHeaders];
  t.equal(headers['x-got'], '3000000');
  let n = 0;
  let bad = false;
  req.on('data', (c: Buffer) => {
    n += c.length;
    if (c.some((b) => b !== 7)) bad = true;
  });
  await once(req, 'end');
  t.equal(n, 20 << 20);
  t.equal(bad, false, 'every byte as sent');
});
