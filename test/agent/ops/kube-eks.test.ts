import t from 'tap';
import { execFile } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import { promisify } from 'node:util';
import { CreateClusterCommand, DeleteClusterCommand, EKSClient } from '@aws-sdk/client-eks';
import { startMoto } from '../../helpers/moto.js';
import { freePort } from '../../helpers/net.js';
import { requireTools } from '../../helpers/tools.js';
import { EKS_TOKEN_PREFIX, KubeAuthCache, makeEksToken, stsHostForRegion } from '../../../agent/ops/kube-eks.js';
import { resolveKubeTarget } from '../../../agent/ops/kube-target.js';
import { isUplinkError } from '../../../shared/errors.js';

const CREDS = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };

/** Decode a token back into the presigned URL. */
function tokenUrl(authorization: string | undefined): URL {
  const token = String(authorization).replace(/^Bearer /, '');
  if (!token.startsWith(EKS_TOKEN_PREFIX)) throw new Error(`not an EKS token: ${token.slice(0, 20)}`);
  const b64 = token.slice(EKS_TOKEN_PREFIX.length);
  if (!/^[A-Za-z0-9_-]+$/.test(b64)) throw new Error('token is not unpadded base64url');
  return new URL(Buffer.from(b64, 'base64url').toString('utf8'));
}

/**
 * An independent SigV4 query-signature check (node:crypto only), as STS would do it, over
 * the signed headers EKS sends: host and x-k8s-aws-id.
 */
function expectedSignature(url: URL, clusterName: string, secret: string): string {
  const q = [...url.searchParams.entries()].filter(([k]) => k !== 'X-Amz-Signature');
  const enc = (s: string): string => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const canonicalQuery = q.map(([k, v]) => `${enc(k)}=${enc(v)}`).sort().join('&');
  const canonical = ['GET', '/', canonicalQuery, `host:${url.host}`, `x-k8s-aws-id:${clusterName}`, '', 'host;x-k8s-aws-id', createHash('sha256').update('').digest('hex')].join('\n');
  const date = url.searchParams.get('X-Amz-Date')!;
  const scope = url.searchParams.get('X-Amz-Credential')!.split('/').slice(1).join('/');
  const toSign = ['AWS4-HMAC-SHA256', date, scope, createHash('sha256').update(canonical).digest('hex')].join('\n');
  const [day, region, service] = scope.split('/');
  let key: Buffer = createHmac('sha256', `AWS4${secret}`).update(day!).digest();
  for (const part of [region!, service!, 'aws4_request']) key = createHmac('sha256', key).update(part).digest();
  return createHmac('sha256', key).update(toSign).digest('hex');
}

t.test('token format: aws-iam-authenticator presigned GetCallerIdentity', async (t) => {
  const date = new Date('2026-03-01T12:00:00Z');
  const token = await makeEksToken('prod', CREDS, 'eu-west-1', date);
  t.match(token, /^k8s-aws-v1\.[A-Za-z0-9_-]+$/, 'prefix + unpadded base64url');
  const url = tokenUrl(token);
  t.equal(url.origin, 'https://sts.eu-west-1.amazonaws.com', 'regional STS endpoint');
  t.equal(url.pathname, '/');
  t.equal(url.searchParams.get('Action'), 'GetCallerIdentity');
  t.equal(url.searchParams.get('Version'), '2011-06-15');
  t.equal(url.searchParams.get('X-Amz-Algorithm'), 'AWS4-HMAC-SHA256');
  t.equal(url.searchParams.get('X-Amz-Credential'), 'AKIDEXAMPLE/20260301/eu-west-1/sts/aws4_request');
  t.equal(url.searchParams.get('X-Amz-Date'), '20260301T120000Z');
  t.equal(url.searchParams.get('X-Amz-Expires'), '60');
  t.equal(url.searchParams.get('X-Amz-SignedHeaders'), 'host;x-k8s-aws-id');
  t.notOk(url.searchParams.has('X-Amz-Security-Token'), 'no session token for long-term keys');
  t.equal(url.searchParams.get('X-Amz-Signature'), expectedSignature(url, 'prod', CREDS.secretAccessKey), 'signature verifies independently');
  t.not(url.searchParams.get('X-Amz-Signature'), expectedSignature(url, 'other', CREDS.secretAccessKey), 'the signature binds the cluster name');

  const session = tokenUrl(await makeEksToken('prod', { ...CREDS, sessionToken: 'FQoG/session+token==' }, 'eu-west-1', date));
  t.equal(session.searchParams.get('X-Amz-Security-Token'), 'FQoG/session+token==', 'session token carried');
  t.equal(session.searchParams.get('X-Amz-Signature'), expectedSignature(session, 'prod', CREDS.secretAccessKey));
  t.equal(stsHostForRegion('cn-north-1'), 'sts.cn-north-1.amazonaws.com.cn');
});

t.test('token has the same query parameters as `aws eks get-token`', requireTools(['aws']), async (t) => {
  const env = { ...process.env, AWS_ACCESS_KEY_ID: CREDS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey, AWS_SESSION_TOKEN: '', AWS_REGION: 'us-east-1' };
  delete (env as Record<string, string | undefined>).AWS_ENDPOINT_URL;
  delete (env as Record<string, string | undefined>).AWS_SESSION_TOKEN;
  const { stdout } = await promisify(execFile)('aws', ['eks', 'get-token', '--cluster-name', 'prod', '--region', 'us-east-1', '--output', 'json'], { env });
  const theirs = tokenUrl(JSON.parse(stdout).status.token as string);
  const ours = tokenUrl(await makeEksToken('prod', CREDS, 'us-east-1'));
  t.same([...ours.searchParams.keys()].sort(), [...theirs.searchParams.keys()].sort());
  t.equal(ours.host, theirs.host);
  t.equal(ours.searchParams.get('X-Amz-SignedHeaders'), theirs.searchParams.get('X-Amz-SignedHeaders'));
  t.equal(ours.searchParams.get('X-Amz-Expires'), theirs.searchParams.get('X-Amz-Expires'));
});

