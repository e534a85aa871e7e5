import t from 'tap';
import {
  attributesFromOtlp,
  attributesToOtlp,
  canonicalJson,
  exportRequestsFromRecords,
  recordId,
  recordsFromExportRequest,
} from '../../../shared/telemetry/otlp-convert.js';
import type { TelemetryRecord } from '../../../shared/telemetry/record.js';

const kv = (key: string, value: Record<string, unknown>): Record<string, unknown> => ({ key, value });

t.test('canonical JSON sorts keys at every level and ignores undefined', async (t) => {
  t.equal(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: undefined } }), '{"a":{"d":[1,{"x":1,"y":2}]},"b":1}');
});

t.test('record ids: stable across key order, different for different content', async (t) => {
  const a = recordId({ signal: 'logs', resource: { x: 1, y: 'z' }, payload: { body: { stringValue: 'hi' }, timeUnixNano: '1' } });
  const b = recordId({ signal: 'logs', resource: { y: 'z', x: 1 }, payload: { timeUnixNano: '1', body: { stringValue: 'hi' } } });
  t.equal(a, b);
  t.match(a, /^[0-9a-f]{64}$/);
  t.not(recordId({ signal: 'logs', resource: { x: 1, y: 'z' }, payload: { body: { stringValue: 'hi' }, timeUnixNano: '2' } }), a);
  t.not(recordId({ signal: 'traces', resource: { x: 1, y: 'z' }, payload: { body: { stringValue: 'hi' }, timeUnixNano: '1' } }), a);
  t.not(recordId({ signal: 'logs', resource: { x: 1, y: 'z' }, scope: 's', payload: { body: { stringValue: 'hi' }, timeUnixNano: '1' } }), a);
});

t.test('attributes: scalars map directly, complex values become JSON text', async (t) => {
  t.same(
    attributesFromOtlp([
      kv('s', { stringValue: 'x' }),
      kv('b', { boolValue: false }),
      kv('i', { intValue: '42' }),
      kv('big', { intValue: '9007199254740993' }),
      kv('d', { doubleValue: 1.25 }),
      kv('arr', { arrayValue: { values: [{ stringValue: 'a' }, { intValue: '2' }] } }),
      kv('map', { kvlistValue: { values: [kv('k', { boolValue: true })] } }),
      kv('bytes', { bytesValue: 'AAE=' }),
      kv('empty', {}),
      { value: { stringValue: 'no key' } },
    ]),
    { s: 'x', b: false, i: 42, big: '9007199254740993', d: 1.25, arr: '["a",2]', map: '{"k":true}', bytes: '"AAE="', empty: 'null' },
  );
  t.same(attributesToOtlp({ z: 'x', a: 3, m: 0.5, b: true }), [
    { key: 'a', value: { intValue: '3' } },
    { key: 'b', value: { boolValue: true } },
    { key: 'm', value: { doubleValue: 0.5 } },
    { key: 'z', value: { stringValue: 'x' } },
  ]);
});

t.test('records from a logs request: time fallbacks, scope, resource, limit', async (t) => {
  const request = {
    resourceLogs: [
      {
        resource: { attributes: [kv('service.name', { stringValue: 'shop' })] },
        scopeLogs: [
          {
            scope: { name: 'lib', version: '2.0' },
            logRecords: [
              { timeUnixNano: '5', body: { stringValue: 'a' } },
              { timeUnixNano: '0', observedTimeUnixNano: '6', body: { stringValue: 'b' } },
              { body: { stringValue: 'c' } },
            ],
          },
          { logRecords: [{ timeUnixNano: '7' }] },
        ],
      },
    ],
  };
  const records = recordsFromExportRequest('logs', request, { receivedUnixNano: '99', source: 'otlp' });
  t.same(
    records.map((r) => [r.timeUnixNano, r.scope, r.scopeVersion, r.resource['service.name'], r.source]),
    [
      ['5', 'lib', '2.0', 'shop', 'otlp'],
      ['6', 'lib', '2.0', 'shop', 'otlp'],
      ['99', 'lib', '2.0', 'shop', 'otlp'],
      ['7', undefined, undefined, 'shop', 'otlp'],
    ],
  );
  t.same(recordsFromExportRequest('logs', request, { receivedUnixNano: '12345' }).map((r) => r.id), records.map((r) => r.id), 'the receive time is not part of the id');
  t.throws(() => recordsFromExportRequest('logs', request, { maxRecords: 3 }), { code: 'UPLINK_ERR_TELEMETRY_LIMIT' });
  t.same(recordsFromExportRequest('logs', {}), []);
});

