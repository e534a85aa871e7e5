/**
 * Live view of telemetry passing through this relay's pull loops, for
 * `GET /v1/appliances/{name}/telemetry/tail` and `uplink telemetry tail`.
 *
 * Contract: a tail is a view, not a delivery path. The pull loop publishes a batch after
 * every sink accepted it; a subscriber that cannot keep up (more than `maxBufferBytes`
 * waiting in its socket) skips records and is told how many in a `{"skipped":N}` line, so a
 * slow terminal never holds relay memory or slows the pulls. Only agents connected to
 * this relay replica are visible.
 */
import type { SignalKind, TelemetryRecord } from '../../shared/telemetry/record.js';
import { UplinkError } from '../../shared/errors.js';
import { applianceResource, type ApplianceInfo } from './sink.js';

/** One reader: where lines go and how full its buffer is. */
export interface TailSubscriber {
  signal: SignalKind | undefined;
  /** Bytes queued but not yet written to the socket. */
  buffered(): number;
  write(line: string): void;
}

interface Entry {
  sub: TailSubscriber;
  skipped: number;
}

/** Subscribers per appliance name. */
export class TailHub {
  private readonly byAppliance = new Map<string, Set<Entry>>();
  private count = 0;

  constructor(private readonly limits: { maxSubscribers: number; maxBufferBytes: number }) {}

  /** Add a reader; returns the function that removes it. */
  subscribe(appliance: string, sub: TailSubscriber): () => void {
    if (this.count >= this.limits.maxSubscribers) {
      throw new UplinkError('UPLINK_ERR_TOO_MANY_STREAMS', `this relay already serves ${this.count} telemetry tails (limit ${this.limits.maxSubscribers})`);
    }
    const entry: Entry = { sub, skipped: 0 };
    let set = this.byAppliance.get(appliance);
    if (!set) this.byAppliance.set(appliance, (set = new Set()));
    set.add(entry);
    this.count++;
    let removed = false;
    return () => {
      if (removed) return;
      removed = true;
      set.delete(entry);
      this.count--;
      if (set.size === 0) this.byAppliance.delete(appliance);
    };
  }

  /** True when someone watches this appliance (the pull loop skips the work otherwise). */
  watching(appliance: string): boolean {
    return this.byAppliance.has(appliance);
  }

  /** Hand delivered records to the appliance's readers, one NDJSON line per record. */
  publish(appliance: ApplianceInfo, records: readonly TelemetryRecord[]): void {
    const set = this.byAppliance.get(appliance.name);
    if (!set) return;
    const extra = applianceResource(appliance);
    for (const entry of set) {
      for (const r of records) {
        if (entry.sub.signal && r.signal !== entry.sub.signal) continue;
        if (entry.sub.buffered() > this.limits.maxBufferBytes) {
          entry.skipped++;
          continue;
        }
        if (entry.skipped > 0) {
          entry.sub.write(`${JSON.stringify({ skipped: entry.skipped })}\n`);
          entry.skipped = 0;
        }
        entry.sub.write(`${JSON.stringify({ ...r, resource: { ...r.resource, ...extra } })}\n`);
      }
    }
  }
}
