/**
 * `uplink audit [--appliance A] [--limit N] [--verify] [--json]`: the relay's hash-chained
 * audit log (every operation, appliance and token change).
 *
 * `--verify` walks the whole chain in the relay store: exit 0 when intact, exit 1 naming
 * the first bad seq when a row was edited, removed, reordered or inserted. The customer's
 * copy is checked on their side with `uplink-agent audit --verify`.
 */
import { EXIT, parseCommand, str } from '../../../shared/cli-args.js';
import type { AuditRecord } from '../../../shared/audit/event.js';
import type { Command } from '../context.js';
import { renderTable } from '../table.js';

interface VerifyView {
  ok: boolean;
  count: number;
  lastSeq: number;
  lastHash: string;
  firstBadSeq?: number;
  reason?: string;
  message?: string;
  head: { seq: number; hash: string };
}

export const auditCommand: Command = {
  words: ['audit'],
  summary: "show or verify the relay's hash-chained audit log",
  usage: `Usage: uplink audit [--appliance A] [--limit N] [--verify] [--json]
  --verify   check the whole chain; exit 1 and name the first bad seq if any row was
             edited, removed, reordered or inserted`,
  async run(ctx) {
    const { values } = parseCommand(
      ctx.argv,
      { appliance: { type: 'string' }, limit: { type: 'string' }, verify: { type: 'boolean' }, json: { type: 'boolean' } },
      { allowPositionals: false },
    );
    if (values.verify) {
      const r = await ctx.client().call<VerifyView>('GET', '/v1/audit/verify');
      if (values.json) ctx.io.stdout.write(`${JSON.stringify(r)}\n`);
      else if (r.ok) ctx.io.stdout.write(`relay audit log: ${r.count} events, chain intact (last seq ${r.lastSeq}, hash ${r.lastHash.slice(0, 16)}…)\n`);
      else ctx.io.stdout.write(`relay audit log: chain BROKEN at seq ${r.firstBadSeq ?? '?'}: ${r.message ?? r.reason ?? 'mismatch'}; ${r.count} events before it verified\n`);
      return r.ok ? EXIT.ok : EXIT.failure;
    }
    const q = new URLSearchParams();
    if (str(values.appliance)) q.set('appliance', str(values.appliance)!);
    if (str(values.limit)) q.set('limit', str(values.limit)!);
    const r = await ctx.client().call<{ events: AuditRecord[] }>('GET', `/v1/audit${q.size ? `?${q}` : ''}`);
    if (values.json) {
      ctx.io.stdout.write(`${JSON.stringify(r)}\n`);
      return EXIT.ok;
    }
    const rows = r.events.map((e) => [String(e.seq), e.time, e.actor, e.appliance, e.operation, e.phase ?? '-', e.outcome, String(e.bytesIn), String(e.bytesOut), e.target ?? '']);
    ctx.io.stdout.write(renderTable(['SEQ', 'TIME', 'ACTOR', 'APPLIANCE', 'OPERATION', 'PHASE', 'OUTCOME', 'IN', 'OUT', 'TARGET'], rows));
    return EXIT.ok;
  },
};