t.test('metrics split per data point, keeping kind and temporality', async (t) => {
  const request = {
    resourceMetrics: [
      {
        scopeMetrics: [
          {
            metrics: [
              { name: 'c', sum: { aggregationTemporality: 2, isMonotonic: true, dataPoints: [{ timeUnixNano: '1', asInt: '1' }, { timeUnixNano: '2', asInt: '2' }] } },
              { name: 'nodata' },
            ],
          },
        ],
      },
    ],
  };
  const records = recordsFromExportRequest('metrics', request);
  t.equal(records.length, 2, 'a metric without data carries no point');
  t.same(records[1]!.payload, { name: 'c', sum: { aggregationTemporality: 2, isMonotonic: true, dataPoints: [{ timeUnixNano: '2', asInt: '2' }] } });
  t.equal(records[1]!.timeUnixNano, '2');
});

function rec(signal: TelemetryRecord['signal'], resource: TelemetryRecord['resource'], payload: Record<string, unknown>, scope?: string): TelemetryRecord {
  const r: TelemetryRecord = { id: 'x', signal, timeUnixNano: '1', source: 't', resource, payload };
  if (scope) r.scope = scope;
  return r;
}

t.test('records -> one request per signal, grouped by resource and scope; relay attributes win', async (t) => {
  const point = (v: number, temporality = 2): Record<string, unknown> => ({ name: 'cpu', unit: '%', sum: { aggregationTemporality: temporality, dataPoints: [{ timeUnixNano: '1', asDouble: v }] } });
  const records = [
    rec('logs', { app: 'a', 'instance-id': 'spoofed' }, { body: { stringValue: '1' } }, 's1'),
    rec('metrics', { app: 'a' }, point(1)),
    rec('logs', { app: 'b' }, { body: { stringValue: '2' } }, 's1'),
    rec('logs', { 'instance-id': 'spoofed', app: 'a' }, { body: { stringValue: '3' } }, 's2'),
    rec('metrics', { app: 'a' }, point(2)),
    rec('metrics', { app: 'a' }, point(3, 1)),
  ];
  const out = exportRequestsFromRecords(records, { 'instance-id': 'i-real' });
  t.same(
    out.map((e) => [e.signal, e.records]),
    [
      ['logs', 3],
      ['metrics', 3],
    ],
  );
  t.same(out[0]!.request, {
    resourceLogs: [
      {
        resource: { attributes: [kv('app', { stringValue: 'a' }), kv('instance-id', { stringValue: 'i-real' })] },
        scopeLogs: [
          { scope: { name: 's1' }, logRecords: [{ body: { stringValue: '1' } }] },
          { scope: { name: 's2' }, logRecords: [{ body: { stringValue: '3' } }] },
        ],
      },
      {
        resource: { attributes: [kv('app', { stringValue: 'b' }), kv('instance-id', { stringValue: 'i-real' })] },
        scopeLogs: [{ scope: { name: 's1' }, logRecords: [{ body: { stringValue: '2' } }] }],
      },
    ],
  });
  const metrics = (out[1]!.request.resourceMetrics as Array<{ scopeMetrics: Array<{ metrics: Array<{ sum: { aggregationTemporality: number; dataPoints: unknown[] } }> }> }>)[0]!.scopeMetrics[0]!.metrics;
  t.same(
    metrics.map((m) => [m.sum.aggregationTemporality, m.sum.dataPoints.length]),
    [
      [2, 2],
      [1, 1],
    ],
    'points of one stream merged; another temporality is another stream',
  );
  t.same((records[1]!.payload.sum as { dataPoints: unknown[] }).dataPoints.length, 1, 'merging does not alter the input records');
});

