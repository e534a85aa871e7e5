/**
 * OTLP export requests, responses and error statuses in both OTLP/HTTP encodings:
 * binary protobuf (`application/x-protobuf`) and OTLP/JSON (`application/json`).
 *
 * The in-memory form is always OTLP/JSON shaped (lowerCamelCase keys, 64-bit integers as
 * decimal strings, enums as numbers, trace and span ids as lowercase hex), so the rest of the
 * code handles one shape whatever the wire carried. JSON input is normalised by a round trip
 * through the protobuf schema: wrongly typed fields are rejected, unknown fields dropped
 * (the spec asks receivers to ignore them), and `"5"` and `5` become the same value, which is
 * what makes record ids computed from this form stable.
 *
 * Every decoding failure throws `UPLINK_ERR_TELEMETRY_OTLP_INVALID`.
 */
import protobuf from 'protobufjs';
import { UplinkError } from '../errors.js';
import type { SignalKind } from './record.js';
import { OTLP_DESCRIPTOR } from './otlp-descriptor.js';

/** The two OTLP/HTTP body encodings. */
export type OtlpEncoding = 'protobuf' | 'json';

/** Content types of the two encodings, as OTLP/HTTP names them. */
export const OTLP_CONTENT_TYPES: Readonly<Record<OtlpEncoding, string>> = {
  protobuf: 'application/x-protobuf',
  json: 'application/json',
};

/** Default URL paths of the three OTLP/HTTP endpoints. */
export const OTLP_PATHS: Readonly<Record<SignalKind, string>> = {
  logs: '/v1/logs',
  metrics: '/v1/metrics',
  traces: '/v1/traces',
};

/** An OTLP/JSON shaped object (an export request, a LogRecord, a Metric, a Span...). */
export type OtlpObject = Record<string, unknown>;

/** What a receiver reported back: `rejected` counts records it refused despite the 200. */
export interface OtlpPartialSuccess {
  rejected: number;
  errorMessage: string;
}

/** A `google.rpc.Status`, the body OTLP/HTTP servers return with 4xx and 5xx. */
export interface OtlpStatus {
  code: number;
  message: string;
}

/** gRPC status codes used in OTLP/HTTP error bodies. */
export const GRPC_CODES = { INVALID_ARGUMENT: 3, RESOURCE_EXHAUSTED: 8, UNAVAILABLE: 14 } as const;

/**
 * Nesting limit for JSON walks. OTLP's AnyValue can nest (arrays, key-value lists); a deeper
 * document is hostile, and refusing it keeps recursion far from the stack limit.
 */
export const OTLP_MAX_NESTING = 64;

const root = protobuf.Root.fromJSON(OTLP_DESCRIPTOR);

interface SignalTypes {
  request: protobuf.Type;
  response: protobuf.Type;
  /** Key of the top-level list in the request (`resourceLogs`...). */
  listKey: string;
  /** Key of the rejected count in the partial success message. */
  rejectedKey: string;
}

const SIGNALS: Record<SignalKind, SignalTypes> = {
  logs: {
    request: root.lookupType('opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest'),
    response: root.lookupType('opentelemetry.proto.collector.logs.v1.ExportLogsServiceResponse'),
    listKey: 'resourceLogs',
    rejectedKey: 'rejectedLogRecords',
  },
  metrics: {
    request: root.lookupType('opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest'),
    response: root.lookupType('opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceResponse'),
    listKey: 'resourceMetrics',
    rejectedKey: 'rejectedDataPoints',
  },
  traces: {
    request: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest'),
    response: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse'),
    listKey: 'resourceSpans',
    rejectedKey: 'rejectedSpans',
  },
};

const STATUS = root.lookupType('google.rpc.Status');

/** Key of the top-level list of an export request for `signal` (`resourceLogs`...). */
export function requestListKey(signal: SignalKind): string {
  return SIGNALS[signal].listKey;
}

/**
 * toObject options giving OTLP/JSON: 64-bit integers as decimal strings, enums as numbers,
 * bytes as base64 (ids are turned into hex afterwards), NaN/Infinity as strings.
 */
