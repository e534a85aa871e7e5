import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeApiServer } from '../../helpers/kube-api-server.js';
import { needTools } from '../../helpers/tools.js';
import { parseKubeTargets, resolveKubeTarget, selectKubeTarget } from '../../../agent/ops/kube-target.js';
import { isUplinkError } from '../../../shared/errors.js';

const GOOD = {
  prod: { kind: 'eks', clusterName: 'prod-cluster', region: 'eu-west-1' },
  'on-prem': { kind: 'kubeconfig', path: '/etc/uplink/kubeconfig.json', context: 'admin' },
  lab: { kind: 'static', server: 'https://10.0.0.1:6443', token: 'abc', insecureSkipTlsVerify: false },
};

t.test('parseKubeTargets: strict schema, named fields, frozen', async (t) => {
  const targets = parseKubeTargets(GOOD);
  t.same(targets, GOOD);
  t.ok(Object.isFrozen(targets) && Object.isFrozen(targets.prod), 'frozen');
  t.same(parseKubeTargets(undefined), {}, 'absent section: no targets');

  const cases: Array<[string, unknown, string]> = [
    ['unknown key', { prod: { ...GOOD.prod, clustername: 'x' } }, 'kube.targets.prod'],
    ['unknown kind', { prod: { kind: 'gke', clusterName: 'x' } }, 'kube.targets.prod.kind'],
    ['bad target name', { Prod_1: GOOD.prod }, 'kube.targets.Prod_1'],
    ['bad region', { prod: { ...GOOD.prod, region: 'europe' } }, 'kube.targets.prod.region'],
    ['bad cluster name', { prod: { ...GOOD.prod, clusterName: '-x' } }, 'kube.targets.prod.clusterName'],
    ['skip TLS verify', { lab: { ...GOOD.lab, insecureSkipTlsVerify: true } }, 'kube.targets.lab.insecureSkipTlsVerify'],
    ['plain http', { lab: { ...GOOD.lab, server: 'http://10.0.0.1:8080' } }, 'kube.targets.lab.server'],
    ['token and tokenFile', { lab: { ...GOOD.lab, tokenFile: '/t' } }, 'kube.targets.lab.tokenFile'],
    ['empty kubeconfig path', { x: { kind: 'kubeconfig', path: '' } }, 'kube.targets.x.path'],
  ];
  for (const [what, input, field] of cases) {
    const err = (() => { try { parseKubeTargets(input); return undefined; } catch (e) { return e; } })();
    t.ok(isUplinkError(err, 'UPLINK_ERR_CONFIG_INVALID'), `${what}: refused`);
    t.equal((err as { details?: { field?: string } } | undefined)?.details?.field, field, `${what}: names ${field}`);
  }
});

t.test('selectKubeTarget', async (t) => {
  const targets = parseKubeTargets(GOOD);
  t.same(selectKubeTarget(targets, 'lab'), { name: 'lab', target: GOOD.lab });
  t.same(selectKubeTarget(parseKubeTargets({ lab: GOOD.lab }), undefined), { name: 'lab', target: GOOD.lab }, 'the only target is the default');
  t.throws(() => selectKubeTarget(targets, undefined), { code: 'UPLINK_ERR_USAGE', details: { known: ['lab', 'on-prem', 'prod'] } }, 'several targets: one must be named');
  t.throws(() => selectKubeTarget({}, undefined), { code: 'UPLINK_ERR_USAGE' });
  t.throws(() => selectKubeTarget(targets, 'staging'), { code: 'UPLINK_ERR_KUBE_TARGET_UNKNOWN', details: { target: 'staging', known: ['lab', 'on-prem', 'prod'] } });
  t.throws(() => selectKubeTarget(targets, 'constructor'), { code: 'UPLINK_ERR_KUBE_TARGET_UNKNOWN' }, 'no prototype names');
});

t.test('static targets', async (t) => {
  if (!needTools(t, ['openssl'])) return;
  const dir = mkdtempSync(join(tmpdir(), 'uplink-kube-target-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const api = await KubeApiServer.start();
  t.teardown(() => api.close());
  const caData = api.caPem!.toString('base64');

  const r = await resolveKubeTarget({ kind: 'static', server: `${api.url}/prefix`, caData, token: 'tok-1', tlsServerName: 'localhost' }, undefined);
  t.equal(r.server.href, `${api.url}/prefix`);
  t.same(r.ca, api.caPem);
  t.same(r.headers, { authorization: 'Bearer tok-1' });
  t.equal(r.tlsServerName, 'localhost');
  t.equal(r.expiresAt, undefined, 'static credentials do not expire');

  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, '  first\n');
  const target = { kind: 'static', server: api.url, caData, tokenFile } as const;
  t.same((await resolveKubeTarget(target, undefined)).headers, { authorization: 'Bearer first' }, 'token file trimmed');
  writeFileSync(tokenFile, 'second');
  t.same((await resolveKubeTarget(target, undefined)).headers, { authorization: 'Bearer second' }, 'rotation picked up');
  writeFileSync(tokenFile, 'x'.repeat(100));
  const big = await resolveKubeTarget(target, undefined, { maxTokenFileBytes: 99 }).catch((e: unknown) => e);
  t.ok(isUplinkError(big, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE'), 'token file over maxTokenFileBytes');
  writeFileSync(tokenFile, '\n');
  const empty = await resolveKubeTarget(target, undefined).catch((e: unknown) => e);
  t.ok(isUplinkError(empty, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE'), 'empty token file');

  const none = await resolveKubeTarget({ kind: 'static', server: api.url }, undefined);
  t.same([none.headers, none.ca], [{}, undefined], 'no token, system roots');

  const badCa = await resolveKubeTarget({ kind: 'static', server: api.url, caData: Buffer.from('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n').toString('base64') }, undefined).catch((e: unknown) => e);
  t.ok(isUplinkError(badCa, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE'), 'a CA that does not parse is refused at resolve time');
  const invalid = await resolveKubeTarget({ kind: 'static', server: 'ftp://x' } as never, undefined).catch((e: unknown) => e);
  t.ok(isUplinkError(invalid, 'UPLINK_ERR_CONFIG_INVALID'), 'an unvalidated target is validated again');
  const missing = await resolveKubeTarget({ kind: 'kubeconfig', path: join(dir, 'none.json') }, undefined).catch((e: unknown) => e);
  t.ok(isUplinkError(missing, 'UPLINK_ERR_KUBE_TARGET_UNUSABLE'), 'kubeconfig targets go through the kubeconfig reader');
});