t.test('canonical JSON: arrays, odd values and key order match the reference definition', async (t) => {
  t.equal(canonicalJson([1, undefined, 'a', null, () => 1]), '[1,null,"a",null,null]', 'undefined and functions in arrays are null');
  t.equal(canonicalJson({ f: () => 1, u: undefined, n: null }), '{"f":null,"n":null}', 'undefined keys dropped, functions null');
  t.equal(canonicalJson({ B: 1, a: 2, Ä: 3, '10': 4, '9': 5 }), '{"10":4,"9":5,"B":1,"a":2,"Ä":3}', 'keys sorted by UTF-16 code units');
  t.equal(canonicalJson({ 'q"k': 'line\nbreak \u2028', e: {}, l: [] }), '{"e":{},"l":[],"q\\"k":"line\\nbreak \u2028"}', 'strings escaped as JSON.stringify does');
  t.equal(canonicalJson(1.5e300), '1.5e+300');
  t.equal(canonicalJson(undefined), 'null');
});

t.test('ids of records split from a request equal recordId of each record', async (t) => {
  const logs = recordsFromExportRequest('logs', {
    resourceLogs: [
      {
        resource: { attributes: [kv('z', { stringValue: '1' }), kv('a', { intValue: '2' })] },
        scopeLogs: [
          { scope: { name: 'lib', version: '1.0' }, logRecords: [{ timeUnixNano: '5', body: { stringValue: 'x' }, attributes: [kv('k', { boolValue: true })] }] },
          { scope: { name: 'lib' }, logRecords: [{ timeUnixNano: '6', body: { stringValue: 'x' } }] },
          { scope: { name: '', version: '2' }, logRecords: [{ timeUnixNano: '7', body: { stringValue: 'x' } }] },
          { logRecords: [{ timeUnixNano: '8', body: { stringValue: 'x' } }] },
        ],
      },
      { scopeLogs: [{ logRecords: [{ observedTimeUnixNano: '9', body: { kvlistValue: { values: [kv('b', { stringValue: 'y' }), kv('a', { stringValue: 'x' })] } } }] }] },
    ],
  });
  const metrics = recordsFromExportRequest('metrics', {
    resourceMetrics: [{ scopeMetrics: [{ scope: { name: 'm' }, metrics: [{ name: 'cpu', gauge: { dataPoints: [{ timeUnixNano: '1', asDouble: 1 }, { timeUnixNano: '2', asDouble: 2 }] } }] }] }],
  });
  const traces = recordsFromExportRequest('traces', {
    resourceSpans: [{ resource: { attributes: [kv('svc', { stringValue: 's' })] }, scopeSpans: [{ spans: [{ traceId: 'ab', spanId: 'cd', name: 'op', startTimeUnixNano: '3' }] }] }],
  });
  const all = [...logs, ...metrics, ...traces];
  t.equal(all.length, 8);
  for (const r of all) t.equal(r.id, recordId(r), `${r.signal} ${r.timeUnixNano}`);
  t.equal(new Set(all.map((r) => r.id)).size, all.length, 'different scope, version or resource: different ids');
  t.same(logs.map((r) => [r.scope, r.scopeVersion]), [['lib', '1.0'], ['lib', undefined], [undefined, '2'], [undefined, undefined], [undefined, undefined]]);
});

t.test('grouping by scope keeps name and version apart', async (t) => {
  const body = (s: string) => ({ body: { stringValue: s } });
  const records = [rec('logs', { a: 'x' }, body('1'), 'lib'), rec('logs', { a: 'x' }, body('2')), rec('logs', { a: 'x' }, body('3'), 'lib'), rec('logs', { a: 'x' }, body('4'), 'lib')];
  records[2]!.scopeVersion = '2';
  records[3]!.scopeVersion = '';
  const [logs] = exportRequestsFromRecords(records);
  const scopes = (logs!.request.resourceLogs as Array<{ scopeLogs: Array<{ scope?: unknown; logRecords: unknown[] }> }>)[0]!.scopeLogs;
  t.same(
    scopes.map((s) => [s.scope, s.logRecords.length]),
    [
      [{ name: 'lib' }, 1],
      [undefined, 1],
      [{ name: 'lib', version: '2' }, 1],
      [{ name: 'lib', version: '' }, 1],
    ],
  );
});
