/**
 * `<stateDir>/status.json`: what the running agent last knew about itself. It is how
 * `uplink-agent health` (the container HEALTHCHECK) answers without the agent opening a
 * listening socket.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from './identity-store.js';
import type { ConnectionStatus } from './connection.js';

export interface AgentStatus extends ConnectionStatus {
  pid: number;
  version: string;
  applianceId: string;
  updatedAt: string;
}

export function statusPath(stateDir: string): string {
  return join(stateDir, 'status.json');
}

export function writeStatus(stateDir: string, status: AgentStatus): void {
  writeFileAtomic(statusPath(stateDir), `${JSON.stringify(status)}\n`, 0o644);
}

export function readStatus(stateDir: string): AgentStatus | undefined {
  try {
    return JSON.parse(readFileSync(statusPath(stateDir), 'utf8')) as AgentStatus;
  } catch {
    return undefined;
  }
}

/** Healthy = the agent wrote its status recently and is connected (or connected recently). */
export function isHealthy(status: AgentStatus | undefined, now: number, maxAgeMs: number): { ok: boolean; reason: string } {
  if (!status) return { ok: false, reason: 'no status file: is the agent running?' };
  const age = now - Date.parse(status.updatedAt);
  if (!(age <= maxAgeMs)) return { ok: false, reason: `status is ${Math.round(age / 1000)} s old` };
  if (!status.connected) return { ok: false, reason: `not connected${status.lastError ? `: ${status.lastError.code} ${status.lastError.message}` : ''}` };
  return { ok: true, reason: `connected since ${status.since}` };
}
