/**
 * The telemetry pull protocol between relay and agent (DESIGN.md decision 2: agent→relay
 * data is pulled, so backpressure is natural and delivery is acknowledged end to end).
 *
 * 1. The relay POSTs AGENT_PATHS.telemetryPull with spec `{maxRecords, maxBytes}`.
 *    The agent answers 204 when its spool is empty, or 200 with the batch: the body is the
 *    spool's stored JSON array of TelemetryRecord (sent as is, never re-parsed on the
 *    agent) and the headers below.
 * 2. After every sink accepted the batch, the relay POSTs AGENT_PATHS.telemetryAck with
 *    spec `{batchId}`; the agent durably moves its spool cursor past it.
 * Until the ack, a pull returns the same batch with the same id (at-least-once).
 */

/** Response headers of a pull. */
export const TELEMETRY_HEADERS = {
  batchId: 'x-uplink-batch-id',
  recordCount: 'x-uplink-record-count',
  /** Records the spool lost (full, corrupt) not yet reported to the relay; see the agent service. */
  spoolDropped: 'x-uplink-spool-dropped',
  /** Append time (ms since epoch) of the batch's oldest record: the lag measure. */
  oldestMs: 'x-uplink-oldest-ms',
} as const;

/** Bounds on what one pull may ask for; the agent refuses larger requests. */
export const PULL_LIMITS = {
  maxRecords: 100_000,
  maxBytes: 16 * 1024 * 1024,
  /** A batch id is `<seq>.<offset>-<seq>.<offset>`; anything longer is refused unread. */
  maxBatchIdLength: 100,
} as const;

export interface PullSpec {
  maxRecords: number;
  maxBytes: number;
}

export interface AckSpec {
  batchId: string;
}
