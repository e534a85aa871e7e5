/**
 * Vendor API routes for the foundation: tokens and appliances. Interactive operations
 * (exec, …) are WebSocket upgrades handled by ops-bridge.ts.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { UplinkError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { ApiAuthenticator } from './api-auth.js';
import type { AgentGateway } from './gateway.js';
import type { RelayConfig } from './config.js';
import type { Store } from './store/store.js';
import type { Appliance } from './store/appliances-repo.js';
import { SCOPES, hashSecret, type ApiToken, type Scope } from './store/tokens-repo.js';
import { readJsonBody, sendJson, type Route } from './http-util.js';
import { newEnrollmentToken } from '../shared/enrollment-token.js';
import { AuditRepo } from './store/audit-repo.js';

/** `appliance` of audit events that concern the relay itself (tokens), not one appliance. */
export const RELAY_AUDIT_SCOPE = 'relay';

export interface ApiContext {
  req: IncomingMessage;
  res: ServerResponse;
  token: ApiToken;
  requestId: string;
  log: Logger;
}

export interface ApiDeps {
  cfg: Readonly<RelayConfig>;
  store: Store;
  gateway: AgentGateway;
  publicUrl: () => string;
}

const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

function requireString(body: Record<string, unknown>, key: string, max: number, pattern?: RegExp): string {
  const v = body[key];
  if (typeof v !== 'string' || v.length === 0 || v.length > max || (pattern && !pattern.test(v))) {
    throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `field "${key}" must be a non-empty string${pattern ? ` matching ${pattern}` : ''} of at most ${max} characters`);
  }
  return v;
}

function rejectUnknown(body: Record<string, unknown>, allowed: string[]): void {
  const unknown = Object.keys(body).filter((k) => !allowed.includes(k));
  if (unknown.length) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `unknown field(s): ${unknown.join(', ')}`);
}

export function tokenView(t: ApiToken): Record<string, unknown> {
  return {
    id: t.id,
    name: t.name,
    scopes: t.scopes,
    createdAt: t.createdAt.toISOString(),
    createdBy: t.createdBy,
    revokedAt: t.revokedAt?.toISOString() ?? null,
    lastUsedAt: t.lastUsedAt?.toISOString() ?? null,
  };
}

/** The stored phase summary without the relay's bookkeeping (the agent's fingerprint). */
function publicPhases(stored: Record<string, unknown> | null): Record<string, unknown> | null {
  if (!stored) return null;
  const { fingerprint: _fingerprint, ...view } = stored;
  return view;
}