t.test('EKS target against moto: DescribeCluster, token, cache', async (t) => {
  const moto = await startMoto(t);
  if (!moto) return;
  const eks = new EKSClient({ region: 'us-east-1', endpoint: moto.endpoint, credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' } });
  t.teardown(() => eks.destroy());
  const created = await eks.send(new CreateClusterCommand({ name: 'prod', roleArn: 'arn:aws:iam::123456789012:role/eks', resourcesVpcConfig: { subnetIds: [] } }));
  const cluster = created.cluster!;

  let clock = Date.parse('2026-03-01T12:00:00Z');
  const cache = new KubeAuthCache();
  const opts = { region: 'us-east-1', endpoint: moto.endpoint, cache, now: () => clock, eksMaxAttempts: 1 };
  const target = { kind: 'eks', clusterName: 'prod' } as const;
  const r1 = await resolveKubeTarget(target, CREDS, opts);
  t.equal(r1.server.href, new URL(cluster.endpoint!).href, 'endpoint from DescribeCluster');
  t.same(r1.ca, Buffer.from(cluster.certificateAuthority!.data!, 'base64'), 'CA is the decoded certificateAuthority.data');
  t.equal(r1.expiresAt, clock + 10 * 60_000, 'token reused for 10 minutes');
  const url = tokenUrl(r1.headers.authorization);
  t.equal(url.host, 'sts.us-east-1.amazonaws.com');
  t.equal(url.searchParams.get('Action'), 'GetCallerIdentity');
  t.ok(url.searchParams.get('X-Amz-SignedHeaders')!.split(';').includes('x-k8s-aws-id'));
  t.equal(url.searchParams.get('X-Amz-Expires'), '60');
  t.equal(url.searchParams.get('X-Amz-Signature'), expectedSignature(url, 'prod', CREDS.secretAccessKey));

  clock += 5 * 60_000;
  const r2 = await resolveKubeTarget(target, CREDS, opts);
  t.equal(r2.headers.authorization, r1.headers.authorization, 'same token within its cache lifetime');
  const other = await resolveKubeTarget(target, { accessKeyId: 'AKIDOTHER', secretAccessKey: 'x' }, opts);
  t.not(other.headers.authorization, r1.headers.authorization, 'other credentials never share a token');

  // Credentials that die sooner bound the token's reuse.
  const expiring = { ...CREDS, sessionToken: 'tok', expiration: new Date(clock + 3 * 60_000) };
  const r3 = await resolveKubeTarget(target, async () => expiring, opts);
  t.equal(r3.expiresAt, clock + 2 * 60_000, 'reuse stops a margin before the credentials expire');
  t.equal(tokenUrl(r3.headers.authorization).searchParams.get('X-Amz-Security-Token'), 'tok');

  await eks.send(new DeleteClusterCommand({ name: 'prod' }));
  const cached = await resolveKubeTarget(target, CREDS, opts);
  t.equal(cached.server.href, r1.server.href, 'cluster data served from the cache after deletion');

  clock += 6 * 60_000;
  const err = await resolveKubeTarget(target, CREDS, opts).catch((e: unknown) => e);
  t.ok(isUplinkError(err, 'UPLINK_ERR_KUBE_CLUSTER_NOT_FOUND'), 'after the cache lifetime DescribeCluster is asked again');
  t.same((err as { details?: unknown }).details, { cluster: 'prod', region: 'us-east-1', awsCode: 'ResourceNotFoundException' });
});

t.test('EKS failures map to stable codes', async (t) => {
  const missingRegion = await resolveKubeTarget({ kind: 'eks', clusterName: 'prod' }, CREDS, {}).catch((e: unknown) => e);
  t.ok(isUplinkError(missingRegion, 'UPLINK_ERR_CONFIG_INVALID'));

  const port = await freePort(); // nothing listens there
  const down = await resolveKubeTarget({ kind: 'eks', clusterName: 'prod', region: 'us-east-1' }, CREDS, { endpoint: `http://127.0.0.1:${port}`, eksMaxAttempts: 1 }).catch((e: unknown) => e);
  t.ok(isUplinkError(down, 'UPLINK_ERR_KUBE_EKS_FAILED'), 'unreachable EKS API');
  t.equal((down as { details?: { cluster?: string } }).details?.cluster, 'prod');

  t.throws(() => new KubeAuthCache({ tokenTtlMs: 20 * 60_000 }), { code: 'UPLINK_ERR_CONFIG_INVALID' }, 'a token TTL beyond what EKS accepts is refused');
  t.throws(() => new KubeAuthCache({ tokenTTL: 1 } as never), { code: 'UPLINK_ERR_CONFIG_INVALID' }, 'unknown option refused');
  const bad = await resolveKubeTarget({ kind: 'eks', clusterName: 'prod', region: 'us-east-1' }, CREDS, { regoin: 'x' } as never).catch((e: unknown) => e);
  t.ok(isUplinkError(bad, 'UPLINK_ERR_CONFIG_INVALID'), 'misspelt resolve option refused');
});
