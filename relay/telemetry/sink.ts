/**
 * The seam between the relay's telemetry pull loop and wherever telemetry goes.
 *
 * Contract (what makes delivery end-to-end at-least-once): `send` resolves only once the
 * sink has durably accepted every record of the batch (an OTLP 2xx, an fsync'ed file), or
 * has counted the ones it permanently refused as dropped. It rejects when the batch was
 * not delivered; the relay then does not acknowledge it to the agent and pulls it again,
 * so a sink can see a batch twice and readers drop repeats by record id. A sink applies
 * backpressure by resolving late: `send` waits while the sink's own queue is full.
 */
import type { AttributeValue, SignalKind, TelemetryRecord } from '../../shared/telemetry/record.js';

/** What the relay knows first-hand about the appliance a batch came from. */
export interface ApplianceInfo {
  /** The seed's instance-id: the appliance's stable identifier. */
  instanceId: string;
  /** Appliance name as registered on the relay. */
  name: string;
  /** The customer that owns the appliance. */
  customer: string;
  /** AWS region the appliance runs in. */
  region: string;
  /** AWS account id of the customer account. */
  accountId: string;
}

/** One pulled batch, as handed to every sink. */
export interface SinkBatch {
  appliance: ApplianceInfo;
  records: TelemetryRecord[];
}

/** A telemetry destination. */
export interface Sink {
  /** Unique name, used in logs and as the `sink` metric label. */
  readonly name: string;
  /** Resolve only when every record is accepted (or counted as permanently refused). */
  send(batch: SinkBatch): Promise<void>;
  /** Stop accepting batches, finish or abandon in-flight ones, release resources. Idempotent. */
  close(): Promise<void>;
}

/** Why a sink counted records as dropped (the `reason` metric label). */
export type SinkDropReason = 'rejected' | 'partial' | 'too_large';

/** Where sinks report what they did; the fanout's metrics implement it. */
export interface SinkObserver {
  /** One retry of one request (after an error, 429 or 5xx). */
  retry(sink: string, cause: string): void;
  /** A request or write accepted: `bytes` as sent (after compression). */
  sent(sink: string, appliance: string, signal: SignalKind, records: number, bytes: number): void;
  /** Records the destination refused for good: they will not be retried. */
  dropped(sink: string, reason: SinkDropReason, records: number): void;
}

/** An observer that ignores everything (for sinks built without metrics). */
export const NOOP_OBSERVER: SinkObserver = {
  retry: () => undefined,
  sent: () => undefined,
  dropped: () => undefined,
};

/**
 * Resource attributes the relay adds to every exported record: OpenTelemetry semantic
 * conventions where one exists (`cloud.*`), uplink's own names otherwise. `instance-id` is
 * the tag name the seed uses on the customer's resources.
 */
export function applianceResource(appliance: ApplianceInfo): Record<string, AttributeValue> {
  return {
    'instance-id': appliance.instanceId,
    'uplink.appliance.name': appliance.name,
    'uplink.customer': appliance.customer,
    'cloud.provider': 'aws',
    'cloud.region': appliance.region,
    'cloud.account.id': appliance.accountId,
  };
}
