import t, { type Test } from 'tap';
import { createServer } from 'node:net';
import { OtlpHttpSink, parseRetryAfter, type OtlpHttpSinkOptions } from '../../../relay/telemetry/otlp-http-sink.js';
import type { ApplianceInfo, SinkObserver } from '../../../relay/telemetry/sink.js';
import { encodeExportResponse } from '../../../shared/telemetry/otlp-proto.js';
import type { TelemetryRecord } from '../../../shared/telemetry/record.js';
import { gate, startTestOtlpServer } from './otlp-test-server.js';

const appliance: ApplianceInfo = { instanceId: 'i-0abc', name: 'acme-prod', customer: 'acme', region: 'eu-west-1', accountId: '123456789012' };

function log(i: number): TelemetryRecord {
  return {
    id: `log-${i}`,
    signal: 'logs',
    timeUnixNano: String(1_700_000_000_000_000_000n + BigInt(i)),
    source: 'otlp',
    resource: { 'service.name': 'shop' },
    scope: 'checkout',
    payload: { timeUnixNano: String(1_700_000_000_000_000_000n + BigInt(i)), body: { stringValue: `line ${i}` }, severityNumber: 9 },
  };
}

function metric(i: number): TelemetryRecord {
  return {
    id: `m-${i}`,
    signal: 'metrics',
    timeUnixNano: '1700000000000000000',
    source: 'cloudwatch-metrics',
    resource: { 'aws.rds.db': 'orders' },
    payload: { name: 'cpu', unit: '%', gauge: { dataPoints: [{ timeUnixNano: '1700000000000000000', asDouble: i }] } },
  };
}

interface Seen {
  retries: string[];
  sent: Array<[string, string, number]>;
  dropped: Array<[string, number]>;
}

function recorder(): { observer: SinkObserver; seen: Seen } {
  const seen: Seen = { retries: [], sent: [], dropped: [] };
  return {
    seen,
    observer: {
      retry: (_s, cause) => seen.retries.push(cause),
      sent: (_s, app, signal, records) => seen.sent.push([app, signal, records]),
      dropped: (_s, reason, records) => seen.dropped.push([reason, records]),
    },
  };
}

