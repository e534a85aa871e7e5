/**
 * Generic kubeconfig targets: read a kubeconfig file on the agent and turn one of its
 * contexts into a ResolvedKubeTarget (server, CA, bearer token or client certificate).
 *
 * JSON only. Kubeconfigs are usually YAML, but kubectl reads JSON kubeconfigs just as well
 * and the agent ships no YAML parser; a half-right hand-written YAML reader would be a worse
 * failure than a clear refusal. Convert with
 * `kubectl config view --raw --flatten -o json > kubeconfig.json`.
 *
 * Only static credentials are accepted. `exec` plugins and `auth-provider`s would make the
 * agent run whatever command a file names with the Operate role's environment, basic auth is
 * gone from Kubernetes, impersonation would widen what the vendor may do beyond the user the
 * customer configured, and `insecure-skip-tls-verify` would defeat the point of a CA; each
 * is refused with UPLINK_ERR_KUBE_AUTH_UNSUPPORTED naming the field.
 */
import { X509Certificate } from 'node:crypto';
import { open } from 'node:fs/promises';
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import type { ResolvedKubeTarget } from './kube-target.js';

/** Size limits for files the agent reads for kube targets. */
export interface KubeFileLimits {
  /** Largest kubeconfig file accepted. */
  maxKubeconfigBytes: number;
  /** Largest token file accepted (service account tokens are ~1 KiB). */
  maxTokenFileBytes: number;
  /** Largest CA bundle, client certificate or client key accepted. */
  maxPemBytes: number;
}

/** Read files in pieces of this size (the limit, not this, bounds memory). */
const READ_CHUNK_BYTES = 64 * 1024;

/** A bearer token is one header value: visible ASCII only, so a file cannot inject headers. */
const TOKEN = /^[\x21-\x7e]+$/;

// Kubeconfigs carry fields we ignore (extensions, preferences); only the parts we read are
// typed, and the refusals below look at the raw user object for fields we must not ignore.
const list = <T extends z.ZodType>(item: T) => z.array(item).nullish().transform((v) => v ?? []);

const kubeconfigSchema = z.object({
  'current-context': z.string().optional(),
  clusters: list(z.object({
    name: z.string().min(1),
    cluster: z.object({
      server: z.string().min(1),
      'certificate-authority-data': z.string().optional(),
      'certificate-authority': z.string().optional(),
      'tls-server-name': z.string().optional(),
      'insecure-skip-tls-verify': z.boolean().optional(),
      'proxy-url': z.string().optional(),
    }),
  })),
  users: list(z.object({ name: z.string().min(1), user: z.record(z.string(), z.unknown()).nullish() })),
  contexts: list(z.object({
    name: z.string().min(1),
    context: z.object({ cluster: z.string(), user: z.string().optional(), namespace: z.string().optional() }),
  })),
});

/** User fields that name an authentication method the agent refuses. */
const UNSUPPORTED_USER_FIELDS = ['exec', 'auth-provider', 'username', 'password', 'as', 'as-uid', 'as-groups', 'as-user-extra'] as const;

const userSchema = z.object({
  token: z.string().optional(),
  tokenFile: z.string().optional(),
  'client-certificate-data': z.string().optional(),
  'client-certificate': z.string().optional(),
  'client-key-data': z.string().optional(),
  'client-key': z.string().optional(),
});

function unusable(reason: string, message: string, details: Record<string, unknown> = {}, cause?: unknown): UplinkError {
  return new UplinkError('UPLINK_ERR_KUBE_TARGET_UNUSABLE', message, { details: { reason, ...details }, ...(cause === undefined ? {} : { cause }) });
}

/**
 * Read a whole file, refusing more than `limit` bytes (checked while reading, so a file
 * that grows after stat cannot slip past). Errors are UPLINK_ERR_KUBE_TARGET_UNUSABLE.
 */
