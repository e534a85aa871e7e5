/**
 * OTLP export requests <-> uplink telemetry records.
 *
 * In: an export request (OTLP/JSON shape, as `otlp-proto` decodes either encoding) is split
 * into one record per log record, per metric data point and per span. Each gets a stable id:
 * the SHA-256 of its canonical JSON (signal, resource, scope, payload with keys sorted), so
 * a client that retries the same export produces the same ids and readers drop the repeats.
 * Byte-identical records (same timestamp, body and attributes) share an id by design.
 *
 * Out: records are grouped into one export request per signal, by resource, then by scope;
 * metric data points of the same metric stream are merged back into one Metric. The relay's
 * resource attributes (instance-id, appliance, customer, region, account) are added last and
 * win over what the agent sent, because the relay knows them first-hand and the agent side
 * (an application posting OTLP) could claim to be another appliance.
 */
import { createHash } from 'node:crypto';
import { UplinkError } from '../errors.js';
import type { AttributeValue, SignalKind, TelemetryRecord } from './record.js';
import type { OtlpObject } from './otlp-proto.js';
import { requestListKey } from './otlp-proto.js';

/** Signals in the order export requests are produced. */
export const SIGNALS: readonly SignalKind[] = ['logs', 'metrics', 'traces'];

/** Per signal: key of the scope list in a Resource* message and of the item list in a Scope* message. */
const KEYS: Record<SignalKind, { scopes: string; items: string }> = {
  logs: { scopes: 'scopeLogs', items: 'logRecords' },
  metrics: { scopes: 'scopeMetrics', items: 'metrics' },
  traces: { scopes: 'scopeSpans', items: 'spans' },
};

/** Metric data kinds (the Metric `data` oneof). */
const METRIC_KINDS = ['gauge', 'sum', 'histogram', 'exponentialHistogram', 'summary'] as const;

/** Options for splitting an export request into records. */
export interface FromExportOptions {
  /** `source` of the produced records (default 'otlp'). */
  source?: string;
  /** Time used when an item carries none, as Unix nanoseconds (default: now). */
  receivedUnixNano?: string;
  /** Refuse requests with more items than this (UPLINK_ERR_TELEMETRY_LIMIT). */
  maxRecords?: number;
}

/**
 * JSON with object keys sorted at every level: the same value always gives the same text.
 * Keys whose value is undefined are left out; undefined in an array, and values JSON has no
 * text for (functions, symbols), are written as null. Strings and numbers are written by
 * JSON.stringify. Hot on the agent (one call per received record), hence the plain loops.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ',';
      const v: unknown = value[i];
      out += v === undefined ? 'null' : canonicalJson(v);
    }
    return `${out}]`;
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj);
  if (keys.length > 1) keys.sort();
  let out = '{';
  let first = true;
  for (const key of keys) {
    const v = obj[key];
    if (v === undefined) continue;
    if (!first) out += ',';
    first = false;
    out += keyText(key);
    out += typeof v === 'string' ? JSON.stringify(v) : canonicalJson(v);
  }
  return `${out}}`;
}

/** `"key":` texts already made: OTLP objects reuse a few dozen field names. */
const KEY_TEXTS = new Map<string, string>();
/** Bound on KEY_TEXTS: keys beyond it (arbitrary input) are simply not cached. */
const MAX_KEY_TEXTS = 1024;

function keyText(key: string): string {
  let text = KEY_TEXTS.get(key);
  if (text === undefined) {
    text = `${JSON.stringify(key)}:`;
    if (KEY_TEXTS.size < MAX_KEY_TEXTS) KEY_TEXTS.set(key, text);
  }
  return text;
}

/** The stable id of a record: SHA-256 (hex) of its canonical content, excluding `id`, `source` and `timeUnixNano` (derived). */
export function recordId(record: Omit<TelemetryRecord, 'id' | 'source' | 'timeUnixNano'>): string {
  const content = { signal: record.signal, resource: record.resource, scope: record.scope, scopeVersion: record.scopeVersion, payload: record.payload };
  return createHash('sha256').update(canonicalJson(content)).digest('hex');
}

/**
 * `recordId` for many records sharing signal, resource and scope: the canonical text of
 * everything but the payload is built once. The result is the same text `recordId` hashes,
 * because the content's keys sort as payload, resource, scope, scopeVersion, signal.
 */
function recordIdsFor(signal: SignalKind, resource: Record<string, AttributeValue>, scope: string | undefined, scopeVersion: string | undefined): (payload: OtlpObject) => string {
  let tail = `,"resource":${canonicalJson(resource)}`;
  if (scope !== undefined) tail += `,"scope":${JSON.stringify(scope)}`;
  if (scopeVersion !== undefined) tail += `,"scopeVersion":${JSON.stringify(scopeVersion)}`;
  tail += `,"signal":${JSON.stringify(signal)}}`;
  return (payload) => createHash('sha256').update(`{"payload":${canonicalJson(payload)}${tail}`).digest('hex');
}

