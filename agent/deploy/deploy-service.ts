/**
 * The agent's deployment service: verify → Deploy phase session → extract → terraform, one
 * deployment at a time, with every deployment's output kept on disk so the relay can
 * re-attach after it (or the tunnel) restarted.
 *
 * On disk, per deployment: <stateDir>/deploy/<id>/log (the raw terraform output, appended in
 * order; a byte offset into it is what the relay resumes from) and, once the outcome is known,
 * <stateDir>/deploy/<id>/result.json. The last successfully applied release is in
 * <stateDir>/deploy/last-applied.json for the downgrade check.
 *
 * Contracts:
 * - a release's appliance binding is checked against the name pinned at enrollment; a
 *   request naming another appliance is refused (UPLINK_ERR_APPLIANCE_NAME_MISMATCH);
 * - nothing is extracted or run before verifyRelease accepted the release and the customer's
 *   Deploy approval opened a phase session (both refusals are audited);
 * - a closed request stream never stops a deployment: the relay restarting is not a cancel;
 *   only `cancel(id)` is (SIGINT, then SIGKILL after the runner's grace);
 * - a deployment found in the journal at start (the agent was killed) gets result
 *   `interrupted`, never `succeeded`.
 */
import { EventEmitter } from 'node:events';
import { appendFileSync, mkdirSync } from 'node:fs';
import { appendFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UplinkError, toUplinkError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import type { PinnedReleaseKey } from '../../shared/release/release-key.js';
import type { PinnedApplianceName } from '../appliance-name.js';
import type { AgentAuditLog } from '../audit-log.js';
import type { PhaseAccess } from '../phases/credentials.js';
import { DEPLOYMENT_ID_PATTERN, type DeployAction } from './deploy-journal.js';
import { extractRelease } from './extract.js';
import { TerraformRunner, type DeployCredentials, type DeploymentResult } from './terraform-runner.js';
import { verifyRelease, type AppliedRelease } from './verify-release.js';

/** Starts each line the agent itself adds to a deployment's log (crash recovery). */
export const RECOVERY_PREFIX = '[uplink-agent]';

/** What the relay sends to start a deployment (already decoded from the request body). */
export interface RunRequest {
  id: string;
  action: DeployAction;
  allowDowngrade: boolean;
  /** The appliance name as the relay states it; it must equal the pinned one (appliance-name.ts). */
  appliance: string;
  /** Becomes TF_VAR_instance_id. */
  instanceId: string;
  release: { manifest: unknown; signature: unknown; archive: Buffer };
}

/** The outcome kept in result.json and sent to the relay as the last event. */
export interface StoredResult {
  id: string;
  status: 'succeeded' | 'failed' | 'cancelled' | 'interrupted';
  outputs: unknown;
  error: { code: string; message: string } | null;
  planHasChanges?: boolean;
}

export interface DeployServiceOptions {
  stateDir: string;
  pinnedKeys: readonly PinnedReleaseKey[];
  terraformPath: string | null;
  region: string | null;
  phases: () => PhaseAccess;
  audit: () => AgentAuditLog;
  applianceId: () => string;
  /** The name pinned at enrollment: release bindings are checked against it, not the request's. */
  applianceName: PinnedApplianceName;
  log: Logger;
}

interface Active {
  id: string;
  cancel(): void;
  done: Promise<StoredResult>;
}

export class DeployService {
  readonly runner: TerraformRunner;
  /** 'output' (id) after a chunk was appended; 'end' (id) after result.json is written. */
  readonly events = new EventEmitter();
  private active: Active | null = null;

  constructor(private readonly opts: DeployServiceOptions) {
    this.runner = new TerraformRunner({ stateDir: opts.stateDir, logger: opts.log, binaryPath: opts.terraformPath });
    this.events.setMaxListeners(0);
  }

  private dir(id: string): string {
    return join(this.opts.stateDir, 'deploy', id);
  }

  logPath(id: string): string {
    return join(this.dir(id), 'log');
  }

  /**
   * Crash recovery at start: deployments the journal still lists were interrupted; record
   * that in their result.json so the relay learns it when it asks, then acknowledge.
   */
  async recover(): Promise<string[]> {
    const notes = new Map<string, string[]>();
    const entries = await this.runner.recover(this.opts.log, (id, text) => notes.set(id, [...(notes.get(id) ?? []), text]));
    for (const e of entries) {
      if (!(await this.result(e.deploymentId))) {
        // Appended before result.json: a follower reads these lines, then the outcome.
        const lines = [`the agent stopped during ${e.phase === 'starting' ? 'the start' : `terraform ${e.phase}`} (started ${e.startedAt}); this deployment is interrupted, never succeeded`, ...(notes.get(e.deploymentId) ?? [])];
        await mkdir(this.dir(e.deploymentId), { recursive: true, mode: 0o700 });
        await appendFile(this.logPath(e.deploymentId), `\n${lines.map((l) => `${RECOVERY_PREFIX} ${l}\n`).join('')}`, { mode: 0o600 });
        await this.writeResult({ id: e.deploymentId, status: 'interrupted', outputs: null, error: { code: 'UPLINK_ERR_DEPLOY_INTERRUPTED', message: `the agent stopped during ${e.phase}` } });
      }
      await this.opts.audit().append({ actor: 'agent', appliance: this.opts.applianceId(), operation: `deploy.${e.action}`, phase: 'deploy', requestId: e.deploymentId, outcome: 'error', end: new Date(), detail: { status: 'interrupted', step: e.phase } }).catch(() => {});
      await this.runner.journal.acknowledge(e.deploymentId);
      this.opts.log.warn({ deployment: e.deploymentId, step: e.phase }, 'deployment was interrupted by an agent stop');
    }
    return entries.map((e) => e.deploymentId);
  }

  runningId(): string | null {
    return this.active?.id ?? null;
  }

  isRunning(id: string): boolean {
    return this.active?.id === id;
  }

  /** The stored outcome, or null while running or unknown. */
  async result(id: string): Promise<StoredResult | null> {
    if (!DEPLOYMENT_ID_PATTERN.test(id)) return null;
    const text = await readFile(join(this.dir(id), 'result.json'), 'utf8').catch(() => null);
    return text === null ? null : (JSON.parse(text) as StoredResult);
  }

  /** Whether the agent ever accepted this deployment (its directory exists). */
  async known(id: string): Promise<boolean> {
    if (!DEPLOYMENT_ID_PATTERN.test(id)) return false;
    return (await readFile(this.logPath(id)).then(() => true, () => false)) || this.isRunning(id);
  }

  cancel(id: string): boolean {
    if (this.active?.id !== id) return false;
    this.active.cancel();
    return true;
  }

  /**
   * Verify, open the Deploy phase session, extract and start. Resolves once terraform was
   * started (or throws the refusal); the outcome arrives via `events` and result.json.
   */
  async start(req: RunRequest, ctx: { actor: string; requestId: string; receiveMs?: number }): Promise<void> {
    if (!DEPLOYMENT_ID_PATTERN.test(req.id)) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'deployment id is malformed');
    if (this.active) throw new UplinkError('UPLINK_ERR_DEPLOY_BUSY', `deployment ${this.active.id} is running; one deployment runs at a time`);
    if ((await this.known(req.id)) || (await this.result(req.id))) throw new UplinkError('UPLINK_ERR_CONFLICT', `deployment ${req.id} was already started on this agent`);
    const operation = `deploy.${req.action}` as const;
    const auditBase = { actor: ctx.actor, appliance: this.opts.applianceId(), operation, phase: 'deploy', requestId: req.id, start: new Date() };
    const refuse = async (err: unknown, outcome: 'denied' | 'error'): Promise<never> => {
      const e = toUplinkError(err);
      await this.opts.audit().append({ ...auditBase, outcome, end: new Date(), detail: { code: e.code, message: e.message.slice(0, 512) } }).catch(() => {});
      this.opts.log.warn({ deployment: req.id, code: e.code }, 'deployment refused');
      throw e;
    };
    // Reserve the slot before the first await so two requests cannot both pass the check.
    let release!: (r: StoredResult) => void;
    const placeholder: Active = { id: req.id, cancel: () => {}, done: new Promise((r) => (release = r)) };
    this.active = placeholder;
    try {
      // A plan changes nothing, so it is not held to version order.
      const t0 = performance.now();
      const lastApplied = req.action === 'plan' ? null : await this.lastApplied();
      let verified;
      try {
        const appliance = this.opts.applianceName.resolve(req.appliance, 'deploy request');
        verified = verifyRelease(req.release, { pinnedKeys: this.opts.pinnedKeys, appliance, lastApplied });
        if (verified.downgrade && !req.allowDowngrade) {
          throw new UplinkError('UPLINK_ERR_RELEASE_DOWNGRADE', `release ${verified.manifest.version} is not newer than the applied ${lastApplied?.version}; deploy it with --allow-downgrade`, {
            details: { version: verified.manifest.version, applied: lastApplied?.version ?? null, reason: 'not-confirmed' },
          });
        }
      } catch (err) {
        return await refuse(err, 'denied');
      }
      const t1 = performance.now();
      let session;
      try {
        session = await this.opts.phases().open({ phase: 'deploy', actor: ctx.actor, requestId: ctx.requestId, operation });
      } catch (err) {
        return await refuse(err, 'denied');
      }
      let credentials: DeployCredentials | null = null;
      let workDir: string;
      let t2 = t1;
      try {
        if (session.mode === 'aws') {
          const c = await session.awsCredentials()();
          credentials = { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, ...(c.sessionToken ? { sessionToken: c.sessionToken } : {}), ...(this.opts.region ? { region: this.opts.region } : {}) };
        }
        t2 = performance.now();
        await mkdir(this.dir(req.id), { recursive: true, mode: 0o700 });
        await writeFile(this.logPath(req.id), '', { mode: 0o600 });
        const parentDir = join(this.opts.stateDir, 'deploy', 'work');
        await mkdir(parentDir, { recursive: true, mode: 0o700 });
        workDir = (await extractRelease(verified.archive, verified.manifest, { parentDir, logger: this.opts.log })).dir;
      } catch (err) {
        await session.close();
        return await refuse(err, 'error');
      }
      const t3 = performance.now();
      await this.opts.audit().append({ ...auditBase, outcome: 'started', detail: { version: verified.manifest.version, keyId: verified.keyId, phaseMode: session.mode } });
      // The marker for "the agent hands over to terraform", with where the time went before it.
      const ms = (a: number, b: number) => Math.round((b - a) * 10) / 10;
      this.opts.log.info(
        { deployment: req.id, version: verified.manifest.version, archiveBytes: verified.archive.length, ms: { receive: ctx.receiveMs ?? null, verify: ms(t0, t1), phase: ms(t1, t2), extract: ms(t2, t3) } },
        'release verified and extracted; starting terraform',
      );
      const logFile = this.logPath(req.id);
      mkdirSync(this.dir(req.id), { recursive: true });
      const run = this.runner.start({
        deploymentId: req.id,
        action: req.action,
        workDir,
        instanceId: req.instanceId,
        credentials,
        onOutput: (chunk) => {
          // Synchronous append keeps the file's length equal to the runner's offset.
          appendFileSync(logFile, chunk.data);
          this.events.emit('output', req.id);
        },
      });
      placeholder.cancel = () => run.cancel();
      session.once('ended', () => run.cancel());
      const finished = run.result.then(
        (r) => this.toStored(req.id, r),
        (err: unknown) => {
          const e = toUplinkError(err);
          return { id: req.id, status: 'failed' as const, outputs: null, error: { code: e.code, message: e.message } };
        },
      );
      void finished.then(async (stored) => {
        try {
          if (stored.status === 'succeeded' && req.action !== 'plan') {
            await this.saveLastApplied({ version: verified.manifest.version, archiveSha256: verified.manifest.archiveSha256 });
          }
          await session.close().catch(() => {});
          await rm(workDir, { recursive: true, force: true });
          await this.opts.audit().append({ ...auditBase, outcome: stored.status === 'succeeded' ? 'ok' : stored.status === 'cancelled' ? 'cancelled' : 'error', end: new Date(), detail: { status: stored.status, version: verified.manifest.version, code: stored.error?.code ?? null } }).catch(() => {});
          // Last, and with the slot freed in the same continuation: the relay starts the next
          // deployment as soon as it sees this result, which must not find the agent busy.
          await this.writeResult(stored);
        } finally {
          this.active = null;
          release(stored);
          this.events.emit('end', req.id);
        }
      });
    } catch (err) {
      if (this.active === placeholder) this.active = null;
      throw err;
    }
  }

  private toStored(id: string, r: DeploymentResult): StoredResult {
    return {
      id,
      status: r.status,
      outputs: r.outputs,
      error: r.error ? { code: r.error.code, message: r.error.message } : null,
      ...(r.planHasChanges !== undefined ? { planHasChanges: r.planHasChanges } : {}),
    };
  }

  private async writeResult(result: StoredResult): Promise<void> {
    await mkdir(this.dir(result.id), { recursive: true, mode: 0o700 });
    const path = join(this.dir(result.id), 'result.json');
    await writeFile(`${path}.tmp`, JSON.stringify(result), { mode: 0o600 });
    await rename(`${path}.tmp`, path);
  }

  private async lastApplied(): Promise<AppliedRelease | null> {
    const text = await readFile(join(this.opts.stateDir, 'deploy', 'last-applied.json'), 'utf8').catch(() => null);
    return text === null ? null : (JSON.parse(text) as AppliedRelease);
  }

  private async saveLastApplied(applied: AppliedRelease): Promise<void> {
    const path = join(this.opts.stateDir, 'deploy', 'last-applied.json');
    await writeFile(`${path}.tmp`, JSON.stringify(applied), { mode: 0o600 });
    await rename(`${path}.tmp`, path);
  }

  /** Wait for the running deployment (tests, shutdown). */
  async idle(): Promise<void> {
    if (this.active) await this.active.done;
  }
}
