/**
 * The deployment scheduler: runs queued deployments on agents, one at a time per appliance.
 *
 * Design (issue 5):
 * - State lives in the store (migration 0003-deployments): `releases` (the signed bundle as
 *   uploaded; the relay never holds the private key and cannot forge one: the agent is the
 *   judge), `deployments` (queued → running → succeeded|failed|cancelled|interrupted, each
 *   transition a conditional UPDATE) and `deployment_logs` (append-only chunks keyed by byte
 *   offset, so followers and the scheduler itself resume by offset).
 * - Per appliance, when this replica holds the agent's tunnel and nothing runs, the oldest
 *   queued deployment (by `seq`) starts: HTTP/2 POST to AGENT_PATHS.deployRun with the
 *   release in a JSON body; the agent verifies, extracts, starts terraform and answers with
 *   NDJSON events ({type:'log', offset, data} … {type:'result', …}). Logs are appended to
 *   the store in order, then followers are woken (EventEmitter here; followers on other
 *   replicas poll the store).
 * - A deployment marked `running` with no stream attached in this process (the relay
 *   restarted, or the tunnel reconnected) is re-attached with AGENT_PATHS.deployStatus
 *   {id, fromOffset: end of the stored log}; the agent kept running and kept the whole log
 *   in its state dir, so the final state and the complete log are recovered. An agent that
 *   does not know the id (it lost its state) makes it `interrupted`; an agent killed mid-run
 *   reports `interrupted` itself from its journal.
 * - Cancel: queued → `cancelled` at once in the store; running → `cancel_requested` is set
 *   and AGENT_PATHS.deployCancel sent (SIGINT, then SIGKILL on the agent); the agent's final
 *   result (`cancelled`) arrives on the event stream like any other.
 * - The scheduler polls every `pollMs`, and is kicked at once on new deployments and ends.
 * Every step goes to the relay's audit chain; the agent writes its own.
 */
import { EventEmitter } from 'node:events';
import type { ClientHttp2Stream } from 'node:http2';
import { UplinkError, errorFromBody, toUplinkError } from '../../shared/errors.js';
import { AGENT_PATHS, OP_HEADERS } from '../../shared/protocol.js';
import type { Relay } from '../server.js';
import type { AuditRepo } from '../store/audit-repo.js';
import type { Deployment, DeploymentStatus, DeploymentsRepo } from './deployments-repo.js';

/** Longest NDJSON line from the agent: a 64 KiB log piece in base64, or `output -json` (4 MiB). */
export const MAX_EVENT_LINE_BYTES = 8 * 1024 * 1024;
/** Largest error body the agent may answer a refusal with. */
const MAX_ERROR_BODY_BYTES = 64 * 1024;
export const SCHEDULER_POLL_MS = 500;

interface AgentEvent {
  type: 'log' | 'result';
  offset?: number;
  data?: string;
  status?: DeploymentStatus;
  outputs?: unknown;
  error?: { code: string; message: string } | null;
}

export class DeploymentScheduler {
  /** `log` (deploymentId) after chunks were stored; `end` (deploymentId) after the final status. */
  readonly events = new EventEmitter();
  /** applianceId → the stream this process is attached with. */
  private readonly attached = new Map<string, { deploymentId: string; stream: ClientHttp2Stream }>();
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private again = false;
  private stopped = false;

  constructor(
    private readonly relay: Relay,
    private readonly repo: DeploymentsRepo,
    private readonly audit: AuditRepo,
    private readonly pollMs = SCHEDULER_POLL_MS,
  ) {
    this.events.setMaxListeners(0);
  }

  start(): void {
    this.timer = setInterval(() => this.kick(), this.pollMs);
    this.timer.unref();
    this.kick();
  }