export function buildApiRoutes(deps: ApiDeps): Route<ApiContext>[] {
  const { cfg, store, gateway } = deps;
  const audit = new AuditRepo(store.db);

  const applianceView = (a: Appliance, live: Map<string, { relayId: string; remoteAddress: string | null; agentVersion: string | null; connectedAt: Date }>) => {
    const local = gateway.get(a.id);
    const p = live.get(a.id);
    return {
      id: a.id,
      name: a.name,
      customer: a.customer,
      instanceId: a.instanceId,
      createdAt: a.createdAt.toISOString(),
      enrolled: a.enrolledAt !== null,
      keyId: a.keyId,
      keyRevoked: a.keyRevokedAt !== null,
      connected: Boolean(local) || Boolean(p),
      relayId: local ? gateway.relayId : (p?.relayId ?? null),
      connectedAt: (local?.connectedAt ?? p?.connectedAt)?.toISOString() ?? null,
      lastSeenAt: local ? new Date().toISOString() : (a.lastSeenAt?.toISOString() ?? null),
      agentVersion: local?.info.agentVersion ?? p?.agentVersion ?? a.agentVersion,
      remoteAddress: local?.info.remoteAddress ?? p?.remoteAddress ?? a.lastRemoteAddress,
      phases: publicPhases(a.phaseSummary),
    };
  };

  const livePresence = async () =>
    new Map((await store.presence.listLive(new Date(), cfg.presence.staleAfterMs)).map((p) => [p.applianceId, p]));

  const issueEnrollment = async (a: Appliance, ttlMs: number) => {
    const token = newEnrollmentToken(a.id);
    const expiresAt = new Date(Date.now() + ttlMs);
    await store.appliances.addEnrollmentToken(a.id, hashSecret(token), expiresAt);
    const url = deps.publicUrl();
    return {
      enrollmentToken: token,
      expiresAt: expiresAt.toISOString(),
      agentCommand: `UPLINK_RELAY_URL=${url} UPLINK_ENROLLMENT_TOKEN=${token} UPLINK_STATE_DIR=/var/lib/uplink uplink-agent run`,
    };
  };

  const ttlFrom = (body: Record<string, unknown>): number => {
    if (body.tokenTtlSeconds === undefined) return cfg.auth.enrollmentTokenTtlMs;
    const n = body.tokenTtlSeconds;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 60 || n > 30 * 86400) {
      throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'tokenTtlSeconds must be an integer between 60 and 2592000');
    }
    return n * 1000;
  };

  const mustFindAppliance = async (name: string): Promise<Appliance> => {
    const a = await store.appliances.byName(name);
    if (!a) throw new UplinkError('UPLINK_ERR_NOT_FOUND', `no appliance named "${name}"`);
    return a;
  };

  return [
    {
      method: 'GET',
      pattern: /^\/v1\/whoami$/,
      name: 'whoami',
      handler: async (ctx) => sendJson(ctx.res, 200, tokenView(ctx.token)),
    },
    {
      method: 'GET',
      pattern: /^\/v1\/tokens$/,
      name: 'tokens.list',
      handler: async (ctx) => {
        ApiAuthenticator.require(ctx.token, 'admin');
        sendJson(ctx.res, 200, { tokens: (await store.tokens.list()).map(tokenView) });
      },
    },
    {
      method: 'POST',
      pattern: /^\/v1\/tokens$/,
      name: 'tokens.create',
      handler: async (ctx) => {
        ApiAuthenticator.require(ctx.token, 'admin');
        const body = await readJsonBody(ctx.req, cfg.limits.maxJsonBodyBytes);
        rejectUnknown(body, ['name', 'scopes']);
        const name = requireString(body, 'name', 64, /^[A-Za-z0-9@._+-]+$/);
        const scopes = body.scopes;
        if (!Array.isArray(scopes) || scopes.length === 0 || !scopes.every((s) => (SCOPES as readonly unknown[]).includes(s))) {
          throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `scopes must be a non-empty list of: ${SCOPES.join(', ')}`);
        }
        const created = await store.tokens.create({ name, scopes: [...new Set(scopes as Scope[])], createdBy: ctx.token.name });
        await audit.append({ actor: ctx.token.name, appliance: RELAY_AUDIT_SCOPE, operation: 'token.create', requestId: ctx.requestId, target: `${created.token.id} ${name}`, outcome: 'ok', detail: { scopes: created.token.scopes } });
        ctx.log.info({ tokenId: created.token.id, scopes: created.token.scopes }, 'API token created');
        sendJson(ctx.res, 201, { ...tokenView(created.token), token: created.value });
      },
    },
    {
      method: 'DELETE',
      pattern: /^\/v1\/tokens\/([^/]+)$/,
      name: 'tokens.revoke',
      handler: async (ctx, [id]) => {
        ApiAuthenticator.require(ctx.token, 'admin');
        if (!(await store.tokens.revoke(id!, new Date()))) throw new UplinkError('UPLINK_ERR_NOT_FOUND', `no active token "${id}"`);
        await audit.append({ actor: ctx.token.name, appliance: RELAY_AUDIT_SCOPE, operation: 'token.revoke', requestId: ctx.requestId, target: id!, outcome: 'ok' });
        ctx.log.info({ token: id }, 'API token revoked');
        sendJson(ctx.res, 200, { revoked: id });
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/appliances$/,
      name: 'appliances.list',
      handler: async (ctx) => {
        ApiAuthenticator.require(ctx.token, 'read');
        const live = await livePresence();
        sendJson(ctx.res, 200, { appliances: (await store.appliances.list()).map((a) => applianceView(a, live)) });
      },
    },
    {
      method: 'POST',
      pattern: /^\/v1\/appliances$/,
      name: 'appliances.create',
      handler: async (ctx) => {
        ApiAuthenticator.require(ctx.token, 'admin');
        const body = await readJsonBody(ctx.req, cfg.limits.maxJsonBodyBytes);
        rejectUnknown(body, ['name', 'customer', 'instanceId', 'tokenTtlSeconds']);
        const name = requireString(body, 'name', 63, NAME);
        const customer = requireString(body, 'customer', 128);
        const instanceId = requireString(body, 'instanceId', 128, /^[A-Za-z0-9._:-]+$/);
        const ttl = ttlFrom(body);
        const appliance = await store.appliances.create({ name, customer, instanceId });
        const enrollment = await issueEnrollment(appliance, ttl);
        await audit.append({ actor: ctx.token.name, appliance: appliance.id, operation: 'appliance.create', requestId: ctx.requestId, target: name, outcome: 'ok', detail: { customer, instanceId } });
        ctx.log.info({ appliance: name, customer, instanceId }, 'appliance created');
        sendJson(ctx.res, 201, { appliance: applianceView(appliance, new Map()), ...enrollment });
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/appliances\/([^/]+)$/,
      name: 'appliances.get',
      handler: async (ctx, [name]) => {
        ApiAuthenticator.require(ctx.token, 'read');
        const a = await mustFindAppliance(name!);
        sendJson(ctx.res, 200, applianceView(a, await livePresence()));
      },
    },
    {
      method: 'POST',
      pattern: /^\/v1\/appliances\/([^/]+)\/enrollment-token$/,
      name: 'appliances.enrollmentToken',
      handler: async (ctx, [name]) => {
        ApiAuthenticator.require(ctx.token, 'admin');
        const body = await readJsonBody(ctx.req, cfg.limits.maxJsonBodyBytes);
        rejectUnknown(body, ['tokenTtlSeconds']);
        const a = await mustFindAppliance(name!);
        const enrollment = await issueEnrollment(a, ttlFrom(body));
        ctx.log.info({ appliance: a.name }, 'enrollment token issued');
        sendJson(ctx.res, 201, enrollment);
      },
    },
    {
      method: 'POST',
      pattern: /^\/v1\/appliances\/([^/]+)\/revoke$/,
      name: 'appliances.revoke',
      handler: async (ctx, [name]) => {
        ApiAuthenticator.require(ctx.token, 'admin');
        const a = await mustFindAppliance(name!);
        if (!a.publicKey) throw new UplinkError('UPLINK_ERR_CONFLICT', `appliance "${a.name}" has no enrolled key`);
        await store.appliances.revokeKey(a.id, new Date());
        gateway.revoke(a.id);
        await audit.append({ actor: ctx.token.name, appliance: a.id, operation: 'appliance.revoke', requestId: ctx.requestId, target: a.name, outcome: 'ok', detail: { keyId: a.keyId } });
        ctx.log.warn({ appliance: a.name, keyId: a.keyId }, 'agent key revoked');
        sendJson(ctx.res, 200, { appliance: a.name, keyId: a.keyId, revoked: true });
      },
    },
  ];
}
