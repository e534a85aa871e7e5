/**
 * EKS targets: the API endpoint and CA come from DescribeCluster, the bearer token is made
 * locally in the aws-iam-authenticator format, both under the Operate role.
 *
 * The token is `k8s-aws-v1.` + base64url (no padding) of a presigned URL for
 * `sts:GetCallerIdentity` whose signature also covers the header `x-k8s-aws-id: <cluster>`.
 * EKS calls that URL to learn who signed it (so the Operate role's mapping in the cluster's
 * access entries decides what the vendor may do) and checks the header, so a token made for
 * one cluster is useless on another. The authenticator accepts a token for 15 minutes after
 * its X-Amz-Date whatever X-Amz-Expires says, so we reuse one for `tokenTtlMs` (10 minutes)
 * rather than sign per request, and never past the signing credentials' own expiry.
 */
import { createHash } from 'node:crypto';
import { DescribeClusterCommand, EKSClient, type EKSClientConfig } from '@aws-sdk/client-eks';
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import type { ResolvedKubeTarget } from './kube-target.js';

/** Credentials as the AWS SDK v3 clients take them: the Operate role's, from the phases module. */
export type AwsCredentials = NonNullable<EKSClientConfig['credentials']>;
/** One resolved set of credentials. */
export type AwsCredentialIdentity = Extract<AwsCredentials, { accessKeyId: string }>;

/** Prefix of every aws-iam-authenticator token. */
export const EKS_TOKEN_PREFIX = 'k8s-aws-v1.';
/** Header EKS checks against its own cluster name. */
export const EKS_CLUSTER_ID_HEADER = 'x-k8s-aws-id';
/** X-Amz-Expires of the presigned URL, as aws-iam-authenticator and `aws eks get-token` use. */
export const EKS_PRESIGN_EXPIRES_SECONDS = 60;

/** Defaults for KubeAuthCache. */
export const KUBE_AUTH_CACHE_DEFAULTS = {
  /** Reuse a token this long; EKS accepts it for 15 minutes, so this leaves 5 for clock skew and in-flight use. */
  tokenTtlMs: 10 * 60_000,
  /** Reuse DescribeCluster's endpoint and CA this long (they change only on CA rotation). */
  clusterTtlMs: 10 * 60_000,
  /** Entries kept per kind; the oldest go first. */
  maxEntries: 256,
  /** A token is not reused within this margin of its credentials' expiry. */
  credentialMarginMs: 60_000,
} as const;

const cacheOptionsSchema = z.strictObject({
  tokenTtlMs: z.number().int().min(0).max(14 * 60_000).default(KUBE_AUTH_CACHE_DEFAULTS.tokenTtlMs),
  clusterTtlMs: z.number().int().min(0).default(KUBE_AUTH_CACHE_DEFAULTS.clusterTtlMs),
  maxEntries: z.number().int().min(1).default(KUBE_AUTH_CACHE_DEFAULTS.maxEntries),
  credentialMarginMs: z.number().int().min(0).default(KUBE_AUTH_CACHE_DEFAULTS.credentialMarginMs),
});
export type KubeAuthCacheOptions = z.input<typeof cacheOptionsSchema>;

interface Entry<T> { value: T; expiresAt: number }
interface ClusterInfo { server: URL; ca: Buffer }

/**
 * Bounded, time-limited cache of EKS cluster data and tokens. One per agent: pass it to
 * every resolveKubeTarget call. Tokens are keyed by the signing credentials, so two
 * engineers' Operate sessions never share one.
 */
export class KubeAuthCache {
  readonly options: Readonly<z.output<typeof cacheOptionsSchema>>;
  private readonly clusters = new Map<string, Entry<ClusterInfo>>();
  private readonly tokens = new Map<string, Entry<string>>();

