/** Codes for the telemetry area. Keep each documented in docs/errors.md. */
export const TELEMETRY_CODES = {
  // CloudWatch collectors and checkpoints
  UPLINK_ERR_TELEMETRY_CHECKPOINT_CORRUPT: { status: 500, summary: 'A collector checkpoint file is unreadable, too large or malformed.' },
  UPLINK_ERR_TELEMETRY_AWS_ACCESS_DENIED: { status: 403, summary: 'The SteadyState role may not call a CloudWatch or tagging API a collector needs.' },
  UPLINK_ERR_TELEMETRY_AWS_THROTTLED: { status: 429, summary: 'AWS kept throttling a collector after all retries.' },
  UPLINK_ERR_TELEMETRY_AWS_FAILED: { status: 502, summary: 'A CloudWatch or tagging API call failed.' },
  // Spool, OTLP receiver, relay sinks
  UPLINK_ERR_TELEMETRY_OTLP_INVALID: { status: 400, summary: 'An OTLP export request or response could not be decoded.' },
  UPLINK_ERR_TELEMETRY_LIMIT: { status: 413, summary: 'A telemetry record, request or batch exceeds a configured limit.' },
  UPLINK_ERR_TELEMETRY_SPOOL_UNAVAILABLE: { status: 503, summary: 'The telemetry spool is closed or its directory failed.' },
  UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN: { status: 409, summary: 'An acknowledged batch id does not match the spool.' },
  UPLINK_ERR_TELEMETRY_RECEIVER_BIND: { status: 500, summary: 'The OTLP receiver could not bind to its configured address.' },
  UPLINK_ERR_TELEMETRY_SINK_FAILED: { status: 502, summary: 'A telemetry sink gave up on a batch.' },
  UPLINK_ERR_TELEMETRY_SINK_CLOSED: { status: 503, summary: 'A telemetry sink is closed.' },
  // Relay pull loop and tail
  UPLINK_ERR_TELEMETRY_DISABLED: { status: 409, summary: 'The relay has no telemetry sinks configured, so it pulls nothing.' },
  UPLINK_ERR_TELEMETRY_PULL_FAILED: { status: 502, summary: 'A telemetry pull or ack to an agent failed or answered malformed data.' },
} as const;
