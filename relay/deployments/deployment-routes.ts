/**
 * Vendor API for releases and deployments, and the relay capability that wires the store,
 * the scheduler and these routes together.
 *
 *   POST /v1/releases                          deploy  {manifest, signature, archive(base64)}
 *   GET  /v1/releases                          read
 *   POST /v1/appliances/:name/deployments      deploy  {version, action?, allowDowngrade?}
 *   GET  /v1/appliances/:name/deployments      read
 *   GET  /v1/deployments/:id                   read
 *   GET  /v1/deployments/:id/logs?offset=N&follow=1   read; raw bytes, chunked
 *   POST /v1/deployments/:id/cancel            deploy
 *
 * The relay checks only what it can check without trusting itself: the manifest's shape and
 * that the archive matches the digest the manifest states (catching a corrupt upload early).
 * The signature, key, appliance binding and version order are the agent's decision.
 */
import { createHash } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { UplinkError } from '../../shared/errors.js';
import { checkManifestShape } from '../../shared/release/manifest.js';
import type { AgentSession } from '../agent-session.js';
import { ApiAuthenticator } from '../api-auth.js';
import type { ApiContext } from '../api-routes.js';
import type { RelayCapability } from '../capabilities.js';
import { readJsonBody, sendJson, type Route } from '../http-util.js';
import type { Relay } from '../server.js';
import { AuditRepo } from '../store/audit-repo.js';
import { DeploymentsRepo, FINAL_STATUSES, type Deployment, type ReleaseRow } from './deployments-repo.js';
import { announceApplianceName } from './appliance-name-announce.js';
import { DeploymentScheduler } from './scheduler.js';
import { wakeOn } from '../../shared/wake.js';

/** Chunks read from the store per round trip when serving logs. */
const LOG_CHUNKS_PER_READ = 256;
/** A follower re-reads the store this often even without a wake-up (another replica writes). */
const FOLLOW_POLL_MS = 1000;
/** JSON around the base64 archive: manifest (file list) and signature. */
const RELEASE_ENVELOPE_BYTES = 8 * 1024 * 1024;

const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
const DEP_ID = /^dep_[0-9a-f]{16}$/;

export function releaseView(r: ReleaseRow): Record<string, unknown> {
  return { id: r.id, version: r.version, appliance: r.appliance, size: r.size, keyId: r.manifest.keyId ?? null, notes: r.manifest.notes ?? null, createdBy: r.createdBy, createdAt: r.createdAt.toISOString() };
}

export function deploymentView(d: Deployment, applianceName?: string): Record<string, unknown> {
  return {
    id: d.id,
    applianceId: d.applianceId,
    ...(applianceName ? { appliance: applianceName } : {}),
    version: d.version,
    action: d.action,
    allowDowngrade: d.allowDowngrade,
    status: d.status,
    createdBy: d.createdBy,
    createdAt: d.createdAt.toISOString(),
    startedAt: d.startedAt?.toISOString() ?? null,
    endedAt: d.endedAt?.toISOString() ?? null,
    outputs: d.outputs,
    error: d.error,
  };
}

