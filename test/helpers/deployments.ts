/**
 * Deployment test helpers: a release key, signed releases of the fixture stacks uploaded
 * through the real API, and waiting for a deployment to reach a status.
 */
import { fileURLToPath } from 'node:url';
import { createRelease } from '../../shared/release/create-release.js';
import { generateReleaseKey, parseReleaseKey, pinnedKeyOf, type PinnedReleaseKey } from '../../shared/release/release-key.js';
import type { ApiClient } from '../../relay/cli/api-client.js';
import { waitFor } from './cluster.js';

export const STACKS = fileURLToPath(new URL('../fixtures/stacks/', import.meta.url));

export interface TestKey {
  loaded: ReturnType<typeof parseReleaseKey>;
  pinned: PinnedReleaseKey;
}

export function newKey(): TestKey {
  const key = generateReleaseKey();
  return { loaded: parseReleaseKey(key), pinned: pinnedKeyOf(key) };
}

/** Agent config extras that enable Deploy in local mode and pin `keys`. */
export function deployAgentExtras(keys: TestKey[]): Record<string, unknown> {
  return { local: { deploy: 'enabled' }, releaseKeys: keys.map((k) => k.pinned) };
}

/** Sign `stack` (a fixture directory name) and upload it. */
export async function uploadRelease(client: ApiClient, key: TestKey, stack: string, version: string, appliance: string, opts: { allowDowngrade?: boolean } = {}): Promise<{ id: string }> {
  const rel = await createRelease(`${STACKS}${stack}`, { version, appliance, key: key.loaded, ...(opts.allowDowngrade ? { allowDowngrade: true } : {}) });
  const r = await client.call<{ release: { id: string } }>('POST', '/v1/releases', { manifest: rel.manifest, signature: rel.signature, archive: rel.archive.toString('base64') });
  return r.release;
}

export interface DeploymentJson {
  id: string;
  status: string;
  version: string;
  action: string;
  outputs: Record<string, { value: unknown; sensitive: boolean; redacted?: true }> | null;
  error: { code: string; message: string } | null;
  startedAt: string | null;
  endedAt: string | null;
}

export async function deploy(client: ApiClient, appliance: string, version: string, body: Record<string, unknown> = {}): Promise<DeploymentJson> {
  return (await client.call<{ deployment: DeploymentJson }>('POST', `/v1/appliances/${appliance}/deployments`, { version, ...body })).deployment;
}

export async function getDeployment(client: ApiClient, id: string): Promise<DeploymentJson> {
  return (await client.call<{ deployment: DeploymentJson }>('GET', `/v1/deployments/${id}`)).deployment;
}

const FINAL = ['succeeded', 'failed', 'cancelled', 'interrupted'];

/** Wait until the deployment ended; returns it. */
export async function waitEnded(client: ApiClient, id: string, timeoutMs = 60_000): Promise<DeploymentJson> {
  let d: DeploymentJson | undefined;
  await waitFor(async () => FINAL.includes((d = await getDeployment(client, id)).status), timeoutMs, `deployment ${id} ended`);
  return d!;
}

export async function waitStatus(client: ApiClient, id: string, status: string, timeoutMs = 30_000): Promise<DeploymentJson> {
  let d: DeploymentJson | undefined;
  await waitFor(async () => (d = await getDeployment(client, id)).status === status, timeoutMs, `deployment ${id} ${status}`);
  return d!;
}

/** The whole stored log, without following. */
export async function readLog(relayUrl: string, token: string, id: string, offset = 0): Promise<string> {
  const res = await fetch(`${relayUrl}/v1/deployments/${id}/logs?offset=${offset}`, { headers: { authorization: `Bearer ${token}` } });
  if (res.status !== 200) throw new Error(`logs answered ${res.status}`);
  return await res.text();
}
