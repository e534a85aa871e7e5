/**
 * Presence and last-seen writes for agents that just connected, written in batches: while one
 * batch is being written, the agents that connect meanwhile queue up and go into the next
 * one, a single statement per table. A lone connection is written at once (after the current
 * tick); during a reconnect storm the store, one writer on the embedded default, does a few
 * statements per batch instead of two per handshake.
 *
 * A disconnect waits for the queue first, so a presence row is never written after the
 * disconnect cleared it.
 */
import type { Logger } from '../shared/logger.js';
import type { Seen } from './store/appliances-repo.js';
import type { Presence } from './store/presence-repo.js';
import type { Store } from './store/store.js';
import { Batcher } from './store/batcher.js';

interface Entry {
  presence: Presence;
  /** Undefined when the appliance row already says this. */
  seen: Seen | undefined;
}

export class PresenceWriter {
  private readonly batches: Batcher<Entry, void>;

  constructor(
    private readonly store: Pick<Store, 'presence' | 'appliances'>,
    private readonly log: Logger,
  ) {
    this.batches = new Batcher((batch) => this.write(batch));
  }

  /** Record a new connection (written shortly, with whoever else connected meanwhile). */
  connected(presence: Presence, seen?: Seen): void {
    void this.batches.call({ presence, seen });
  }

  /** Resolves once everything queued so far is written (or failed and was logged). */
  flush(): Promise<void> {
    return this.batches.idle();
  }

  /** The connection ended: after the queue, clear its presence row and stamp last seen. */
  async disconnected(applianceId: string, connectionId: string, at: Date): Promise<void> {
    await this.flush();
    await this.store.presence.clear(applianceId, connectionId);
    await this.store.appliances.touchLastSeen([applianceId], at);
  }

  /** One batch; a failure is logged once for the batch, never thrown. */
  private async write(batch: Entry[]): Promise<void[]> {
    try {
      await Promise.all([
        this.store.presence.setMany(batch.map((e) => e.presence)),
        this.store.appliances.recordSeenMany(batch.flatMap((e) => (e.seen ? [{ id: e.presence.applianceId, ...e.seen }] : []))),
      ]);
    } catch (err) {
      this.log.error({ err: String(err), agents: batch.length }, 'cannot record presence');
    }
    return batch.map(() => undefined);
  }
}