const TO_OBJECT: protobuf.IConversionOptions = { longs: String, enums: Number, bytes: String, defaults: false, json: true };

/** Bytes fields that OTLP/JSON writes as hex instead of base64 (the spec's one deviation). */
const HEX_ID_KEYS = new Set(['traceId', 'spanId', 'parentSpanId']);
const HEX = /^(?:[0-9a-fA-F]{2})*$/;

function invalid(message: string, cause?: unknown): UplinkError {
  return new UplinkError('UPLINK_ERR_TELEMETRY_OTLP_INVALID', message, cause === undefined ? {} : { cause });
}

/**
 * Timestamp fields. protobufjs turns a non-numeric string into 0 without complaint, which
 * would silently re-date a record, so JSON input is checked here first.
 */
const TIME_KEYS = new Set(['timeUnixNano', 'startTimeUnixNano', 'endTimeUnixNano', 'observedTimeUnixNano']);
const UINT64 = /^\d{1,20}$/;

function checkTime(value: unknown, key: string): void {
  const ok = typeof value === 'string' ? UINT64.test(value) : typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
  if (!ok) throw invalid(`${key} must be unsigned nanoseconds (a decimal string), got ${JSON.stringify(value)?.slice(0, 40)}`);
}

/**
 * Copy an OTLP/JSON object tree for protobuf: every `traceId`/`spanId`/`parentSpanId` string
 * from hex to base64, every timestamp checked. Only message fields carry these names (user
 * data lives in `{key, value}` pairs), so a generic walk is exact.
 */
function idsToBase64(value: unknown, depth: number): unknown {
  if (depth > OTLP_MAX_NESTING) throw invalid(`OTLP document nested deeper than ${OTLP_MAX_NESTING} levels`);
  if (Array.isArray(value)) return value.map((v) => idsToBase64(v, depth + 1));
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    if (TIME_KEYS.has(key)) checkTime(v, key);
    out[key] = HEX_ID_KEYS.has(key) && typeof v === 'string' ? hexToBase64(v, key) : idsToBase64(v, depth + 1);
  }
  return out;
}

function hexToBase64(hex: string, key: string): string {
  if (!HEX.test(hex)) throw invalid(`${key} "${hex.slice(0, 40)}" is not hex`);
  return Buffer.from(hex, 'hex').toString('base64');
}

function base64ToHex(b64: string): string {
  return Buffer.from(b64, 'base64').toString('hex');
}

/**
 * The other direction (base64 ids to hex), rewriting in place: used on toObject's
 * output, a fresh tree nobody else holds, where a copy would only make garbage (this runs
 * once per received record on the agent).
 */
function idsToHexInPlace(value: unknown, depth: number): void {
  if (depth > OTLP_MAX_NESTING) throw invalid(`OTLP document nested deeper than ${OTLP_MAX_NESTING} levels`);
  if (value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    for (const v of value) idsToHexInPlace(v, depth + 1);
    return;
  }
  const obj = value as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    const v = obj[key];
    if (typeof v === 'string') {
      if (HEX_ID_KEYS.has(key)) obj[key] = base64ToHex(v);
    } else if (v !== null && typeof v === 'object') {
      idsToHexInPlace(v, depth + 1);
    }
  }
}

function messageToJson(type: protobuf.Type, message: protobuf.Message): OtlpObject {
  const json = type.toObject(message, TO_OBJECT);
  idsToHexInPlace(json, 0);
  return json;
}

/** OTLP/JSON object -> protobuf message, rejecting wrongly typed fields. */
function jsonToMessage(type: protobuf.Type, value: unknown): protobuf.Message {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw invalid('OTLP JSON body must be an object');
  const withBase64 = idsToBase64(value, 0) as Record<string, unknown>;
  try {
    return type.fromObject(withBase64);
  } catch (err) {
    throw invalid(`OTLP JSON does not match ${type.name}: ${(err as Error).message}`, err);
  }
}

