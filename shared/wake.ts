/**
 * Waiting for news about one item while following it (a deployment's log): resolves when
 * `source` emits one of `events` for `id` (its first argument), when `stream` closes, or after
 * `ms`, whichever comes first; every listener is removed then.
 */
import type { EventEmitter } from 'node:events';

export function wakeOn(source: EventEmitter, events: readonly string[], id: string, stream: EventEmitter, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const wake = (which: unknown) => {
      if (which === id) done();
    };
    const done = () => {
      clearTimeout(timer);
      for (const e of events) source.off(e, wake);
      stream.off('close', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    for (const e of events) source.on(e, wake);
    stream.once('close', done);
  });
}