export async function readLimitedFile(path: string, limit: number, what: string): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw unusable('unreadable', `${what} ${path} cannot be opened: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { path }, err);
  }
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    const buf = Buffer.allocUnsafe(Math.min(limit + 1, READ_CHUNK_BYTES));
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      total += bytesRead;
      if (total > limit) throw unusable('too-large', `${what} ${path} is larger than ${limit} bytes`, { path, limit });
      chunks.push(Buffer.from(buf.subarray(0, bytesRead)));
    }
    return Buffer.concat(chunks, total);
  } catch (err) {
    if (err instanceof UplinkError) throw err;
    throw unusable('unreadable', `${what} ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { path }, err);
  } finally {
    await fh.close();
  }
}

/** Check a bearer token before it becomes a header value. */
export function checkToken(token: string, source: string): string {
  const t = token.trim();
  if (!TOKEN.test(t)) throw unusable('token', `the token from ${source} is empty or contains characters not allowed in a header`, { source });
  return t;
}

/** Read a token file (re-read on every resolve: projected service account tokens rotate). */
export async function readTokenFile(path: string, limits: KubeFileLimits): Promise<string> {
  const text = (await readLimitedFile(path, limits.maxTokenFileBytes, 'token file')).toString('utf8');
  return checkToken(text, `token file ${path}`);
}

/** Decode base64 PEM data as kubeconfigs carry it, and check that it holds what it claims. */
export function decodePemData(data: string, what: 'ca' | 'client-certificate' | 'client-key', limits: KubeFileLimits): Buffer {
  if (data.length > Math.ceil((limits.maxPemBytes * 4) / 3) + 4) throw unusable('too-large', `${what} data is larger than ${limits.maxPemBytes} bytes`, { limit: limits.maxPemBytes });
  if (!/^[A-Za-z0-9+/\s]*={0,2}\s*$/.test(data)) throw unusable(what, `${what} data is not base64`);
  return checkPem(Buffer.from(data, 'base64'), what);
}

/** Check PEM contents: certificates must parse, keys must at least be PEM private keys. */
export function checkPem(pem: Buffer, what: 'ca' | 'client-certificate' | 'client-key'): Buffer {
  const text = pem.toString('utf8');
  if (what === 'client-key') {
    if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) throw unusable(what, 'client-key is not a PEM private key');
    return pem;
  }
  try {
    new X509Certificate(pem);
  } catch (err) {
    throw unusable(what, `${what} is not a PEM certificate`, {}, err);
  }
  return pem;
}

/** Parse and check an https server URL from a target or a kubeconfig. */
export function parseServerUrl(server: string): URL {
  let url: URL;
  try {
    url = new URL(server);
  } catch (err) {
    throw unusable('server', `server "${server}" is not a URL`, { server }, err);
  }
  if (url.protocol !== 'https:') throw unusable('server', `server "${server}" must be an https:// URL`, { server });
  if (url.username || url.password || url.search || url.hash) throw unusable('server', `server "${server}" must not carry credentials, a query or a fragment`, { server });
  return url;
}

/**
 * Resolve one context of a JSON kubeconfig file.
 * @param context the context to use; the file's `current-context` when omitted.
 * @throws UplinkError UPLINK_ERR_KUBE_TARGET_UNUSABLE | UPLINK_ERR_KUBE_AUTH_UNSUPPORTED
 */
