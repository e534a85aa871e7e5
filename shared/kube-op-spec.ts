/**
 * The spec of the `kube` and `kube-upgrade` operations: one Kubernetes API request, as the
 * vendor CLI's local kube server received it from kubectl, carried in the `x-uplink-spec`
 * header to the agent. The request body (if any) follows on the stdin channel; the answer
 * comes back as a `response` control frame, then the body on the stdout channel.
 *
 * The CLI builds it with `kubeSpecHeaders` (what of kubectl's headers may travel); the agent
 * checks it with `parseKubeOpSpec` before anything reaches a cluster. The agent's
 * kube-request-check applies the byte and count limits on path and headers again, and the
 * whole spec is bounded by the relay's and agent's `limits.maxSpecBytes`.
 */
import { z } from 'zod';
import { UplinkError } from './errors.js';

/** Bounds of the spec fields themselves; the agent's kube proxy options bound them further. */
export const KUBE_OP_SPEC_LIMITS = {
  /** A request path with its query; kubectl's longest are label-selector lists. */
  maxPathChars: 16 * 1024,
  /** Values of one repeated header. */
  maxValuesPerHeader: 64,
  maxHeaderNameChars: 256,
} as const;

/** Target names are DNS labels (agent/ops/kube-target.ts). */
const CLUSTER_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

const specSchema = z.strictObject({
  /** The agent's kube target; omitted when the agent has exactly one. */
  cluster: z.string().regex(CLUSTER_NAME, 'must be a kube target name such as "prod"').optional(),
  method: z.string().regex(/^[A-Z]{1,16}$/, 'must be an HTTP method in capitals'),
  path: z.string().min(1).max(KUBE_OP_SPEC_LIMITS.maxPathChars).startsWith('/', 'must start with "/"'),
  headers: z
    .record(z.string().min(1).max(KUBE_OP_SPEC_LIMITS.maxHeaderNameChars), z.union([z.string(), z.array(z.string()).max(KUBE_OP_SPEC_LIMITS.maxValuesPerHeader)]))
    .default({}),
  /** A body follows on the stdin channel (ended by an `eof` control frame). */
  body: z.boolean().default(false),
});

export type KubeOpSpec = z.output<typeof specSchema>;

/**
 * Validate a kube op spec from the wire.
 * @throws UplinkError UPLINK_ERR_BAD_REQUEST naming the bad field.
 */
export function parseKubeOpSpec(input: unknown): KubeOpSpec {
  const r = specSchema.safeParse(input);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const keys = issue.code === 'unrecognized_keys' ? ` (${issue.keys.join(', ')})` : '';
    throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `kube spec.${issue.path.join('.')}: ${issue.message}${keys}`, { details: { field: issue.path.join('.') } });
  }
  return r.data;
}

/**
 * Headers the local server's kubectl request never passes on: its credential for the local
 * server (the agent adds the target's own), and what only concerns the local hop. For an
 * upgrade, `upgrade` and the WebSocket handshake headers must travel: the API server answers
 * the key and picks the subprotocol.
 */
const LOCAL_ONLY = new Set(['authorization', 'host', 'connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding']);

/** The headers of kubectl's request that go into the spec. */
export function kubeSpecHeaders(headers: Record<string, string | string[] | undefined>, upgrade: boolean): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || LOCAL_ONLY.has(name)) continue;
    if (name === 'upgrade' && !upgrade) continue;
    out[name] = value;
  }
  return out;
}
