import t from 'tap';
import type { IncomingMessage } from 'node:http';
import { UPGRADE_RESPONSE_KEEP, checkMethod, checkUpgradeProtocol, requestHeaders, responseHeaders, targetPath } from '../../../agent/ops/kube-request-check.js';

const LIMITS = { maxPathBytes: 100, maxRequestHeaders: 20, maxRequestHeaderBytes: 1000 };

t.test('request headers: end-to-end only, never the caller credentials', async (t) => {
  const out = requestHeaders({
    Authorization: 'Bearer relay', Connection: 'keep-alive, X-Secret-Hop', 'X-Secret-Hop': 'a', 'Keep-Alive': '1', TE: 'trailers', Trailer: 'x',
    'Transfer-Encoding': 'chunked', Upgrade: 'websocket', Host: 'relay', 'Proxy-Authorization': 'x', 'Proxy-Connection': 'x', 'HTTP2-Settings': 'x',
    ':method': 'GET', ':path': '/api', Accept: 'application/json', 'Content-Type': 'application/json', 'X-Multi': ['a', 'b'], 'x-undefined': undefined,
  }, LIMITS);
  t.same(out, { accept: 'application/json', 'content-type': 'application/json', 'x-multi': ['a', 'b'] });
});

t.test('request header limits count bytes and fields; malformed names and values refused', async (t) => {
  t.throws(() => requestHeaders({ a: 'x'.repeat(1000) }, LIMITS), { code: 'UPLINK_ERR_PAYLOAD_TOO_LARGE', details: { limit: 'maxRequestHeaderBytes' } });
  t.same(requestHeaders({ a: 'x'.repeat(999) }, LIMITS), { a: 'x'.repeat(999) }, 'exactly at the limit is fine');
  t.throws(() => requestHeaders({ a: ['x'.repeat(500), 'y'.repeat(500)] }, LIMITS), { code: 'UPLINK_ERR_PAYLOAD_TOO_LARGE' }, 'repeated fields add up');
  t.throws(() => requestHeaders({ 'bad name': 'x' }, LIMITS), { code: 'UPLINK_ERR_BAD_REQUEST' });
  t.throws(() => requestHeaders({ a: 'x\ny' }, LIMITS), { code: 'UPLINK_ERR_BAD_REQUEST' });
  t.throws(() => requestHeaders({ a: 'x\0y' }, LIMITS), { code: 'UPLINK_ERR_BAD_REQUEST' });
});

t.test('response headers', async (t) => {
  const res = { headers: { connection: 'Upgrade, x-hop', upgrade: 'websocket', 'x-hop': '1', 'keep-alive': 'timeout=5', 'transfer-encoding': 'chunked', 'content-type': 'application/json', 'set-cookie': ['a=1', 'b=2'] } } as unknown as IncomingMessage;
  t.same(responseHeaders(res), { 'content-type': 'application/json', 'set-cookie': ['a=1', 'b=2'] });
  t.same(responseHeaders(res, UPGRADE_RESPONSE_KEEP), { connection: 'Upgrade, x-hop', upgrade: 'websocket', 'content-type': 'application/json', 'set-cookie': ['a=1', 'b=2'] }, 'a 101 keeps what completes the handshake');
});

t.test('paths', async (t) => {
  t.equal(targetPath(new URL('https://k/'), '/api/v1/pods?watch=1', LIMITS), '/api/v1/pods?watch=1');
  t.equal(targetPath(new URL('https://k/proxy/c1//'), '/api', LIMITS), '/proxy/c1/api', 'prefix joined without doubled slashes');
  t.equal(targetPath(new URL('https://k'), '/api?labelSelector=a%3D..', LIMITS), '/api?labelSelector=a%3D..', 'dots in the query are data');
  t.equal(targetPath(new URL('https://k'), '/api/v1/namespaces/default/pods/a..b', LIMITS), '/api/v1/namespaces/default/pods/a..b', 'dots inside a name are fine');
  t.throws(() => targetPath(new URL('https://k'), `/${'a'.repeat(100)}`, LIMITS), { code: 'UPLINK_ERR_PAYLOAD_TOO_LARGE', details: { limit: 'maxPathBytes' } });
  for (const bad of ['/a/./b', '/a/../b', '/a/%2E/b', '/a/%2e%2e', '/a%2fb', '', '*', '/\u00e9']) {
    t.throws(() => targetPath(new URL('https://k'), bad, LIMITS), { code: 'UPLINK_ERR_BAD_REQUEST' }, JSON.stringify(bad));
  }
});

t.test('methods and upgrade protocols', async (t) => {
  t.equal(checkMethod('patch'), 'PATCH');
  for (const m of ['CONNECT', 'TRACE', 'PROPFIND', 'GET ', '']) t.throws(() => checkMethod(m), { code: 'UPLINK_ERR_BAD_REQUEST' }, JSON.stringify(m));
  t.equal(checkUpgradeProtocol('websocket'), 'websocket');
  t.equal(checkUpgradeProtocol('WebSocket'), 'WebSocket');
  t.equal(checkUpgradeProtocol('SPDY/3.1'), 'SPDY/3.1');
  for (const u of ['h2c', 'websocket, h2c', undefined, ['websocket', 'websocket']]) t.throws(() => checkUpgradeProtocol(u), { code: 'UPLINK_ERR_BAD_REQUEST' }, JSON.stringify(u));
});
