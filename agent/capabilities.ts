/**
 * Capabilities beyond exec plug into the agent here: each registers tunnel handlers
 * (`agent.tunnel.handle(path, handler)`) and background work (collectors, spool).
 * `start` runs after the identity, phase access and audit log exist and before the agent
 * dials the relay; `stop` runs on shutdown.
 */
import type { Agent } from './agent.js';
import { deployCapability } from './deploy/deploy-handlers.js';
import { telemetryCapability } from './telemetry/telemetry-service.js';
import { shellCapability } from './ops/shell.js';
import { forwardSqlCapability } from './ops/forward-sql-capability.js';
import { kubeCapability } from './ops/kube.js';

export interface AgentCapability {
  name: string;
  start(agent: Agent): Promise<void> | void;
  stop?(): Promise<void> | void;
}

/** Every capability, in start order. */
export function agentCapabilities(): AgentCapability[] {
  return [shellCapability, kubeCapability(), forwardSqlCapability, deployCapability(), telemetryCapability()];
}
