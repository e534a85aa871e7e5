import t, { type Test } from 'tap';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { gzipSync } from 'node:zlib';
import { BatchLogRecordProcessor, LoggerProvider, SimpleLogRecordProcessor, InMemoryLogRecordExporter } from '@opentelemetry/sdk-logs';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { SeverityNumber } from '@opentelemetry/api-logs';
// The SDK's own serializers (a dependency of the exporter above): an independent encoder to
// check our protobuf schema and our JSON normalisation against.
import { JsonLogsSerializer, ProtobufLogsSerializer } from '@opentelemetry/otlp-transformer';
import { startOtlpReceiver, type OtlpReceiver, type OtlpReceiverOptions } from '../../../agent/telemetry/otlp-receiver.js';
import { Spool } from '../../../agent/telemetry/spool.js';
import { decodeStatus } from '../../../shared/telemetry/otlp-proto.js';
import type { TelemetryRecord } from '../../../shared/telemetry/record.js';

async function setup(t: Test, extra: Partial<OtlpReceiverOptions> = {}): Promise<{ receiver: OtlpReceiver; spool: Spool }> {
  const spool = await Spool.open({ dir: t.testdir(), segmentBytes: 1 << 20, maxBytes: 8 << 20, maxRecordBytes: 64 << 10 });
  const receiver = await startOtlpReceiver({ host: '127.0.0.1', port: 0, spool, ...extra });
  t.teardown(async () => {
    await receiver.close();
    await spool.close();
  });
  return { receiver, spool };
}

async function drain(spool: Spool): Promise<TelemetryRecord[]> {
  const batch = await spool.read(100_000, 16 << 20);
  await spool.ack(batch.batchId);
  return batch.records;
}

async function post(url: string, body: Uint8Array | string, headers: Record<string, string>): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const res = await fetch(url, { method: 'POST', body, headers });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

function emitLogs(provider: LoggerProvider): void {
  const logger = provider.getLogger('checkout', '1.2.3');
  logger.emit({ body: 'order placed', severityNumber: SeverityNumber.INFO, severityText: 'INFO', attributes: { 'order.id': 42, vip: true }, timestamp: 1_700_000_000_123 });
  logger.emit({ body: 'payment failed', severityNumber: SeverityNumber.ERROR, attributes: { reason: 'card declined' }, timestamp: 1_700_000_000_456 });
  logger.emit({ body: { structured: 'yes', n: 1.5 }, severityNumber: SeverityNumber.DEBUG, timestamp: 1_700_000_000_789 });
}

const resource = resourceFromAttributes({ 'service.name': 'shop', 'deployment.environment': 'prod', 'process.pid': 1234 });

function checkShopRecords(t: Test, records: TelemetryRecord[]): void {
  t.equal(records.length, 3);
  for (const r of records) {
    t.equal(r.signal, 'logs');
    t.equal(r.source, 'otlp');
    t.match(r.id, /^[0-9a-f]{64}$/);
    t.equal(r.resource['service.name'], 'shop');
    t.equal(r.resource['process.pid'], 1234);
    t.equal(r.scope, 'checkout');
    t.equal(r.scopeVersion, '1.2.3');
  }
  t.equal(new Set(records.map((r) => r.id)).size, 3, 'distinct records, distinct ids');
  t.same(
    records.map((r) => r.timeUnixNano),
    ['1700000000123000000', '1700000000456000000', '1700000000789000000'],
  );
  t.same(records[0]!.payload.body, { stringValue: 'order placed' });
  t.equal(records[0]!.payload.severityNumber, SeverityNumber.INFO);
  t.same(records[0]!.payload.attributes, [
    { key: 'order.id', value: { intValue: '42' } },
    { key: 'vip', value: { boolValue: true } },
  ]);
  t.same(records[2]!.payload.body, { kvlistValue: { values: [{ key: 'structured', value: { stringValue: 'yes' } }, { key: 'n', value: { doubleValue: 1.5 } }] } });
}

t.test('the OpenTelemetry SDK exporter (OTLP/HTTP JSON, plain and gzip) lands in the spool', async (t) => {
  const { receiver, spool } = await setup(t);
  for (const compression of ['none', 'gzip'] as const) {
    const exporter = new OTLPLogExporter({ url: `${receiver.url}/v1/logs`, compression: compression as never });
    const provider = new LoggerProvider({ resource, processors: [new BatchLogRecordProcessor({ exporter })] });
    emitLogs(provider);
    await provider.forceFlush();
    await provider.shutdown();
    checkShopRecords(t, await drain(spool));
  }
});

