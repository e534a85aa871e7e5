/**
 * Capabilities beyond the foundation (shell, forward, sql, kube, recordings, audit,
 * deployments, telemetry) plug into the relay here: each registers routes
 * (`relay.extensions.routes`), interactive ops (`relay.extensions.ops`), taps on operations
 * (`relay.ops.addTap`) and background work. `start` runs after the store, gateway and ops
 * bridge exist and before the relay listens; `stop` runs first thing on shutdown.
 */
import type { Relay } from './server.js';
import { deploymentsCapability } from './deployments/deployment-routes.js';
import { telemetryCapability } from './telemetry/telemetry-capability.js';
import { recordingsCapability } from './recordings/recorder.js';
import { auditCapability } from './audit.js';
import { PhaseSummaryService } from './phase-summary.js';

export interface RelayCapability {
  name: string;
  start(relay: Relay): Promise<void> | void;
  stop?(): Promise<void> | void;
}

/** Every capability, in start order. */
export function relayCapabilities(): RelayCapability[] {
  return [
    new PhaseSummaryService(),
    recordingsCapability(),
    auditCapability(),
    telemetryCapability(),
    deploymentsCapability(),
  ];
}
