import t, { type Test } from 'tap';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { KubeApiServer } from '../../helpers/kube-api-server.js';
import { needTools } from '../../helpers/tools.js';
import { freePort } from '../../helpers/net.js';
import { forwardKubeRequest, forwardKubeUpgrade, parseKubeProxyOptions } from '../../../agent/ops/kube-proxy.js';
import type { ResolvedKubeTarget } from '../../../agent/ops/kube-target.js';
import { isUplinkError, type ErrorCode } from '../../../shared/errors.js';

async function text(body: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function rejectsWith(t: Test, p: Promise<unknown>, code: ErrorCode, what: string): Promise<Record<string, unknown> | undefined> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  t.ok(isUplinkError(err, code), `${what}: ${code} (got ${(err as { code?: string } | undefined)?.code ?? String(err)})`);
  return (err as { details?: Record<string, unknown> } | undefined)?.details;
}

async function listen(server: Server | ReturnType<typeof createNetServer>): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  return typeof addr === 'object' && addr ? addr.port : 0;
}

t.test('kube-proxy', async (t) => {
  if (!needTools(t, ['openssl'])) return;
  const api = await KubeApiServer.start();
  t.teardown(() => api.close());
  api.addPod('web-1');
  const resolved: ResolvedKubeTarget = { server: new URL(api.url), ca: api.caPem!, headers: { authorization: `Bearer ${api.token}` } };

  t.test('credentials and hop-by-hop headers', async (t) => {
    const res = await forwardKubeRequest(resolved, {
      method: 'get', path: '/api/v1/namespaces/default/pods/web-1',
      headers: {
        authorization: 'Bearer from-the-relay', connection: 'keep-alive, x-hop', 'x-hop': 'secret', 'keep-alive': 'timeout=5', te: 'trailers',
        'proxy-authorization': 'Basic eA==', host: 'evil.example', 'x-end-to-end': 'kept', ':authority': 'relay', accept: 'application/json',
      },
    });
    t.equal(res.status, 200);
    const pod = JSON.parse(await text(res.body)) as { metadata: { name: string } };
    t.equal(pod.metadata.name, 'web-1');
    t.notOk('connection' in res.headers || 'keep-alive' in res.headers || 'transfer-encoding' in res.headers, 'no hop-by-hop response headers');
    const seen = api.requests.at(-1)!;
    t.equal(seen.method, 'GET');
    t.equal(seen.headers.authorization, `Bearer ${api.token}`, "the target's token replaced the caller's");
    t.equal(seen.headers['x-end-to-end'], 'kept');
    t.equal(seen.headers.host, new URL(api.url).host, 'Host is the API server');
    for (const h of ['x-hop', 'te', 'proxy-authorization']) t.notOk(h in seen.headers, `${h} dropped`);

    const anon = await forwardKubeRequest({ ...resolved, headers: {} }, { method: 'GET', path: '/api/v1/namespaces/default/pods', headers: { authorization: `Bearer ${api.token}` } });
    t.equal(anon.status, 401, "the caller's own Authorization is dropped even when it would have worked");
    t.equal((JSON.parse(await text(anon.body)) as { reason: string }).reason, 'Unauthorized');
  });

  t.test('client certificate authentication', async (t) => {
    const { cert, key } = api.issueClientCert('uplink-agent');
    const res = await forwardKubeRequest({ server: new URL(api.url), ca: api.caPem!, clientCert: cert, clientKey: key, headers: {} }, { method: 'GET', path: '/api/v1/namespaces/default/pods', headers: {} });
    t.equal(res.status, 200);
    t.equal((JSON.parse(await text(res.body)) as { kind: string }).kind, 'PodList');
  });

  t.test('a server path prefix is kept and cannot be climbed out of', async (t) => {
    const prefixed = { ...resolved, server: new URL(`${api.url}/k8s/clusters/c-1/`) };
    const res = await forwardKubeRequest(prefixed, { method: 'GET', path: '/api/v1?x=1', headers: {} });
    await text(res.body);
    t.equal(api.requests.at(-1)!.url, '/k8s/clusters/c-1/api/v1?x=1');
    for (const path of ['/../c-2/api', '/api/%2e%2E/x', '/api/%2fetc', '//evil/api', 'http://evil/api', 'api/v1', '/api v1', '/api/%zz', '/api#frag']) {
      await rejectsWith(t, forwardKubeRequest(prefixed, { method: 'GET', path, headers: {} }), 'UPLINK_ERR_BAD_REQUEST', JSON.stringify(path));
    }
  });

  t.test('methods, header and body limits', async (t) => {
    const o = parseKubeProxyOptions({ maxPathBytes: 64, maxRequestHeaders: 4, maxRequestHeaderBytes: 100, maxRequestBodyBytes: 16 });
    await rejectsWith(t, forwardKubeRequest(resolved, { method: 'CONNECT', path: '/', headers: {} }, o), 'UPLINK_ERR_BAD_REQUEST', 'CONNECT');
    await rejectsWith(t, forwardKubeRequest(resolved, { method: 'TRACE', path: '/', headers: {} }, o), 'UPLINK_ERR_BAD_REQUEST', 'TRACE');
    const long = await rejectsWith(t, forwardKubeRequest(resolved, { method: 'GET', path: `/${'a'.repeat(64)}`, headers: {} }, o), 'UPLINK_ERR_PAYLOAD_TOO_LARGE', 'long path');
    t.equal(long?.limit, 'maxPathBytes');
    const many = await rejectsWith(t, forwardKubeRequest(resolved, { method: 'GET', path: '/', headers: { a: '1', b: '2', c: '3', d: '4', e: '5' } }, o), 'UPLINK_ERR_PAYLOAD_TOO_LARGE', 'header count');
    t.equal(many?.limit, 'maxRequestHeaders');
    const big = await rejectsWith(t, forwardKubeRequest(resolved, { method: 'GET', path: '/', headers: { a: 'x'.repeat(100) } }, o), 'UPLINK_ERR_PAYLOAD_TOO_LARGE', 'header bytes');
    t.equal(big?.limit, 'maxRequestHeaderBytes');
    await rejectsWith(t, forwardKubeRequest(resolved, { method: 'GET', path: '/', headers: { 'x-bad': 'a\r\nInjected: 1' } }, o), 'UPLINK_ERR_BAD_REQUEST', 'CRLF in a header value');
    await rejectsWith(t, forwardKubeRequest(resolved, { method: 'POST', path: '/', headers: { 'content-length': '1e3' }, body: Readable.from([]) }, o), 'UPLINK_ERR_BAD_REQUEST', 'content-length not a number');
    const declared = await rejectsWith(t, forwardKubeRequest(resolved, { method: 'POST', path: '/api/v1/namespaces/default/pods', headers: { 'content-length': '17' }, body: Readable.from([Buffer.alloc(17)]) }, o), 'UPLINK_ERR_PAYLOAD_TOO_LARGE', 'declared body');
    t.equal(declared?.limit, 'maxRequestBodyBytes');
    const streamed = await rejectsWith(t, forwardKubeRequest(resolved, { method: 'POST', path: '/api/v1/namespaces/default/pods', headers: {}, body: Readable.from([Buffer.alloc(10), Buffer.alloc(10)]) }, o), 'UPLINK_ERR_PAYLOAD_TOO_LARGE', 'streamed body');
    t.equal(streamed?.limit, 'maxRequestBodyBytes');
    const ok = await forwardKubeRequest(resolved, { method: 'POST', path: '/api/v1/namespaces/default/pods', headers: { 'content-type': 'application/json' }, body: Readable.from([Buffer.from('{}')]) }, o);
    t.equal(ok.status, 405, 'a body within the limit reaches the server (which refuses POST)');
    await text(ok.body);
    t.throws(() => parseKubeProxyOptions({ connectTimeoutMS: 5 } as never), { code: 'UPLINK_ERR_CONFIG_INVALID' }, 'misspelt option refused');
    t.throws(() => parseKubeProxyOptions({ maxPathBytes: -1 }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  });

  t.test('watch streams, and aborting cancels it upstream', async (t) => {
    const abort = new AbortController();
    const res = await forwardKubeRequest(resolved, { method: 'GET', path: '/api/v1/namespaces/default/pods?watch=true&resourceVersion=0', headers: {}, signal: abort.signal });
    t.equal(res.status, 200);
    const lines: string[] = [];
    let buf = '';
    const got = new Promise<void>((resolve) => res.body.on('data', (c: Buffer) => {
      buf += c.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      lines.push(...parts);
      if (lines.length === 2) resolve();
    }));
    api.addPod('web-w');
    await got;
    t.same(lines.map((l) => { const e = JSON.parse(l) as { type: string; object: { metadata: { name: string } } }; return `${e.type} ${e.object.metadata.name}`; }), ['ADDED web-1', 'ADDED web-w']);
    t.equal(api.watchCount, 1);
    abort.abort(new Error('relay stream reset'));
    const deadline = Date.now() + 5000;
    while (api.watchCount !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    t.equal(api.watchCount, 0, 'the API server saw the watch end');
    t.ok(res.body.destroyed);
  });

  t.test('upgrades', async (t) => {
    const ws = await forwardKubeUpgrade(resolved, {
      method: 'GET', path: '/api/v1/namespaces/default/pods/web-1/exec?command=echo&command=up&stdout=true',
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-protocol': 'v5.channel.k8s.io', authorization: 'Bearer relay' },
    });
    t.equal(ws.upgraded, true);
    if (ws.upgraded) {
      t.equal(ws.headers['sec-websocket-accept'], 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=', 'the handshake passed through untouched');
      t.equal(ws.headers['sec-websocket-protocol'], 'v5.channel.k8s.io');
      t.equal(String(ws.headers.upgrade).toLowerCase(), 'websocket');
      // Read raw frames: an unmasked binary frame [0x82, len, channel, ...data].
      const chunks: Buffer[] = ws.head.length ? [ws.head] : [];
      await new Promise<void>((resolve) => {
        const check = (): void => { if (Buffer.concat(chunks).length >= 6) resolve(); };
        ws.socket.on('data', (c: Buffer) => { chunks.push(c); check(); });
        check();
      });
      ws.socket.destroy();
      const all = Buffer.concat(chunks);
      t.same([...all.subarray(0, 6)], [0x82, 4, 1, ...Buffer.from('up\n')], 'first frame: stdout "up\\n"');
    }
    t.equal(api.requests.at(-1)!.headers.authorization, `Bearer ${api.token}`);

    const missing = await forwardKubeUpgrade(resolved, { method: 'GET', path: '/api/v1/namespaces/default/pods/nope/exec?command=x', headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-protocol': 'v5.channel.k8s.io' } });
    t.equal(missing.upgraded, false);
    t.equal(missing.status, 404);
    if (!missing.upgraded) t.equal((JSON.parse(await text(missing.body)) as { message: string }).message, 'pods "nope" not found');

    const spdy = await forwardKubeUpgrade(resolved, { method: 'POST', path: '/api/v1/namespaces/default/pods/web-1/exec?command=x', headers: { connection: 'Upgrade', upgrade: 'SPDY/3.1' } });
    t.same([spdy.upgraded, spdy.status], [false, 400], "SPDY is forwarded; this server's refusal comes back");
    if (!spdy.upgraded) await text(spdy.body);
    await rejectsWith(t, forwardKubeUpgrade(resolved, { method: 'GET', path: '/', headers: { upgrade: 'h2c' } }), 'UPLINK_ERR_BAD_REQUEST', 'h2c upgrade');
    await rejectsWith(t, forwardKubeUpgrade(resolved, { method: 'GET', path: '/', headers: {} }), 'UPLINK_ERR_BAD_REQUEST', 'no upgrade header');
  });

  t.test('unreachable, untrusted and silent servers', async (t) => {
    const refused = await rejectsWith(t, forwardKubeRequest({ server: new URL(`https://127.0.0.1:${await freePort()}`), headers: {} }, { method: 'GET', path: '/version', headers: {} }), 'UPLINK_ERR_KUBE_UNREACHABLE', 'refused');
    t.equal(refused?.reason, 'ECONNREFUSED');

    const other = await KubeApiServer.start();
    t.teardown(() => other.close());
    const untrusted = await rejectsWith(t, forwardKubeRequest({ ...resolved, ca: other.caPem! }, { method: 'GET', path: '/version', headers: {} }), 'UPLINK_ERR_KUBE_UNREACHABLE', 'certificate from another CA');
    t.match(String(untrusted?.reason), /VERIFY|CERT|SIGNATURE/);
    const wrongName = await rejectsWith(t, forwardKubeRequest({ ...resolved, tlsServerName: 'kubernetes.default.svc' }, { method: 'GET', path: '/version', headers: {} }), 'UPLINK_ERR_KUBE_UNREACHABLE', 'name mismatch');
    t.equal(wrongName?.reason, 'ERR_TLS_CERT_ALTNAME_INVALID');
    await rejectsWith(t, forwardKubeRequest({ ...resolved, ca: Buffer.from('not a pem') , clientCert: Buffer.from('x'), clientKey: Buffer.from('y') }, { method: 'GET', path: '/version', headers: {} }), 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', 'unusable TLS material');

    // Accepts TCP, never speaks TLS: the connect timeout.
    const mute = createNetServer((s: Socket) => { s.on('error', () => undefined); });
    const sockets = new Set<Socket>();
    mute.on('connection', (s: Socket) => sockets.add(s));
    const mutePort = await listen(mute);
    t.teardown(() => { for (const s of sockets) s.destroy(); mute.close(); });
    const o = parseKubeProxyOptions({ connectTimeoutMs: 150, headersTimeoutMs: 5000 });
    const connect = await rejectsWith(t, forwardKubeRequest({ server: new URL(`https://127.0.0.1:${mutePort}`), headers: {} }, { method: 'GET', path: '/version', headers: {} }, o), 'UPLINK_ERR_KUBE_TIMEOUT', 'no TLS handshake');
    t.same(connect, { phase: 'connect', limit: 'connectTimeoutMs' });

    // Reads the request, never answers: the headers timeout.
    const silent = createHttpServer(() => undefined);
    const silentPort = await listen(silent);
    t.teardown(() => { silent.closeAllConnections(); silent.close(); });
    const h = await rejectsWith(t, forwardKubeRequest({ server: new URL(`http://127.0.0.1:${silentPort}`), headers: {} }, { method: 'GET', path: '/version', headers: {} }, parseKubeProxyOptions({ headersTimeoutMs: 150 })), 'UPLINK_ERR_KUBE_TIMEOUT', 'no response head');
    t.same(h, { phase: 'headers', limit: 'headersTimeoutMs' });

    const abort = new AbortController();
    const pending = forwardKubeRequest({ server: new URL(`http://127.0.0.1:${silentPort}`), headers: {} }, { method: 'GET', path: '/version', headers: {}, signal: abort.signal });
    abort.abort(new Error('stream reset'));
    const err = await pending.catch((e: unknown) => e);
    t.equal((err as Error).message, 'stream reset', 'an abort before the head rejects with its reason');
  });
});