  /** Detach from every agent stream; running deployments carry on on the agents. */
  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    for (const { stream } of this.attached.values()) stream.close();
    this.attached.clear();
  }

  /** Look for work now (coalesced: one tick at a time, one more if kicked meanwhile). */
  kick(): void {
    if (this.stopped) return;
    if (this.ticking) {
      this.again = true;
      return;
    }
    this.ticking = true;
    void this.tick()
      .catch((err) => this.relay.log.error({ err: String(err) }, 'deployment scheduler tick failed'))
      .finally(() => {
        this.ticking = false;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  private async tick(): Promise<void> {
    for (const applianceId of await this.repo.activeApplianceIds()) {
      if (this.stopped || this.attached.has(applianceId) || !this.relay.gateway.get(applianceId)) continue;
      const running = await this.repo.running(applianceId);
      if (running) {
        const fromOffset = await this.repo.logEnd(running.id);
        this.attach(running, AGENT_PATHS.deployStatus, { id: running.id, fromOffset });
        if (running.cancelRequested) void this.sendCancel(running).catch(() => {});
        continue;
      }
      const next = await this.repo.oldestQueued(applianceId);
      if (!next || !(await this.repo.markRunning(next.id))) continue;
      await this.startRun(next);
    }
  }

  private async startRun(d: Deployment): Promise<void> {
    const appliance = await this.relay.store.appliances.byId(d.applianceId);
    const release = await this.repo.releaseById(d.releaseId);
    if (!appliance || !release) {
      await this.finish(d, 'failed', null, { code: 'UPLINK_ERR_NOT_FOUND', message: 'the appliance or release no longer exists' });
      return;
    }
    const archive = await this.repo.releaseArchiveBase64(release.id);
    await this.record(d, appliance.name, 'deploy.start', 'started', { version: d.version, action: d.action });
    this.attach(d, AGENT_PATHS.deployRun, {
      id: d.id,
      action: d.action,
      allowDowngrade: d.allowDowngrade,
      appliance: appliance.name,
      instanceId: appliance.instanceId,
      release: { manifest: release.manifest, signature: release.signature, archive },
    });
  }

  /** Open the agent stream and consume its events; a lost stream leaves the deployment `running`. */
  private attach(d: Deployment, path: string, body: unknown): void {
    const session = this.relay.gateway.get(d.applianceId);
    if (!session) return;
    let stream: ClientHttp2Stream;
    try {
      stream = session.request({ ':path': path, 'content-type': 'application/json', [OP_HEADERS.requestId]: d.id, [OP_HEADERS.actor]: d.createdBy }, 'deploy');
    } catch (err) {
      this.relay.log.warn({ deployment: d.id, err: toUplinkError(err).message }, 'cannot reach the agent for a deployment; will retry');
      return;
    }
    this.attached.set(d.applianceId, { deploymentId: d.id, stream });
    stream.on('error', () => {});
    stream.end(JSON.stringify(body));
    let chain: Promise<void> = Promise.resolve();
    let finished = false;
    const detach = () => {
      if (this.attached.get(d.applianceId)?.stream === stream) this.attached.delete(d.applianceId);
    };
    stream.once('close', () => {
      void chain.then(() => {
        detach();
        if (!finished) this.relay.log.info({ deployment: d.id }, 'agent stream closed before the result; will re-attach');
      });
    });
    stream.once('response', (headers) => {
      const status = Number(headers[':status']);
      if (status !== 200) {
        const parts: Buffer[] = [];
        let size = 0;
        stream.on('data', (c: Buffer) => {
          size += c.length;
          if (size <= MAX_ERROR_BODY_BYTES) parts.push(c);
        });
        stream.once('end', () => {
          let parsed: unknown;
          try {
            parsed = JSON.parse(Buffer.concat(parts).toString('utf8'));
          } catch {
            parsed = undefined;
          }
          const e = errorFromBody(parsed, status);
          finished = true;
          // The agent no longer knows this deployment (its state was lost): never "succeeded".
          const final = path === AGENT_PATHS.deployStatus && e.code === 'UPLINK_ERR_NOT_FOUND' ? 'interrupted' : 'failed';
          chain = chain.then(() => this.finish(d, final, null, { code: final === 'interrupted' ? 'UPLINK_ERR_DEPLOY_INTERRUPTED' : e.code, message: e.message }));
        });
        return;
      }
      let pending = '';
      stream.setEncoding('utf8');
      stream.on('data', (text: string) => {
        pending += text;
        if (pending.length > MAX_EVENT_LINE_BYTES) {
          stream.close();
          return;
        }
        let nl: number;
        while ((nl = pending.indexOf('\n')) !== -1) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          if (!line) continue;
          let ev: AgentEvent;
          try {
            ev = JSON.parse(line) as AgentEvent;
          } catch {
            stream.close();
            return;
          }
          if (ev.type === 'result') finished = true;
          chain = chain.then(() => this.onEvent(d, ev)).catch((err) => this.relay.log.error({ deployment: d.id, err: String(err) }, 'cannot record a deployment event'));
        }
      });
    });
  }

  private async onEvent(d: Deployment, ev: AgentEvent): Promise<void> {
    if (ev.type === 'log' && typeof ev.offset === 'number' && typeof ev.data === 'string') {
      await this.repo.appendLog(d.id, ev.offset, Buffer.from(ev.data, 'base64'));
      this.events.emit('log', d.id);
      return;
    }
    if (ev.type === 'result') {
      const ok = ['succeeded', 'failed', 'cancelled', 'interrupted'].includes(ev.status ?? '');
      await this.finish(d, ok ? ev.status! : 'failed', ev.outputs ?? null, ev.error ?? null);
    }
  }

  private async finish(d: Deployment, status: DeploymentStatus, outputs: unknown, error: { code: string; message: string } | null): Promise<void> {
    if (await this.repo.finish(d.id, status, outputs, error)) {
      const appliance = await this.relay.store.appliances.byId(d.applianceId);
      const outcome = status === 'succeeded' ? 'ok' : status === 'cancelled' ? 'cancelled' : 'error';
      await this.record(d, appliance?.name ?? d.applianceId, 'deploy.end', outcome, { status, version: d.version, action: d.action, code: error?.code ?? null });
      this.relay.log.info({ deployment: d.id, status, code: error?.code }, 'deployment ended');
    }
    this.events.emit('end', d.id);
    setImmediate(() => this.kick());
  }

  /** Audit the request that queued a deployment. */
  recordRequest(d: Deployment, appliance: string, actor: string): Promise<void> {
    return this.record(d, appliance, 'deploy.request', 'ok', { version: d.version, action: d.action, allowDowngrade: d.allowDowngrade }, actor);
  }

  /** Cancel: queued ones end here; running ones are cancelled on the agent. */
  async cancel(d: Deployment, actor: string): Promise<void> {
    const appliance = await this.relay.store.appliances.byId(d.applianceId);
    await this.record(d, appliance?.name ?? d.applianceId, 'deploy.cancel', 'ok', { status: d.status }, actor);
    if (d.status === 'queued') {
      if (await this.repo.finish(d.id, 'cancelled', null, { code: 'UPLINK_ERR_DEPLOY_CANCELLED', message: `cancelled by ${actor} before it started` })) {
        this.events.emit('end', d.id);
      }
      return;
    }
    if (d.status !== 'running') throw new UplinkError('UPLINK_ERR_CONFLICT', `deployment ${d.id} already ended (${d.status})`);
    await this.repo.requestCancel(d.id);
    await this.sendCancel(d);
  }

  private sendCancel(d: Deployment): Promise<void> {
    const session = this.relay.gateway.get(d.applianceId);
    // Not connected here: the replica (or the reconnect) that attaches sends it.
    if (!session) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const stream = session.request({ ':path': AGENT_PATHS.deployCancel, 'content-type': 'application/json', [OP_HEADERS.requestId]: d.id, [OP_HEADERS.actor]: d.createdBy }, 'deploy');
      stream.on('error', reject);
      stream.once('response', (h) => {
        stream.resume();
        stream.once('end', () => (Number(h[':status']) === 200 ? resolve() : reject(new UplinkError('UPLINK_ERR_REMOTE', `agent refused cancel with ${h[':status']}`))));
      });
      stream.end(JSON.stringify({ id: d.id }));
    });
  }

  private async record(d: Deployment, appliance: string, operation: string, outcome: 'started' | 'ok' | 'error' | 'cancelled', detail: Record<string, string | boolean | null>, actor = d.createdBy): Promise<void> {
    await this.audit
      .append({ actor, appliance, operation, outcome, phase: 'deploy', requestId: d.id, target: d.version, detail })
      .catch((err) => this.relay.log.error({ err: String(err), deployment: d.id }, 'cannot append audit event'));
  }
}
