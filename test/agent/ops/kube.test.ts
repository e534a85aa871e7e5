/**
 * The agent's kube handlers through the real tunnel (in-process relay and agents): the
 * framing contract (a `response` control frame, then the body), upstream failures as an
 * `error` frame, and the refusals that happen before a byte reaches the cluster.
 */
import t from 'tap';
import type { Duplex } from 'node:stream';
import { KubeApiServer } from '../../helpers/kube-api-server.js';
import { needTools } from '../../helpers/tools.js';
import { adminClient, createAppliance, startAgent, startRelay } from '../../helpers/cluster.js';
import { CHANNEL, FrameDecoder, parseControl, type ControlMessage, type Frame } from '../../../shared/frames.js';

interface Answer { controls: ControlMessage[]; body: string }

/** Collect every frame until the agent ends the stream. */
function collect(duplex: Duplex): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const controls: ControlMessage[] = [];
    const body: Buffer[] = [];
    const decoder = new FrameDecoder();
    duplex.on('error', reject);
    duplex.pipe(decoder);
    decoder.on('data', (f: Frame) => {
      if (f.channel === CHANNEL.control) controls.push(parseControl(f.payload));
      else if (f.channel === CHANNEL.stdout) body.push(f.payload);
      else reject(new Error(`unexpected channel ${f.channel}`));
    });
    decoder.on('end', () => resolve({ controls, body: Buffer.concat(body).toString('utf8') }));
    decoder.on('error', reject);
    // No eof: a request without a body sends nothing (the agent does not wait for input).
  });
}

t.test('kube handlers', async (t) => {
  if (!needTools(t, ['openssl'])) return;
  const api = await KubeApiServer.start();
  t.teardown(() => api.close());
  api.addPod('web-1');
  const test = { kind: 'static', server: api.url, caData: api.caPem!.toString('base64'), token: api.token };
  // Port 1 on loopback: nothing listens, the connection is refused at once.
  const dead = { kind: 'static', server: 'https://127.0.0.1:1', caData: api.caPem!.toString('base64'), token: 'x' };
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const on = await createAppliance(client, 'kube-on');
  const off = await createAppliance(client, 'kube-off');
  const unapproved = await createAppliance(client, 'kube-unapproved');
  await startAgent(t, relay, on, { local: { operate: 'enabled' }, kube: { targets: { test, dead } } });
  await startAgent(t, relay, off, { local: { operate: 'enabled' }, operations: { kube: { enabled: false } }, kube: { targets: { test } } });
  await startAgent(t, relay, unapproved, { kube: { targets: { test } } });
  const get = (path: string, cluster = 'test') => ({ cluster, method: 'GET', path, headers: { accept: 'application/json' }, body: false });

  t.test('a plain request: response frame, then the body', async (t) => {
    const a = await collect(await client.openOp('kube-on', 'kube', get('/api/v1/namespaces/default/pods')));
    t.equal(a.controls.length, 1);
    const head = a.controls[0]!;
    t.equal(head.type, 'response');
    if (head.type !== 'response') return;
    t.equal(head.status, 200);
    t.equal(head.headers['content-type'], 'application/json');
    t.equal(head.headers['transfer-encoding'], undefined, 'hop-by-hop headers stay on the agent');
    const list = JSON.parse(a.body) as { kind: string; items: Array<{ metadata: { name: string } }> };
    t.same([list.kind, list.items.map((p) => p.metadata.name)], ['PodList', ['web-1']]);
    t.equal(api.requests.at(-1)?.headers.authorization, `Bearer ${api.token}`);
  });

  t.test("the API server's refusal passes through as its status and body", async (t) => {
    const a = await collect(await client.openOp('kube-on', 'kube', get('/api/v1/namespaces/default/pods/nope')));
    t.match(a.controls, [{ type: 'response', status: 404 }]);
    t.match(JSON.parse(a.body), { kind: 'Status', code: 404, message: 'pods "nope" not found' });
  });

  t.test('an unreachable cluster is an error frame after the 200', async (t) => {
    const a = await collect(await client.openOp('kube-on', 'kube', get('/version', 'dead')));
    t.match(a.controls, [{ type: 'error', code: 'UPLINK_ERR_KUBE_UNREACHABLE' }]);
    t.equal(a.body, '');
  });

  t.test('kube-upgrade to a missing pod answers the Status, not a 101', async (t) => {
    const spec = { cluster: 'test', method: 'GET', path: '/api/v1/namespaces/default/pods/nope/exec?command=echo&stdout=true', headers: { upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-protocol': 'v5.channel.k8s.io' }, body: false };
    const a = await collect(await client.openOp('kube-on', 'kube-upgrade', spec));
    t.match(a.controls, [{ type: 'response', status: 404 }]);
    t.match(JSON.parse(a.body), { kind: 'Status', message: 'pods "nope" not found' });
  });

  t.test('refusals before anything reaches the cluster', async (t) => {
    const before = api.requests.length;
    await t.rejects(client.openOp('kube-on', 'kube', get('/version', 'nope')), { code: 'UPLINK_ERR_KUBE_TARGET_UNKNOWN', message: 'no Kubernetes target "nope" on this agent (known: dead, test)' });
    await t.rejects(client.openOp('kube-on', 'kube', get('/version', 'NOT A NAME')), { code: 'UPLINK_ERR_BAD_REQUEST' });
    await t.rejects(client.openOp('kube-on', 'kube', { ...get('/version'), extra: 1 }), { code: 'UPLINK_ERR_BAD_REQUEST', message: /unrecognized|extra/i });
    await t.rejects(client.openOp('kube-on', 'kube', get('version')), { code: 'UPLINK_ERR_BAD_REQUEST', message: 'kube spec.path: must start with "/"' });
    await t.rejects(client.openOp('kube-off', 'kube', get('/version')), { code: 'UPLINK_ERR_OPERATION_DISABLED' });
    await t.rejects(client.openOp('kube-off', 'kube-upgrade', get('/version')), { code: 'UPLINK_ERR_OPERATION_DISABLED' });
    await t.rejects(client.openOp('kube-unapproved', 'kube', get('/version')), { code: 'UPLINK_ERR_PHASE_NOT_APPROVED' });
    await t.rejects(client.openOp('kube-on', 'kube-upgrade', get('/version')), { code: 'UPLINK_ERR_BAD_REQUEST', message: /upgrade "" is not forwarded/ });
    t.equal(api.requests.length, before, 'the API server saw none of them');
  });
});
