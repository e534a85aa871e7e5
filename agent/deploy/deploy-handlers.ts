/**
 * Tunnel handlers for deployments (AGENT_PATHS.deployRun, deployStatus, deployCancel, and
 * applianceName: the name releases are bound to, pinned at enrollment) and the agent
 * capability that registers them.
 *
 * Wire format (relay → agent): a JSON request body, bounded by `deploy.maxRequestBytes`.
 * Answer: an error status + {code, message} when refused, else 200 with NDJSON events:
 *   {"type":"log","offset":N,"data":"<base64>"}   terraform output, byte offsets into the log
 *   {"type":"result","id":…,"status":…,"outputs":…,"error":…}   last line, then end of stream
 * `run` streams from offset 0; `status` from the relay's `fromOffset`, so a relay that lost
 * the stream (restart, reconnect) fetches exactly the tail it misses.
 */
import { open } from 'node:fs/promises';
import type { ServerHttp2Stream } from 'node:http2';
import { UplinkError } from '../../shared/errors.js';
import { AGENT_PATHS } from '../../shared/protocol.js';
import type { Agent } from '../agent.js';
import { PinnedApplianceName, applianceNameHandler } from '../appliance-name.js';
import type { AgentCapability } from '../capabilities.js';
import { DeployService, type RunRequest, type StoredResult } from './deploy-service.js';
import { wakeOn } from '../../shared/wake.js';

/** Largest log piece per NDJSON line (before base64). */
export const LOG_EVENT_BYTES = 64 * 1024;
/** Largest status/cancel request body: an id and an offset. */
const SMALL_BODY_BYTES = 4096;
/** How often a follower re-checks the log when no event woke it (an event normally does). */
const FOLLOW_POLL_MS = 1000;