export function buildDeploymentRoutes(relay: Relay, repo: DeploymentsRepo, scheduler: DeploymentScheduler): Route<ApiContext>[] {
  const maxRelease = relay.cfg.limits.maxReleaseBytes;
  const mustFindAppliance = async (name: string) => {
    const a = await relay.store.appliances.byName(name);
    if (!a) throw new UplinkError('UPLINK_ERR_NOT_FOUND', `no appliance named "${name}"`);
    return a;
  };
  const mustFindDeployment = async (id: string) => {
    const d = DEP_ID.test(id) ? await repo.get(id) : undefined;
    if (!d) throw new UplinkError('UPLINK_ERR_NOT_FOUND', `no deployment ${id}`);
    return d;
  };

  const followLogs = async (res: ServerResponse, id: string, from: number, follow: boolean): Promise<void> => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'no-store' });
    let offset = from;
    let closed = false;
    res.once('close', () => (closed = true));
    while (!closed) {
      const chunks = await repo.readLog(id, offset, LOG_CHUNKS_PER_READ);
      for (const c of chunks) {
        if (!res.write(c.data)) await new Promise<void>((r) => res.once('drain', r).once('close', r));
        offset = c.offset + c.data.length;
      }
      if (chunks.length === LOG_CHUNKS_PER_READ) continue;
      const d = await repo.get(id);
      if (!follow || !d || FINAL_STATUSES.includes(d.status)) {
        // The final status is written after the last chunk: one more read catches any tail.
        if (chunks.length === 0) break;
        continue;
      }
      await wakeOn(scheduler.events, ['log', 'end'], id, res, FOLLOW_POLL_MS);
    }
    res.end();
  };

  return [
    {
      method: 'POST',
      pattern: /^\/v1\/releases$/,
      name: 'releases.create',
      handler: async ({ req, res, token }) => {
        ApiAuthenticator.require(token, 'deploy');
        const body = await readJsonBody(req, Math.ceil((maxRelease * 4) / 3) + RELEASE_ENVELOPE_BYTES);
        if (typeof body.archive !== 'string' || typeof body.signature !== 'string') {
          throw new UplinkError('UPLINK_ERR_RELEASE_MALFORMED', 'body must hold manifest, signature (string) and archive (base64)');
        }
        const manifest = checkManifestShape(body.manifest);
        const archive = Buffer.from(body.archive, 'base64');
        if (archive.length > maxRelease) throw new UplinkError('UPLINK_ERR_RELEASE_TOO_LARGE', `archive is ${archive.length} bytes; the relay accepts at most ${maxRelease} (limits.maxReleaseBytes)`);
        if (archive.length !== manifest.archiveSize || createHash('sha256').update(archive).digest('hex') !== manifest.archiveSha256) {
          throw new UplinkError('UPLINK_ERR_RELEASE_DIGEST_MISMATCH', 'the uploaded archive does not match the digest in its manifest');
        }
        const r = await repo.createRelease({ version: manifest.version, appliance: manifest.appliance, manifest, signature: body.signature, archive, createdBy: token.name });
        sendJson(res, 201, { release: releaseView(r) });
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/releases$/,
      name: 'releases.list',
      handler: async ({ res, token }) => {
        ApiAuthenticator.require(token, 'read');
        sendJson(res, 200, { releases: (await repo.listReleases()).map(releaseView) });
      },
    },
    {
      method: 'POST',
      pattern: /^\/v1\/appliances\/([^/]+)\/deployments$/,
      name: 'deployments.create',
      handler: async ({ req, res, token }, [name]) => {
        ApiAuthenticator.require(token, 'deploy');
        const body = await readJsonBody(req, relay.cfg.limits.maxJsonBodyBytes);
        const unknown = Object.keys(body).filter((k) => !['version', 'action', 'allowDowngrade'].includes(k));
        if (unknown.length) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `unknown field(s): ${unknown.join(', ')}`);
        if (!NAME.test(name!)) throw new UplinkError('UPLINK_ERR_NOT_FOUND', `no appliance named "${name}"`);
        const action = body.action ?? 'apply';
        if (action !== 'apply' && action !== 'plan' && action !== 'destroy') throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'field "action" must be apply, plan or destroy');
        if (typeof body.version !== 'string' || body.version.length === 0 || body.version.length > 128) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'field "version" must be a release version');
        if (body.allowDowngrade !== undefined && typeof body.allowDowngrade !== 'boolean') throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'field "allowDowngrade" must be a boolean');
        const appliance = await mustFindAppliance(name!);
        const release = await repo.findRelease(body.version, appliance.name);
        if (!release) throw new UplinkError('UPLINK_ERR_NOT_FOUND', `no release ${body.version} for appliance ${appliance.name} (see uplink releases)`);
        const d = await repo.createDeployment({ applianceId: appliance.id, releaseId: release.id, action, allowDowngrade: body.allowDowngrade === true, createdBy: token.name });
        await scheduler.recordRequest(d, appliance.name, token.name);
        scheduler.kick();
        sendJson(res, 201, { deployment: deploymentView(d, appliance.name) });
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/appliances\/([^/]+)\/deployments$/,
      name: 'deployments.list',
      handler: async ({ res, token }, [name]) => {
        ApiAuthenticator.require(token, 'read');
        const appliance = await mustFindAppliance(name!);
        sendJson(res, 200, { deployments: (await repo.listForAppliance(appliance.id)).map((d) => deploymentView(d, appliance.name)) });
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/deployments\/([^/]+)$/,
      name: 'deployments.get',
      handler: async ({ res, token }, [id]) => {
        ApiAuthenticator.require(token, 'read');
        const d = await mustFindDeployment(id!);
        const a = await relay.store.appliances.byId(d.applianceId);
        sendJson(res, 200, { deployment: deploymentView(d, a?.name) });
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/deployments\/([^/]+)\/logs$/,
      name: 'deployments.logs',
      handler: async ({ req, res, token }, [id]) => {
        ApiAuthenticator.require(token, 'read');
        await mustFindDeployment(id!);
        const q = new URL(req.url ?? '/', 'http://x').searchParams;
        const offset = Number(q.get('offset') ?? '0');
        if (!Number.isSafeInteger(offset) || offset < 0) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'offset must be a non-negative integer');
        await followLogs(res, id!, offset, q.get('follow') === '1');
      },
    },
    {
      method: 'POST',
      pattern: /^\/v1\/deployments\/([^/]+)\/cancel$/,
      name: 'deployments.cancel',
      handler: async ({ res, token }, [id]) => {
        ApiAuthenticator.require(token, 'deploy');
        const d = await mustFindDeployment(id!);
        await scheduler.cancel(d, token.name);
        sendJson(res, 202, { deployment: deploymentView((await repo.get(d.id))!) });
      },
    },
  ];
}

/** The relay capability: store repo, scheduler, routes, and the name announcement on connect. */
export function deploymentsCapability(): RelayCapability {
  let scheduler: DeploymentScheduler | undefined;
  let stopAnnouncing = (): void => {};
  return {
    name: 'deployments',
    start(relay: Relay) {
      const repo = new DeploymentsRepo(relay.store.db);
      scheduler = new DeploymentScheduler(relay, repo, new AuditRepo(relay.store.db));
      relay.extensions.routes.push(...buildDeploymentRoutes(relay, repo, scheduler));
      const announce = (s: AgentSession) => void announceApplianceName(s, relay.log);
      relay.agentEvents.on('connected', announce);
      stopAnnouncing = () => relay.agentEvents.off('connected', announce);
      scheduler.start();
    },
    stop() {
      stopAnnouncing();
      scheduler?.stop();
    },
  };
}
