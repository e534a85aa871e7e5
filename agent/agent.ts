/**
 * The running agent: identity, the tunnel server with its handlers, and the relay
 * connection. Capabilities register handlers on `tunnel` by path.
 *
 * Lifecycle: `start()` loads or creates the identity (refusing a state dir that belongs to
 * another appliance) and dials. `stop()` closes the connection and the tunnel; idempotent.
 */
import { fileURLToPath } from 'node:url';
import { UplinkError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { AGENT_PATHS } from '../shared/protocol.js';
import { VERSION } from '../shared/version.js';
import { parseEnrollmentToken } from '../shared/enrollment-token.js';
import type { AgentConfig } from './config.js';
import { RelayConnection } from './connection.js';
import { createIdentity, ensureStateDir, loadIdentity, saveIdentity, type AgentIdentity } from './identity-store.js';
import { TunnelServer } from './tunnel-server.js';
import { handleExec, inheritedEnv } from './ops/exec.js';
import { writeStatus } from './status-file.js';
import { PhaseAccess } from './phases/credentials.js';
import { watchAccessChanges } from './phases/grant.js';
import { AgentAuditLog } from './audit-log.js';
import { agentCapabilities, type AgentCapability } from './capabilities.js';
import { PhasesHandler } from './phases/handler.js';
import { reconcileIdentity, ssmIdentityStore } from './identity-ssm.js';

/** `uplink-agent credentials …`: how child processes fetch refreshed phase credentials. */
export function credentialProcessCommand(): string[] {
  return [process.execPath, fileURLToPath(new URL('./main.js', import.meta.url)), 'credentials'];
}

export class Agent {
  readonly tunnel: TunnelServer;
  connection: RelayConnection | undefined;
  identity!: AgentIdentity;
  /** The customer's approval and the phase credentials every operation runs under. */
  phases!: PhaseAccess;
  /** The customer's own hash-chained copy of what the vendor did. */
  audit!: AgentAuditLog;
  private accessWatch: { close(): void } | undefined;
  /** `/v1/phases`: answers the relay's long poll for the approval state. */
  readonly phasesHandler = new PhasesHandler(() => this.phases);
  private capabilities: AgentCapability[] = [];
  private statusTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  readonly fatal: Promise<UplinkError>;
  private resolveFatal!: (err: UplinkError) => void;

  constructor(
    readonly cfg: Readonly<AgentConfig>,
    readonly log: Logger,
  ) {
    this.fatal = new Promise((r) => (this.resolveFatal = r));
    this.tunnel = new TunnelServer(
      { maxConcurrentStreams: cfg.limits.maxConcurrentStreams, maxSpecBytes: cfg.limits.maxSpecBytes, h2SessionMemoryMiB: cfg.limits.h2SessionMemoryMiB },
      log,
    );
    this.tunnel.handle(AGENT_PATHS.info, async (stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      // region and account (from the SteadyState role ARN) label exported telemetry on the relay.
      const aws = this.cfg.aws ? { region: this.cfg.aws.region, accountId: this.cfg.aws.roles.steadyState.split(':')[4] ?? '' } : {};
      stream.end(JSON.stringify({ version: VERSION, applianceId: this.identity.applianceId, keyId: this.identity.keyId, pid: process.pid, ...aws }));
    });
    this.tunnel.handle(AGENT_PATHS.phases, this.phasesHandler.handle);
    this.tunnel.handle(AGENT_PATHS.exec, (stream, ctx) =>
      handleExec(stream, ctx, {
        cfg,
        maxFrameBytes: cfg.limits.maxFrameBytes,
        inheritEnv: () => inheritedEnv(cfg.operations.exec.inheritEnv),
        phases: () => this.phases,
        audit: () => this.audit,
        applianceId: () => this.identity.applianceId,
      }),
    );
  }

  /**
   * Load the identity, or make one bound to the appliance named by the enrollment token.
   * With `identitySsmParameter` the parameter is the truth and the state dir a cache.
   */
  private async prepareIdentity(): Promise<AgentIdentity> {
    ensureStateDir(this.cfg.stateDir);
    const relayHost = new URL(this.cfg.relayUrl).host.toLowerCase();
    const remote = this.cfg.identitySsmParameter
      ? ssmIdentityStore({ parameterName: this.cfg.identitySsmParameter, ...(this.cfg.aws ? { region: this.cfg.aws.region, ...(this.cfg.aws.endpoint ? { endpoint: this.cfg.aws.endpoint } : {}) } : {}) })
      : undefined;
    const cached = loadIdentity(this.cfg.stateDir);
    const stored = remote ? await remote.load() : undefined;
    const existing = stored ? reconcileIdentity(stored, cached, Boolean(this.cfg.enrollmentToken)) : remote ? undefined : cached;
    const tokenAppliance = this.cfg.enrollmentToken ? parseEnrollmentToken(this.cfg.enrollmentToken)?.applianceId : undefined;
    if (this.cfg.enrollmentToken && !tokenAppliance) {
      throw new UplinkError('UPLINK_ERR_ENROLL_TOKEN_INVALID', 'UPLINK_ENROLLMENT_TOKEN is not an uplink enrollment token (uplenr.…)');
    }
    if (existing) {
      if (tokenAppliance && tokenAppliance !== existing.applianceId) {
        throw new UplinkError(
          'UPLINK_ERR_AGENT_STATE_MISMATCH',
          `state dir ${this.cfg.stateDir} belongs to appliance ${existing.applianceId}, but the enrollment token is for ${tokenAppliance}`,
        );
      }
      if (existing.relayHost !== relayHost) {
        throw new UplinkError('UPLINK_ERR_AGENT_STATE_MISMATCH', `state dir ${this.cfg.stateDir} is enrolled with relay ${existing.relayHost}, not ${relayHost}`);
      }
      if (existing !== cached) saveIdentity(this.cfg.stateDir, existing);
      return existing;
    }
    if (!tokenAppliance) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `no identity in ${remote?.location ?? this.cfg.stateDir} and no UPLINK_ENROLLMENT_TOKEN to enroll with`);
    let created = createIdentity(tokenAppliance, relayHost);
    // Overwrite=false: when another task created it first, its identity is the one to use.
    if (remote) created = await remote.create(created);
    saveIdentity(this.cfg.stateDir, created);
    this.log.info({ keyId: created.keyId, appliance: created.applianceId, store: remote?.location ?? 'state dir' }, 'created agent identity');
    return created;
  }

  async start(): Promise<void> {
    this.identity = await this.prepareIdentity();
    this.audit = await AgentAuditLog.open(this.cfg.stateDir, {}, { logger: this.log });
    this.phases = new PhaseAccess({
      config: { ...(this.cfg.aws ? { aws: this.cfg.aws } : {}), local: this.cfg.local },
      stateDir: this.cfg.stateDir,
      credentialProcessCommand: credentialProcessCommand(),
      logger: this.log,
    });
    // `uplink-agent grant|revoke` (another process) touches a marker: re-check at once so a
    // revoke ends open Operate sessions without waiting for the periodic re-check.
    // The relay's held /v1/phases poll is answered too, so `uplink appliances` shows it at once.
    this.accessWatch = watchAccessChanges(this.cfg.stateDir, () => {
      void this.phases.accessChanged();
      this.phasesHandler.notify();
    });
    this.log.info({ mode: this.phases.mode }, this.phases.mode === 'local' ? 'phases decided by local config (no AWS roles configured)' : 'phases use the customer IAM roles');
    for (const cap of agentCapabilities()) {
      await cap.start(this);
      this.capabilities.push(cap);
    }
    this.connection = new RelayConnection(this.cfg, this.identity, this.tunnel, this.log);
    this.connection.on('fatal', (err: UplinkError) => this.resolveFatal(err));
    const write = () => {
      if (!this.connection) return;
      try {
        writeStatus(this.cfg.stateDir, { ...this.connection.status, pid: process.pid, version: VERSION, applianceId: this.identity.applianceId, updatedAt: new Date().toISOString() });
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'cannot write status file');
      }
    };
    this.connection.on('connected', write);
    this.connection.on('disconnected', write);
    this.statusTimer = setInterval(write, 5000);
    this.statusTimer.unref();
    this.connection.start();
    write();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.statusTimer);
    this.phasesHandler.notify();
    this.connection?.stop();
    this.tunnel.close();
    for (const cap of [...this.capabilities].reverse()) {
      await Promise.resolve(cap.stop?.()).catch((err) => this.log.error({ err: String(err), capability: cap.name }, 'capability stop failed'));
    }
    this.accessWatch?.close();
    await this.phases?.close();
    await this.audit?.close();
  }
}
