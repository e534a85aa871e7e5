/**
 * The OTLP v1 protobuf schema (opentelemetry-proto: common, resource, logs, metrics, trace and
 * the three collector services' request/response messages) plus `google.rpc.Status`, as a
 * protobufjs JSON descriptor, so no .proto file has to be found and parsed at run time.
 *
 * Field names are the lowerCamelCase JSON names of OTLP/JSON: the wire format only uses the
 * field numbers, so `toObject` output is OTLP JSON shaped without renaming. Field numbers and
 * types follow opentelemetry-proto v1 exactly (reserved numbers are simply absent); the test
 * cross-checks them against the OpenTelemetry JS SDK's own protobuf serializer.
 */
import type { INamespace } from 'protobufjs';

interface FieldDesc {
  type: string;
  id: number;
  rule?: 'repeated';
  options?: { proto3_optional: true };
}

/** One field. */
function f(type: string, id: number): FieldDesc {
  return { type, id };
}

/**
 * A proto3 `optional` field (explicit presence): a histogram's `sum: 0` differs from no sum,
 * so zero must still go on the wire. Needs a synthetic `_name` oneof, see OPTIONAL_ONEOFS.
 */
function o(type: string, id: number): FieldDesc {
  return { type, id, options: { proto3_optional: true } };
}

/** Synthetic oneofs protoc generates for the `optional` sum/min/max of histogram points. */
const OPTIONAL_ONEOFS = { _sum: { oneof: ['sum'] }, _min: { oneof: ['min'] }, _max: { oneof: ['max'] } };

/** One repeated field (scalars are packed, the proto3 default). */
function r(type: string, id: number): FieldDesc {
  return { type, id, rule: 'repeated' };
}

const common = {
  AnyValue: {
    oneofs: { value: { oneof: ['stringValue', 'boolValue', 'intValue', 'doubleValue', 'arrayValue', 'kvlistValue', 'bytesValue'] } },
    fields: {
      stringValue: f('string', 1),
      boolValue: f('bool', 2),
      intValue: f('int64', 3),
      doubleValue: f('double', 4),
      arrayValue: f('ArrayValue', 5),
      kvlistValue: f('KeyValueList', 6),
      bytesValue: f('bytes', 7),
    },
  },
  ArrayValue: { fields: { values: r('AnyValue', 1) } },
  KeyValueList: { fields: { values: r('KeyValue', 1) } },
  KeyValue: { fields: { key: f('string', 1), value: f('AnyValue', 2) } },
  InstrumentationScope: {
    fields: { name: f('string', 1), version: f('string', 2), attributes: r('KeyValue', 3), droppedAttributesCount: f('uint32', 4) },
  },
  EntityRef: {
    fields: { schemaUrl: f('string', 1), type: f('string', 2), idKeys: r('string', 3), descriptionKeys: r('string', 4) },
  },
};

const C = 'opentelemetry.proto.common.v1.';
const R = 'opentelemetry.proto.resource.v1.';

const resource = {
  Resource: {
    fields: { attributes: r(`${C}KeyValue`, 1), droppedAttributesCount: f('uint32', 2), entityRefs: r(`${C}EntityRef`, 3) },
  },
};

const logs = {
  LogsData: { fields: { resourceLogs: r('ResourceLogs', 1) } },
  ResourceLogs: { fields: { resource: f(`${R}Resource`, 1), scopeLogs: r('ScopeLogs', 2), schemaUrl: f('string', 3) } },
  ScopeLogs: { fields: { scope: f(`${C}InstrumentationScope`, 1), logRecords: r('LogRecord', 2), schemaUrl: f('string', 3) } },
  LogRecord: {
    fields: {
      timeUnixNano: f('fixed64', 1),
      observedTimeUnixNano: f('fixed64', 11),
      severityNumber: f('int32', 2), // enum SeverityNumber: kept numeric, as OTLP JSON requires
      severityText: f('string', 3),
      body: f(`${C}AnyValue`, 5),
      attributes: r(`${C}KeyValue`, 6),
      droppedAttributesCount: f('uint32', 7),
      flags: f('fixed32', 8),
      traceId: f('bytes', 9),
      spanId: f('bytes', 10),
      eventName: f('string', 12),
    },
  },
};

const exemplar = {
  fields: {
    filteredAttributes: r(`${C}KeyValue`, 7),
    timeUnixNano: f('fixed64', 2),
    asDouble: f('double', 3),
    asInt: f('sfixed64', 6),
    spanId: f('bytes', 4),
    traceId: f('bytes', 5),
  },
  oneofs: { value: { oneof: ['asDouble', 'asInt'] } },
};

