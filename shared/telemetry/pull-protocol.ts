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
 *
 * Read-ahead: a pull with `after: <batchId>` (an id the agent handed out and that is not
 * yet acknowledged) answers the batch that follows it, so the relay can fetch batch N+1
 * while it delivers batch N. Acks stay in spool order: N before N+1. At most
 * PULL_LIMITS.maxOutstandingBatches are outstanding; an unknown `after` (acknowledged,
 * dropped, or from before an agent restart) is refused with
 * UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN, and the relay then pulls from the start again.
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
  /** Batches handed out and not yet acknowledged: the oldest plus one read ahead. */
  maxOutstandingBatches: 2,
} as const;

export interface PullSpec {
  maxRecords: number;
  maxBytes: number;
  /** Read ahead: the batch after this outstanding one. */
  after?: string;
}

export interface AckSpec {
  batchId: string;
}