t.test('protobuf and JSON encodings of the same records give identical records and ids', async (t) => {
  const { receiver, spool } = await setup(t);
  const memory = new InMemoryLogRecordExporter();
  const provider = new LoggerProvider({ resource, processors: [new SimpleLogRecordProcessor({ exporter: memory })] });
  emitLogs(provider);
  await provider.forceFlush();
  const logs = memory.getFinishedLogRecords();

  const pb = await post(`${receiver.url}/v1/logs`, ProtobufLogsSerializer.serializeRequest(logs)!, { 'content-type': 'application/x-protobuf' });
  t.equal(pb.status, 200);
  t.equal(pb.headers.get('content-type'), 'application/x-protobuf');
  t.equal(pb.body.length, 0, 'empty ExportLogsServiceResponse');
  const fromProtobuf = await drain(spool);
  checkShopRecords(t, fromProtobuf);

  const js = await post(`${receiver.url}/v1/logs`, JsonLogsSerializer.serializeRequest(logs)!, { 'content-type': 'application/json' });
  t.equal(js.status, 200);
  t.equal(js.body.toString(), '{}');
  const fromJson = await drain(spool);
  t.same(fromJson, fromProtobuf, 'same normalised payloads and the same stable ids');
  await provider.shutdown();
});

t.test('metrics and traces: one record per data point and per span', async (t) => {
  const { receiver, spool } = await setup(t);
  const metrics = {
    resourceMetrics: [
      {
        resource: { attributes: [{ key: 'service.name', value: { stringValue: 'shop' } }] },
        scopeMetrics: [
          {
            scope: { name: 'meter' },
            metrics: [
              {
                name: 'http.requests',
                unit: '1',
                sum: {
                  aggregationTemporality: 2,
                  isMonotonic: true,
                  dataPoints: [
                    { timeUnixNano: '1700000000000000000', asInt: '5', attributes: [{ key: 'code', value: { stringValue: '200' } }] },
                    { timeUnixNano: '1700000000000000000', asInt: 7, attributes: [{ key: 'code', value: { stringValue: '500' } }] },
                  ],
                },
              },
            ],
          },
        ],
      },
    ],
  };
  t.equal((await post(`${receiver.url}/v1/metrics`, JSON.stringify(metrics), { 'content-type': 'application/json' })).status, 200);
  const points = await drain(spool);
  t.equal(points.length, 2);
  t.same(points[1]!.payload, {
    name: 'http.requests',
    unit: '1',
    sum: { dataPoints: [{ attributes: [{ key: 'code', value: { stringValue: '500' } }], timeUnixNano: '1700000000000000000', asInt: '7' }], aggregationTemporality: 2, isMonotonic: true },
  });
  const traces = {
    resourceSpans: [
      {
        scopeSpans: [
          {
            spans: [
              { traceId: '5b8efff798038103d269b633813fc60c', spanId: 'eee19b7ec3c1b174', name: 'GET /', kind: 2, startTimeUnixNano: '1700000000000000001', endTimeUnixNano: '1700000000100000000' },
              { traceId: '5b8efff798038103d269b633813fc60c', spanId: 'eee19b7ec3c1b175', parentSpanId: 'eee19b7ec3c1b174', name: 'db', startTimeUnixNano: '1700000000000000002' },
            ],
          },
        ],
      },
    ],
  };
  t.equal((await post(`${receiver.url}/v1/traces`, JSON.stringify(traces), { 'content-type': 'application/json' })).status, 200);
  const spans = await drain(spool);
  t.same(spans.map((s) => [s.timeUnixNano, s.payload.spanId, s.payload.parentSpanId]), [
    ['1700000000000000001', 'eee19b7ec3c1b174', undefined],
    ['1700000000000000002', 'eee19b7ec3c1b175', 'eee19b7ec3c1b174'],
  ]);
});

