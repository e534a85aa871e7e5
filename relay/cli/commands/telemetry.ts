/**
 * `uplink telemetry tail APPLIANCE [--logs|--metrics|--traces] [--json] [--limit N]`
 *
 * A live view of the telemetry the relay delivers to its sinks for one appliance (records
 * pass through the relay's pull loop; see relay/telemetry/tail-hub.ts). `--json` prints
 * one record per line exactly as the relay sends it; otherwise one readable line per
 * record. `--limit N` exits after N records (scripts, the demo). A relay without sinks
 * answers UPLINK_ERR_TELEMETRY_DISABLED: it pulls nothing, so there is nothing to show.
 */
import { readFileSync } from 'node:fs';
import { Agent, request } from 'undici';
import { UplinkError, errorFromBody } from '../../../shared/errors.js';
import { EXIT, parseCommand, str } from '../../../shared/cli-args.js';
import type { TelemetryRecord } from '../../../shared/telemetry/record.js';
import type { Command, CliContext } from '../context.js';

/** One NDJSON line from the relay may not exceed this (records are bounded by the agent's spool at 1 MiB). */
const MAX_LINE_BYTES = 2 * 1024 * 1024;
const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** A readable one-liner: time, signal, and the body, metric or span name. */
export function formatRecord(r: TelemetryRecord): string {
  const ns = /^\d+$/.test(r.timeUnixNano) ? BigInt(r.timeUnixNano) : 0n;
  const time = new Date(Number(ns / 1_000_000n)).toISOString();
  const p = r.payload as Record<string, unknown>;
  let what: string;
  if (r.signal === 'logs') {
    const body = p.body as Record<string, unknown> | undefined;
    const text = body ? (typeof body.stringValue === 'string' ? body.stringValue : JSON.stringify(Object.values(body)[0])) : '';
    what = `${typeof p.severityText === 'string' && p.severityText ? `${p.severityText} ` : ''}${text}`;
  } else if (r.signal === 'metrics') {
    const kind = ['gauge', 'sum', 'histogram', 'summary', 'exponentialHistogram'].find((k) => p[k] !== undefined);
    const point = kind ? ((p[kind] as { dataPoints?: Array<Record<string, unknown>> }).dataPoints ?? [])[0] : undefined;
    const value = point ? (point.asDouble ?? point.asInt ?? point.sum ?? point.count ?? '') : '';
    what = `${String(p.name ?? '')} ${String(value)}`;
  } else {
    what = `span ${String(p.name ?? '')}`;
  }
  return `${time} ${r.signal.padEnd(7)} ${r.source} ${what}`.replace(/[\r\n]+/g, ' ');
}

async function tail(ctx: CliContext, appliance: string, signal: string | undefined, json: boolean, limit: number | undefined): Promise<number> {
  const cfg = ctx.client().cfg;
  const dispatcher = new Agent(cfg.caFile ? { connect: { ca: readFileSync(cfg.caFile) } } : {});
  const ac = new AbortController();
  const onSigint = (): void => ac.abort();
  process.once('SIGINT', onSigint);
  try {
    const url = `${cfg.url}/v1/appliances/${encodeURIComponent(appliance)}/telemetry/tail${signal ? `?signal=${signal}` : ''}`;
    let res;
    try {
      res = await request(url, { dispatcher, signal: ac.signal, headers: { authorization: `Bearer ${cfg.token}` } });
    } catch (err) {
      throw new UplinkError('UPLINK_ERR_RELAY_UNREACHABLE', `cannot reach ${cfg.url}: ${(err as Error).message}`, { cause: err });
    }
    if (res.statusCode !== 200) {
      const text = await res.body.text();
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        body = undefined;
      }
      throw errorFromBody(body, res.statusCode);
    }
    let shown = 0;
    let buf = '';
    try {
      for await (const chunk of res.body) {
        buf += (chunk as Buffer).toString('utf8');
        if (buf.length > MAX_LINE_BYTES) throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `a tail line exceeds ${MAX_LINE_BYTES} bytes`);
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          const item = JSON.parse(line) as TelemetryRecord & { skipped?: number };
          if (typeof item.skipped === 'number') {
            ctx.io.stderr.write(`(${item.skipped} records skipped: this terminal fell behind)\n`);
            continue;
          }
          ctx.io.stdout.write(json ? `${line}\n` : `${formatRecord(item)}\n`);
          if (limit !== undefined && ++shown >= limit) {
            ac.abort();
            return EXIT.ok;
          }
        }
      }
    } catch (err) {
      if (ac.signal.aborted) return EXIT.ok;
      throw err;
    }
    return EXIT.ok;
  } finally {
    process.off('SIGINT', onSigint);
    await dispatcher.destroy().catch(() => undefined);
  }
}

export const telemetryTailCommand: Command = {
  words: ['telemetry', 'tail'],
  summary: 'live view of the telemetry an appliance sends (read)',
  usage: `Usage: uplink telemetry tail APPLIANCE [--logs|--metrics|--traces] [--json] [--limit N]
Shows records as the relay delivers them to its sinks, until Ctrl-C (or N records).
--json prints each record as one JSON line, with the relay's resource attributes.`,
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, {
      logs: { type: 'boolean' },
      metrics: { type: 'boolean' },
      traces: { type: 'boolean' },
      json: { type: 'boolean' },
      limit: { type: 'string' },
    });
    if (positionals.length !== 1 || !NAME.test(positionals[0]!)) throw new UplinkError('UPLINK_ERR_USAGE', 'telemetry tail takes exactly one APPLIANCE name');
    const signals = (['logs', 'metrics', 'traces'] as const).filter((s) => values[s] === true);
    if (signals.length > 1) throw new UplinkError('UPLINK_ERR_USAGE', 'give at most one of --logs, --metrics, --traces');
    const limitText = str(values.limit);
    const limit = limitText === undefined ? undefined : Number(limitText);
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) throw new UplinkError('UPLINK_ERR_USAGE', '--limit must be a positive integer');
    return tail(ctx, positionals[0]!, signals[0], values.json === true, limit);
  },
};
