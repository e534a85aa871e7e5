/**
 * Fan a pulled batch out to every configured sink, and keep the telemetry metrics.
 *
 * `send` resolves only when every sink accepted the batch; the pull loop acknowledges the
 * batch to the agent only then (end-to-end at-least-once). If any sink fails, `send`
 * rejects with that sink's error and the batch is pulled again later: sinks that already
 * took it see it twice, and readers drop the repeats by record id. Sinks run in parallel,
 * so the slowest sink sets the pace of the pulls (backpressure) and nothing piles up here.
 *
 * Metrics (prom-client, on the Registry passed in):
 *   uplink_telemetry_records_total{appliance,signal,direction}  in = pulled, out = accepted by all sinks
 *   uplink_telemetry_bytes_total{appliance,direction}            in = pulled body, out = request bodies sent by sinks
 *   uplink_telemetry_retries_total{sink}
 *   uplink_telemetry_dropped_total{reason}                      refused by a sink for good, or reported by an agent
 *   uplink_telemetry_lag_seconds{appliance}                     event time of the newest delivered record to now
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { UplinkError, toUplinkError } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import type { SignalKind } from '../../shared/telemetry/record.js';
import type { Sink, SinkBatch, SinkDropReason, SinkObserver } from './sink.js';

/** The telemetry metrics; pass it to sinks as their `observer`. */
export class TelemetryMetrics implements SinkObserver {
  readonly records: Counter<'appliance' | 'signal' | 'direction'>;
  readonly bytes: Counter<'appliance' | 'direction'>;
  readonly retries: Counter<'sink'>;
  readonly drops: Counter<'reason'>;
  readonly lag: Gauge<'appliance'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.records = new Counter({ name: 'uplink_telemetry_records_total', help: 'Telemetry records pulled from agents (in) and accepted by every sink (out).', labelNames: ['appliance', 'signal', 'direction'], registers });
    this.bytes = new Counter({ name: 'uplink_telemetry_bytes_total', help: 'Telemetry bytes pulled from agents (in) and sent by sinks (out).', labelNames: ['appliance', 'direction'], registers });
    this.retries = new Counter({ name: 'uplink_telemetry_retries_total', help: 'Export retries per sink.', labelNames: ['sink'], registers });
    this.drops = new Counter({ name: 'uplink_telemetry_dropped_total', help: 'Telemetry records lost, by reason.', labelNames: ['reason'], registers });
    this.lag = new Gauge({ name: 'uplink_telemetry_lag_seconds', help: 'Age of the newest record delivered to every sink, per appliance.', labelNames: ['appliance'], registers });
  }

  retry(sink: string): void {
    this.retries.inc({ sink });
  }

  sent(_sink: string, appliance: string, _signal: SignalKind, _records: number, bytes: number): void {
    this.bytes.inc({ appliance, direction: 'out' }, bytes);
  }

  dropped(_sink: string, reason: SinkDropReason, records: number): void {
    this.drops.inc({ reason }, records);
  }

  /** Losses the agent reports (its spool was full or corrupt), e.g. `agent_spool_full`. */
  agentDropped(reason: string, records: number): void {
    if (records > 0) this.drops.inc({ reason }, records);
  }
}

/** Options of `TelemetryFanout`. */
export interface FanoutOptions {
  sinks: readonly Sink[];
  metrics: TelemetryMetrics;
  logger?: Logger;
  /** Clock for the lag gauge (ms). */
  now?: () => number;
}

/** A batch as pulled: `encodedBytes` is the size of the pull response, for bytes-in. */
export interface FanoutBatch extends SinkBatch {
  encodedBytes?: number;
}

/** Sends each batch to every sink; see the file comment for the contract. */
export class TelemetryFanout {
  private readonly sinks: readonly Sink[];
  private readonly metrics: TelemetryMetrics;
  private readonly log: Logger;
  private readonly now: () => number;
  private closing: Promise<void> | undefined;

  constructor(opts: FanoutOptions) {
    if (opts.sinks.length === 0) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'telemetry needs at least one sink', { details: { field: 'telemetry.sinks' } });
    const names = opts.sinks.map((s) => s.name);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `two telemetry sinks are named "${dup}"`, { details: { field: 'telemetry.sinks' } });
    this.sinks = opts.sinks;
    this.metrics = opts.metrics;
    this.log = (opts.logger ?? silentLogger).child({ component: 'telemetry-fanout' });
    this.now = opts.now ?? Date.now;
  }

  /** Resolve once every sink accepted `batch`; reject (with the first failure) otherwise. */
  async send(batch: FanoutBatch): Promise<void> {
    if (this.closing) throw new UplinkError('UPLINK_ERR_TELEMETRY_SINK_CLOSED', 'telemetry fanout is closed');
    const appliance = batch.appliance.name;
    const perSignal = new Map<SignalKind, number>();
    let newest = 0n;
    for (const r of batch.records) {
      perSignal.set(r.signal, (perSignal.get(r.signal) ?? 0) + 1);
      const t = /^\d+$/.test(r.timeUnixNano) ? BigInt(r.timeUnixNano) : 0n;
      if (t > newest) newest = t;
    }
    for (const [signal, n] of perSignal) this.metrics.records.inc({ appliance, signal, direction: 'in' }, n);
    if (batch.encodedBytes) this.metrics.bytes.inc({ appliance, direction: 'in' }, batch.encodedBytes);
    if (batch.records.length === 0) return;

    const sinkBatch: SinkBatch = { appliance: batch.appliance, records: batch.records };
    const results = await Promise.allSettled(this.sinks.map((s) => s.send(sinkBatch)));
    const failures = results.flatMap((r, i) => (r.status === 'rejected' ? [{ sink: this.sinks[i]!.name, err: toUplinkError(r.reason) }] : []));
    if (failures.length > 0) {
      this.log.warn({ appliance, failures: failures.map((f) => ({ sink: f.sink, code: f.err.code, message: f.err.message })) }, 'batch not accepted by every sink; it will be pulled again');
      throw failures[0]!.err;
    }
    for (const [signal, n] of perSignal) this.metrics.records.inc({ appliance, signal, direction: 'out' }, n);
    if (newest > 0n) this.metrics.lag.set({ appliance }, Math.max(0, (this.now() - Number(newest / 1_000_000n)) / 1000));
  }

  /** Close every sink. Idempotent. */
  close(): Promise<void> {
    this.closing ??= Promise.allSettled(this.sinks.map((s) => s.close())).then(() => undefined);
    return this.closing;
  }
}
