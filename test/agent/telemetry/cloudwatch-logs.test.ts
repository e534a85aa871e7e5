import t from 'tap';
import { createHash } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CloudWatchLogsClient,
  CreateLogGroupCommand,
  CreateLogStreamCommand,
  DeleteLogGroupCommand,
  PutLogEventsCommand,
} from '@aws-sdk/client-cloudwatch-logs';
import { startMoto } from '../../helpers/moto.js';
import { CheckpointStore } from '../../../agent/telemetry/checkpoint-store.js';
import { CloudWatchLogsCollector, globToRegExp, groupNameFromArn, type CloudWatchLogsCollectorOptions } from '../../../agent/telemetry/cloudwatch-logs.js';
import { parseTelemetryConfig, type CloudWatchLogsConfig } from '../../../agent/telemetry/config.js';
import type { TelemetryRecord } from '../../../shared/telemetry/record.js';
import { isUplinkError } from '../../../shared/errors.js';

const credentials = { accessKeyId: 'testing', secretAccessKey: 'testing' };
const region = 'us-east-1';
const signal = new AbortController().signal;
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

t.test('glob patterns and ARN parsing', async (t) => {
  t.ok(globToRegExp('/aws/lambda/app-*').test('/aws/lambda/app-api'));
  t.notOk(globToRegExp('/aws/lambda/app-*').test('/aws/lambda/other'));
  t.ok(globToRegExp('/a/?.log').test('/a/x.log'));
  t.notOk(globToRegExp('/a/?.log').test('/a/xy.log'), '? is exactly one character');
  t.notOk(globToRegExp('a.b').test('axb'), 'dots are literal');
  t.notOk(globToRegExp('/app').test('/app/x'), 'anchored at both ends');
  t.equal(groupNameFromArn('arn:aws:logs:us-east-1:123456789012:log-group:/aws/x:*'), '/aws/x');
  t.equal(groupNameFromArn('arn:aws:logs:us-east-1:123456789012:log-group:/aws/x'), '/aws/x');
  t.equal(groupNameFromArn('arn:aws:rds:us-east-1:123456789012:db:x'), undefined);
});