async function readBody(stream: ServerHttp2Stream, limit: number): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `deploy request exceeds ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'deploy request is not JSON');
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'deploy request must be a JSON object');
  return parsed as Record<string, unknown>;
}

function str(body: Record<string, unknown>, key: string): string {
  const v = body[key];
  if (typeof v !== 'string' || v.length === 0 || v.length > 256) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `deploy request: "${key}" must be a string of 1-256 characters`);
  return v;
}

/** Decode the run request; the release inside stays untrusted until verifyRelease. */
export function parseRunRequest(body: Record<string, unknown>): RunRequest {
  const action = body.action;
  if (action !== 'apply' && action !== 'plan' && action !== 'destroy') throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'deploy request: "action" must be apply, plan or destroy');
  const rel = body.release as Record<string, unknown> | undefined;
  if (!rel || typeof rel !== 'object' || typeof rel.archive !== 'string') {
    throw new UplinkError('UPLINK_ERR_RELEASE_MALFORMED', 'deploy request: "release" must hold manifest, signature and a base64 archive');
  }
  return {
    id: str(body, 'id'),
    action,
    allowDowngrade: body.allowDowngrade === true,
    appliance: str(body, 'appliance'),
    instanceId: str(body, 'instanceId'),
    release: { manifest: rel.manifest, signature: rel.signature, archive: Buffer.from(rel.archive, 'base64') },
  };
}

async function readAt(path: string, offset: number): Promise<Buffer> {
  const fh = await open(path, 'r').catch(() => null);
  if (!fh) return Buffer.alloc(0);
  try {
    const buf = Buffer.alloc(LOG_EVENT_BYTES);
    const { bytesRead } = await fh.read(buf, 0, LOG_EVENT_BYTES, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

function write(stream: ServerHttp2Stream, event: unknown): Promise<void> {
  if (stream.write(`${JSON.stringify(event)}\n`)) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

/**
 * Stream the log from `offset`, following it while the deployment runs, then the result.
 * Stops quietly when the relay goes away: the deployment itself carries on.
 */
export async function pumpEvents(service: DeployService, stream: ServerHttp2Stream, id: string, fromOffset: number): Promise<void> {
  let offset = fromOffset;
  while (!stream.destroyed && !stream.closed) {
    const data = await readAt(service.logPath(id), offset);
    if (data.length > 0) {
      await write(stream, { type: 'log', offset, data: data.toString('base64') });
      offset += data.length;
      continue;
    }
    // result.json is written only after every output chunk was appended, so once it
    // exists and the log is read to its end, nothing more will come.
    const result: StoredResult | null = await service.result(id);
    if (result) {
      stream.end(`${JSON.stringify({ type: 'result', ...result })}\n`);
      return;
    }
    if (!service.isRunning(id)) {
      const lost: StoredResult = { id, status: 'interrupted', outputs: null, error: { code: 'UPLINK_ERR_DEPLOY_INTERRUPTED', message: 'the agent has no outcome for this deployment' } };
      stream.end(`${JSON.stringify({ type: 'result', ...lost })}\n`);
      return;
    }
    await wakeOn(service.events, ['output', 'end'], id, stream, FOLLOW_POLL_MS);
  }
}

function respondNdjson(stream: ServerHttp2Stream): void {
  stream.respond({ ':status': 200, 'content-type': 'application/x-ndjson' });
}

/** Register the deploy handlers on an agent; `recover()` runs first so status answers are right. */
export function deployCapability(): AgentCapability {
  let service: DeployService | undefined;
  return {
    name: 'deploy',
    async start(agent: Agent) {
      const enrolledBefore = agent.identity.enrolledAt !== null && agent.identity.enrolledAt !== 'unconfirmed';
      const applianceName = new PinnedApplianceName(agent.cfg.stateDir, agent.identity, enrolledBefore, agent.log.child({ component: 'appliance-name' }));
      const svc = new DeployService({
        stateDir: agent.cfg.stateDir,
        pinnedKeys: agent.cfg.releaseKeys,
        terraformPath: agent.cfg.deploy.terraformPath ?? null,
        region: agent.cfg.aws?.region ?? null,
        phases: () => agent.phases,
        audit: () => agent.audit,
        applianceId: () => agent.identity.applianceId,
        applianceName,
        log: agent.log.child({ component: 'deploy' }),
      });
      service = svc;
      await svc.recover();
      agent.tunnel.handle(AGENT_PATHS.applianceName, applianceNameHandler(applianceName, agent.identity.applianceId));
      const limit = agent.cfg.deploy.maxRequestBytes;
      agent.tunnel.handle(AGENT_PATHS.deployRun, async (stream, ctx) => {
        const received = performance.now();
        const req = parseRunRequest(await readBody(stream, limit));
        await svc.start(req, { actor: ctx.actor, requestId: ctx.requestId, receiveMs: Math.round((performance.now() - received) * 10) / 10 });
        respondNdjson(stream);
        await pumpEvents(svc, stream, req.id, 0);
      });
      agent.tunnel.handle(AGENT_PATHS.deployStatus, async (stream) => {
        const body = await readBody(stream, SMALL_BODY_BYTES);
        const id = str(body, 'id');
        const from = body.fromOffset ?? 0;
        if (typeof from !== 'number' || !Number.isSafeInteger(from) || from < 0) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', '"fromOffset" must be a non-negative integer');
        if (!(await svc.known(id)) && !(await svc.result(id))) throw new UplinkError('UPLINK_ERR_NOT_FOUND', `this agent has no deployment ${id}`);
        respondNdjson(stream);
        await pumpEvents(svc, stream, id, from);
      });
      agent.tunnel.handle(AGENT_PATHS.deployCancel, async (stream, ctx) => {
        const id = str(await readBody(stream, SMALL_BODY_BYTES), 'id');
        const cancelling = svc.cancel(id);
        if (!cancelling && !(await svc.result(id))) throw new UplinkError('UPLINK_ERR_NOT_FOUND', `no deployment ${id} runs on this agent`);
        if (cancelling) {
          await agent.audit.append({ actor: ctx.actor, appliance: agent.identity.applianceId, operation: 'deploy.cancel', phase: 'deploy', requestId: id, outcome: 'ok', end: new Date() }).catch(() => {});
        }
        stream.respond({ ':status': 200, 'content-type': 'application/json' });
        stream.end(JSON.stringify({ id, cancelling }));
      });
    },
    async stop() {
      // A graceful stop cancels (SIGINT, then SIGKILL) and waits, so no terraform outlives
      // the agent unjournalled; a crash instead leaves the journal to report `interrupted`.
      if (!service) return;
      const running = service.runningId();
      if (running) service.cancel(running);
      await service.idle();
    },
  };
}
