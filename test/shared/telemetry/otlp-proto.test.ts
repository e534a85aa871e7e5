import t from 'tap';
import {
  OTLP_MAX_NESTING,
  decodeExportRequest,
  decodeExportResponse,
  decodeStatus,
  encodeExportRequest,
  encodeExportResponse,
  encodeStatus,
  encodingFromContentType,
  type OtlpObject,
} from '../../../shared/telemetry/otlp-proto.js';

const kv = (key: string, value: OtlpObject): OtlpObject => ({ key, value });

const METRICS: OtlpObject = {
  resourceMetrics: [
    {
      resource: { attributes: [kv('service.name', { stringValue: 'shop' })] },
      scopeMetrics: [
        {
          scope: { name: 'meter', version: '1' },
          metrics: [
            { name: 'g', gauge: { dataPoints: [{ timeUnixNano: '1', asDouble: 0.5, attributes: [kv('a', { boolValue: true })] }] } },
            { name: 's', sum: { aggregationTemporality: 1, isMonotonic: true, dataPoints: [{ startTimeUnixNano: '1', timeUnixNano: '2', asInt: '-9007199254740993' }] } },
            {
              name: 'h',
              histogram: {
                aggregationTemporality: 2,
                dataPoints: [{ timeUnixNano: '3', count: '3', sum: 0, bucketCounts: ['1', '2'], explicitBounds: [10], min: 0, max: 9, exemplars: [{ timeUnixNano: '3', asDouble: 1, traceId: '5b8efff798038103d269b633813fc60c', spanId: 'eee19b7ec3c1b174' }] }],
              },
            },
            {
              name: 'e',
              exponentialHistogram: {
                aggregationTemporality: 2,
                dataPoints: [{ timeUnixNano: '4', count: '2', scale: -3, zeroCount: '1', positive: { offset: -2, bucketCounts: ['1'] }, negative: { offset: 5, bucketCounts: ['0', '1'] } }],
              },
            },
            { name: 'q', summary: { dataPoints: [{ timeUnixNano: '5', count: '10', sum: 100, quantileValues: [{ quantile: 0.5, value: 9 }] }] } },
          ],
        },
      ],
    },
  ],
};

const TRACES: OtlpObject = {
  resourceSpans: [
    {
      scopeSpans: [
        {
          spans: [
            {
              traceId: '5b8efff798038103d269b633813fc60c',
              spanId: 'eee19b7ec3c1b174',
              parentSpanId: 'eee19b7ec3c1b173',
              flags: 257,
              name: 'GET /',
              kind: 2,
              startTimeUnixNano: '1700000000000000000',
              endTimeUnixNano: '1700000000000000500',
              events: [{ timeUnixNano: '1700000000000000100', name: 'retry', attributes: [kv('n', { intValue: '2' })] }],
              links: [{ traceId: '00000000000000000000000000000001', spanId: '0000000000000002', traceState: 'k=v' }],
              status: { code: 2, message: 'boom' },
              attributes: [kv('list', { arrayValue: { values: [{ stringValue: 'a' }, { intValue: '1' }] } }), kv('raw', { bytesValue: 'AAEC' })],
            },
          ],
        },
      ],
    },
  ],
};

t.test('metrics and traces survive JSON -> protobuf -> JSON unchanged', async (t) => {
  for (const [signal, request] of [
    ['metrics', METRICS],
    ['traces', TRACES],
  ] as const) {
    const pb = encodeExportRequest(signal, 'protobuf', request);
    t.same(decodeExportRequest(signal, 'protobuf', pb), request, `${signal} via protobuf`);
    t.same(decodeExportRequest(signal, 'json', encodeExportRequest(signal, 'json', request)), request, `${signal} via JSON`);
  }
});

