/**
 * sql: run one query on a SQL target the customer defined (sql-targets.ts) and stream the
 * result back as NDJSON: one SqlEvent per line (shared/sql-format.ts), `columns` first,
 * `rows` batches, `done` last.
 *
 * The response waits for the first event: everything that can fail before a row exists
 * (unknown target, secret unreadable, connection refused, syntax error, a write in a
 * read-only transaction, the statement timeout of a query that returns nothing before it)
 * reaches the vendor as an HTTP status and an uplink code with the SQLSTATE in `details`.
 * A failure after that point is a final `{"type":"error",code,message,details}` line.
 *
 * Memory stays bounded whatever the result size: the runner fetches one batch per pull and
 * this handler pulls only when the tunnel stream has drained, so a slow CLI slows the
 * cursor. Closing the stream (Ctrl-C, CLI gone) or the Operate session ending cancels the
 * query on the server.
 */
import { once } from 'node:events';
import type { ServerHttp2Stream } from 'node:http2';
import { z } from 'zod';
import { UplinkError, toUplinkError } from '../../shared/errors.js';
import { OP_HEADERS } from '../../shared/protocol.js';
import type { SqlEvent } from '../../shared/sql-format.js';
import type { AgentAuditLog } from '../audit-log.js';
import type { PhaseAccess } from '../phases/credentials.js';
import type { RequestContext } from '../tunnel-server.js';
import { runSql, type SqlRunnerOptions } from './sql-runner.js';
import { resolveSqlTarget, type ResolveSqlTargetOptions, type SqlTargetsConfig } from './sql-targets.js';

/** `operations.sql` in the agent config. */
export const sqlOperationSchema = z.strictObject({ enabled: z.boolean().default(true) }).prefault({});

export const SQL_SPEC_LIMITS = Object.freeze({
  /** Longest query text accepted in a spec (the runner's maxQueryBytes applies too). */
  maxQueryChars: 1_048_576,
  maxTargetNameChars: 63,
});

const specSchema = z.strictObject({
  target: z.string().min(1).max(SQL_SPEC_LIMITS.maxTargetNameChars),
  query: z.string().min(1).max(SQL_SPEC_LIMITS.maxQueryChars),
  write: z.boolean().default(false),
  maxRows: z.number().int().min(1).optional(),
});

export type SqlSpec = z.output<typeof specSchema>;

export function parseSqlSpec(raw: unknown): SqlSpec {
  const r = specSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `sql spec: ${issue?.path.join('.') || '(spec)'}: ${issue?.message ?? 'invalid'}`);
  }
  return r.data;
}

export interface SqlDeps {
  enabled: boolean;
  targets: Readonly<SqlTargetsConfig>;
  phases(): PhaseAccess;
  audit(): AgentAuditLog;
  applianceId(): string;
  /** Region and endpoint for Secrets Manager (the phase config's). */
  aws?: { region?: string; endpoint?: string };
  runner?: Partial<SqlRunnerOptions>;
}

function line(ev: SqlEvent | { type: 'error'; code: string; message: string; details?: Record<string, unknown> }): string {
  return `${JSON.stringify(ev)}\n`;
}

export async function handleSql(stream: ServerHttp2Stream, ctx: RequestContext, deps: SqlDeps): Promise<void> {
  if (!deps.enabled) throw new UplinkError('UPLINK_ERR_OPERATION_DISABLED', 'sql is disabled by the customer on this agent (operations.sql.enabled)');
  const spec = parseSqlSpec(ctx.spec);
  const auditBase = {
    actor: ctx.actor,
    appliance: deps.applianceId(),
    operation: 'sql',
    phase: 'operate',
    requestId: ctx.requestId,
    target: `${spec.target}${spec.write ? ' (write)' : ''}: ${spec.query}`.slice(0, 512),
    start: new Date(),
  };
  let session;
  try {
    session = await deps.phases().open({ phase: 'operate', actor: ctx.actor, requestId: ctx.requestId, operation: 'sql' });
  } catch (err) {
    await deps.audit().append({ ...auditBase, outcome: 'denied', end: new Date(), detail: { code: toUplinkError(err).code } }).catch(() => {});
    throw err;
  }

  const abort = new AbortController();
  const cancel = (): void => abort.abort(new UplinkError('UPLINK_ERR_SQL_CANCELLED', 'cancelled'));
  stream.once('close', cancel);
  session.once('ended', cancel);
  let rows = 0;
  let outcome: 'ok' | 'error' = 'ok';
  let code: string | undefined;
  try {
    const opts: ResolveSqlTargetOptions = {
      signal: abort.signal,
      // Secrets Manager is read with the Operate role, never the agent's own credentials.
      ...(session.mode === 'aws' ? { awsCredentials: session.awsCredentials() as unknown as ResolveSqlTargetOptions['awsCredentials'] } : {}),
      ...(deps.aws?.region ? { region: deps.aws.region } : {}),
      ...(deps.aws?.endpoint ? { endpoint: deps.aws.endpoint } : {}),
    };
    const target = await resolveSqlTarget(spec.target, deps.targets, opts);
    const events = runSql({ target, query: spec.query, write: spec.write, ...(spec.maxRows ? { maxRows: spec.maxRows } : {}), signal: abort.signal }, deps.runner, { logger: ctx.log });
    // Errors before the first event propagate: the tunnel server answers status + code.
    const first = await events.next();
    stream.respond({ ':status': 200, 'content-type': 'application/x-ndjson', [OP_HEADERS.phaseMode]: session.mode });
    try {
      let next = first;
      while (!next.done) {
        const ev = next.value;
        if (ev.type === 'rows') rows += ev.rows.length;
        if (stream.destroyed) break;
        if (!stream.write(line(ev))) await Promise.race([once(stream, 'drain'), once(stream, 'close')]);
        next = await events.next();
      }
    } catch (err) {
      const e = toUplinkError(err);
      outcome = 'error';
      code = e.code;
      if (!stream.destroyed) stream.write(line({ type: 'error', code: e.code, message: e.message, ...(e.details ? { details: e.details } : {}) }));
    } finally {
      await events.return(undefined);
    }
    if (!stream.destroyed && !stream.writableEnded) stream.end();
  } catch (err) {
    outcome = 'error';
    code = toUplinkError(err).code;
    throw err;
  } finally {
    stream.off('close', cancel);
    await session.close();
    await deps
      .audit()
      .append({ ...auditBase, outcome, end: new Date(), detail: { rows, write: spec.write, ...(code ? { code } : {}) } })
      .catch((err: unknown) => ctx.log.error({ err: String(err) }, 'cannot append audit event'));
  }
}
