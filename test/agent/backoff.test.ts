import t from 'tap';
import { Backoff } from '../../agent/backoff.js';

t.test('full jitter under an exponential, capped ceiling', async (t) => {
  const top = new Backoff(100, 1000, () => 0.999999);
  t.same([1, 2, 3, 4, 5, 6].map(() => top.next()), [99, 199, 399, 799, 999, 999]);
  t.equal(top.attempts, 6);
  top.reset();
  t.equal(top.attempts, 0);
  t.equal(top.next(), 99, 'reset starts over');
  const bottom = new Backoff(100, 1000, () => 0);
  t.same([1, 2, 3].map(() => bottom.next()), [0, 0, 0], 'full jitter may retry at once');
});

t.test('the exponent is clamped: thousands of attempts stay finite and capped', async (t) => {
  const b = new Backoff(500, 60_000, () => 0.5);
  let last = 0;
  for (let i = 0; i < 5000; i++) last = b.next();
  t.equal(last, 30_000);
  t.ok(Number.isFinite(last));
});
