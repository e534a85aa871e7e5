import t from 'tap';
import { AWS_RETRY_DEFAULTS, CollectorScheduler, callAws, classifyAwsError, msToUnixNano, recordId, sleep, type Collector, type CollectResult } from '../../../agent/telemetry/collector.js';
import { UplinkError } from '../../../shared/errors.js';

const awsErr = (name: string, status?: number): Error => Object.assign(new Error(`${name} happened`), { name, $metadata: status === undefined ? {} : { httpStatusCode: status } });

t.test('record ids and OTLP times', async (t) => {
  t.match(recordId('x'), /^[0-9a-f]{64}$/);
  t.equal(recordId('x'), '2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881');
  t.not(recordId('cwlogs:/a:1'), recordId('cwlogs:/a:2'));
  t.equal(msToUnixNano(1_700_000_000_123), '1700000000123000000');
  t.equal(msToUnixNano(0), '0');
});

t.test('AWS errors are classified by name and status', async (t) => {
  t.equal(classifyAwsError(awsErr('ThrottlingException')), 'throttled');
  t.equal(classifyAwsError(awsErr('Throttling')), 'throttled');
  t.equal(classifyAwsError(awsErr('SomethingNew', 429)), 'throttled');
  t.equal(classifyAwsError(awsErr('AccessDeniedException', 400)), 'denied');
  t.equal(classifyAwsError(awsErr('AccessDenied', 403)), 'denied');
  t.equal(classifyAwsError(awsErr('ServiceUnavailable', 503)), 'transient');
  t.equal(classifyAwsError(awsErr('Whatever', 500)), 'transient');
  t.equal(classifyAwsError(Object.assign(new Error('reset'), { code: 'ECONNRESET' })), 'transient');
  t.equal(classifyAwsError(awsErr('InvalidParameterException', 400)), 'fatal');
  t.equal(classifyAwsError(undefined), 'fatal');
});

t.test('callAws retries throttling and transient failures, not denials', async (t) => {
  const signal = new AbortController().signal;
  const retry = { maxAttempts: 4, baseDelayMs: 1, maxDelayMs: 2 };
  let n = 0;
  t.equal(await callAws('logs:X', async () => (++n < 3 ? Promise.reject(awsErr('ThrottlingException', 400)) : 'ok'), signal, retry), 'ok');
  t.equal(n, 3);

  n = 0;
  const throttled = await callAws('logs:X', async () => { n++; throw awsErr('ThrottlingException', 400); }, signal, retry).catch((e: unknown) => e);
  t.match(throttled, { code: 'UPLINK_ERR_TELEMETRY_AWS_THROTTLED', status: 429, details: { operation: 'logs:X', awsCode: 'ThrottlingException', attempts: 4 } });
  t.equal(n, 4, 'maxAttempts bounds the calls');
  t.ok(throttled instanceof UplinkError && (throttled.cause as Error).name === 'ThrottlingException', 'original kept as cause');

  n = 0;
  await t.rejects(callAws('tag:GetResources', async () => { n++; throw awsErr('AccessDeniedException', 400); }, signal, retry), { code: 'UPLINK_ERR_TELEMETRY_AWS_ACCESS_DENIED', status: 403 });
  t.equal(n, 1, 'a denial is not retried');

  n = 0;
  await t.rejects(callAws('logs:X', async () => { n++; throw awsErr('InvalidParameterException', 400); }, signal, retry), { code: 'UPLINK_ERR_TELEMETRY_AWS_FAILED', details: { awsCode: 'InvalidParameterException', attempts: 1 } });
  n = 0;
  await t.rejects(callAws('logs:X', async () => { n++; throw awsErr('InternalFailure', 500); }, signal, retry), { code: 'UPLINK_ERR_TELEMETRY_AWS_FAILED', details: { attempts: 4 } });
  t.equal(AWS_RETRY_DEFAULTS.maxAttempts, 6);
});

t.test('callAws and sleep stop at once when aborted', async (t) => {
  const ac = new AbortController();
  const reason = new Error('shutting down');
  let n = 0;
  const p = callAws('logs:X', async () => { n++; throw awsErr('ThrottlingException'); }, ac.signal, { maxAttempts: 100, baseDelayMs: 60_000, maxDelayMs: 60_000 });
  setImmediate(() => ac.abort(reason));
  await t.rejects(p, reason, 'rejects with the abort reason, not after the backoff');
  t.equal(n, 1);
  await t.rejects(sleep(10, ac.signal), reason, 'already aborted');
  await t.rejects(callAws('logs:X', async () => 'never', ac.signal), reason);
});

