/**
 * Kubernetes targets: the clusters an agent lets the vendor reach with `uplink kubectl`.
 *
 * The agent configuration names each target (`--cluster NAME` on the vendor side picks one):
 *
 * | kind         | API endpoint and CA                   | credentials                                  |
 * |--------------|---------------------------------------|----------------------------------------------|
 * | `eks`        | EKS DescribeCluster (Operate role)    | aws-iam-authenticator token (Operate role)   |
 * | `kubeconfig` | a JSON kubeconfig on the agent        | its token / tokenFile / client certificate   |
 * | `static`     | `server` + `caData` in the config     | `token` or `tokenFile`                       |
 *
 * `resolveKubeTarget` turns a target into what kube-proxy needs for one request: server URL,
 * CA, TLS client identity and the Authorization header. Resolve per request (or per session
 * and again after `expiresAt`): token files rotate and EKS tokens expire; the cache keeps
 * that cheap.
 */
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { KubeAuthCache, resolveEksTarget, type AwsCredentials } from './kube-eks.js';
import { checkToken, decodePemData, parseServerUrl, readTokenFile, resolveKubeconfig, type KubeFileLimits } from './kube-kubeconfig.js';

/** What kube-proxy needs to reach one cluster's API server. */
export interface ResolvedKubeTarget {
  /** https URL of the API server; a path prefix (a proxying front end) is kept. */
  server: URL;
  /** PEM CA bundle to verify the server with; the system roots when absent. */
  ca?: Buffer;
  /** Added to every forwarded request; the caller's own Authorization is always dropped. */
  headers: { authorization?: string };
  /** PEM client certificate and key, for clusters that authenticate by certificate. */
  clientCert?: Buffer;
  clientKey?: Buffer;
  /** SNI and certificate name to verify, when it differs from the URL's host. */
  tlsServerName?: string;
  /** Epoch ms after which `headers` are no longer valid (EKS tokens); resolve again before then. */
  expiresAt?: number;
}

/** Target names are DNS labels: they appear in kubeconfig entries the CLI writes. */
const TARGET_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const REGION = /^[a-z]{2}(-[a-z]+)+-\d+$/;

/** One target of `kind: eks`. */
export const eksTargetSchema = z.strictObject({
  kind: z.literal('eks'),
  /** The EKS cluster name (not its ARN). */
  clusterName: z.string().regex(/^[0-9A-Za-z][A-Za-z0-9\-_]{0,99}$/, 'must be an EKS cluster name'),
  /** Defaults to the agent's region. */
  region: z.string().regex(REGION, 'must be an AWS region such as eu-west-1').optional(),
});

/** One target of `kind: kubeconfig`: a JSON kubeconfig file on the agent. */
export const kubeconfigTargetSchema = z.strictObject({
  kind: z.literal('kubeconfig'),
  path: z.string().min(1),
  /** Defaults to the file's current-context. */
  context: z.string().min(1).optional(),
});

/** One target of `kind: static`: server, CA and token in the configuration itself. */
export const staticTargetSchema = z
  .strictObject({
    kind: z.literal('static'),
    server: z.url().refine((s) => s.startsWith('https://'), 'must be an https:// URL'),
    /** Base64 of the PEM CA bundle, as kubeconfig's certificate-authority-data. */
    caData: z.string().min(1).optional(),
    token: z.string().min(1).optional(),
    /** Read on every resolve, so a rotated (projected) token is picked up. */
    tokenFile: z.string().min(1).optional(),
    tlsServerName: z.string().min(1).optional(),
    /** Only `false` is accepted: the agent always verifies the API server. */
    insecureSkipTlsVerify: z.literal(false).optional(),
  })
  .refine((t) => !(t.token !== undefined && t.tokenFile !== undefined), { message: 'give token or tokenFile, not both', path: ['tokenFile'] });

export const kubeTargetSchema = z.discriminatedUnion('kind', [eksTargetSchema, kubeconfigTargetSchema, staticTargetSchema]);
export type KubeTarget = z.output<typeof kubeTargetSchema>;

/** The agent's `kube.targets` section: name -> target. */
export const kubeTargetsSchema = z.record(z.string().regex(TARGET_NAME, 'target names must be DNS labels such as "prod" or "eu-main"'), kubeTargetSchema);
export type KubeTargets = Readonly<Record<string, KubeTarget>>;

/** Validate the `kube.targets` section; errors are UPLINK_ERR_CONFIG_INVALID naming the field. */
export function parseKubeTargets(input: unknown, field = 'kube.targets'): KubeTargets {
  const r = kubeTargetsSchema.safeParse(input ?? {});
  if (!r.success) throw configError(field, r.error.issues);
  for (const t of Object.values(r.data)) Object.freeze(t);
  return Object.freeze(r.data);
}

/**
 * Pick the target a request names. With no name, the only target is used; with several,
 * the caller must name one.
 * @throws UplinkError UPLINK_ERR_KUBE_TARGET_UNKNOWN | UPLINK_ERR_USAGE
 */
