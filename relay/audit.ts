/**
 * The relay's audit capability: one hash-chained event per interactive operation (an
 * OpsBridge tap appending at the operation's end, with outcome and byte counts), and the
 * API to read and verify the chain:
 *
 *   GET /v1/audit?appliance=NAME&limit=N   events oldest first (scope read)
 *   GET /v1/audit/verify                   walk the whole chain (scope read)
 *
 * Appliance and token changes are appended by relay/api-routes.ts in the same chain. The
 * agent keeps its own copy of the operation events (agent/audit-log.ts); the two are
 * compared by request id.
 *
 * Appending never fails the operation: the bytes already flowed. A failed append is logged
 * at error level, because a gap here is what an auditor would ask about.
 */
import type { Logger } from '../shared/logger.js';
import type { JsonValue } from '../shared/audit/canonical-json.js';
import type { RelayCapability } from './capabilities.js';
import type { OpStartInfo, OpTap } from './ops-bridge.js';
import type { ApiContext } from './api-routes.js';
import { listQuery, sendJson, type Route } from './http-util.js';
import { ApiAuthenticator } from './api-auth.js';
import { AuditRepo } from './store/audit-repo.js';
import type { Store } from './store/store.js';

/** Longest target text kept in an event; the chain bounds fields anyway, this keeps them readable. */
const MAX_TARGET_CHARS = 512;

/** What the operation acted on, from its spec: the command line, else a named target. */
export function targetOf(op: string, spec: unknown): string | null {
  const s = (spec ?? {}) as Record<string, unknown>;
  if (op === 'shell') return (typeof s.command === 'string' ? s.command : '(interactive)').slice(0, MAX_TARGET_CHARS);
  if (typeof s.command === 'string') {
    const args = Array.isArray(s.args) ? s.args.filter((a): a is string => typeof a === 'string') : [];
    return [s.command, ...args].join(' ').slice(0, MAX_TARGET_CHARS);
  }
  if (typeof s.target === 'string') return s.target.slice(0, MAX_TARGET_CHARS);
  return null;
}

function phaseOf(info: OpStartInfo): string | null {
  return info.op.scope === 'operate' || info.op.scope === 'deploy' ? info.op.scope : null;
}

/** The tap: remembers the start, appends one event at the end. */
export function auditTap(repo: AuditRepo, log: Logger): (info: OpStartInfo) => OpTap {
  return (info) => {
    const start = new Date();
    return {
      onEnd(outcome) {
        const detail: { [key: string]: JsonValue } = outcome.error ? { code: outcome.error.code } : {};
        repo
          .append({
            actor: info.token.name,
            appliance: info.applianceId,
            operation: info.op.name,
            phase: phaseOf(info),
            requestId: info.requestId,
            target: targetOf(info.op.name, info.spec),
            start,
            end: new Date(),
            outcome: outcome.error ? 'error' : 'ok',
            // As on the agent: "in" is what the engineer sent, "out" what came back.
            bytesIn: outcome.bytesOut,
            bytesOut: outcome.bytesIn,
            detail,
          })
          .catch((err: unknown) => log.error({ request: info.requestId, err: String(err) }, 'cannot append relay audit event'));
      },
    };
  };
}

/** Audit routes; `appliance` may be a name (resolved to its id) or an id of a deleted one. */
export function auditRoutes(store: Store, repo: AuditRepo): Route<ApiContext>[] {
  return [
    {
      method: 'GET',
      pattern: /^\/v1\/audit$/,
      name: 'audit.list',
      handler: async (ctx) => {
        ApiAuthenticator.require(ctx.token, 'read');
        const { appliance: name, limit } = listQuery(ctx.req);
        const appliance = name === null ? undefined : ((await store.appliances.byName(name))?.id ?? name);
        const events = await repo.list({ ...(appliance !== undefined ? { appliance } : {}), ...(limit !== undefined ? { limit } : {}) });
        sendJson(ctx.res, 200, { events });
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/audit\/verify$/,
      name: 'audit.verify',
      handler: async (ctx) => {
        ApiAuthenticator.require(ctx.token, 'read');
        sendJson(ctx.res, 200, await repo.verify());
      },
    },
  ];
}

/** The relay capability: the tap on every operation and the routes. */
export function auditCapability(): RelayCapability {
  return {
    name: 'audit',
    start(relay) {
      const repo = new AuditRepo(relay.store.db);
      relay.ops.addTap(auditTap(repo, relay.log));
      relay.extensions.routes.push(...auditRoutes(relay.store, repo));
    },
  };
}
