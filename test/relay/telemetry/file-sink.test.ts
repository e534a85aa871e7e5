import t from 'tap';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FileSink } from '../../../relay/telemetry/file-sink.js';
import type { ApplianceInfo, SinkObserver } from '../../../relay/telemetry/sink.js';
import { decodeExportRequest } from '../../../shared/telemetry/otlp-proto.js';
import { recordsFromExportRequest } from '../../../shared/telemetry/otlp-convert.js';
import type { SignalKind, TelemetryRecord } from '../../../shared/telemetry/record.js';

const appliance: ApplianceInfo = { instanceId: 'i-0abc', name: 'acme-prod', customer: 'acme', region: 'eu-west-1', accountId: '123456789012' };

function rec(signal: SignalKind, i: number): TelemetryRecord {
  const time = String(1_700_000_000_000_000_000n + BigInt(i));
  const payload =
    signal === 'logs'
      ? { timeUnixNano: time, body: { stringValue: `line ${i}` } }
      : signal === 'metrics'
        ? { name: 'cpu', gauge: { dataPoints: [{ timeUnixNano: time, asDouble: i }] } }
        : { traceId: '5b8efff798038103d269b633813fc60c', spanId: `eee19b7ec3c1b1${String(i).padStart(2, '0')}`, name: 'op', startTimeUnixNano: time };
  return { id: `${signal}-${i}`, signal, timeUnixNano: time, source: 'test', resource: { 'service.name': 'shop' }, payload };
}

const keyOf: Record<SignalKind, string> = { logs: 'resourceLogs', metrics: 'resourceMetrics', traces: 'resourceSpans' };

async function readLines(path: string): Promise<Array<{ signal: SignalKind; request: Record<string, unknown> }>> {
  const text = await readFile(path, 'utf8');
  if (!text.endsWith('\n')) throw new Error(`${path} does not end on a whole line`);
  return text
    .trimEnd()
    .split('\n')
    .map((line) => {
      const request = JSON.parse(line) as Record<string, unknown>;
      const signal = (Object.keys(keyOf) as SignalKind[]).find((s) => keyOf[s] in request)!;
      return { signal, request };
    });
}

t.test('one OTLP JSON export request per line, per signal, with the appliance resource', async (t) => {
  const path = join(t.testdir(), 'sub', 'telemetry.jsonl');
  const sent: Array<[string, number]> = [];
  const observer: SinkObserver = { retry: () => undefined, dropped: () => undefined, sent: (_s, _a, signal, records) => sent.push([signal, records]) };
  const sink = await FileSink.open({ name: 'file', path, observer });
  t.teardown(() => sink.close());
  const records = [rec('logs', 1), rec('metrics', 2), rec('traces', 3), rec('logs', 4), rec('metrics', 5)];
  await sink.send({ appliance, records });
  const lines = await readLines(path);
  t.same(
    lines.map((l) => l.signal),
    ['logs', 'metrics', 'traces'],
  );
  t.same(sent, [
    ['logs', 2],
    ['metrics', 2],
    ['traces', 1],
  ]);
  // Each line is a valid export request: it decodes, and splitting it gives the payloads back.
  for (const { signal, request } of lines) {
    const decoded = decodeExportRequest(signal, 'json', JSON.stringify(request));
    const back = recordsFromExportRequest(signal, decoded);
    t.same(
      back.map((r) => r.payload),
      records.filter((r) => r.signal === signal).map((r) => r.payload),
      `${signal} payloads survive`,
    );
    t.equal(back[0]!.resource['instance-id'], 'i-0abc');
    t.equal(back[0]!.resource['cloud.account.id'], '123456789012');
    t.equal(back[0]!.resource['service.name'], 'shop');
  }
  await sink.send({ appliance, records: [] });
  t.equal((await readLines(path)).length, 3, 'an empty batch writes nothing');
});

t.test('rotates by size and keeps maxFiles old files', async (t) => {
  const dir = t.testdir();
  const path = join(dir, 'out.jsonl');
  const sink = await FileSink.open({ name: 'file', path, maxFileBytes: 1024, maxFiles: 2 });
  t.teardown(() => sink.close());
  for (let i = 0; i < 30; i++) await sink.send({ appliance, records: [rec('logs', i)] });
  t.ok(existsSync(`${path}.1`));
  t.ok(existsSync(`${path}.2`));
  t.notOk(existsSync(`${path}.3`), 'older files deleted');
  let previous = '';
  for (const file of [`${path}.2`, `${path}.1`, path]) {
    const text = await readFile(file, 'utf8');
    t.ok(Buffer.byteLength(text) <= 1024, `${file} within maxFileBytes`);
    const last = text.trimEnd().split('\n').pop()!;
    t.ok(last > previous || previous === '', 'files rotate in order');
    previous = last;
  }
  const newest = await readLines(path);
  const body = (newest.at(-1)!.request.resourceLogs as Array<{ scopeLogs: Array<{ logRecords: Array<{ body: unknown }> }> }>)[0]!.scopeLogs[0]!.logRecords[0]!.body;
  t.same(body, { stringValue: 'line 29' }, 'the newest batch is in the current file');
});

t.test('reopening appends; close is idempotent; send after close is refused', async (t) => {
  const path = join(t.testdir(), 'out.jsonl');
  let sink = await FileSink.open({ name: 'file', path });
  await sink.send({ appliance, records: [rec('logs', 1)] });
  await sink.close();
  await sink.close();
  await t.rejects(sink.send({ appliance, records: [rec('logs', 2)] }), { code: 'UPLINK_ERR_TELEMETRY_SINK_CLOSED' });
  sink = await FileSink.open({ name: 'file', path });
  await sink.send({ appliance, records: [rec('logs', 3)] });
  await sink.close();
  t.equal((await readLines(path)).length, 2);
});

t.test('a failing disk rejects the batch with SINK_FAILED (so it is pulled again)', { skip: existsSync('/dev/full') ? false : 'no /dev/full' }, async (t) => {
  const sink = await FileSink.open({ name: 'full', path: '/dev/full', fsync: false });
  t.teardown(() => sink.close());
  await t.rejects(sink.send({ appliance, records: [rec('logs', 1)] }), { code: 'UPLINK_ERR_TELEMETRY_SINK_FAILED' });
});

t.test('options are validated', async (t) => {
  await t.rejects(FileSink.open({ name: 'f', path: join(t.testdir(), 'x'), rotate: true } as never), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  await t.rejects(FileSink.open({ name: 'f', path: join(t.testdir(), 'x'), maxFileBytes: 10 }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
});