export async function resolveKubeconfig(path: string, context: string | undefined, limits: KubeFileLimits): Promise<ResolvedKubeTarget> {
  const raw = await readLimitedFile(path, limits.maxKubeconfigBytes, 'kubeconfig');
  const text = raw.toString('utf8').trimStart();
  if (!text.startsWith('{')) {
    throw unusable('not-json', `kubeconfig ${path} is not JSON; the agent reads JSON kubeconfigs only (convert: kubectl config view --raw --flatten -o json)`, { path });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw unusable('not-json', `kubeconfig ${path} is not valid JSON: ${(err as Error).message}`, { path }, err);
  }
  const parsed = kubeconfigSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw unusable('schema', `kubeconfig ${path}: ${issue.path.join('.')}: ${issue.message}`, { path, field: issue.path.join('.') });
  }
  const cfg = parsed.data;
  const ctxName = context ?? cfg['current-context'];
  if (!ctxName) throw unusable('context', `kubeconfig ${path} has no current-context; name one in the target`, { path });
  const ctx = cfg.contexts.find((c) => c.name === ctxName)?.context;
  if (!ctx) throw unusable('context', `kubeconfig ${path} has no context "${ctxName}"`, { path, context: ctxName });
  const cluster = cfg.clusters.find((c) => c.name === ctx.cluster)?.cluster;
  if (!cluster) throw unusable('cluster', `kubeconfig ${path}: context "${ctxName}" names cluster "${ctx.cluster}", which is not defined`, { path, cluster: ctx.cluster });
  if (cluster['insecure-skip-tls-verify'] === true) throw unsupported('insecure-skip-tls-verify', path);
  if (cluster['proxy-url'] !== undefined) throw unusable('proxy-url', `kubeconfig ${path}: cluster "${ctx.cluster}" uses proxy-url, which the agent does not support`, { path });

  // Relative file references are relative to the kubeconfig's directory, as kubectl does it.
  const base = dirname(resolvePath(path));
  const file = (p: string): string => (isAbsolute(p) ? p : resolvePath(base, p));
  const pemFrom = async (data: string | undefined, ref: string | undefined, what: 'ca' | 'client-certificate' | 'client-key'): Promise<Buffer | undefined> => {
    if (data !== undefined) return decodePemData(data, what, limits);
    if (ref !== undefined) return checkPem(await readLimitedFile(file(ref), limits.maxPemBytes, what), what);
    return undefined;
  };

  const out: ResolvedKubeTarget = { server: parseServerUrl(cluster.server), headers: {} };
  const ca = await pemFrom(cluster['certificate-authority-data'], cluster['certificate-authority'], 'ca');
  if (ca) out.ca = ca;
  if (cluster['tls-server-name']) out.tlsServerName = cluster['tls-server-name'];

  if (ctx.user === undefined) return out;
  const rawUser = cfg.users.find((u) => u.name === ctx.user);
  if (!rawUser) throw unusable('user', `kubeconfig ${path}: context "${ctxName}" names user "${ctx.user}", which is not defined`, { path, user: ctx.user });
  const userObj = rawUser.user ?? {};
  for (const field of UNSUPPORTED_USER_FIELDS) if (userObj[field] !== undefined) throw unsupported(field, path);
  const user = userSchema.safeParse(userObj);
  if (!user.success) throw unusable('user', `kubeconfig ${path}: user "${ctx.user}": ${user.error.issues[0]!.message}`, { path, user: ctx.user });
  const u = user.data;
  if (u.token !== undefined) out.headers.authorization = `Bearer ${checkToken(u.token, `kubeconfig ${path}`)}`;
  else if (u.tokenFile !== undefined) out.headers.authorization = `Bearer ${await readTokenFile(file(u.tokenFile), limits)}`;
  const cert = await pemFrom(u['client-certificate-data'], u['client-certificate'], 'client-certificate');
  const key = await pemFrom(u['client-key-data'], u['client-key'], 'client-key');
  if ((cert === undefined) !== (key === undefined)) throw unusable('user', `kubeconfig ${path}: user "${ctx.user}" has a client certificate without its key or the reverse`, { path });
  if (cert && key) {
    out.clientCert = cert;
    out.clientKey = key;
  }
  return out;
}

function unsupported(method: string, path: string): UplinkError {
  return new UplinkError('UPLINK_ERR_KUBE_AUTH_UNSUPPORTED', `kubeconfig ${path} uses "${method}", which the agent does not support; use a token, tokenFile or client certificate (or a target of kind eks)`, {
    details: { method, path },
  });
}
