import t, { type Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeApiServer } from '../../helpers/kube-api-server.js';
import { needTools } from '../../helpers/tools.js';
import { resolveKubeconfig, readLimitedFile } from '../../../agent/ops/kube-kubeconfig.js';
import { forwardKubeRequest } from '../../../agent/ops/kube-proxy.js';
import { KUBE_RESOLVE_DEFAULTS } from '../../../agent/ops/kube-target.js';
import { isUplinkError, type ErrorCode } from '../../../shared/errors.js';

const LIMITS = { maxKubeconfigBytes: KUBE_RESOLVE_DEFAULTS.maxKubeconfigBytes, maxTokenFileBytes: 64, maxPemBytes: KUBE_RESOLVE_DEFAULTS.maxPemBytes };

t.test('JSON kubeconfig targets', async (t) => {
  if (!needTools(t, ['openssl'])) return;
  const dir = mkdtempSync(join(tmpdir(), 'uplink-kubeconfig-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const api = await KubeApiServer.start();
  t.teardown(() => api.close());
  api.addPod('web-1');
  const { cert, key } = api.issueClientCert('uplink-agent');
  writeFileSync(join(dir, 'ca.crt'), api.caPem!);
  writeFileSync(join(dir, 'client.crt'), cert);
  writeFileSync(join(dir, 'client.key'), key);
  writeFileSync(join(dir, 'token'), `${api.token}\n`);

  const base = {
    apiVersion: 'v1', kind: 'Config', preferences: {}, 'current-context': 'by-token',
    clusters: [
      { name: 'test', cluster: { server: api.url, 'certificate-authority-data': api.caPem!.toString('base64') } },
      { name: 'test-files', cluster: { server: api.url, 'certificate-authority': 'ca.crt', extensions: [] } },
    ],
    users: [
      { name: 'token-user', user: { token: api.token } },
      { name: 'cert-user', user: { 'client-certificate': 'client.crt', 'client-key': join(dir, 'client.key') } },
      { name: 'cert-data-user', user: { 'client-certificate-data': cert.toString('base64'), 'client-key-data': key.toString('base64') } },
      { name: 'file-user', user: { tokenFile: 'token' } },
    ],
    contexts: [
      { name: 'by-token', context: { cluster: 'test', user: 'token-user', namespace: 'default' } },
      { name: 'by-cert', context: { cluster: 'test-files', user: 'cert-user' } },
      { name: 'by-cert-data', context: { cluster: 'test', user: 'cert-data-user' } },
      { name: 'by-file', context: { cluster: 'test-files', user: 'file-user' } },
    ],
  };
  const write = (name: string, cfg: unknown): string => {
    const p = join(dir, name);
    writeFileSync(p, typeof cfg === 'string' ? cfg : JSON.stringify(cfg, null, 2));
    return p;
  };
  const path = write('kubeconfig.json', base);
  const list = async (ctx: string | undefined): Promise<number> => {
    const r = await resolveKubeconfig(path, ctx, LIMITS);
    const res = await forwardKubeRequest(r, { method: 'GET', path: '/api/v1/namespaces/default/pods', headers: {} });
    res.body.resume();
    return res.status;
  };

  t.test('every supported credential reaches the API server', async (t) => {
    const r = await resolveKubeconfig(path, undefined, LIMITS);
    t.equal(r.server.href, `${api.url}/`);
    t.same(r.ca, api.caPem, 'CA from certificate-authority-data');
    t.same(r.headers, { authorization: `Bearer ${api.token}` }, 'current-context used when none named');
    t.equal(await list(undefined), 200);
    const c = await resolveKubeconfig(path, 'by-cert', LIMITS);
    t.same([c.clientCert, c.clientKey, c.headers], [cert, key, {}], 'client certificate files, relative to the kubeconfig');
    t.equal(await list('by-cert'), 200);
    t.equal(await list('by-cert-data'), 200);
    t.equal(await list('by-file'), 200);
    writeFileSync(join(dir, 'token'), 'rotated-token');
    t.same((await resolveKubeconfig(path, 'by-file', LIMITS)).headers, { authorization: 'Bearer rotated-token' }, 'token file re-read on every resolve');
    t.equal(await list('by-file'), 401, 'and the rotated (here: wrong) token is what the server sees');
  });

  const expectCode = async (t: Test, p: string, ctx: string | undefined, code: ErrorCode, detail: Record<string, unknown>, what: string): Promise<void> => {
    const err = await resolveKubeconfig(p, ctx, LIMITS).then(() => undefined, (e: unknown) => e);
    t.ok(isUplinkError(err, code), `${what}: ${code} (got ${(err as { code?: string } | undefined)?.code ?? 'success'})`);
    t.match((err as { details?: unknown } | undefined)?.details, detail, `${what}: details`);
  };

  t.test('refusals', async (t) => {
    const yaml = write('kubeconfig.yaml', 'apiVersion: v1\nkind: Config\nclusters: []\n');
    await expectCode(t, yaml, undefined, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', { reason: 'not-json' }, 'YAML');
    await expectCode(t, write('broken.json', '{"clusters": ['), undefined, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', { reason: 'not-json' }, 'truncated JSON');
    await expectCode(t, write('schema.json', { clusters: [{ name: 'x', cluster: { server: 7 } }] }), undefined, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', { reason: 'schema', field: 'clusters.0.cluster.server' }, 'wrong type');
    await expectCode(t, join(dir, 'absent.json'), undefined, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', { reason: 'unreadable' }, 'missing file');
    await expectCode(t, path, 'nope', 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', { reason: 'context', context: 'nope' }, 'unknown context');
    await expectCode(t, write('nocur.json', { ...base, 'current-context': undefined }), undefined, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', { reason: 'context' }, 'no current-context');
    await expectCode(t, write('nocluster.json', { ...base, clusters: [] }), undefined, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', { reason: 'cluster', cluster: 'test' }, 'undefined cluster');
    await expectCode(t, write('nouser.json', { ...base, users: [] }), undefined, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', { reason: 'user', user: 'token-user' }, 'undefined user');

    const withUser = (user: Record<string, unknown>): typeof base => ({ ...base, users: [{ name: 'token-user', user } as never] });
    await expectCode(t, write('exec.json', withUser({ exec: { command: 'aws', args: ['eks', 'get-token'] } })), undefined, 'UPLINK_ERR_KUBE_AUTH_UNSUPPORTED', { method: 'exec' }, 'exec plugin');
    await expectCode(t, write('ap.json', withUser({ 'auth-provider': { name: 'oidc' } })), undefined, 'UPLINK_ERR_KUBE_AUTH_UNSUPPORTED', { method: 'auth-provider' }, 'auth-provider');
    await expectCode(t, write('basic.json', withUser({ username: 'admin', password: 'x' })), undefined, 'UPLINK_ERR_KUBE_AUTH_UNSUPPORTED', { method: 'username' }, 'basic auth');
    await expectCode(t, write('as.json', withUser({ token: 'x', as: 'system:admin' })), undefined, 'UPLINK_ERR_KUBE_AUTH_UNSUPPORTED', { method: 'as' }, 'impersonation');
    await expectCode(t, write('half.json', withUser({ 'client-certificate': 'client.crt' })), undefined, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', { reason: 'user' }, 'certificate without key');
    await expectCode(t, write('crlf.json', withUser({ token: 'abc\r\nX-Injected: 1' })), undefined, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', { reason: 'token' }, 'header injection via token');
    writeFileSync(join(dir, 'big-token'), 'x'.repeat(65));
    await expectCode(t, write('bigtok.json', withUser({ tokenFile: 'big-token' })), undefined, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', { reason: 'too-large', limit: 64 }, 'token file over its limit');

    const withCluster = (cluster: Record<string, unknown>): typeof base => ({ ...base, clusters: [{ name: 'test', cluster } as never] });
    await expectCode(t, write('insecure.json', withCluster({ server: api.url, 'insecure-skip-tls-verify': true })), undefined, 'UPLINK_ERR_KUBE_AUTH_UNSUPPORTED', { method: 'insecure-skip-tls-verify' }, 'insecure-skip-tls-verify');
    await expectCode(t, write('http.json', withCluster({ server: 'http://127.0.0.1:8080' })), undefined, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', { reason: 'server' }, 'plain http server');
    await expectCode(t, write('proxy.json', withCluster({ server: api.url, 'proxy-url': 'http://proxy:3128' })), undefined, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', { reason: 'proxy-url' }, 'proxy-url');
    await expectCode(t, write('badca.json', withCluster({ server: api.url, 'certificate-authority-data': Buffer.from('not a certificate').toString('base64') })), undefined, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', { reason: 'ca' }, 'CA that is not a certificate');
    await expectCode(t, write('badb64.json', withCluster({ server: api.url, 'certificate-authority-data': '%%%' })), undefined, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE', { reason: 'ca' }, 'CA data that is not base64');
  });

  t.test('file size limits are enforced while reading', async (t) => {
    const big = write('big.json', `{"pad": "${'x'.repeat(200)}"}`);
    const err = await resolveKubeconfig(big, undefined, { ...LIMITS, maxKubeconfigBytes: 100 }).catch((e: unknown) => e);
    t.ok(isUplinkError(err, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE'));
    t.match((err as { details?: unknown }).details, { reason: 'too-large', limit: 100 });
    t.equal((await readLimitedFile(big, 1000, 'file')).length, 211, 'within the limit: the whole file');
    const dirErr = await readLimitedFile(dir, 1000, 'file').catch((e: unknown) => e);
    t.match((dirErr as { details?: unknown }).details, { reason: 'unreadable' }, 'a directory is unreadable, not a crash');
  });
});
