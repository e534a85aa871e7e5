import t from 'tap';
import { mkdtempSync, readFileSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { CheckpointStore, checkpointDir } from '../../../agent/telemetry/checkpoint-store.js';

const schema = z.strictObject({ version: z.literal(1), pos: z.number() });
const fresh = (): string => join(mkdtempSync(join(tmpdir(), 'ckpt-')), 'telemetry', 'checkpoints');

t.test('save then load round-trips; a missing checkpoint is undefined', async (t) => {
  const dir = fresh();
  const store = new CheckpointStore(dir);
  t.equal(await store.load('cloudwatch-logs', schema), undefined, 'nothing saved yet (directory not even created)');
  await store.save('cloudwatch-logs', { version: 1, pos: 42 });
  t.same(await store.load('cloudwatch-logs', schema), { version: 1, pos: 42 });
  t.equal(readFileSync(join(dir, 'cloudwatch-logs.json'), 'utf8'), '{"version":1,"pos":42}', 'plain JSON on disk');
  t.equal(statSync(join(dir, 'cloudwatch-logs.json')).mode & 0o777, 0o600, 'file readable by the agent only');
  t.equal(statSync(dir).mode & 0o777, 0o700);
  t.same(await new CheckpointStore(dir).load('cloudwatch-logs', schema), { version: 1, pos: 42 }, 'a new store (restart) sees it');
  t.same(readdirSync(dir), ['cloudwatch-logs.json'], 'no temporary files left');
  t.equal(checkpointDir('/var/lib/uplink'), '/var/lib/uplink/telemetry/checkpoints');
});

t.test('concurrent saves apply in call order and never tear', async (t) => {
  const store = new CheckpointStore(fresh());
  await Promise.all(Array.from({ length: 50 }, (_, i) => store.save('c', { version: 1, pos: i })));
  t.same(await store.load('c', schema), { version: 1, pos: 49 });
  const pending = store.save('c', { version: 1, pos: 50 });
  t.same(await store.load('c', schema), { version: 1, pos: 50 }, 'load waits for queued saves');
  await pending;
});

t.test('corrupt, oversized or unexpected content is refused with a code', async (t) => {
  const dir = fresh();
  const store = new CheckpointStore(dir, { maxBytes: 64 });
  await store.save('ok', { version: 1, pos: 1 });
  writeFileSync(join(dir, 'torn.json'), '{"version":1,"po');
  await t.rejects(store.load('torn', schema), { code: 'UPLINK_ERR_TELEMETRY_CHECKPOINT_CORRUPT', details: { path: join(dir, 'torn.json'), reason: 'not valid JSON' } });
  writeFileSync(join(dir, 'wrong.json'), '{"version":2,"pos":1}');
  await t.rejects(store.load('wrong', schema), { code: 'UPLINK_ERR_TELEMETRY_CHECKPOINT_CORRUPT', details: { reason: /^unexpected content at version/ } });
  writeFileSync(join(dir, 'extra.json'), '{"version":1,"pos":1,"evil":true}');
  await t.rejects(store.load('extra', schema), { code: 'UPLINK_ERR_TELEMETRY_CHECKPOINT_CORRUPT' });
  writeFileSync(join(dir, 'big.json'), JSON.stringify({ version: 1, pos: 1, pad: 'x'.repeat(100) }));
  await t.rejects(store.load('big', schema), { code: 'UPLINK_ERR_TELEMETRY_CHECKPOINT_CORRUPT', details: { reason: /limit 64/ } });
  await t.rejects(store.save('ok', { version: 1, pos: 2, pad: 'x'.repeat(100) }), { code: 'UPLINK_ERR_TELEMETRY_CHECKPOINT_CORRUPT' });
  t.same(await store.load('ok', schema), { version: 1, pos: 1 }, 'a refused save leaves the previous checkpoint');
});

t.test('names are validated; unserialisable values are refused', async (t) => {
  const store = new CheckpointStore(fresh());
  t.throws(() => store.pathOf('../escape'), { code: 'UPLINK_ERR_INTERNAL' });
  t.throws(() => store.pathOf('Upper'), { code: 'UPLINK_ERR_INTERNAL' });
  t.throws(() => store.pathOf(''), { code: 'UPLINK_ERR_INTERNAL' });
  await t.rejects(store.save('x', undefined), { code: 'UPLINK_ERR_INTERNAL' });
  t.throws(() => new CheckpointStore('/tmp', { maxBytes: 0 }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
});

t.test('temporary files a crash left behind are removed; remove() deletes the checkpoint', async (t) => {
  const dir = fresh();
  await new CheckpointStore(dir).save('c', { version: 1, pos: 1 });
  const stale = join(dir, 'c.json.999.abcdef.tmp');
  writeFileSync(stale, '{"version":1,"pos":99}');
  utimesSync(stale, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
  const store = new CheckpointStore(dir);
  t.same(await store.load('c', schema), { version: 1, pos: 1 }, 'the torn temporary file is never read');
  await store.save('c', { version: 1, pos: 2 });
  t.same(readdirSync(dir).sort(), ['c.json']);
  await store.remove('c');
  t.equal(await store.load('c', schema), undefined);
  t.same(readdirSync(dir), []);
});

t.test('a save into an unwritable location rejects and can be retried', async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'ckpt-'));
  const blocker = join(base, 'file');
  writeFileSync(blocker, 'not a directory');
  const store = new CheckpointStore(join(blocker, 'checkpoints'));
  await t.rejects(store.save('c', { version: 1, pos: 1 }), { code: /^(ENOTDIR|EEXIST)$/ });
  await t.rejects(store.save('c', { version: 1, pos: 1 }), { code: /^(ENOTDIR|EEXIST)$/ }, 'still failing, not stuck');
});