function parseJson(body: Uint8Array | string): unknown {
  try {
    return JSON.parse(typeof body === 'string' ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'));
  } catch (err) {
    throw invalid(`body is not JSON: ${(err as Error).message}`, err);
  }
}

function decodeProto(type: protobuf.Type, body: Uint8Array): protobuf.Message {
  try {
    return type.decode(body);
  } catch (err) {
    // protobufjs throws RangeError/Error on truncated or malformed input and on nesting that
    // exhausts the stack; all of them mean "bad input", never a server fault.
    throw invalid(`body is not a valid ${type.name}: ${(err as Error).message}`, err);
  }
}

/** Decode an export request body of either encoding to its normalised OTLP/JSON form. */
export function decodeExportRequest(signal: SignalKind, encoding: OtlpEncoding, body: Uint8Array | string): OtlpObject {
  const { request } = SIGNALS[signal];
  const message =
    encoding === 'json' ? jsonToMessage(request, parseJson(body)) : decodeProto(request, typeof body === 'string' ? Buffer.from(body) : body);
  try {
    return messageToJson(request, message);
  } catch (err) {
    if (err instanceof UplinkError) throw err;
    throw invalid(`cannot convert ${request.name}: ${(err as Error).message}`, err);
  }
}

/** Encode an OTLP/JSON shaped export request in the given encoding. */
export function encodeExportRequest(signal: SignalKind, encoding: OtlpEncoding, request: OtlpObject): Buffer {
  if (encoding === 'json') return Buffer.from(JSON.stringify(request));
  const type = SIGNALS[signal].request;
  const bytes = type.encode(jsonToMessage(type, request)).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The 200 body: an Export*ServiceResponse, empty unless some records were rejected. */
export function encodeExportResponse(signal: SignalKind, encoding: OtlpEncoding, partial?: OtlpPartialSuccess): Buffer {
  const { response, rejectedKey } = SIGNALS[signal];
  const value: OtlpObject = partial ? { partialSuccess: { [rejectedKey]: String(partial.rejected), errorMessage: partial.errorMessage } } : {};
  if (encoding === 'json') return Buffer.from(JSON.stringify(value));
  const bytes = response.encode(response.fromObject(value)).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Read a 200 body. An empty body, or one without `partialSuccess`, is full success
 * (`rejected: 0`). A body that cannot be decoded is an error: the caller decides whether a
 * 200 with garbage counts as accepted.
 */
export function decodeExportResponse(signal: SignalKind, encoding: OtlpEncoding, body: Uint8Array): OtlpPartialSuccess {
  if (body.byteLength === 0) return { rejected: 0, errorMessage: '' };
  const { response, rejectedKey } = SIGNALS[signal];
  const obj = encoding === 'json' ? messageToJson(response, jsonToMessage(response, parseJson(body))) : messageToJson(response, decodeProto(response, body));
  const partial = obj.partialSuccess as Record<string, unknown> | undefined;
  const rejected = Number(partial?.[rejectedKey] ?? 0);
  return { rejected: Number.isFinite(rejected) && rejected > 0 ? rejected : 0, errorMessage: String(partial?.errorMessage ?? '') };
}

/** Encode a `google.rpc.Status` error body. */
export function encodeStatus(encoding: OtlpEncoding, status: OtlpStatus): Buffer {
  if (encoding === 'json') return Buffer.from(JSON.stringify({ code: status.code, message: status.message }));
  const bytes = STATUS.encode(STATUS.fromObject({ code: status.code, message: status.message })).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Decode a `google.rpc.Status` error body; `undefined` when it is not one (an HTML error page). */
export function decodeStatus(encoding: OtlpEncoding, body: Uint8Array): OtlpStatus | undefined {
  try {
    const obj = encoding === 'json' ? (parseJson(body) as Record<string, unknown>) : STATUS.toObject(STATUS.decode(body), TO_OBJECT);
    if (obj === null || typeof obj !== 'object') return undefined;
    return { code: Number(obj.code ?? 0), message: String(obj.message ?? '') };
  } catch {
    return undefined;
  }
}

/** The encoding named by a Content-Type header value, or undefined when it is neither. */
export function encodingFromContentType(contentType: string | undefined): OtlpEncoding | undefined {
  const base = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (base === OTLP_CONTENT_TYPES.protobuf) return 'protobuf';
  if (base === OTLP_CONTENT_TYPES.json) return 'json';
  return undefined;
}
