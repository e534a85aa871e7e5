/**
 * `uplink-agent audit [--verify] [--json] [--limit N]`: the customer's own copy of what the
 * vendor did on this appliance, hash-chained in `<stateDir>/audit/audit.log`.
 */
import { UplinkError } from '../../shared/errors.js';
import { EXIT, parseCommand, str, type Io } from '../../shared/cli-args.js';
import { auditLogPath, readAuditLog, verifyAuditFile, type AgentAuditLog } from '../audit-log.js';
import type { AccessAuditEvent, AuditSink } from '../phases/grant.js';

export const AUDIT_HELP = `Usage: uplink-agent audit [--verify] [--json] [--limit N]

Prints the audit log this agent keeps in the customer's account: every operation the vendor
asked for (who, what, phase, outcome, bytes) and every grant and revoke. Each line is
hash-chained to the one before it.
  --verify   check the whole chain; exit 1 and name the first bad line if anything was
             edited, removed, reordered or inserted
  --limit N  only the last N events (default: all)
`;

export async function runAuditCommand(argv: string[], stateDir: string, io: Io): Promise<number> {
  const { values } = parseCommand(argv, { verify: { type: 'boolean' }, json: { type: 'boolean' }, limit: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, { allowPositionals: false });
  if (values.help) {
    io.stdout.write(AUDIT_HELP);
    return EXIT.ok;
  }
  const path = auditLogPath(stateDir);
  if (values.verify) {
    const r = await verifyAuditFile(path);
    if (values.json) io.stdout.write(`${JSON.stringify({ path, ...r })}\n`);
    else if (r.ok) io.stdout.write(`audit log ${path}: ${r.count} events, chain intact (last seq ${r.lastSeq}, hash ${r.lastHash.slice(0, 16)}…)${r.tornTail ? '; an interrupted last line will be repaired' : ''}\n`);
    else io.stdout.write(`audit log ${path}: chain BROKEN at line ${r.firstBadIndex ?? '?'} (seq ${r.firstBadSeq ?? '?'}): ${r.reason ?? 'mismatch'}; ${r.count} events before it verified\n`);
    return r.ok ? EXIT.ok : EXIT.failure;
  }
  const limitText = str(values.limit);
  const limit = limitText === undefined ? undefined : Number(limitText);
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) throw new UplinkError('UPLINK_ERR_USAGE', '--limit wants a positive integer');
  const events = [];
  for await (const e of readAuditLog(path)) {
    events.push(e);
    if (limit !== undefined && events.length > limit) events.shift();
  }
  for (const e of events) {
    if (values.json) io.stdout.write(`${JSON.stringify(e)}\n`);
    else io.stdout.write(`${e.seq}\t${e.time}\t${e.actor}\t${e.operation}\t${e.phase ?? '-'}\t${e.outcome}\t${e.target ?? ''}\n`);
  }
  return EXIT.ok;
}

/** grant/revoke events go into the same chain as everything else. */
export function auditLogSink(log: AgentAuditLog, applianceId: string): AuditSink {
  return async (event: AccessAuditEvent) => {
    await log.append({
      actor: event.actor,
      appliance: applianceId,
      operation: event.type,
      phase: event.phase,
      outcome: 'ok',
      detail: JSON.parse(JSON.stringify({ ...event })) as Record<string, never>,
    });
  };
}