t.test('CloudWatch Logs collection against moto', async (t) => {
  const moto = await startMoto(t);
  if (!moto) return;
  const logs = new CloudWatchLogsClient({ region, credentials, endpoint: moto.endpoint });
  t.teardown(() => logs.destroy());

  async function group(name: string, tags?: Record<string, string>, streams: string[] = ['s1']): Promise<void> {
    await logs.send(new CreateLogGroupCommand({ logGroupName: name, ...(tags ? { tags } : {}) }));
    for (const s of streams) await logs.send(new CreateLogStreamCommand({ logGroupName: name, logStreamName: s }));
  }
  async function put(name: string, stream: string, events: Array<[number, string]>): Promise<void> {
    await logs.send(new PutLogEventsCommand({ logGroupName: name, logStreamName: stream, logEvents: events.map(([timestamp, message]) => ({ timestamp, message })) }));
  }

  function harness(instanceId: string, cfg: Partial<CloudWatchLogsConfig>, opts: { dir?: string; endpoint?: string } = {}) {
    const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'cwlogs-'));
    const config = parseTelemetryConfig({ cloudwatchLogs: { settleSeconds: 0, discoverySeconds: 0, startFrom: 'beginning', ...cfg } }).cloudwatchLogs;
    const emitted: TelemetryRecord[][] = [];
    const clock = { now: 0 };
    const make = (extra: Partial<CloudWatchLogsCollectorOptions> = {}): CloudWatchLogsCollector => {
      const c = new CloudWatchLogsCollector({
        aws: { credentials, region, endpoint: opts.endpoint ?? moto!.endpoint },
        instanceId,
        config,
        checkpoints: new CheckpointStore(dir),
        emit: async (records) => {
          emitted.push(records);
        },
        now: () => clock.now,
        retry: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 5 },
        ...extra,
      });
      t.teardown(() => c.close());
      return c;
    };
    const bodies = (batches = emitted): string[] => batches.flat().map((r) => (r.payload.body as { stringValue: string }).stringValue).sort();
    return { dir, clock, make, emitted, bodies };
  }

  const T0 = Date.now() - 3_600_000;

  await t.test('tagged and pattern-matched groups; restart from checkpoint neither skips nor repeats', async (t) => {
    await group('/app/tagged', { 'instance-id': 'i-aaa' }, ['s1', 's2']);
    await group('/app/other-appliance', { 'instance-id': 'i-zzz' });
    await group('/custom/match-1', undefined);
    await group('/custom/nomatch', undefined);
    await put('/app/tagged', 's1', [[T0 + 1000, 'a1'], [T0 + 2000, 'a2'], [T0 + 3000, 'a3']]);
    await put('/app/tagged', 's2', [[T0 + 2500, 'b1'], [T0 + 4000, 'b2']]);
    await put('/app/other-appliance', 's1', [[T0 + 1000, 'other']]);
    await put('/custom/match-1', 's1', [[T0 + 1500, 'm1'], [T0 + 3500, 'm2']]);
    await put('/custom/nomatch', 's1', [[T0 + 1500, 'nomatch']]);

    const h = harness('i-aaa', { logGroupPatterns: ['/custom/match-*'] });
    h.clock.now = T0 + 10_000;
    const c1 = h.make();
    t.same(await c1.collect(signal), { more: false });
    t.same(c1.groups, ['/app/tagged', '/custom/match-1']);
    t.same(h.bodies(), ['a1', 'a2', 'a3', 'b1', 'b2', 'm1', 'm2']);

    const rec = h.emitted.flat().find((r) => (r.payload.body as { stringValue: string }).stringValue === 'b1')!;
    const eventId = (rec.payload.attributes as Array<{ key: string; value: { stringValue?: string } }>).find((a) => a.key === 'aws.log.event.id')!.value.stringValue!;
    t.equal(rec.id, sha(`cwlogs:/app/tagged:${eventId}`), 'id is sha256 of cwlogs:<group>:<eventId>');
    t.equal(rec.signal, 'logs');
    t.equal(rec.source, 'cloudwatch-logs');
    t.equal(rec.timeUnixNano, `${T0 + 2500}000000`);
    t.equal(rec.payload.timeUnixNano, `${T0 + 2500}000000`);
    t.match(rec.payload.observedTimeUnixNano, /^\d+000000$/);
    t.equal(rec.resource['aws.log.group.names'], '/app/tagged');
    t.match(rec.resource['aws.log.group.arns'], /^arn:aws:logs:us-east-1:\d+:log-group:\/app\/tagged$/);
    t.same(
      (rec.payload.attributes as Array<{ key: string; value: unknown }>).filter((a) => a.key !== 'aws.log.event.id'),
      [
        { key: 'aws.log.group.names', value: { arrayValue: { values: [{ stringValue: '/app/tagged' }] } } },
        { key: 'aws.log.stream.names', value: { arrayValue: { values: [{ stringValue: 's2' }] } } },
      ],
    );

    // A fresh collector over the same state directory: nothing new, nothing repeated.
    const first = h.emitted.length;
    await h.make().collect(signal);
    t.equal(h.emitted.length, first, 'restart without new events emits nothing');

    // Events in the next window, a tie across streams, and one beyond the current clock.
    await put('/app/tagged', 's1', [[T0 + 12_000, 'a4'], [T0 + 25_000, 'a5']]);
    await put('/app/tagged', 's2', [[T0 + 12_000, 'b3']]);
    await put('/custom/match-1', 's1', [[T0 + 13_000, 'm3']]);
    h.clock.now = T0 + 20_000;
    await h.make().collect(signal);
    t.same(h.bodies(h.emitted.slice(first)), ['a4', 'b3', 'm3'], 'only the events of the new window');

    // Boundary: an event exactly at the end of the last window belongs to the next one.
    const second = h.emitted.length;
    await put('/app/tagged', 's2', [[T0 + 30_000, 'b4']]);
    h.clock.now = T0 + 30_000;
    await h.make().collect(signal);
    t.same(h.bodies(h.emitted.slice(second)), ['a5']);
    h.clock.now = T0 + 40_000;
    await h.make().collect(signal);
    t.same(h.bodies(h.emitted.slice(second)), ['a5', 'b4']);

    const ids = h.emitted.flat().map((r) => r.id);
    t.equal(new Set(ids).size, ids.length, 'no record emitted twice');
    t.same(h.bodies(), ['a1', 'a2', 'a3', 'a4', 'a5', 'b1', 'b2', 'b3', 'b4', 'm1', 'm2', 'm3'], 'none skipped');
  });

  await t.test('events arriving late are read when they are within settleSeconds', async (t) => {
    await group('/settle/app', { 'instance-id': 'i-settle' });
    const h = harness('i-settle', { settleSeconds: 5 });
    h.clock.now = T0 + 10_000;
    await put('/settle/app', 's1', [[T0 + 4000, 'on-time']]);
    await h.make().collect(signal);
    t.same(h.bodies(), ['on-time'], 'window closed at now - 5s');
    // Arrives after the poll with a timestamp 4s old: still inside the settle delay.
    await put('/settle/app', 's1', [[T0 + 6000, 'late']]);
    h.clock.now = T0 + 12_000;
    await h.make().collect(signal);
    t.same(h.bodies(), ['late', 'on-time']);
  });

  await t.test('a poll limit resumes mid-window from the saved nextToken after a restart', async (t) => {
    await group('/paged/app', { 'instance-id': 'i-paged' }, ['s1']);
    await put('/paged/app', 's1', Array.from({ length: 10 }, (_, i): [number, string] => [T0 + 100 + i, `p${i}`]));
    const h = harness('i-paged', { maxEventsPerPoll: 4 });
    h.clock.now = T0 + 10_000;
    t.same(await h.make().collect(signal), { more: true });
    t.equal(h.emitted.flat().length, 4);
    t.same(await h.make().collect(signal), { more: true }, 'new instance continues the window');
    t.same(await h.make().collect(signal), { more: false });
    t.same(h.bodies(), Array.from({ length: 10 }, (_, i) => `p${i}`).sort());
    const ids = h.emitted.flat().map((r) => r.id);
    t.equal(new Set(ids).size, 10, 'no repeats across three instances');
  });

  await t.test('a saved nextToken too old to trust restarts its window; repeats keep their ids', async (t) => {
    await group('/stale/app', { 'instance-id': 'i-stale' });
    await put('/stale/app', 's1', Array.from({ length: 5 }, (_, i): [number, string] => [T0 + 100 + i, `s${i}`]));
    const h = harness('i-stale', { maxEventsPerPoll: 2 });
    h.clock.now = T0 + 10_000;
    t.same(await h.make({ limits: { maxTokenAgeMs: 60_000 } }).collect(signal), { more: true });
    const firstIds = h.emitted.flat().map((r) => r.id);
    h.clock.now += 60_001;
    const c = h.make({ limits: { maxTokenAgeMs: 60_000 } });
    while ((await c.collect(signal)).more) h.clock.now += 1;
    const all = h.emitted.flat();
    t.same([...new Set(all.map((r) => (r.payload.body as { stringValue: string }).stringValue))].sort(), ['s0', 's1', 's2', 's3', 's4'], 'nothing skipped');
    t.same(all.slice(2, 4).map((r) => r.id), firstIds, 'the re-read repeats the first page with identical ids');
    t.equal(all.length, 7);
  });

  await t.test('a failed emit does not advance the checkpoint; the retry has the same ids', async (t) => {
    await group('/emitfail/app', { 'instance-id': 'i-emitfail' });
    await put('/emitfail/app', 's1', [[T0 + 100, 'x1'], [T0 + 200, 'x2']]);
    const h = harness('i-emitfail', {});
    h.clock.now = T0 + 10_000;
    let attempts: TelemetryRecord[][] = [];
    const failing = h.make({
      emit: async (records) => {
        attempts.push(records);
        throw new Error('spool full');
      },
    });
    await t.rejects(failing.collect(signal), { code: 'UPLINK_ERR_INTERNAL', message: 'spool full' });
    t.equal(attempts.length, 1);
    const failedIds = attempts[0]!.map((r) => r.id);
    h.clock.now = T0 + 20_000;
    await h.make().collect(signal);
    t.same(h.emitted.flat().map((r) => r.id), failedIds, 'the same batch, same ids, after the failure');
    attempts = [];
  });

  await t.test("startFrom 'now' skips history; a group created later is read from its creation", async (t) => {
    const realNow = Date.now();
    await group('/later/existing', { 'instance-id': 'i-later' });
    await put('/later/existing', 's1', [[realNow - 60_000, 'old']]);
    const h = harness('i-later', { startFrom: 'now' });
    h.clock.now = realNow;
    await h.make().collect(signal);
    t.same(h.bodies(), [], 'history before the first run is not read with startFrom=now');
    await put('/later/existing', 's1', [[realNow + 1000, 'new-existing']]);
    await group('/later/created', { 'instance-id': 'i-later' });
    await put('/later/created', 's1', [[Date.now() + 10, 'created-1']]);
    h.clock.now = Date.now() + 60_000;
    await h.make().collect(signal);
    t.same(h.bodies(), ['created-1', 'new-existing']);
  });

  await t.test('tag lookup through ListTagsForResource finds the same groups', async (t) => {
    await group('/listtags/a', { 'instance-id': 'i-lt' });
    await group('/listtags/b', { 'instance-id': 'i-lt', team: 'x' });
    await group('/listtags/c', { 'instance-id': 'i-not-me' });
    const a = harness('i-lt', { tagLookup: 'list-tags' });
    const b = harness('i-lt', { tagLookup: 'tagging-api' });
    a.clock.now = b.clock.now = T0;
    const ca = a.make();
    const cb = b.make();
    await ca.collect(signal);
    await cb.collect(signal);
    t.same(ca.groups, ['/listtags/a', '/listtags/b']);
    t.same(cb.groups, ca.groups);
  });

  await t.test('a deleted group is dropped without failing the run', async (t) => {
    await group('/deleted/a', { 'instance-id': 'i-del' });
    await group('/deleted/b', { 'instance-id': 'i-del' });
    await put('/deleted/b', 's1', [[T0 + 100, 'kept']]);
    const h = harness('i-del', { discoverySeconds: 3600 });
    h.clock.now = T0 + 1000;
    const c = h.make();
    await c.collect(signal);
    await logs.send(new DeleteLogGroupCommand({ logGroupName: '/deleted/a' }));
    await put('/deleted/b', 's1', [[T0 + 1500, 'kept-2']]);
    h.clock.now = T0 + 2000;
    t.same(await c.collect(signal), { more: false });
    t.same(c.groups, ['/deleted/b']);
    t.same(h.bodies(), ['kept', 'kept-2']);
  });

  await t.test('long messages are cut at maxMessageBytes and flagged', async (t) => {
    await group('/trunc/app', { 'instance-id': 'i-trunc' });
    await put('/trunc/app', 's1', [[T0 + 100, 'abcdefghijklmnop'], [T0 + 200, 'short']]);
    const h = harness('i-trunc', { maxMessageBytes: 8 });
    h.clock.now = T0 + 1000;
    await h.make().collect(signal);
    t.same(h.bodies(), ['abcdefgh', 'short']);
    const flagged = h.emitted.flat().filter((r) => (r.payload.attributes as Array<{ key: string }>).some((a) => a.key === 'uplink.truncated'));
    t.equal(flagged.length, 1);
  });

  await t.test('a corrupt checkpoint stops the collector with a coded error', async (t) => {
    const h = harness('i-corrupt', {});
    writeFileSync(join(h.dir, 'cloudwatch-logs.json'), '{"version":1,"initialized":true,"groups":[{"name":"x"}]}');
    await t.rejects(h.make().collect(signal), { code: 'UPLINK_ERR_TELEMETRY_CHECKPOINT_CORRUPT' });
  });

  await t.test('throttling is retried with backoff; persistent throttling and denial carry codes', async (t) => {
    await group('/throttle/app', { 'instance-id': 'i-thr' });
    await put('/throttle/app', 's1', [[T0 + 100, 't1']]);
    const proxy = await faultProxy(moto.endpoint);
    t.teardown(() => proxy.close());

    proxy.fail('Logs_20140328.FilterLogEvents', 2, 'ThrottlingException');
    const h = harness('i-thr', {}, { endpoint: proxy.endpoint });
    h.clock.now = T0 + 1000;
    await h.make().collect(signal);
    t.same(h.bodies(), ['t1'], 'succeeded after two throttled attempts');
    t.equal(proxy.injected, 2);

    await put('/throttle/app', 's1', [[T0 + 1500, 't2']]);
    proxy.fail('Logs_20140328.FilterLogEvents', 100, 'ThrottlingException');
    h.clock.now = T0 + 2000;
    const err = await h.make().collect(signal).catch((e: unknown) => e);
    t.ok(isUplinkError(err, 'UPLINK_ERR_TELEMETRY_AWS_THROTTLED'), 'persistent throttling surfaces as THROTTLED');
    t.match((err as { details: unknown }).details, { operation: 'logs:FilterLogEvents', awsCode: 'ThrottlingException', attempts: 3 });
    proxy.fail('Logs_20140328.FilterLogEvents', 0, 'ThrottlingException');
    await h.make().collect(signal);
    t.same(h.bodies(), ['t1', 't2'], 'nothing lost after the throttled run');

    // tag:GetResources denied: 'auto' falls back to ListTagsForResource.
    proxy.fail('ResourceGroupsTaggingAPI_20170126.GetResources', 100, 'AccessDeniedException');
    const auto = harness('i-thr', { tagLookup: 'auto' }, { endpoint: proxy.endpoint });
    const ca = auto.make();
    await ca.collect(signal);
    t.same(ca.groups, ['/throttle/app']);
    const strict = harness('i-thr', { tagLookup: 'tagging-api' }, { endpoint: proxy.endpoint });
    await t.rejects(strict.make().collect(signal), { code: 'UPLINK_ERR_TELEMETRY_AWS_ACCESS_DENIED', details: { operation: 'tag:GetResources' } });
  });
});

/** A real HTTP proxy in front of moto that answers chosen AWS operations with an error. */
async function faultProxy(target: string) {
  const rules = new Map<string, { left: number; error: string }>();
  let injected = 0;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const op = String(req.headers['x-amz-target'] ?? '');
    const rule = rules.get(op);
    if (rule && rule.left > 0) {
      rule.left--;
      injected++;
      req.resume();
      res.writeHead(400, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-errortype': rule.error });
      res.end(JSON.stringify({ __type: rule.error, message: 'injected by test proxy' }));
      return;
    }
    const url = new URL(req.url ?? '/', target);
    const up = httpRequest(url, { method: req.method, headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    get injected() {
      return injected;
    },
    fail(op: string, times: number, error: string) {
      rules.set(op, { left: times, error });
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