  constructor(opts: KubeAuthCacheOptions = {}) {
    const r = cacheOptionsSchema.safeParse(opts);
    if (!r.success) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `kube auth cache: ${r.error.issues[0]!.path.join('.')}: ${r.error.issues[0]!.message}`);
    this.options = Object.freeze(r.data);
  }

  /** Drop everything (after a CA rotation, or when the Operate grant is revoked). */
  clear(): void {
    this.clusters.clear();
    this.tokens.clear();
  }

  /** @internal */ getCluster(key: string, now: number): ClusterInfo | undefined { return get(this.clusters, key, now); }
  /** @internal */ setCluster(key: string, value: ClusterInfo, now: number): void { this.put(this.clusters, key, value, now + this.options.clusterTtlMs); }
  /** @internal */ getToken(key: string, now: number): { token: string; expiresAt: number } | undefined {
    const e = this.tokens.get(key);
    if (!e || e.expiresAt <= now) return undefined;
    return { token: e.value, expiresAt: e.expiresAt };
  }
  /** @internal */ setToken(key: string, token: string, expiresAt: number): void { this.put(this.tokens, key, token, expiresAt); }

  private put<T>(map: Map<string, Entry<T>>, key: string, value: T, expiresAt: number): void {
    map.delete(key);
    map.set(key, { value, expiresAt });
    while (map.size > this.options.maxEntries) map.delete(map.keys().next().value as string);
  }
}

function get<T>(map: Map<string, Entry<T>>, key: string, now: number): T | undefined {
  const e = map.get(key);
  if (!e) return undefined;
  if (e.expiresAt <= now) {
    map.delete(key);
    return undefined;
  }
  return e.value;
}

/** The regional STS host a token is presigned for (the authenticator accepts regional hosts). */
export function stsHostForRegion(region: string): string {
  return region.startsWith('cn-') ? `sts.${region}.amazonaws.com.cn` : `sts.${region}.amazonaws.com`;
}

