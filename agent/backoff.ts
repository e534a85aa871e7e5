/**
 * Reconnect delays: exponential backoff with full jitter, capped
 * (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/). Full jitter
 * spreads a fleet of agents reconnecting after a relay restart instead of synchronising them.
 */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.floor(this.random() * ceiling);
  }

  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}
