import t from 'tap';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { TelemetryFanout, TelemetryMetrics } from '../../../relay/telemetry/fanout.js';
import { FileSink } from '../../../relay/telemetry/file-sink.js';
import { OtlpHttpSink } from '../../../relay/telemetry/otlp-http-sink.js';
import type { ApplianceInfo, Sink } from '../../../relay/telemetry/sink.js';
import type { TelemetryRecord } from '../../../shared/telemetry/record.js';
import { gate, startTestOtlpServer } from './otlp-test-server.js';

const appliance: ApplianceInfo = { instanceId: 'i-0abc', name: 'acme-prod', customer: 'acme', region: 'eu-west-1', accountId: '123456789012' };
const NOW_MS = 1_700_000_100_000;

function rec(signal: 'logs' | 'metrics', i: number): TelemetryRecord {
  const time = String(BigInt(NOW_MS - 60_000 + i * 1000) * 1_000_000n);
  const payload = signal === 'logs' ? { timeUnixNano: time, body: { stringValue: `l${i}` } } : { name: 'cpu', gauge: { dataPoints: [{ timeUnixNano: time, asDouble: i }] } };
  return { id: `${signal}-${i}`, signal, timeUnixNano: time, source: 'test', resource: {}, payload };
}

/** Metric value by name and labels, read back from the registry. */
async function value(registry: Registry, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  const hit = (metric?.values ?? []).find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
  return hit?.value;
}

t.test('delivers to an OTLP endpoint and a file; metrics count in/out, bytes and lag', async (t) => {
  const server = await startTestOtlpServer(t);
  const registry = new Registry();
  const metrics = new TelemetryMetrics(registry);
  const path = join(t.testdir(), 'out.jsonl');
  const http = new OtlpHttpSink({ name: 'collector', endpoint: server.url, observer: metrics });
  const file = await FileSink.open({ name: 'file', path, observer: metrics });
  const fanout = new TelemetryFanout({ sinks: [http, file], metrics, now: () => NOW_MS });
  t.teardown(() => fanout.close());

  await fanout.send({ appliance, records: [rec('logs', 1), rec('logs', 2), rec('metrics', 3)], encodedBytes: 777 });
  t.equal(server.received.length, 2);
  t.equal((await readFile(path, 'utf8')).trimEnd().split('\n').length, 2);
  t.equal(await value(registry, 'uplink_telemetry_records_total', { appliance: 'acme-prod', signal: 'logs', direction: 'in' }), 2);
  t.equal(await value(registry, 'uplink_telemetry_records_total', { appliance: 'acme-prod', signal: 'logs', direction: 'out' }), 2);
  t.equal(await value(registry, 'uplink_telemetry_records_total', { appliance: 'acme-prod', signal: 'metrics', direction: 'out' }), 1);
  t.equal(await value(registry, 'uplink_telemetry_bytes_total', { appliance: 'acme-prod', direction: 'in' }), 777);
  t.ok((await value(registry, 'uplink_telemetry_bytes_total', { appliance: 'acme-prod', direction: 'out' }))! > 0);
  t.equal(await value(registry, 'uplink_telemetry_lag_seconds', { appliance: 'acme-prod' }), 57, 'newest record (i=3) is 57 s old');
});

t.test('one failing sink fails the batch (not acknowledged), counted in, not out', async (t) => {
  const server = await startTestOtlpServer(t);
  server.fallback = () => ({ status: 503 });
  const registry = new Registry();
  const metrics = new TelemetryMetrics(registry);
  const path = join(t.testdir(), 'out.jsonl');
  const http = new OtlpHttpSink({ name: 'flaky', endpoint: server.url, observer: metrics, initialBackoffMs: 5, maxBackoffMs: 10, maxElapsedMs: 100 });
  const file = await FileSink.open({ name: 'file', path, observer: metrics });
  const fanout = new TelemetryFanout({ sinks: [file, http], metrics });
  t.teardown(() => fanout.close());
  await t.rejects(fanout.send({ appliance, records: [rec('logs', 1)] }), { code: 'UPLINK_ERR_TELEMETRY_SINK_FAILED' });
  t.equal(await value(registry, 'uplink_telemetry_records_total', { direction: 'in' }), 1);
  t.equal(await value(registry, 'uplink_telemetry_records_total', { direction: 'out' }), undefined);
  t.ok((await value(registry, 'uplink_telemetry_retries_total', { sink: 'flaky' }))! >= 1);
  t.equal((await readFile(path, 'utf8')).trimEnd().split('\n').length, 1, 'the healthy sink got it: it will see it again (at-least-once)');
});

t.test('a slow sink holds send() until it accepts (backpressure on the pull loop)', async (t) => {
  const server = await startTestOtlpServer(t);
  const g = gate();
  server.fallback = () => ({ status: 200, hold: g.promise });
  const metrics = new TelemetryMetrics(new Registry());
  const fanout = new TelemetryFanout({ sinks: [new OtlpHttpSink({ name: 'slow', endpoint: server.url, observer: metrics })], metrics });
  t.teardown(() => fanout.close());
  let resolved = false;
  const sending = fanout.send({ appliance, records: [rec('logs', 1)] }).then(() => (resolved = true));
  await new Promise((r) => setTimeout(r, 100));
  t.equal(server.arrived, 1);
  t.notOk(resolved, 'not acknowledged while the sink has not accepted');
  g.open();
  await sending;
  t.ok(resolved);
});

t.test('permanent refusals and agent-reported losses show up in dropped_total', async (t) => {
  const server = await startTestOtlpServer(t);
  server.fallback = () => ({ status: 400 });
  const registry = new Registry();
  const metrics = new TelemetryMetrics(registry);
  const fanout = new TelemetryFanout({ sinks: [new OtlpHttpSink({ name: 'strict', endpoint: server.url, observer: metrics })], metrics });
  t.teardown(() => fanout.close());
  await fanout.send({ appliance, records: [rec('logs', 1), rec('logs', 2)] });
  t.equal(await value(registry, 'uplink_telemetry_dropped_total', { reason: 'rejected' }), 2);
  metrics.agentDropped('agent_spool_full', 40);
  metrics.agentDropped('agent_spool_full', 0);
  t.equal(await value(registry, 'uplink_telemetry_dropped_total', { reason: 'agent_spool_full' }), 40);
});

t.test('configuration and lifecycle', async (t) => {
  const metrics = new TelemetryMetrics(new Registry());
  t.throws(() => new TelemetryFanout({ sinks: [], metrics }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  const closed: string[] = [];
  const fake = (name: string): Sink => ({ name, send: async () => undefined, close: async () => void closed.push(name) });
  t.throws(() => new TelemetryFanout({ sinks: [fake('a'), fake('a')], metrics }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  const fanout = new TelemetryFanout({ sinks: [fake('a'), fake('b')], metrics });
  await fanout.send({ appliance, records: [] });
  await fanout.close();
  await fanout.close();
  t.same(closed, ['a', 'b'], 'every sink closed once');
  await t.rejects(fanout.send({ appliance, records: [rec('logs', 1)] }), { code: 'UPLINK_ERR_TELEMETRY_SINK_CLOSED' });
});