/** RFC 3986 encoding, as SigV4 canonicalizes query values. */
function rfc3986(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * Make an EKS bearer token: a presigned STS GetCallerIdentity URL bound to `clusterName`.
 * Pure computation, no network call.
 */
export async function makeEksToken(clusterName: string, credentials: AwsCredentialIdentity, region: string, signingDate = new Date()): Promise<string> {
  const hostname = stsHostForRegion(region);
  const signer = new SignatureV4({ service: 'sts', region, credentials, sha256: Sha256 });
  const request = new HttpRequest({
    method: 'GET', protocol: 'https:', hostname, path: '/',
    query: { Action: 'GetCallerIdentity', Version: '2011-06-15' },
    headers: { host: hostname, [EKS_CLUSTER_ID_HEADER]: clusterName },
  });
  // x-k8s-aws-id is not an x-amz- header, so SigV4 keeps it as a signed header rather than
  // hoisting it into the query: exactly what EKS verifies.
  const signed = await signer.presign(request, { expiresIn: EKS_PRESIGN_EXPIRES_SECONDS, signingDate });
  const pairs: string[] = [];
  for (const [k, v] of Object.entries(signed.query ?? {})) {
    for (const value of Array.isArray(v) ? v : v === null ? [] : [v]) pairs.push(`${rfc3986(k)}=${rfc3986(value)}`);
  }
  const query = pairs.join('&');
  const url = `https://${hostname}/?${query}`;
  return EKS_TOKEN_PREFIX + Buffer.from(url, 'utf8').toString('base64url');
}

/** Where and how resolveEksTarget reaches AWS. */
export interface EksAccess {
  /** Region of the cluster. */
  region: string;
  /** Custom AWS endpoint for the EKS API (an emulator, or a VPC endpoint without private DNS). */
  endpoint?: string;
  /** SDK attempts for DescribeCluster, including the first. */
  maxAttempts: number;
  cache: KubeAuthCache;
  now: () => number;
}

const NOT_READY = new Set(['CREATING', 'DELETING', 'FAILED']);

async function describeCluster(clusterName: string, credentials: AwsCredentials, access: EksAccess): Promise<ClusterInfo> {
  const client = new EKSClient({ region: access.region, credentials, maxAttempts: access.maxAttempts, ...(access.endpoint ? { endpoint: access.endpoint } : {}) });
  let cluster;
  try {
    cluster = (await client.send(new DescribeClusterCommand({ name: clusterName }))).cluster;
  } catch (err) {
    const awsCode = (err as { name?: string }).name ?? 'Error';
    if (awsCode === 'ResourceNotFoundException') {
      throw new UplinkError('UPLINK_ERR_KUBE_CLUSTER_NOT_FOUND', `EKS cluster "${clusterName}" not found in ${access.region}`, { details: { cluster: clusterName, region: access.region, awsCode }, cause: err });
    }
    throw new UplinkError('UPLINK_ERR_KUBE_EKS_FAILED', `DescribeCluster ${clusterName}: ${(err as Error).message}`, { details: { cluster: clusterName, region: access.region, awsCode }, cause: err });
  } finally {
    client.destroy();
  }
  const status = cluster?.status;
  const endpoint = cluster?.endpoint;
  const caData = cluster?.certificateAuthority?.data;
  if (!endpoint || !caData || (status !== undefined && NOT_READY.has(status))) {
    throw new UplinkError('UPLINK_ERR_KUBE_EKS_FAILED', `EKS cluster "${clusterName}" is not ready (status ${status ?? 'unknown'}${endpoint ? '' : ', no endpoint'}${caData ? '' : ', no CA'})`, {
      details: { cluster: clusterName, region: access.region, clusterStatus: status ?? null },
    });
  }
  let server: URL;
  try {
    server = new URL(endpoint);
  } catch (err) {
    throw new UplinkError('UPLINK_ERR_KUBE_EKS_FAILED', `EKS cluster "${clusterName}" has an invalid endpoint "${endpoint}"`, { details: { cluster: clusterName, region: access.region }, cause: err });
  }
  if (server.protocol !== 'https:') {
    throw new UplinkError('UPLINK_ERR_KUBE_EKS_FAILED', `EKS cluster "${clusterName}" endpoint "${endpoint}" is not https`, { details: { cluster: clusterName, region: access.region } });
  }
  // The CA comes from AWS and is used as given (base64 of a PEM bundle); a damaged one
  // surfaces as a TLS verification failure on connect, never as a skipped check.
  const ca = Buffer.from(caData, 'base64');
  if (ca.length === 0) {
    throw new UplinkError('UPLINK_ERR_KUBE_EKS_FAILED', `EKS cluster "${clusterName}" has an empty CA`, { details: { cluster: clusterName, region: access.region } });
  }
  return { server, ca };
}

/**
 * Resolve an EKS target: endpoint and CA (cached `clusterTtlMs`) and a token signed with
 * `credentials` (cached `tokenTtlMs`, keyed by those credentials).
 * @throws UplinkError UPLINK_ERR_KUBE_CLUSTER_NOT_FOUND | UPLINK_ERR_KUBE_EKS_FAILED
 */
export async function resolveEksTarget(clusterName: string, credentials: AwsCredentials, access: EksAccess): Promise<ResolvedKubeTarget> {
  const now = access.now();
  const clusterKey = `${access.region}\0${clusterName}`;
  let info = access.cache.getCluster(clusterKey, now);
  if (!info) {
    info = await describeCluster(clusterName, credentials, access);
    access.cache.setCluster(clusterKey, info, now);
  }
  const identity = typeof credentials === 'function' ? await credentials() : credentials;
  // Keyed by a digest, so the cache holds no secret beyond the tokens themselves.
  const tokenKey = createHash('sha256').update(`${clusterKey}\0${identity.accessKeyId}\0${identity.sessionToken ?? ''}`).digest('hex');
  let cached = access.cache.getToken(tokenKey, now);
  if (!cached) {
    const token = await makeEksToken(clusterName, identity, access.region, new Date(now));
    const { tokenTtlMs, credentialMarginMs } = access.cache.options;
    const credsEnd = identity.expiration ? identity.expiration.getTime() - credentialMarginMs : Infinity;
    // EKS rejects a token 15 minutes after signing; presigned with session credentials it
    // also dies with them. Never hand out one that is about to expire either way.
    const expiresAt = Math.min(now + tokenTtlMs, credsEnd);
    if (expiresAt > now) access.cache.setToken(tokenKey, token, expiresAt);
    cached = { token, expiresAt: Math.max(now, expiresAt) };
  }
  return { server: new URL(info.server), ca: info.ca, headers: { authorization: `Bearer ${cached.token}` }, expiresAt: cached.expiresAt };
}