t.test('field numbers: a golden protobuf encoding', async (t) => {
  // ExportTraceServiceRequest{resource_spans(1){scope_spans(2){spans(2){name(5)="a", kind(6)=2}}}}
  const pb = encodeExportRequest('traces', 'protobuf', { resourceSpans: [{ scopeSpans: [{ spans: [{ name: 'a', kind: 2 }] }] }] });
  t.equal(pb.toString('hex'), '0a09120712052a01613002');
  // LogRecord time_unix_nano is fixed64 field 1, body field 5: ScopeLogs.log_records is field 2.
  const logs = encodeExportRequest('logs', 'protobuf', { resourceLogs: [{ scopeLogs: [{ logRecords: [{ timeUnixNano: '1', body: { stringValue: 'x' } }] }] }] });
  t.equal(logs.toString('hex'), '0a121210120e09' + '0100000000000000' + '2a030a0178');
});

t.test('JSON normalisation: numbers as strings, unknown fields dropped', async (t) => {
  const decoded = decodeExportRequest('logs', 'json', JSON.stringify({ resourceLogs: [{ scopeLogs: [{ logRecords: [{ timeUnixNano: 1700000000, futureField: 1, body: { intValue: 5 } }] }] }], extra: true }));
  t.same(decoded, { resourceLogs: [{ scopeLogs: [{ logRecords: [{ timeUnixNano: '1700000000', body: { intValue: '5' } }] }] }] });
});

t.test('invalid input is UPLINK_ERR_TELEMETRY_OTLP_INVALID', async (t) => {
  const bad: Array<[string, 'json' | 'protobuf', string | Buffer]> = [
    ['truncated protobuf', 'protobuf', Buffer.from('0a05ffffff', 'hex')],
    ['wrong wire type', 'protobuf', Buffer.from('0b', 'hex')],
    ['not JSON', 'json', '{'],
    ['not an object', 'json', '[1]'],
    ['wrong type', 'json', '{"resourceLogs":{}}'],
    ['non-hex id', 'json', '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"spanId":"zz"}]}]}]}'],
    ['odd hex id', 'json', '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"spanId":"abc"}]}]}]}'],
    ['text time', 'json', '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"yesterday"}]}]}]}'],
    ['negative time', 'json', '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":-1}]}]}]}'],
  ];
  for (const [name, encoding, body] of bad) {
    t.throws(() => decodeExportRequest('logs', encoding, body), { code: 'UPLINK_ERR_TELEMETRY_OTLP_INVALID' }, name);
  }
  let deep: OtlpObject = { stringValue: 'leaf' };
  for (let i = 0; i < OTLP_MAX_NESTING; i++) deep = { arrayValue: { values: [deep] } };
  const doc = JSON.stringify({ resourceLogs: [{ scopeLogs: [{ logRecords: [{ body: deep }] }] }] });
  t.throws(() => decodeExportRequest('logs', 'json', doc), { code: 'UPLINK_ERR_TELEMETRY_OTLP_INVALID' }, 'nesting beyond the limit');
});

t.test('responses and statuses in both encodings', async (t) => {
  for (const encoding of ['protobuf', 'json'] as const) {
    t.same(decodeExportResponse('metrics', encoding, encodeExportResponse('metrics', encoding)), { rejected: 0, errorMessage: '' });
    const partial = encodeExportResponse('traces', encoding, { rejected: 3, errorMessage: 'late' });
    t.same(decodeExportResponse('traces', encoding, partial), { rejected: 3, errorMessage: 'late' });
    t.same(decodeStatus(encoding, encodeStatus(encoding, { code: 3, message: 'bad' })), { code: 3, message: 'bad' });
  }
  t.equal(encodeExportResponse('logs', 'protobuf').length, 0, 'empty response is zero bytes');
  t.same(decodeExportResponse('logs', 'protobuf', Buffer.alloc(0)), { rejected: 0, errorMessage: '' });
  t.equal(decodeStatus('json', Buffer.from('<html>')), undefined);
});

t.test('content types', async (t) => {
  t.equal(encodingFromContentType('application/x-protobuf'), 'protobuf');
  t.equal(encodingFromContentType('Application/JSON; charset=utf-8'), 'json');
  t.equal(encodingFromContentType('text/plain'), undefined);
  t.equal(encodingFromContentType(undefined), undefined);
});
