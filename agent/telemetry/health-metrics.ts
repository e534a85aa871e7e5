/**
 * The agent's own health: uptime, tunnel state, reconnects, open streams, spool size and
 * drops, collector errors and event-loop lag.
 *
 * The numbers live in a private prom-client Registry, so the same values can be served as
 * Prometheus text (`registry.metrics()`) and snapshotted as TelemetryRecords that travel
 * with the appliance's other telemetry. Gauges become OTLP gauges; counters become
 * cumulative monotonic OTLP sums starting at the agent's start.
 *
 * Who calls what: the connection calls setConnected()/reconnected(), the tunnel server
 * setStreamsOpen(), the spool setSpoolBytes()/addSpoolDrops(), the CollectorScheduler's
 * onError hook collectorError(). A HealthCollector snapshots on an interval.
 */
import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { Counter, Gauge, Registry } from 'prom-client';
import type { TelemetryRecord } from '../../shared/telemetry/record.js';
import { UplinkError } from '../../shared/errors.js';
import { msToUnixNano, recordId, type CollectResult, type Collector, type Emit } from './collector.js';

export const HEALTH_DEFAULTS = {
  /** Sampling resolution of the event-loop delay histogram. */
  eventLoopResolutionMs: 20,
} as const;

/** Metric names, as exported in Prometheus text and OTLP. */
export const HEALTH_METRICS = {
  uptime: 'uplink_agent_uptime_seconds',
  connected: 'uplink_agent_connected',
  reconnects: 'uplink_agent_reconnects_total',
  streamsOpen: 'uplink_agent_streams_open',
  spoolBytes: 'uplink_agent_spool_bytes',
  spoolDrops: 'uplink_agent_spool_dropped_records_total',
  collectorErrors: 'uplink_agent_collector_errors_total',
  eventLoopLagP99: 'uplink_agent_event_loop_lag_p99_seconds',
  eventLoopLagMax: 'uplink_agent_event_loop_lag_max_seconds',
} as const;

const UNITS: Record<string, string> = {
  [HEALTH_METRICS.uptime]: 's',
  [HEALTH_METRICS.spoolBytes]: 'By',
  [HEALTH_METRICS.eventLoopLagP99]: 's',
  [HEALTH_METRICS.eventLoopLagMax]: 's',
};

export interface HealthMetricsOptions {
  /** Clock in ms (uptime, timestamps). */
  now?: () => number;
  eventLoopResolutionMs?: number;
}

/** Mutable health state of one agent process. */
export class HealthMetrics {
  /** Private registry: serve `await registry.metrics()` as Prometheus text. */
  readonly registry = new Registry();
  readonly startedAt: number;
  /** Distinguishes this process's snapshots from another's at the same millisecond. */
  readonly bootId = randomBytes(8).toString('hex');
  readonly #now: () => number;
  readonly #loop: IntervalHistogram;
  readonly #connected: Gauge;
  readonly #reconnects: Counter;
  readonly #streams: Gauge;
  readonly #spoolBytes: Gauge;
  readonly #spoolDrops: Counter;
  readonly #collectorErrors: Counter<'collector'>;
  #closed = false;

