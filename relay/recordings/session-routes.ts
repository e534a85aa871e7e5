/**
 * API routes for recorded sessions:
 *
 *   GET /v1/sessions?appliance=NAME&limit=N   metadata, newest first (scope read)
 *   GET /v1/sessions/:id                      one session's metadata (scope read)
 *   GET /v1/sessions/:id/recording            the asciicast v2 text, streamed chunk by
 *                                             chunk (scope operate: it holds what the
 *                                             engineer's terminal showed, secrets included)
 *
 * The metadata always carries `complete` and `incompleteReason`, so a client can say a
 * recording is partial before it reads a byte of it.
 */
import { once } from 'node:events';
import { UplinkError } from '../../shared/errors.js';
import type { ApiContext } from '../api-routes.js';
import { ApiAuthenticator } from '../api-auth.js';
import { listQuery, sendJson, type Route } from '../http-util.js';
import type { Store } from '../store/store.js';
import type { SessionRecord, SessionsRepo } from '../store/sessions-repo.js';

export function sessionView(s: SessionRecord, applianceName: string | null): Record<string, unknown> {
  return {
    id: s.id,
    appliance: applianceName,
    applianceId: s.applianceId,
    kind: s.kind,
    actor: s.actor,
    requestId: s.requestId,
    startedAt: s.startedAt.toISOString(),
    endedAt: s.endedAt?.toISOString() ?? null,
    exitCode: s.exitCode,
    complete: s.complete,
    incompleteReason: s.incompleteReason,
    bytes: s.bytes,
    width: s.width,
    height: s.height,
  };
}

export function sessionRoutes(store: Store, repo: SessionsRepo): Route<ApiContext>[] {
  const names = new Map<string, string | null>();
  const nameOf = async (applianceId: string): Promise<string | null> => {
    if (!names.has(applianceId)) names.set(applianceId, (await store.appliances.byId(applianceId))?.name ?? null);
    return names.get(applianceId) ?? null;
  };
  const mustGet = async (id: string): Promise<SessionRecord> => {
    const s = await repo.get(id);
    if (!s) throw new UplinkError('UPLINK_ERR_NOT_FOUND', `no session "${id}"`);
    return s;
  };
  return [
    {
      method: 'GET',
      pattern: /^\/v1\/sessions$/,
      name: 'sessions.list',
      handler: async (ctx) => {
        ApiAuthenticator.require(ctx.token, 'read');
        const { appliance: name, limit } = listQuery(ctx.req);
        let applianceId: string | undefined;
        if (name !== null) {
          const a = await store.appliances.byName(name);
          if (!a) throw new UplinkError('UPLINK_ERR_NOT_FOUND', `no appliance named "${name}"`);
          applianceId = a.id;
        }
        const list = await repo.list({ ...(applianceId ? { applianceId } : {}), ...(limit !== undefined ? { limit } : {}) });
        const sessions = [];
        for (const s of list) sessions.push(sessionView(s, await nameOf(s.applianceId)));
        sendJson(ctx.res, 200, { sessions });
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/sessions\/([^/]+)$/,
      name: 'sessions.get',
      handler: async (ctx, [id]) => {
        ApiAuthenticator.require(ctx.token, 'read');
        const s = await mustGet(id!);
        sendJson(ctx.res, 200, sessionView(s, await nameOf(s.applianceId)));
      },
    },
    {
      method: 'GET',
      pattern: /^\/v1\/sessions\/([^/]+)\/recording$/,
      name: 'sessions.recording',
      handler: async (ctx, [id]) => {
        ApiAuthenticator.require(ctx.token, 'operate');
        const s = await mustGet(id!);
        ctx.res.writeHead(200, {
          'content-type': 'application/x-asciicast',
          'cache-control': 'no-store',
          'x-uplink-recording-complete': String(s.complete),
        });
        // One chunk at a time, waiting for the client to take each: constant memory.
        for await (const chunk of repo.chunks(s.id)) {
          if (ctx.res.destroyed) return;
          if (!ctx.res.write(chunk)) await Promise.race([once(ctx.res, 'drain'), once(ctx.res, 'close')]);
        }
        ctx.res.end();
      },
    },
  ];
}