const metrics = {
  MetricsData: { fields: { resourceMetrics: r('ResourceMetrics', 1) } },
  ResourceMetrics: { fields: { resource: f(`${R}Resource`, 1), scopeMetrics: r('ScopeMetrics', 2), schemaUrl: f('string', 3) } },
  ScopeMetrics: { fields: { scope: f(`${C}InstrumentationScope`, 1), metrics: r('Metric', 2), schemaUrl: f('string', 3) } },
  Metric: {
    oneofs: { data: { oneof: ['gauge', 'sum', 'histogram', 'exponentialHistogram', 'summary'] } },
    fields: {
      name: f('string', 1),
      description: f('string', 2),
      unit: f('string', 3),
      gauge: f('Gauge', 5),
      sum: f('Sum', 7),
      histogram: f('Histogram', 9),
      exponentialHistogram: f('ExponentialHistogram', 10),
      summary: f('Summary', 11),
      metadata: r(`${C}KeyValue`, 12),
    },
  },
  Gauge: { fields: { dataPoints: r('NumberDataPoint', 1) } },
  // aggregationTemporality is the enum AggregationTemporality, kept numeric (OTLP JSON).
  Sum: { fields: { dataPoints: r('NumberDataPoint', 1), aggregationTemporality: f('int32', 2), isMonotonic: f('bool', 3) } },
  Histogram: { fields: { dataPoints: r('HistogramDataPoint', 1), aggregationTemporality: f('int32', 2) } },
  ExponentialHistogram: { fields: { dataPoints: r('ExponentialHistogramDataPoint', 1), aggregationTemporality: f('int32', 2) } },
  Summary: { fields: { dataPoints: r('SummaryDataPoint', 1) } },
  NumberDataPoint: {
    oneofs: { value: { oneof: ['asDouble', 'asInt'] } },
    fields: {
      attributes: r(`${C}KeyValue`, 7),
      startTimeUnixNano: f('fixed64', 2),
      timeUnixNano: f('fixed64', 3),
      asDouble: f('double', 4),
      asInt: f('sfixed64', 6),
      exemplars: r('Exemplar', 5),
      flags: f('uint32', 8),
    },
  },
  HistogramDataPoint: {
    oneofs: OPTIONAL_ONEOFS,
    fields: {
      attributes: r(`${C}KeyValue`, 9),
      startTimeUnixNano: f('fixed64', 2),
      timeUnixNano: f('fixed64', 3),
      count: f('fixed64', 4),
      sum: o('double', 5),
      bucketCounts: r('fixed64', 6),
      explicitBounds: r('double', 7),
      exemplars: r('Exemplar', 8),
      flags: f('uint32', 10),
      min: o('double', 11),
      max: o('double', 12),
    },
  },
  ExponentialHistogramDataPoint: {
    nested: { Buckets: { fields: { offset: f('sint32', 1), bucketCounts: r('uint64', 2) } } },
    oneofs: OPTIONAL_ONEOFS,
    fields: {
      attributes: r(`${C}KeyValue`, 1),
      startTimeUnixNano: f('fixed64', 2),
      timeUnixNano: f('fixed64', 3),
      count: f('fixed64', 4),
      sum: o('double', 5),
      scale: f('sint32', 6),
      zeroCount: f('fixed64', 7),
      positive: f('Buckets', 8),
      negative: f('Buckets', 9),
      flags: f('uint32', 10),
      exemplars: r('Exemplar', 11),
      min: o('double', 12),
      max: o('double', 13),
      zeroThreshold: f('double', 14),
    },
  },
  SummaryDataPoint: {
    nested: { ValueAtQuantile: { fields: { quantile: f('double', 1), value: f('double', 2) } } },
    fields: {
      attributes: r(`${C}KeyValue`, 7),
      startTimeUnixNano: f('fixed64', 2),
      timeUnixNano: f('fixed64', 3),
      count: f('fixed64', 4),
      sum: f('double', 5),
      quantileValues: r('ValueAtQuantile', 6),
      flags: f('uint32', 8),
    },
  },
  Exemplar: exemplar,
};