function sink(t: Test, opts: Partial<OtlpHttpSinkOptions> & { endpoint: string }): OtlpHttpSink {
  const s = new OtlpHttpSink({ name: 'test', initialBackoffMs: 5, maxBackoffMs: 20, random: () => 0.5, ...opts });
  t.teardown(() => s.close());
  return s;
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

t.test('delivers protobuf+gzip with the appliance resource attributes', async (t) => {
  const server = await startTestOtlpServer(t);
  const { observer, seen } = recorder();
  const s = sink(t, { endpoint: server.url, observer, headers: { authorization: 'Bearer k' } });
  await s.send({ appliance, records: [log(0), log(1), metric(1), metric(2)] });
  t.equal(server.received.length, 2, 'one request per signal');
  const [logs, metrics] = server.received;
  t.equal(logs!.path, '/v1/logs');
  t.equal(logs!.encoding, 'protobuf');
  t.ok(logs!.gzip);
  t.equal(logs!.headers.authorization, 'Bearer k');
  t.equal(logs!.items, 2);
  const resourceLogs = (logs!.request.resourceLogs as Array<{ resource: { attributes: Array<{ key: string; value: unknown }> } }>)[0]!;
  t.same(resourceLogs.resource.attributes, [
    { key: 'cloud.account.id', value: { stringValue: '123456789012' } },
    { key: 'cloud.provider', value: { stringValue: 'aws' } },
    { key: 'cloud.region', value: { stringValue: 'eu-west-1' } },
    { key: 'instance-id', value: { stringValue: 'i-0abc' } },
    { key: 'service.name', value: { stringValue: 'shop' } },
    { key: 'uplink.appliance.name', value: { stringValue: 'acme-prod' } },
    { key: 'uplink.customer', value: { stringValue: 'acme' } },
  ]);
  t.equal(metrics!.path, '/v1/metrics');
  t.equal(metrics!.items, 2);
  const m = (metrics!.request.resourceMetrics as Array<{ scopeMetrics: Array<{ metrics: unknown[] }> }>)[0]!.scopeMetrics[0]!.metrics;
  t.equal(m.length, 1, 'two points of one stream merged into one Metric');
  t.same(seen.sent, [
    ['acme-prod', 'logs', 2],
    ['acme-prod', 'metrics', 2],
  ]);
  t.same(seen.retries, []);
});

t.test('JSON without compression, under an endpoint path prefix, split by maxRecordsPerRequest', async (t) => {
  const server = await startTestOtlpServer(t);
  const s = sink(t, { endpoint: `${server.url}/otlp/`, encoding: 'json', compression: 'none', maxRecordsPerRequest: 2 });
  await s.send({ appliance, records: range(5).map(log) });
  t.same(
    server.received.map((r) => [r.path, r.encoding, r.gzip, r.items]),
    [
      ['/otlp/v1/logs', 'json', false, 2],
      ['/otlp/v1/logs', 'json', false, 2],
      ['/otlp/v1/logs', 'json', false, 1],
    ],
  );
});

t.test('500s then success: retried with backoff, delivered once accepted', async (t) => {
  const server = await startTestOtlpServer(t);
  server.script.push({ status: 500 }, { status: 503 }, { status: 502 });
  const { observer, seen } = recorder();
  const s = sink(t, { endpoint: server.url, observer });
  await s.send({ appliance, records: [log(0)] });
  t.equal(server.arrived, 4);
  t.equal(server.received.length, 1);
  t.same(seen.retries, ['http_500', 'http_503', 'http_502']);
});

t.test('429 with Retry-After is honoured (and clamped by maxRetryAfterMs)', async (t) => {
  const server = await startTestOtlpServer(t);
  // A backoff of 10 minutes would time the test out: finishing proves Retry-After was used.
  server.script.push({ status: 429, headers: { 'retry-after': '1' } });
  const { observer, seen } = recorder();
  const s = sink(t, { endpoint: server.url, observer, initialBackoffMs: 600_000, maxBackoffMs: 600_000 });
  await s.send({ appliance, records: [log(0)] });
  t.same(seen.retries, ['http_429']);
  t.equal(server.received.length, 1);

  server.script.push({ status: 429, headers: { 'retry-after': '86400' } });
  const clamped = sink(t, { endpoint: server.url, initialBackoffMs: 600_000, maxBackoffMs: 600_000, maxRetryAfterMs: 10 });
  await clamped.send({ appliance, records: [log(1)] });
  t.equal(server.received.length, 2);
});

t.test('parseRetryAfter: seconds, HTTP date, garbage', async (t) => {
  t.equal(parseRetryAfter('120'), 120_000);
  t.equal(parseRetryAfter(new Date(1_000_000 + 30_000).toUTCString(), 1_000_000), 30_000);
  t.equal(parseRetryAfter('soon'), undefined);
  t.equal(parseRetryAfter(undefined), undefined);
});

t.test('connection refused: retried until maxElapsedMs, then SINK_FAILED (the batch is not lost: not acknowledged)', async (t) => {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as { port: number }).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const { observer, seen } = recorder();
  const s = sink(t, { endpoint: `http://127.0.0.1:${port}`, observer, maxElapsedMs: 200 });
  await t.rejects(s.send({ appliance, records: [log(0)] }), { code: 'UPLINK_ERR_TELEMETRY_SINK_FAILED', details: { cause: 'ECONNREFUSED' } });
  t.ok(seen.retries.length >= 1);
  t.ok(seen.retries.every((c) => c === 'ECONNREFUSED'));
  t.same(seen.dropped, [], 'a failure is not a drop');
});