/** An OTLP AnyValue as a plain JS value (used to flatten complex attributes to strings). */
function anyValueToJs(value: unknown): unknown {
  if (value === null || typeof value !== 'object') return null;
  const v = value as Record<string, unknown>;
  if ('stringValue' in v) return v.stringValue;
  if ('boolValue' in v) return v.boolValue;
  if ('intValue' in v) return Number(v.intValue);
  if ('doubleValue' in v) return Number(v.doubleValue);
  if ('bytesValue' in v) return v.bytesValue;
  if ('arrayValue' in v) return ((v.arrayValue as { values?: unknown[] })?.values ?? []).map(anyValueToJs);
  if ('kvlistValue' in v) {
    const out: Record<string, unknown> = {};
    for (const kv of ((v.kvlistValue as { values?: unknown[] })?.values ?? []) as Array<{ key?: string; value?: unknown }>) out[kv.key ?? ''] = anyValueToJs(kv.value);
    return out;
  }
  return null;
}

/**
 * OTLP attributes -> flat record attributes. Strings, booleans and numbers map directly; an
 * int64 beyond 2^53 stays a decimal string; arrays, maps and bytes become their JSON text,
 * because a record's resource is a flat map of scalars.
 */
export function attributesFromOtlp(kvs: unknown): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  if (!Array.isArray(kvs)) return out;
  for (const kv of kvs as Array<{ key?: unknown; value?: Record<string, unknown> }>) {
    if (typeof kv?.key !== 'string') continue;
    const v = kv.value ?? {};
    if (typeof v.stringValue === 'string') out[kv.key] = v.stringValue;
    else if (typeof v.boolValue === 'boolean') out[kv.key] = v.boolValue;
    else if ('intValue' in v) {
      const n = Number(v.intValue);
      out[kv.key] = Number.isSafeInteger(n) ? n : String(v.intValue);
    } else if ('doubleValue' in v) out[kv.key] = Number(v.doubleValue);
    else out[kv.key] = JSON.stringify(anyValueToJs(v));
  }
  return out;
}

/** Flat record attributes -> OTLP KeyValue list, in key order (deterministic output). */
export function attributesToOtlp(attrs: Record<string, AttributeValue>): OtlpObject[] {
  return Object.keys(attrs)
    .sort()
    .map((key) => {
      const v = attrs[key]!;
      if (typeof v === 'string') return { key, value: { stringValue: v } };
      if (typeof v === 'boolean') return { key, value: { boolValue: v } };
      return { key, value: Number.isInteger(v) ? { intValue: String(v) } : { doubleValue: v } };
    });
}

function nonZeroTime(...candidates: unknown[]): string | undefined {
  for (const c of candidates) if (typeof c === 'string' && c !== '' && c !== '0') return c;
  return undefined;
}

function asList(value: unknown): OtlpObject[] {
  return Array.isArray(value) ? (value as OtlpObject[]) : [];
}

/** One export request (normalised OTLP/JSON) -> records, one per log record, data point or span. */
export function recordsFromExportRequest(signal: SignalKind, request: OtlpObject, opts: FromExportOptions = {}): TelemetryRecord[] {
  const source = opts.source ?? 'otlp';
  const received = opts.receivedUnixNano ?? String(BigInt(Date.now()) * 1_000_000n);
  const max = opts.maxRecords ?? Number.POSITIVE_INFINITY;
  const { scopes: scopesKey, items: itemsKey } = KEYS[signal];
  const out: TelemetryRecord[] = [];
  const push = (group: { resource: Record<string, AttributeValue>; scope: string | undefined; scopeVersion: string | undefined; idOf: (payload: OtlpObject) => string }, payload: OtlpObject, time: string | undefined): void => {
    if (out.length >= max) {
      throw new UplinkError('UPLINK_ERR_TELEMETRY_LIMIT', `an OTLP ${signal} request holds more than ${max} records`, { details: { limit: 'maxRecordsPerRequest', value: max } });
    }
    const record: TelemetryRecord = { id: group.idOf(payload), source, timeUnixNano: time ?? received, signal, resource: group.resource, payload };
    if (group.scope !== undefined) record.scope = group.scope;
    if (group.scopeVersion !== undefined) record.scopeVersion = group.scopeVersion;
    out.push(record);
  };
  for (const rs of asList(request[requestListKey(signal)])) {
    const resource = attributesFromOtlp((rs.resource as OtlpObject | undefined)?.attributes);
    for (const ss of asList(rs[scopesKey])) {
      const scope = ss.scope as OtlpObject | undefined;
      const name = typeof scope?.name === 'string' && scope.name !== '' ? scope.name : undefined;
      const version = typeof scope?.version === 'string' && scope.version !== '' ? scope.version : undefined;
      const group = { resource, scope: name, scopeVersion: version, idOf: recordIdsFor(signal, resource, name, version) };
      for (const item of asList(ss[itemsKey])) {
        if (signal === 'logs') push(group, item, nonZeroTime(item.timeUnixNano, item.observedTimeUnixNano));
        else if (signal === 'traces') push(group, item, nonZeroTime(item.startTimeUnixNano, item.endTimeUnixNano));
        else for (const single of splitMetric(item)) push(group, single.metric, single.time);
      }
    }
  }
  return out;
}

