import t from 'tap';
import { HealthCollector, HealthMetrics, HEALTH_METRICS } from '../../../agent/telemetry/health-metrics.js';
import type { TelemetryRecord } from '../../../shared/telemetry/record.js';

type Point = { timeUnixNano: string; startTimeUnixNano?: string; asDouble: number; attributes: Array<{ key: string; value: { stringValue: string } }> };
const pointOf = (r: TelemetryRecord): Point => {
  const p = r.payload as { gauge?: { dataPoints: Point[] }; sum?: { dataPoints: Point[] } };
  return (p.gauge ?? p.sum)!.dataPoints[0]!;
};
const byName = (records: TelemetryRecord[], name: string): TelemetryRecord[] => records.filter((r) => r.payload.name === name);

t.test('snapshot reports every health value as one OTLP data point per record', async (t) => {
  const clock = { now: 1_700_000_000_000 };
  const h = new HealthMetrics({ now: () => clock.now });
  t.teardown(() => h.close());
  h.setConnected(true);
  h.reconnected();
  h.reconnected();
  h.setStreamsOpen(3);
  h.setSpoolBytes(4096);
  h.addSpoolDrops(5);
  h.collectorError('cloudwatch-logs');
  h.collectorError('cloudwatch-logs');
  h.collectorError('cloudwatch-metrics');
  clock.now += 90_500;
  const records = await h.snapshot();

  const value = (name: string): number => pointOf(byName(records, name)[0]!).asDouble;
  t.equal(value(HEALTH_METRICS.uptime), 90.5);
  t.equal(value(HEALTH_METRICS.connected), 1);
  t.equal(value(HEALTH_METRICS.reconnects), 2);
  t.equal(value(HEALTH_METRICS.streamsOpen), 3);
  t.equal(value(HEALTH_METRICS.spoolBytes), 4096);
  t.equal(value(HEALTH_METRICS.spoolDrops), 5);
  const errs = byName(records, HEALTH_METRICS.collectorErrors).map((r) => [pointOf(r).attributes[0]!.value.stringValue, pointOf(r).asDouble]);
  t.same(errs.sort(), [['cloudwatch-logs', 2], ['cloudwatch-metrics', 1]]);
  t.ok(byName(records, HEALTH_METRICS.eventLoopLagP99).length === 1 && byName(records, HEALTH_METRICS.eventLoopLagMax).length === 1);

  const reconnects = byName(records, HEALTH_METRICS.reconnects)[0]!;
  t.same(reconnects.payload, {
    name: HEALTH_METRICS.reconnects,
    description: 'Tunnel reconnections since start.',
    sum: {
      aggregationTemporality: 2,
      isMonotonic: true,
      dataPoints: [{ timeUnixNano: '1700000090500000000', asDouble: 2, attributes: [], startTimeUnixNano: '1700000000000000000' }],
    },
  }, 'counters are cumulative monotonic sums from the agent start');
  const spool = byName(records, HEALTH_METRICS.spoolBytes)[0]!;
  t.same(spool.payload, { name: HEALTH_METRICS.spoolBytes, description: 'Bytes held in the telemetry spool.', unit: 'By', gauge: { dataPoints: [{ timeUnixNano: '1700000090500000000', asDouble: 4096, attributes: [] }] } });
  for (const r of records) {
    t.equal(r.signal, 'metrics');
    t.equal(r.source, 'agent');
    t.equal(r.timeUnixNano, '1700000090500000000');
    t.match(r.id, /^[0-9a-f]{64}$/);
  }
  t.equal(new Set(records.map((r) => r.id)).size, records.length, 'ids unique within a snapshot');

  clock.now += 1000;
  const next = await h.snapshot();
  t.equal(new Set([...records, ...next].map((r) => r.id)).size, records.length + next.length, 'ids unique across snapshots');
  h.setConnected(false);
  t.equal(pointOf(byName(await h.snapshot(), HEALTH_METRICS.connected)[0]!).asDouble, 0);
});

t.test('the same values are served as Prometheus text', async (t) => {
  const h = new HealthMetrics();
  t.teardown(() => h.close());
  h.setStreamsOpen(7);
  h.collectorError('cloudwatch-logs');
  const text = await h.registry.metrics();
  t.match(text, /^uplink_agent_streams_open 7$/m);
  t.match(text, /^uplink_agent_collector_errors_total\{collector="cloudwatch-logs"\} 1$/m);
  t.match(text, /^# TYPE uplink_agent_reconnects_total counter$/m);
});

t.test('event-loop lag reflects a blocked loop, and resets per snapshot', async (t) => {
  const h = new HealthMetrics({ eventLoopResolutionMs: 5 });
  t.teardown(() => h.close());
  await new Promise((r) => setTimeout(r, 30));
  const until = Date.now() + 150;
  while (Date.now() < until) {
    // Block the event loop on purpose.
  }
  await new Promise((r) => setTimeout(r, 30));
  const first = await h.snapshot();
  const max = pointOf(byName(first, HEALTH_METRICS.eventLoopLagMax)[0]!).asDouble;
  t.ok(max >= 0.1, `max lag ${max}s covers the 150 ms block`);
  await new Promise((r) => setTimeout(r, 40));
  const second = await h.snapshot();
  t.ok(pointOf(byName(second, HEALTH_METRICS.eventLoopLagMax)[0]!).asDouble < max, 'window restarted after the snapshot');
});

t.test('rejects impossible values', async (t) => {
  const h = new HealthMetrics();
  t.teardown(() => h.close());
  t.throws(() => h.setStreamsOpen(-1), { code: 'UPLINK_ERR_INTERNAL' });
  t.throws(() => h.setSpoolBytes(Number.NaN), { code: 'UPLINK_ERR_INTERNAL' });
  t.throws(() => h.addSpoolDrops(-2), { code: 'UPLINK_ERR_INTERNAL' });
  t.throws(() => new HealthMetrics({ eventLoopResolutionMs: 0 }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  h.close();
  h.close();
});

t.test('HealthCollector emits a snapshot per run', async (t) => {
  const h = new HealthMetrics();
  t.teardown(() => h.close());
  const batches: TelemetryRecord[][] = [];
  const c = new HealthCollector({ metrics: h, emit: async (r) => void batches.push(r), intervalSeconds: 15 });
  t.equal(c.periodMs, 15_000);
  t.equal(c.name, 'agent-health');
  t.same(await c.collect(new AbortController().signal), { more: false });
  t.equal(batches.length, 1);
  t.equal(byName(batches[0]!, HEALTH_METRICS.uptime).length, 1);
  const aborted = new AbortController();
  aborted.abort(new Error('stopping'));
  await t.rejects(c.collect(aborted.signal), { message: 'stopping' });
  t.equal(batches.length, 1, 'an aborted run emits nothing');
  t.throws(() => new HealthCollector({ metrics: h, emit: async () => undefined, intervalSeconds: 0 }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
});