export function selectKubeTarget(targets: KubeTargets, name: string | undefined): { name: string; target: KubeTarget } {
  const known = Object.keys(targets).sort();
  if (name === undefined) {
    if (known.length === 1) return { name: known[0]!, target: targets[known[0]!]! };
    throw new UplinkError('UPLINK_ERR_USAGE', known.length === 0 ? 'this agent has no Kubernetes targets configured' : `this agent has several Kubernetes targets; name one with --cluster (${known.join(', ')})`, {
      details: { known },
    });
  }
  if (!Object.prototype.hasOwnProperty.call(targets, name)) {
    throw new UplinkError('UPLINK_ERR_KUBE_TARGET_UNKNOWN', `no Kubernetes target "${name}" on this agent (known: ${known.join(', ') || 'none'})`, { details: { target: name, known } });
  }
  return { name, target: targets[name]! };
}

/** Defaults for resolveKubeTarget. */
export const KUBE_RESOLVE_DEFAULTS = {
  maxKubeconfigBytes: 1024 * 1024,
  maxTokenFileBytes: 16 * 1024,
  maxPemBytes: 256 * 1024,
  /** DescribeCluster attempts, including the first (the SDK's own retry with backoff). */
  eksMaxAttempts: 3,
} as const;

const positiveInt = (def: number) => z.number().int().positive().default(def);

const resolveOptionsSchema = z.strictObject({
  /** The agent's region: the default for EKS targets without one. */
  region: z.string().regex(REGION).optional(),
  /** Custom AWS endpoint for the EKS API (emulator, or VPC endpoint without private DNS). */
  endpoint: z.url().optional(),
  /** One per agent; without it nothing is cached and every resolve calls DescribeCluster. */
  cache: z.instanceof(KubeAuthCache).optional(),
  maxKubeconfigBytes: positiveInt(KUBE_RESOLVE_DEFAULTS.maxKubeconfigBytes),
  maxTokenFileBytes: positiveInt(KUBE_RESOLVE_DEFAULTS.maxTokenFileBytes),
  maxPemBytes: positiveInt(KUBE_RESOLVE_DEFAULTS.maxPemBytes),
  eksMaxAttempts: positiveInt(KUBE_RESOLVE_DEFAULTS.eksMaxAttempts),
  /** Clock, for tests of expiry. */
  now: z.custom<() => number>((v) => typeof v === 'function').optional(),
});
export type KubeResolveOptions = z.input<typeof resolveOptionsSchema>;

/**
 * Resolve a target for one request.
 * @param awsCreds the Operate role's credentials (used by `eks` targets only).
 * @throws UplinkError UPLINK_ERR_CONFIG_INVALID (bad options or target) |
 *   UPLINK_ERR_KUBE_TARGET_UNUSABLE | UPLINK_ERR_KUBE_AUTH_UNSUPPORTED |
 *   UPLINK_ERR_KUBE_CLUSTER_NOT_FOUND | UPLINK_ERR_KUBE_EKS_FAILED
 */
export async function resolveKubeTarget(target: KubeTarget, awsCreds: AwsCredentials | undefined, opts: KubeResolveOptions = {}): Promise<ResolvedKubeTarget> {
  const o = resolveOptionsSchema.safeParse(opts);
  if (!o.success) throw configError('kube resolve options', o.error.issues);
  const t = kubeTargetSchema.safeParse(target);
  if (!t.success) throw configError('kube target', t.error.issues);
  const options = o.data;
  const limits: KubeFileLimits = { maxKubeconfigBytes: options.maxKubeconfigBytes, maxTokenFileBytes: options.maxTokenFileBytes, maxPemBytes: options.maxPemBytes };
  const tgt = t.data;
  switch (tgt.kind) {
    case 'eks': {
      const region = tgt.region ?? options.region;
      if (!region) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `kube target for EKS cluster "${tgt.clusterName}" has no region and the agent has none`, { details: { field: 'region' } });
      if (!awsCreds) throw new UplinkError('UPLINK_ERR_INTERNAL', 'EKS target resolved without Operate credentials');
      return resolveEksTarget(tgt.clusterName, awsCreds, {
        region, maxAttempts: options.eksMaxAttempts, cache: options.cache ?? new KubeAuthCache(), now: options.now ?? Date.now,
        ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      });
    }
    case 'kubeconfig':
      return resolveKubeconfig(tgt.path, tgt.context, limits);
    case 'static': {
      const out: ResolvedKubeTarget = { server: parseServerUrl(tgt.server), headers: {} };
      if (tgt.caData !== undefined) out.ca = decodePemData(tgt.caData, 'ca', limits);
      if (tgt.tlsServerName !== undefined) out.tlsServerName = tgt.tlsServerName;
      if (tgt.token !== undefined) out.headers.authorization = `Bearer ${checkToken(tgt.token, 'the target configuration')}`;
      else if (tgt.tokenFile !== undefined) out.headers.authorization = `Bearer ${await readTokenFile(tgt.tokenFile, limits)}`;
      return out;
    }
  }
}

function configError(field: string, issues: z.core.$ZodIssue[]): UplinkError {
  const issue = issues[0]!;
  const path = [field, ...issue.path.map(String)].join('.');
  const keys = issue.code === 'unrecognized_keys' ? ` (${issue.keys.join(', ')})` : '';
  return new UplinkError('UPLINK_ERR_CONFIG_INVALID', `${path}: ${issue.message}${keys}`, {
    details: { field: path, issues: issues.map((i) => ({ path: [field, ...i.path.map(String)].join('.'), message: i.message })) },
  });
}