/** A collector driven by the test: each run resolves the next waiter. */
function probe(name: string, periodMs: number, run: (n: number, signal: AbortSignal) => Promise<CollectResult>) {
  let n = 0;
  let active = 0;
  let maxActive = 0;
  const waiters: Array<{ at: number; resolve: () => void }> = [];
  const c: Collector = {
    name,
    periodMs,
    async collect(signal) {
      n++;
      active++;
      maxActive = Math.max(maxActive, active);
      try {
        return await run(n, signal);
      } finally {
        active--;
        for (const w of waiters.filter((w) => n >= w.at)) w.resolve();
      }
    },
  };
  return {
    c,
    get runs() { return n; },
    get maxActive() { return maxActive; },
    runsReach: (at: number) => new Promise<void>((resolve) => (n >= at ? resolve() : waiters.push({ at, resolve }))),
  };
}

t.test('scheduler runs each collector repeatedly, never overlapping itself', async (t) => {
  const a = probe('a', 5, async () => { await new Promise((r) => setTimeout(r, 3)); return { more: false }; });
  const b = probe('b', 5, async () => ({ more: false }));
  const s = new CollectorScheduler([a.c, b.c]);
  s.start();
  await Promise.all([a.runsReach(4), b.runsReach(4)]);
  await s.stop();
  t.equal(a.maxActive, 1);
  t.equal(b.maxActive, 1);
  const after = a.runs + b.runs;
  await new Promise((r) => setTimeout(r, 30));
  t.equal(a.runs + b.runs, after, 'no runs after stop()');
  await s.stop();
  t.pass('stop() is idempotent');
  t.throws(() => s.start(), { code: 'UPLINK_ERR_INTERNAL' }, 'a stopped scheduler cannot restart');
});

t.test('a backlog is drained without waiting a period', async (t) => {
  // A one-hour period: only the backlog path can produce the second and third runs.
  const p = probe('backlog', 3_600_000, async (n) => ({ more: n < 3 }));
  const s = new CollectorScheduler([p.c], { jitterRatio: 0, backlogDelayMs: 1 });
  s.start();
  await p.runsReach(3);
  await s.stop();
  t.equal(p.runs, 3);
});

t.test('failures are reported with codes and retried', async (t) => {
  const seen: Array<[string, string]> = [];
  const p = probe('flaky', 5, async (n) => {
    if (n <= 2) throw new UplinkError('UPLINK_ERR_TELEMETRY_AWS_THROTTLED', 'slow down');
    if (n === 3) throw new Error('plain');
    return { more: false };
  });
  const s = new CollectorScheduler([p.c], { maxErrorBackoffMs: 20, onError: (name, err) => seen.push([name, err.code]) });
  s.start();
  await p.runsReach(4);
  await s.stop();
  t.same(seen, [['flaky', 'UPLINK_ERR_TELEMETRY_AWS_THROTTLED'], ['flaky', 'UPLINK_ERR_TELEMETRY_AWS_THROTTLED'], ['flaky', 'UPLINK_ERR_INTERNAL']]);
});

t.test('stop() aborts in-flight runs and waits for them, bounded by stopTimeoutMs', async (t) => {
  let sawAbort = false;
  const polite = probe('polite', 1, (_n, signal) => new Promise((_resolve, reject) => signal.addEventListener('abort', () => { sawAbort = true; reject(signal.reason); })));
  const errors: string[] = [];
  const s = new CollectorScheduler([polite.c], { jitterRatio: 0, onError: (name) => errors.push(name) });
  s.start();
  await new Promise((r) => setTimeout(r, 20));
  t.equal(polite.runs, 1, 'the run is in flight');
  await s.stop();
  t.ok(sawAbort, 'the collector saw the abort');
  t.same(errors, [], 'an abort at stop is not a collector error');

  const stubborn = probe('stubborn', 1, () => new Promise(() => undefined));
  const s2 = new CollectorScheduler([stubborn.c], { jitterRatio: 0, stopTimeoutMs: 20 });
  s2.start();
  await new Promise((r) => setTimeout(r, 10));
  await s2.stop();
  t.pass('stop() returned although the collector ignored the abort');
});

t.test('scheduler options and collector sets are validated', async (t) => {
  const c = probe('x', 10, async () => ({ more: false })).c;
  t.throws(() => new CollectorScheduler([c, { ...c }]), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  t.throws(() => new CollectorScheduler([{ ...c, periodMs: 0 }]), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  t.throws(() => new CollectorScheduler([c], { jitterRatio: 1 }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  const s = new CollectorScheduler([c]);
  s.start();
  t.throws(() => s.start(), { code: 'UPLINK_ERR_INTERNAL' });
  await s.stop();
});
