/**
 * Gathers calls that arrive while the store is busy into one statement. The first call is
 * run after the current tick (so calls made in the same tick join it); calls made while a
 * batch is being run wait for the next one. A lone call costs one tick of delay; a burst
 * (ten thousand agents reconnecting to a restarted relay) costs a few statements per batch
 * instead of one per call, which matters most on the embedded store, where every statement
 * runs on the event loop.
 *
 * `run` answers the items in order, one result each. If it throws, every call of that batch
 * rejects with the error and the next batch runs as usual.
 */
export class Batcher<I, O> {
  private pending: { item: I; resolve: (o: O) => void; reject: (err: unknown) => void }[] = [];
  private running: Promise<void> | undefined;

  constructor(private readonly run: (items: I[]) => Promise<O[]>) {}

  call(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.pending.push({ item, resolve, reject });
      this.running ??= this.drain();
    });
  }

  /** Resolves once everything queued so far has run. */
  idle(): Promise<void> {
    return this.running ?? Promise.resolve();
  }

  private async drain(): Promise<void> {
    try {
      await new Promise((resolve) => setImmediate(resolve));
      while (this.pending.length > 0) {
        const batch = this.pending;
        this.pending = [];
        try {
          const out = await this.run(batch.map((b) => b.item));
          if (out.length !== batch.length) throw new Error(`batch answered ${out.length} results for ${batch.length} items`);
          batch.forEach((b, i) => b.resolve(out[i]!));
        } catch (err) {
          for (const b of batch) b.reject(err);
        }
      }
    } finally {
      this.running = undefined;
    }
  }
}
