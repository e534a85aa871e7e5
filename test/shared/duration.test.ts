import t from 'tap';
import { formatDuration, parseDuration } from '../../shared/duration.js';

t.test('parseDuration', async (t) => {
  t.equal(parseDuration('500ms'), 500);
  t.equal(parseDuration('30s'), 30_000);
  t.equal(parseDuration('45'), 45_000, 'bare number is seconds');
  t.equal(parseDuration('1h30m'), 5_400_000);
  t.equal(parseDuration(' 7d '), 604_800_000);
  t.equal(parseDuration('1.5s'), 1500);
  for (const bad of ['', ' ', '5x', 's', '1h 30m', '-5s', '5s!', '1e3s']) {
    t.throws(() => parseDuration(bad, '--timeout'), { code: 'UPLINK_ERR_USAGE', message: /^--timeout: / }, JSON.stringify(bad));
  }
});

t.test('formatDuration', async (t) => {
  t.equal(formatDuration(250), '250ms');
  t.equal(formatDuration(1000), '1s');
  t.equal(formatDuration(5_400_000), '1h30m');
  t.equal(formatDuration(90_061_000), '1d1h1m1s');
  t.equal(formatDuration(3_600_000), '1h');
  t.equal(parseDuration(formatDuration(93_784_000)), 93_784_000, 'round trip');
});