const trace = {
  TracesData: { fields: { resourceSpans: r('ResourceSpans', 1) } },
  ResourceSpans: { fields: { resource: f(`${R}Resource`, 1), scopeSpans: r('ScopeSpans', 2), schemaUrl: f('string', 3) } },
  ScopeSpans: { fields: { scope: f(`${C}InstrumentationScope`, 1), spans: r('Span', 2), schemaUrl: f('string', 3) } },
  Span: {
    nested: {
      Event: {
        fields: { timeUnixNano: f('fixed64', 1), name: f('string', 2), attributes: r(`${C}KeyValue`, 3), droppedAttributesCount: f('uint32', 4) },
      },
      Link: {
        fields: {
          traceId: f('bytes', 1),
          spanId: f('bytes', 2),
          traceState: f('string', 3),
          attributes: r(`${C}KeyValue`, 4),
          droppedAttributesCount: f('uint32', 5),
          flags: f('fixed32', 6),
        },
      },
    },
    fields: {
      traceId: f('bytes', 1),
      spanId: f('bytes', 2),
      traceState: f('string', 3),
      parentSpanId: f('bytes', 4),
      flags: f('fixed32', 16),
      name: f('string', 5),
      kind: f('int32', 6), // enum SpanKind, numeric in OTLP JSON
      startTimeUnixNano: f('fixed64', 7),
      endTimeUnixNano: f('fixed64', 8),
      attributes: r(`${C}KeyValue`, 9),
      droppedAttributesCount: f('uint32', 10),
      events: r('Event', 11),
      droppedEventsCount: f('uint32', 12),
      links: r('Link', 13),
      droppedLinksCount: f('uint32', 14),
      status: f('Status', 15),
    },
  },
  Status: { fields: { message: f('string', 2), code: f('int32', 3) } }, // enum StatusCode, numeric
};

const L = 'opentelemetry.proto.logs.v1.';
const M = 'opentelemetry.proto.metrics.v1.';
const T = 'opentelemetry.proto.trace.v1.';

const collectorLogs = {
  ExportLogsServiceRequest: { fields: { resourceLogs: r(`${L}ResourceLogs`, 1) } },
  ExportLogsServiceResponse: { fields: { partialSuccess: f('ExportLogsPartialSuccess', 1) } },
  ExportLogsPartialSuccess: { fields: { rejectedLogRecords: f('int64', 1), errorMessage: f('string', 2) } },
};
const collectorMetrics = {
  ExportMetricsServiceRequest: { fields: { resourceMetrics: r(`${M}ResourceMetrics`, 1) } },
  ExportMetricsServiceResponse: { fields: { partialSuccess: f('ExportMetricsPartialSuccess', 1) } },
  ExportMetricsPartialSuccess: { fields: { rejectedDataPoints: f('int64', 1), errorMessage: f('string', 2) } },
};
const collectorTrace = {
  ExportTraceServiceRequest: { fields: { resourceSpans: r(`${T}ResourceSpans`, 1) } },
  ExportTraceServiceResponse: { fields: { partialSuccess: f('ExportTracePartialSuccess', 1) } },
  ExportTracePartialSuccess: { fields: { rejectedSpans: f('int64', 1), errorMessage: f('string', 2) } },
};

/** `google.rpc.Status`, the body of OTLP/HTTP error responses (`details` are `google.protobuf.Any`). */
const googleRpc = {
  Status: { fields: { code: f('int32', 1), message: f('string', 2), details: r('google.protobuf.Any', 3) } },
};
const googleProtobuf = {
  Any: { fields: { typeUrl: f('string', 1), value: f('bytes', 2) } },
};

/** Wrap a message map as `a.b.c` nested namespaces. */
function ns(path: string, messages: Record<string, unknown>): INamespace {
  const parts = path.split('.');
  let node: INamespace = { nested: messages as INamespace['nested'] };
  for (let i = parts.length - 1; i > 0; i--) node = { nested: { [parts[i]!]: node } };
  return { [parts[0]!]: node } as unknown as INamespace;
}

/** Merge namespace trees built by `ns` (shared prefixes such as `opentelemetry.proto`). */
function merge(...trees: INamespace[]): INamespace {
  const out: Record<string, unknown> = {};
  for (const tree of trees) {
    for (const [key, value] of Object.entries(tree)) {
      const existing = out[key] as { nested?: INamespace } | undefined;
      const incoming = value as { nested?: INamespace };
      if (existing?.nested && incoming.nested) out[key] = { nested: merge(existing.nested, incoming.nested) };
      else out[key] = value;
    }
  }
  return out as INamespace;
}

/** The protobufjs JSON descriptor: pass to `protobuf.Root.fromJSON`. */
export const OTLP_DESCRIPTOR: INamespace = {
  nested: merge(
    ns('opentelemetry.proto.common.v1', common),
    ns('opentelemetry.proto.resource.v1', resource),
    ns('opentelemetry.proto.logs.v1', logs),
    ns('opentelemetry.proto.metrics.v1', metrics),
    ns('opentelemetry.proto.trace.v1', trace),
    ns('opentelemetry.proto.collector.logs.v1', collectorLogs),
    ns('opentelemetry.proto.collector.metrics.v1', collectorMetrics),
    ns('opentelemetry.proto.collector.trace.v1', collectorTrace),
    ns('google.rpc', googleRpc),
    ns('google.protobuf', googleProtobuf),
  ) as INamespace['nested'],
};