t.test('permanent refusals are counted as drops; 413 splits the request first', async (t) => {
  const server = await startTestOtlpServer(t);
  const { observer, seen } = recorder();
  const s = sink(t, { endpoint: server.url, observer });
  server.script.push({ status: 400, body: 'bad' });
  await s.send({ appliance, records: [log(0), log(1)] });
  t.same(seen.dropped, [['rejected', 2]]);

  seen.dropped.length = 0;
  server.fallback = (req) => (req.items > 2 ? { status: 413 } : { status: 200 });
  await s.send({ appliance, records: range(5).map(log) });
  t.same(
    server.received.map((r) => r.items),
    [2, 1, 2],
    '5 -> 3 + 2 -> (2 + 1) + 2',
  );
  t.same(seen.dropped, []);
  server.fallback = () => ({ status: 413 });
  await s.send({ appliance, records: [log(9)] });
  t.same(seen.dropped, [['too_large', 1]], 'a single record that is still too large is dropped and counted');
});

t.test('partial success is counted as dropped', async (t) => {
  const server = await startTestOtlpServer(t);
  server.script.push({ status: 200, body: encodeExportResponse('logs', 'protobuf', { rejected: 1, errorMessage: 'too old' }) });
  const { observer, seen } = recorder();
  const s = sink(t, { endpoint: server.url, observer });
  await s.send({ appliance, records: [log(0), log(1)] });
  t.same(seen.dropped, [['partial', 1]]);
  t.same(seen.sent, [['acme-prod', 'logs', 2]]);
});

t.test('slow endpoint: the bounded queue makes send() wait (backpressure), FIFO', async (t) => {
  const server = await startTestOtlpServer(t);
  const g = gate();
  server.fallback = () => ({ status: 200, hold: g.promise });
  const s = sink(t, { endpoint: server.url, maxQueuedBatches: 1 });
  const done: number[] = [];
  const sends = range(3).map((i) => s.send({ appliance, records: [log(i)] }).then(() => done.push(i)));
  await new Promise((r) => setTimeout(r, 100));
  t.equal(server.arrived, 1, 'only one batch in delivery while the endpoint is slow');
  t.same(done, []);
  g.open();
  await Promise.all(sends);
  t.same(done, [0, 1, 2]);
  t.equal(server.received.length, 3);
});

t.test('close: waiting and retrying sends reject with SINK_CLOSED; later sends too', async (t) => {
  const server = await startTestOtlpServer(t);
  server.fallback = () => ({ status: 503 });
  const s = new OtlpHttpSink({ name: 'closing', endpoint: server.url, maxQueuedBatches: 1, initialBackoffMs: 5, maxBackoffMs: 10, closeTimeoutMs: 50 });
  const retrying = s.send({ appliance, records: [log(0)] });
  const waiting = s.send({ appliance, records: [log(1)] });
  const checks = [t.rejects(retrying, { code: 'UPLINK_ERR_TELEMETRY_SINK_CLOSED' }), t.rejects(waiting, { code: 'UPLINK_ERR_TELEMETRY_SINK_CLOSED' })];
  await new Promise((r) => setTimeout(r, 50));
  await s.close();
  await Promise.all(checks);
  await t.rejects(s.send({ appliance, records: [log(2)] }), { code: 'UPLINK_ERR_TELEMETRY_SINK_CLOSED' });
  await s.close(); // idempotent
});

t.test('options are validated', async (t) => {
  t.throws(() => new OtlpHttpSink({ name: 'x', endpoint: 'ftp://collector' }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  t.throws(() => new OtlpHttpSink({ name: 'x', endpoint: 'http://collector:4318', retries: 3 } as unknown as OtlpHttpSinkOptions), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  t.throws(() => new OtlpHttpSink({ name: 'x', endpoint: 'http://collector:4318', encoding: 'xml' as 'json' }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
});