t.test('bad input: exact statuses and google.rpc.Status bodies', async (t) => {
  const { receiver, spool } = await setup(t, { maxBodyBytes: 4096, maxDecodedBytes: 8192, maxRecordsPerRequest: 2 });
  const logs = `${receiver.url}/v1/logs`;
  const badPb = await post(logs, Buffer.from('0a05ffffff', 'hex'), { 'content-type': 'application/x-protobuf' });
  t.equal(badPb.status, 400);
  t.equal(badPb.headers.get('content-type'), 'application/x-protobuf');
  t.match(decodeStatus('protobuf', badPb.body), { code: 3, message: /not a valid ExportLogsServiceRequest/ });

  const badJson = await post(logs, '{"resourceLogs": 7}', { 'content-type': 'application/json' });
  t.equal(badJson.status, 400);
  t.match(JSON.parse(badJson.body.toString()), { code: 3, message: /array expected/ });
  t.equal((await post(logs, '{not json', { 'content-type': 'application/json' })).status, 400);
  t.equal((await post(logs, '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"xyz"}]}]}]}', { 'content-type': 'application/json' })).status, 400, 'non-hex trace id');

  t.equal((await post(logs, '{}', { 'content-type': 'text/plain' })).status, 415);
  t.equal((await post(logs, '{}', { 'content-type': 'application/json', 'content-encoding': 'br' })).status, 415);
  t.equal((await post(`${receiver.url}/v1/profiles`, '{}', { 'content-type': 'application/json' })).status, 404);
  const get = await fetch(logs);
  t.equal(get.status, 405);
  t.equal(get.headers.get('allow'), 'POST');

  t.equal((await post(logs, 'x'.repeat(5000), { 'content-type': 'application/json' })).status, 413, 'declared length over the limit');
  const chunked = await new Promise<number>((resolve, reject) => {
    const req = httpRequest(logs, { method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    req.on('error', reject);
    for (let i = 0; i < 10; i++) req.write('x'.repeat(1000));
    req.end();
  });
  t.equal(chunked, 413, 'streamed body over the limit');
  const bomb = gzipSync(Buffer.alloc(1 << 20, 0x20)); // 1 MiB of spaces, ~1 KiB compressed
  t.ok(bomb.length < 4096);
  t.equal((await post(logs, bomb, { 'content-type': 'application/json', 'content-encoding': 'gzip' })).status, 413, 'decompression bomb');
  t.equal((await post(logs, Buffer.from('not gzip'), { 'content-type': 'application/json', 'content-encoding': 'gzip' })).status, 400);
  const three = { resourceLogs: [{ scopeLogs: [{ logRecords: [{ timeUnixNano: '1' }, { timeUnixNano: '2' }, { timeUnixNano: '3' }] }] }] };
  t.equal((await post(logs, JSON.stringify(three), { 'content-type': 'application/json' })).status, 413, 'too many records');
  t.equal(spool.stats().records, 0, 'nothing was spooled by refused requests');
});

t.test('spool unavailable: 503 with Retry-After', async (t) => {
  const { receiver, spool } = await setup(t, { retryAfterSeconds: 7 });
  await spool.close();
  const res = await post(`${receiver.url}/v1/logs`, '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1"}]}]}]}', { 'content-type': 'application/json' });
  t.equal(res.status, 503);
  t.equal(res.headers.get('retry-after'), '7');
  t.match(JSON.parse(res.body.toString()), { code: 14 });
});

t.test('binds only to the configured IP address', async (t) => {
  const spool = { append: async (): Promise<void> => undefined };
  for (const host of ['localhost', '0.0.0.0', '::', '0:0::0', 'example.com', '']) {
    await t.rejects(startOtlpReceiver({ host, port: 0, spool }), { code: 'UPLINK_ERR_CONFIG_INVALID' }, `refuses "${host}"`);
  }
  await t.rejects(startOtlpReceiver({ host: '127.0.0.1', port: 0, spool, maxBody: 1 } as unknown as OtlpReceiverOptions), { code: 'UPLINK_ERR_CONFIG_INVALID' }, 'unknown option');
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
  const port = (blocker.address() as { port: number }).port;
  await t.rejects(startOtlpReceiver({ host: '127.0.0.1', port, spool }), { code: 'UPLINK_ERR_TELEMETRY_RECEIVER_BIND' }, 'port in use');
  await t.rejects(startOtlpReceiver({ host: '192.0.2.1', port: 0, spool }), { code: 'UPLINK_ERR_TELEMETRY_RECEIVER_BIND' }, 'address not on this host');
  const receiver = await startOtlpReceiver({ host: '127.0.0.1', port: 0, spool });
  t.equal(receiver.host, '127.0.0.1');
  t.match(receiver.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  await receiver.close();
  await receiver.close(); // idempotent
});
