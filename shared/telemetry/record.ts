/**
 * The unit of telemetry inside uplink: one log record, one metric data point or one span,
 * carried from a collector on the agent, through the agent's disk spool and the relay, to
 * the vendor's sinks.
 *
 * Contract: `id` is stable. The same source record always gets the same id (across agent
 * restarts and re-collection), so delivery is at-least-once end to end and sinks or readers
 * drop duplicates by id.
 */
export type SignalKind = 'logs' | 'metrics' | 'traces';

export type AttributeValue = string | number | boolean;

export interface TelemetryRecord {
  /** Stable id (hex or a collector-scoped string such as a CloudWatch eventId, hashed). */
  id: string;
  signal: SignalKind;
  /** Unix time in nanoseconds as a decimal string, as OTLP JSON encodes it. */
  timeUnixNano: string;
  /** Which collector produced it: 'cloudwatch-logs', 'cloudwatch-metrics', 'otlp', 'agent'. */
  source: string;
  /**
   * Resource attributes known where the record was collected (for example
   * `aws.log.group.names`). The relay adds `instance-id`, appliance name, customer,
   * `cloud.region` and `cloud.account.id` on export.
   */
  resource: Record<string, AttributeValue>;
  /** Instrumentation scope name, when the source has one. */
  scope?: string;
  /** Instrumentation scope version, when the source has one (OTLP input keeps it). */
  scopeVersion?: string;
  /**
   * The record itself in OTLP JSON form: a LogRecord for logs, a Metric holding exactly one
   * data point for metrics, a Span for traces.
   */
  payload: Record<string, unknown>;
}
