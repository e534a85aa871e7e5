/**
 * A relay (PGlite in a temp dir, or PostgreSQL when given a URL) and agents, started in
 * this process or as child processes, on loopback ports chosen by the OS.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { loadRelayConfig, type RelayConfig } from '../../relay/config.js';
import { Relay } from '../../relay/server.js';
import { ApiClient } from '../../relay/cli/api-client.js';
import { silentLogger } from '../../shared/logger.js';
import { loadAgentConfig, type AgentConfig } from '../../agent/config.js';
import { Agent } from '../../agent/agent.js';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

export function tempDir(t: Test, prefix = 'uplink-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

export async function startRelay(t: Test, opts: { databaseUrl?: string; dataDir?: string; config?: Record<string, unknown> } = {}): Promise<Relay> {
  const cfg = loadRelayConfig({
    listen: { host: '127.0.0.1', port: 0 },
    insecureHttp: true,
    ...(opts.databaseUrl ? { databaseUrl: opts.databaseUrl } : { dataDir: opts.dataDir ?? join(tempDir(t, 'uplink-relay-'), 'data') }),
    ...opts.config,
  });
  const relay = new Relay(cfg, { logger: silentLogger, env: { UPLINK_BOOTSTRAP_TOKEN: ADMIN_TOKEN }, announce: () => {} });
  await relay.start();
  t.teardown(() => relay.close());
  return relay;
}

export function adminClient(t: Test, relay: Relay, token = ADMIN_TOKEN): ApiClient {
  const c = new ApiClient({ url: relay.url, token });
  t.teardown(() => c.close());
  return c;
}

export interface Enrolled {
  name: string;
  enrollmentToken: string;
  applianceId: string;
}

export async function createAppliance(client: ApiClient, name: string, extra: Record<string, unknown> = {}): Promise<Enrolled> {
  const r = await client.call<{ appliance: { id: string }; enrollmentToken: string }>('POST', '/v1/appliances', {
    name,
    customer: 'acme',
    instanceId: `i-${name}`,
    ...extra,
  });
  return { name, enrollmentToken: r.enrollmentToken, applianceId: r.appliance.id };
}

export function agentConfig(relay: Relay, stateDir: string, token: string | undefined, extra: DeepPartial<AgentConfig> | Record<string, unknown> = {}): Readonly<AgentConfig> {
  return loadAgentConfig({
    UPLINK_RELAY_URL: relay.url,
    UPLINK_STATE_DIR: stateDir,
    UPLINK_ENROLLMENT_TOKEN: token,
    ...(Object.keys(extra).length ? { UPLINK_CONFIG: writeJson(stateDir, extra) } : {}),
  });
}

function writeJson(dir: string, value: unknown): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, '..', `agent-config-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(path, JSON.stringify(value));
  return path;
}

/** Start an in-process agent and wait until the relay lists it as connected. */
export async function startAgent(t: Test, relay: Relay, enrolled: Enrolled, extra: Record<string, unknown> = {}): Promise<Agent> {
  const stateDir = join(tempDir(t, 'uplink-agent-'), 'state');
  const agent = new Agent(agentConfig(relay, stateDir, enrolled.enrollmentToken, extra), silentLogger);
  await agent.start();
  t.teardown(() => agent.stop());
  await waitFor(() => relay.gateway.get(enrolled.applianceId) !== undefined, 10_000, 'agent connected');
  return agent;
}

export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
