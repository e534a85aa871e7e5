/**
 * relay/store/batcher.ts: calls in one tick share a batch, calls made while a batch runs
 * share the next one, results go back in order, and a failed batch rejects only its own calls.
 */
import t from 'tap';
import { Batcher } from '../../../relay/store/batcher.js';

t.test('one tick is one batch; calls during a batch wait for the next', async (t) => {
  const seen: number[][] = [];
  let release: () => void = () => {};
  const b = new Batcher<number, string>(async (items) => {
    seen.push(items);
    if (seen.length === 1) await new Promise<void>((r) => (release = r));
    return items.map((i) => `r${i}`);
  });
  const first = [b.call(1), b.call(2), b.call(3)];
  await new Promise((r) => setImmediate(r));
  const later = [b.call(4), b.call(5)];
  await new Promise((r) => setImmediate(r));
  t.same(seen, [[1, 2, 3]], 'the second batch waits for the first');
  release();
  t.same(await Promise.all([...first, ...later]), ['r1', 'r2', 'r3', 'r4', 'r5']);
  t.same(seen, [[1, 2, 3], [4, 5]]);
  await b.idle();
  t.same(await b.call(6), 'r6', 'a lone call runs by itself');
  t.same(seen.at(-1), [6]);
});

t.test('a failed batch rejects its calls only; a short answer is a failure', async (t) => {
  let n = 0;
  const b = new Batcher<number, number>(async (items) => {
    n++;
    if (n === 1) throw new Error('store down');
    if (n === 2) return items.slice(1);
    return items.map((i) => i * 10);
  });
  const failed = await Promise.allSettled([b.call(1), b.call(2)]);
  t.same(failed.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : 'ok')), ['store down', 'store down']);
  const short = await Promise.allSettled([b.call(3), b.call(4)]);
  t.same(short.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : 'ok')), ['batch answered 1 results for 2 items', 'batch answered 1 results for 2 items']);
  t.same(await Promise.all([b.call(5), b.call(6)]), [50, 60]);
  await t.resolves(b.idle());
});