/** A Metric with N data points -> N Metrics with one data point each (same name, kind, temporality). */
function splitMetric(metric: OtlpObject): Array<{ metric: OtlpObject; time: string | undefined }> {
  const kind = METRIC_KINDS.find((k) => metric[k] !== undefined);
  if (!kind) return [];
  const data = metric[kind] as OtlpObject;
  const { [kind]: _data, ...header } = metric;
  const { dataPoints, ...dataHeader } = data;
  return asList(dataPoints).map((point) => ({
    metric: { ...header, [kind]: { ...dataHeader, dataPoints: [point] } },
    time: nonZeroTime(point.timeUnixNano, point.startTimeUnixNano),
  }));
}

/** One export request per signal present in the input. */
export interface SignalExport {
  signal: SignalKind;
  /** OTLP/JSON export request; encode with `encodeExportRequest`. */
  request: OtlpObject;
  /** Records it carries. */
  records: number;
}

/** Key of a metric stream: points with the same key merge into one Metric. */
function metricStreamKey(metric: OtlpObject): string {
  const kind = METRIC_KINDS.find((k) => metric[k] !== undefined) ?? '';
  const { dataPoints: _points, ...dataHeader } = (metric[kind] as OtlpObject | undefined) ?? {};
  return canonicalJson([metric.name, metric.description, metric.unit, metric.metadata, kind, dataHeader]);
}

/**
 * Records -> one export request per signal, grouped by resource (record resource plus
 * `extraResource`, which wins on conflicts) and by scope, in first-seen order.
 */
export function exportRequestsFromRecords(records: readonly TelemetryRecord[], extraResource: Record<string, AttributeValue> = {}): SignalExport[] {
  const out: SignalExport[] = [];
  for (const signal of SIGNALS) {
    const { scopes: scopesKey, items: itemsKey } = KEYS[signal];
    // canonical resource key -> scope key -> items (Map keeps first-seen order).
    const resources = new Map<string, ResourceGroup>();
    // The canonical key costs a sort and a walk per record; records of one source share one
    // resource spelled the same way, so its plain JSON text finds the group first.
    const byText = new Map<string, ResourceGroup>();
    let count = 0;
    for (const record of records) {
      if (record.signal !== signal) continue;
      count++;
      const text = JSON.stringify(record.resource);
      let r = byText.get(text);
      if (!r) {
        const resource = { ...record.resource, ...extraResource };
        const rKey = canonicalJson(resource);
        r = resources.get(rKey);
        if (!r) resources.set(rKey, (r = { resource, scopes: new Map() }));
        byText.set(text, r);
      }
      // A scope is at most a name and a version: this key is exact without sorting.
      const sKey = record.scope === undefined ? '' : JSON.stringify([record.scope, record.scopeVersion ?? null]);
      let s = r.scopes.get(sKey);
      if (!s) {
        const scope = record.scope === undefined ? undefined : record.scopeVersion === undefined ? { name: record.scope } : { name: record.scope, version: record.scopeVersion };
        r.scopes.set(sKey, (s = { scope, items: [], streams: new Map() }));
      }
      if (signal !== 'metrics') {
        s.items.push(record.payload);
        continue;
      }
      mergeMetric(s, record.payload);
    }
    if (count === 0) continue;
    const list = [...resources.values()].map((r) => ({
      resource: { attributes: attributesToOtlp(r.resource) },
      [scopesKey]: [...r.scopes.values()].map((s) => (s.scope ? { scope: s.scope, [itemsKey]: s.items } : { [itemsKey]: s.items })),
    }));
    out.push({ signal, request: { [requestListKey(signal)]: list }, records: count });
  }
  return out;
}

interface ScopeGroup {
  scope: OtlpObject | undefined;
  items: OtlpObject[];
  streams: Map<string, OtlpObject>;
}

interface ResourceGroup {
  resource: Record<string, AttributeValue>;
  scopes: Map<string, ScopeGroup>;
}

/** Append a one-point Metric to its stream's Metric in `s`, or start a new stream. */
function mergeMetric(s: { items: OtlpObject[]; streams: Map<string, OtlpObject> }, metric: OtlpObject): void {
  const kind = METRIC_KINDS.find((k) => metric[k] !== undefined);
  if (!kind) {
    s.items.push(metric);
    return;
  }
  const key = metricStreamKey(metric);
  const existing = s.streams.get(key);
  const points = asList((metric[kind] as OtlpObject).dataPoints);
  if (existing) {
    ((existing[kind] as OtlpObject).dataPoints as OtlpObject[]).push(...points);
    return;
  }
  // Copy the data object: the merged Metric's point list must not alias the record's payload.
  const copy: OtlpObject = { ...metric, [kind]: { ...(metric[kind] as OtlpObject), dataPoints: [...points] } };
  s.streams.set(key, copy);
  s.items.push(copy);
}