  constructor(opts: HealthMetricsOptions = {}) {
    this.#now = opts.now ?? Date.now;
    this.startedAt = this.#now();
    const resolution = opts.eventLoopResolutionMs ?? HEALTH_DEFAULTS.eventLoopResolutionMs;
    if (!Number.isInteger(resolution) || resolution < 1) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `eventLoopResolutionMs must be a positive integer, got ${resolution}`);
    this.#loop = monitorEventLoopDelay({ resolution });
    this.#loop.enable();
    const registers = [this.registry];
    const now = this.#now;
    const started = this.startedAt;
    const loop = this.#loop;
    new Gauge({
      name: HEALTH_METRICS.uptime,
      help: 'Seconds since the agent process started.',
      registers,
      collect() {
        this.set((now() - started) / 1000);
      },
    });
    this.#connected = new Gauge({ name: HEALTH_METRICS.connected, help: '1 while the tunnel to the relay is up.', registers });
    this.#connected.set(0);
    this.#reconnects = new Counter({ name: HEALTH_METRICS.reconnects, help: 'Tunnel reconnections since start.', registers });
    this.#streams = new Gauge({ name: HEALTH_METRICS.streamsOpen, help: 'HTTP/2 streams open on the tunnel.', registers });
    this.#streams.set(0);
    this.#spoolBytes = new Gauge({ name: HEALTH_METRICS.spoolBytes, help: 'Bytes held in the telemetry spool.', registers });
    this.#spoolBytes.set(0);
    this.#spoolDrops = new Counter({ name: HEALTH_METRICS.spoolDrops, help: 'Telemetry records dropped by the spool (full).', registers });
    this.#collectorErrors = new Counter({ name: HEALTH_METRICS.collectorErrors, help: 'Failed collector runs.', labelNames: ['collector'], registers });
    // The histogram is in nanoseconds; it is reset at each snapshot, so these cover one interval.
    new Gauge({
      name: HEALTH_METRICS.eventLoopLagP99,
      help: 'Event-loop delay p99 since the last snapshot.',
      registers,
      collect() {
        this.set(loop.count > 0 ? loop.percentile(99) / 1e9 : 0);
      },
    });
    new Gauge({
      name: HEALTH_METRICS.eventLoopLagMax,
      help: 'Event-loop delay maximum since the last snapshot.',
      registers,
      collect() {
        this.set(loop.count > 0 ? loop.max / 1e9 : 0);
      },
    });
  }

  setConnected(connected: boolean): void {
    this.#connected.set(connected ? 1 : 0);
  }

  reconnected(): void {
    this.#reconnects.inc();
  }

  setStreamsOpen(n: number): void {
    this.#streams.set(nonNegative(n, 'streams'));
  }

  setSpoolBytes(n: number): void {
    this.#spoolBytes.set(nonNegative(n, 'spool bytes'));
  }

  addSpoolDrops(n = 1): void {
    this.#spoolDrops.inc(nonNegative(n, 'spool drops'));
  }

  collectorError(collector: string): void {
    this.#collectorErrors.inc({ collector });
  }

  /**
   * Current values as TelemetryRecords (one data point each), then restart the event-loop
   * window. Ids are unique per process and timestamp.
   */
  async snapshot(): Promise<TelemetryRecord[]> {
    const atMs = this.#now();
    const time = msToUnixNano(atMs);
    const start = msToUnixNano(this.startedAt);
    const metrics = await this.registry.getMetricsAsJSON();
    this.#loop.reset();
    const out: TelemetryRecord[] = [];
    for (const m of metrics) {
      for (const v of m.values) {
        const labels = Object.entries(v.labels).sort(([a], [b]) => (a < b ? -1 : 1));
        const attributes = labels.map(([key, value]) => ({ key, value: { stringValue: String(value) } }));
        const point = { timeUnixNano: time, asDouble: v.value, attributes };
        const unit = UNITS[m.name];
        const payload: Record<string, unknown> = { name: m.name, description: m.help, ...(unit ? { unit } : {}) };
        if (String(m.type) === 'counter') {
          // AGGREGATION_TEMPORALITY_CUMULATIVE = 2 in OTLP.
          payload.sum = { aggregationTemporality: 2, isMonotonic: true, dataPoints: [{ ...point, startTimeUnixNano: start }] };
        } else {
          payload.gauge = { dataPoints: [point] };
        }
        out.push({
          id: recordId(`agent:${this.bootId}:${m.name}:${labels.map(([k, val]) => `${k}=${val}`).join(',')}:${atMs}`),
          signal: 'metrics',
          timeUnixNano: time,
          source: 'agent',
          resource: { 'service.name': 'uplink-agent', 'service.instance.id': this.bootId },
          scope: 'uplink.agent.health',
          payload,
        });
      }
    }
    return out;
  }

  /** Stop the event-loop monitor. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#loop.disable();
  }
}

function nonNegative(n: number, what: string): number {
  if (!Number.isFinite(n) || n < 0) throw new UplinkError('UPLINK_ERR_INTERNAL', `${what} must be a non-negative number, got ${n}`);
  return n;
}

export const HEALTH_COLLECTOR = 'agent-health';

/** Emits a HealthMetrics snapshot every `intervalSeconds`. */
export class HealthCollector implements Collector {
  readonly name = HEALTH_COLLECTOR;
  readonly periodMs: number;
  readonly #metrics: HealthMetrics;
  readonly #emit: Emit;

  constructor(opts: { metrics: HealthMetrics; emit: Emit; intervalSeconds: number }) {
    if (!(opts.intervalSeconds > 0)) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `health intervalSeconds must be positive, got ${opts.intervalSeconds}`);
    this.#metrics = opts.metrics;
    this.#emit = opts.emit;
    this.periodMs = opts.intervalSeconds * 1000;
  }

  async collect(signal: AbortSignal): Promise<CollectResult> {
    signal.throwIfAborted();
    // Health gauges are point-in-time: there is nothing to checkpoint, a lost snapshot is superseded by the next.
    await this.#emit(await this.#metrics.snapshot());
    return { more: false };
  }
}
