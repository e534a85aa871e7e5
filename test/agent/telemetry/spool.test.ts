import t, { type Test } from 'tap';
import { readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Spool, type SpoolDropEvent, type SpoolOptions } from '../../../agent/telemetry/spool.js';
import { FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES, encodeFrame, encodeFrames, segmentName } from '../../../agent/telemetry/spool-segment.js';
import type { TelemetryRecord } from '../../../shared/telemetry/record.js';
import { isUplinkError } from '../../../shared/errors.js';

function rec(i: number, bodyBytes = 10): TelemetryRecord {
  return {
    id: `id-${i}`,
    signal: 'logs',
    timeUnixNano: String(1_700_000_000_000_000_000n + BigInt(i)),
    source: 'test',
    resource: { 'service.name': 'app' },
    payload: { body: { stringValue: String(i).padStart(bodyBytes, '0') } },
  };
}

/** Bytes one record takes on disk. */
function frameBytes(r: TelemetryRecord): number {
  return FRAME_HEADER_BYTES + Buffer.byteLength(JSON.stringify(r));
}

async function openSpool(t: Test, dir: string, extra: Partial<SpoolOptions> = {}, drops: SpoolDropEvent[] = []): Promise<Spool> {
  const spool = await Spool.open({ dir, segmentBytes: 4096, maxBytes: 64 * 1024, maxRecordBytes: 1024, onDrop: (e) => drops.push(e), ...extra });
  t.teardown(() => spool.close());
  return spool;
}

async function segmentFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.endsWith('.seg')).sort();
}

const ids = (records: TelemetryRecord[]): string[] => records.map((r) => r.id);
const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);

t.test('append, read, read again, ack: exact records, stable batch id, encoded JSON array', async (t) => {
  const dir = t.testdir();
  const spool = await openSpool(t, dir);
  const input = range(0, 10).map((i) => rec(i));
  await spool.append(input);
  t.equal(spool.stats().records, 10);

  const first = await spool.read(4, 1 << 20);
  t.same(first.records, input.slice(0, 4));
  t.same(JSON.parse(first.encoded.toString()), input.slice(0, 4), 'encoded is the records as a JSON array');
  t.equal(first.batchId, `1.${SEGMENT_HEADER_BYTES}-1.${SEGMENT_HEADER_BYTES + input.slice(0, 4).reduce((s, r) => s + frameBytes(r), 0)}`);
  const again = await spool.read(4, 1 << 20);
  t.equal(again.batchId, first.batchId, 'unacknowledged batch is returned again');

  await spool.ack(first.batchId);
  t.equal(spool.stats().records, 6);
  await spool.ack(first.batchId); // idempotent
  t.equal(spool.stats().records, 6);

  const second = await spool.read(100, 1 << 20);
  t.same(ids(second.records), ids(input.slice(4)));
  await spool.ack(second.batchId);
  const empty = await spool.read(100, 1 << 20);
  t.equal(empty.count, 0);
  t.same(empty.records, []);
  t.equal(empty.encoded.toString(), '[]');
  t.equal(spool.stats().records, 0);
  t.equal(spool.stats().oldestAppendedAtMs, null);

  // An empty read is not pinned: new data shows up on the next read.
  await spool.append([rec(99)]);
  t.same(ids((await spool.read(100, 1 << 20)).records), ['id-99']);
});

t.test('read limits: maxRecords, maxBytes, and at least one record', async (t) => {
  const spool = await openSpool(t, t.testdir());
  const input = range(0, 5).map((i) => rec(i, 100));
  await spool.append(input);
  const one = JSON.stringify(input[0]).length;
  const two = await spool.read(100, 2 * one + 3);
  t.equal(two.count, 2, 'two records fit: [a,b]');
  t.equal((await spool.read(2, 2 * one + 3)).batchId, two.batchId, 'same limits: same batch');
  const tiny = await spool.read(100, 10);
  t.equal(tiny.count, 1, 'tighter limits: a new, smaller batch; a record larger than maxBytes still comes alone');
  t.not(tiny.batchId, two.batchId);
  await spool.ack(tiny.batchId);
  t.same(ids((await spool.read(1, 1 << 20)).records), ['id-1']);
  await t.rejects(spool.read(0, 10), { code: 'UPLINK_ERR_BAD_REQUEST' });
});

t.test('persists across reopen; unacknowledged data comes back with the same batch id', async (t) => {
  const dir = t.testdir();
  const input = range(0, 200).map((i) => rec(i, 50)); // spans several 4 KiB segments
  let spool = await Spool.open({ dir, segmentBytes: 4096, maxBytes: 64 * 1024, maxRecordBytes: 1024 });
  await spool.append(input.slice(0, 100));
  await spool.append(input.slice(100));
  t.ok((await segmentFiles(dir)).length > 3, 'several segments');
  const b1 = await spool.read(70, 1 << 20);
  await spool.ack(b1.batchId);
  const b2 = await spool.read(70, 1 << 20);
  t.same(ids(b2.records), ids(input.slice(70, 140)), 'reads across segment boundaries');
  await spool.close();
  await spool.close(); // idempotent

  spool = await Spool.open({ dir, segmentBytes: 4096, maxBytes: 64 * 1024, maxRecordBytes: 1024 });
  t.teardown(() => spool.close());
  t.equal(spool.stats().records, 130);
  const b2again = await spool.read(70, 1 << 20);
  t.equal(b2again.batchId, b2.batchId, 'deterministic batch id after a restart');
  t.same(b2again.records, input.slice(70, 140));
  await spool.ack(b2.batchId);
  const rest = await spool.read(1000, 1 << 20);
  t.same(ids(rest.records), ids(input.slice(140)));
  await spool.ack(rest.batchId);
  t.equal((await segmentFiles(dir)).length, 1, 'acknowledged segments are deleted; the active one stays');
});

t.test('ack by id after an agent restart is verified against the data', async (t) => {
  const dir = t.testdir();
  let spool = await Spool.open({ dir, segmentBytes: 4096, maxBytes: 64 * 1024, maxRecordBytes: 1024 });
  await spool.append(range(0, 10).map((i) => rec(i)));
  const batch = await spool.read(5, 1 << 20);
  await spool.close();
  spool = await Spool.open({ dir, segmentBytes: 4096, maxBytes: 64 * 1024, maxRecordBytes: 1024 });
  t.teardown(() => spool.close());
  const [startSeq, startOff, endSeq, endOff] = batch.batchId.split(/[.-]/).map(Number) as [number, number, number, number];
  // End inside a record: not a batch this spool could have produced.
  await t.rejects(spool.ack(`${startSeq}.${startOff}-${endSeq}.${endOff - 3}`), { code: 'UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN' });
  // Starts after the cursor: would skip unread data.
  await t.rejects(spool.ack(`${endSeq}.${endOff}-${endSeq}.${endOff + frameBytes(rec(5))}`), { code: 'UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN' });
  await t.rejects(spool.ack('not-a-batch'), { code: 'UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN' });
  await t.rejects(spool.ack(`1.16-1.999999`), { code: 'UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN' }, 'beyond the data');
  t.equal(spool.stats().records, 10, 'failed acks change nothing');
  await spool.ack(batch.batchId);
  t.equal(spool.stats().records, 5);
  t.same(ids((await spool.read(100, 1 << 20)).records), ids(range(5, 10).map((i) => rec(i))));
});

t.test('spool full: the oldest segments go first, every loss is counted and reported', async (t) => {
  const dir = t.testdir();
  const drops: SpoolDropEvent[] = [];
  const spool = await openSpool(t, dir, { segmentBytes: 2048, maxBytes: 8192, maxRecordBytes: 512 }, drops);
  const input = range(0, 400).map((i) => rec(i, 40));
  for (let i = 0; i < input.length; i += 10) await spool.append(input.slice(i, i + 10));
  const stats = spool.stats();
  t.ok(stats.diskBytes <= 8192, `disk usage ${stats.diskBytes} stays within maxBytes`);
  let onDisk = 0;
  for (const name of await segmentFiles(dir)) onDisk += (await stat(join(dir, name))).size;
  t.equal(onDisk, stats.diskBytes, 'stats match the files');
  t.ok(drops.length > 0);
  t.ok(drops.every((d) => d.reason === 'full'));
  const droppedRecords = drops.reduce((s, d) => s + d.records, 0);
  t.equal(stats.droppedRecords, droppedRecords);
  t.equal(stats.droppedBytes, drops.reduce((s, d) => s + d.bytes, 0));
  t.equal(stats.records + droppedRecords, 400, 'nothing vanishes uncounted');
  const batch = await spool.read(1000, 1 << 20);
  t.same(ids(batch.records), ids(input.slice(droppedRecords)), 'the newest records survive, in order');
  t.equal(drops[0]!.segment, 1, 'segment 1 went first');
});

t.test('spool full while a batch is outstanding: its ack is a no-op, nothing is lost twice', async (t) => {
  const drops: SpoolDropEvent[] = [];
  const spool = await openSpool(t, t.testdir(), { segmentBytes: 2048, maxBytes: 4096, maxRecordBytes: 512 }, drops);
  await spool.append(range(0, 5).map((i) => rec(i, 40)));
  const stale = await spool.read(5, 1 << 20);
  for (let i = 5; i < 100; i += 5) await spool.append(range(i, i + 5).map((n) => rec(n, 40)));
  t.ok(spool.stats().droppedRecords > 0);
  const before = spool.stats().records;
  await spool.ack(stale.batchId);
  t.equal(spool.stats().records, before, 'the dropped batch is not subtracted again');
  const next = await spool.read(1000, 1 << 20);
  t.equal(next.records[0]!.id, `id-${spool.stats().droppedRecords}`);
});

t.test('read ahead: the batch after an outstanding one, stable until acknowledged in order', async (t) => {
  const spool = await openSpool(t, t.testdir());
  const input = range(0, 10).map((i) => rec(i));
  await spool.append(input);
  const first = await spool.read(3, 1 << 20);
  const second = await spool.read(3, 1 << 20, first.batchId);
  t.same(ids(second.records), ids(input.slice(3, 6)), 'the records right after the first batch');
  t.equal(second.batchId.split('-')[0], first.batchId.split('-')[1], 'it starts where the first ends');
  t.equal((await spool.read(3, 1 << 20, first.batchId)).batchId, second.batchId, 'reading after the same batch again: the same batch');
  t.equal((await spool.read(3, 1 << 20)).batchId, first.batchId, 'a read from the start still returns the first batch');
  await t.rejects(spool.read(3, 1 << 20, second.batchId), { code: 'UPLINK_ERR_TELEMETRY_LIMIT', details: { limit: 'maxOutstandingBatches', value: 2 } }, 'no third outstanding batch');
  await t.rejects(spool.read(3, 1 << 20, '1.16-1.17'), { code: 'UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN' }, 'after a batch never handed out');

  await spool.ack(first.batchId);
  t.equal(spool.stats().records, 7);
  t.equal((await spool.read(3, 1 << 20)).batchId, second.batchId, 'after the ack the read-ahead batch is the one at the cursor');
  await t.rejects(spool.read(3, 1 << 20, first.batchId), { code: 'UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN' }, 'after an acknowledged batch');
  const third = await spool.read(3, 1 << 20, second.batchId);
  t.same(ids(third.records), ids(input.slice(6, 9)));
  await spool.ack(second.batchId);
  await spool.ack(third.batchId);
  const last = await spool.read(100, 1 << 20);
  t.same(ids(last.records), ['id-9']);
  const none = await spool.read(100, 1 << 20, last.batchId);
  t.equal(none.count, 0, 'nothing after the last batch yet');
  await spool.append([rec(10)]);
  t.same(ids((await spool.read(100, 1 << 20, last.batchId)).records), ['id-10'], 'an empty read ahead is not pinned');
});

t.test('read ahead: a batch acknowledged before the one ahead of it is refused, nothing moves', async (t) => {
  const spool = await openSpool(t, t.testdir());
  await spool.append(range(0, 6).map((i) => rec(i)));
  const first = await spool.read(2, 1 << 20);
  const second = await spool.read(2, 1 << 20, first.batchId);
  await t.rejects(spool.ack(second.batchId), { code: 'UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN' });
  t.equal(spool.stats().records, 6, 'nothing acknowledged');
  await spool.ack(first.batchId);
  await spool.ack(second.batchId);
  t.same(ids((await spool.read(10, 1 << 20)).records), ['id-4', 'id-5'], 'in order, both acknowledge');
});

t.test('read ahead: a batch dropped while the spool is full is no longer outstanding', async (t) => {
  const spool = await openSpool(t, t.testdir(), { segmentBytes: 2048, maxBytes: 4096, maxRecordBytes: 512 });
  await spool.append(range(0, 5).map((i) => rec(i, 40)));
  await spool.append(range(5, 10).map((i) => rec(i, 40)));
  const first = await spool.read(5, 1 << 20);
  const second = await spool.read(5, 1 << 20, first.batchId);
  for (let i = 10; i < 100; i += 5) await spool.append(range(i, i + 5).map((n) => rec(n, 40)));
  t.ok(spool.stats().droppedRecords >= 10, 'both batches were dropped');
  await t.rejects(spool.read(5, 1 << 20, first.batchId), { code: 'UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN' });
  await t.rejects(spool.read(5, 1 << 20, second.batchId), { code: 'UPLINK_ERR_TELEMETRY_BATCH_UNKNOWN' });
  const fresh = await spool.read(5, 1 << 20);
  t.equal(fresh.records[0]!.id, `id-${spool.stats().droppedRecords}`, 'a read from the start resumes at the oldest record kept');
});

t.test('torn tail: a write cut mid-record is truncated, reported, and appends continue cleanly', async (t) => {
  const dir = t.testdir();
  const input = range(0, 5).map((i) => rec(i));
  let spool = await Spool.open({ dir, segmentBytes: 4096, maxBytes: 64 * 1024, maxRecordBytes: 1024 });
  await spool.append(input);
  await spool.close();
  const path = join(dir, segmentName(1));
  const full = (await stat(path)).size;
  const lastFrame = frameBytes(input[4]!);
  await truncate(path, full - 7); // the last frame lost its final 7 bytes

  const drops: SpoolDropEvent[] = [];
  spool = await openSpool(t, dir, {}, drops);
  t.same(drops, [{ reason: 'torn', records: 0, bytes: lastFrame - 7, segment: 1 }]);
  t.equal(spool.stats().tornBytes, lastFrame - 7);
  t.equal(spool.stats().records, 4);
  t.equal((await stat(path)).size, full - lastFrame, 'file cut back to the last whole record');
  await spool.append([rec(50)]);
  const batch = await spool.read(100, 1 << 20);
  t.same(ids(batch.records), ['id-0', 'id-1', 'id-2', 'id-3', 'id-50']);
});

t.test('a corrupted byte mid-segment: that record is skipped, its neighbours and later segments kept', async (t) => {
  const dir = t.testdir();
  const input = range(0, 60).map((i) => rec(i, 40)); // about 3 segments of 4 KiB
  let spool = await Spool.open({ dir, segmentBytes: 4096, maxBytes: 64 * 1024, maxRecordBytes: 1024 });
  await spool.append(input);
  await spool.close();
  t.ok((await segmentFiles(dir)).length >= 3);
  const path = join(dir, segmentName(1));
  const bytes = await readFile(path);
  const f = frameBytes(input[0]!);
  const victim = 2; // third record
  bytes[SEGMENT_HEADER_BYTES + victim * f + FRAME_HEADER_BYTES + 5] ^= 0xff;
  await writeFile(path, bytes);

  const drops: SpoolDropEvent[] = [];
  spool = await openSpool(t, dir, {}, drops);
  t.same(drops, [{ reason: 'corrupt', records: 0, bytes: f, segment: 1 }], 'reported once at open');
  t.equal(spool.stats().corruptRegions, 1);
  t.equal(spool.stats().records, 59);
  const batch = await spool.read(1000, 1 << 20);
  t.same(ids(batch.records), ids(input.filter((_, i) => i !== victim)));
  await spool.read(1000, 1 << 20);
  t.equal(drops.length, 1, 'not reported again when read');
  await spool.ack(batch.batchId);
  t.equal(spool.stats().records, 0);
});

t.test('corruption found while running (after open) is skipped and reported by read', async (t) => {
  const dir = t.testdir();
  const drops: SpoolDropEvent[] = [];
  const spool = await openSpool(t, dir, {}, drops);
  const input = range(0, 6).map((i) => rec(i));
  await spool.append(input);
  const path = join(dir, segmentName(1));
  const bytes = await readFile(path);
  const f = frameBytes(input[0]!);
  bytes.writeUInt32LE(0xdeadbeef, SEGMENT_HEADER_BYTES + 8 + f); // length field of record 1
  await writeFile(path, bytes);
  const batch = await spool.read(100, 1 << 20);
  t.same(ids(batch.records), ['id-0', 'id-2', 'id-3', 'id-4', 'id-5']);
  t.same(drops, [{ reason: 'corrupt', records: 0, bytes: f, segment: 1 }]);
});

t.test('missing cursor file: redelivers from the oldest segment; a damaged one likewise', async (t) => {
  const dir = t.testdir();
  const input = range(0, 10).map((i) => rec(i));
  let spool = await Spool.open({ dir, segmentBytes: 4096, maxBytes: 64 * 1024, maxRecordBytes: 1024 });
  await spool.append(input);
  await spool.ack((await spool.read(4, 1 << 20)).batchId);
  await spool.close();
  await rm(join(dir, 'cursor.json'));
  spool = await Spool.open({ dir, segmentBytes: 4096, maxBytes: 64 * 1024, maxRecordBytes: 1024 });
  t.equal(spool.stats().records, 10, 'at-least-once: acknowledged records in a live segment come again');
  await spool.ack((await spool.read(4, 1 << 20)).batchId);
  await spool.close();

  await writeFile(join(dir, 'cursor.json'), '{"version":1,"seq":1,');
  spool = await Spool.open({ dir, segmentBytes: 4096, maxBytes: 64 * 1024, maxRecordBytes: 1024 });
  t.teardown(() => spool.close());
  t.equal(spool.stats().records, 10);
  t.same(ids((await spool.read(100, 1 << 20)).records), ids(input));
});

t.test('a cursor pointing inside a record moves back to that record', async (t) => {
  const dir = t.testdir();
  const input = range(0, 4).map((i) => rec(i));
  let spool = await Spool.open({ dir, segmentBytes: 4096, maxBytes: 64 * 1024, maxRecordBytes: 1024 });
  await spool.append(input);
  await spool.close();
  const f = frameBytes(input[0]!);
  await writeFile(join(dir, 'cursor.json'), JSON.stringify({ version: 1, seq: 1, offset: SEGMENT_HEADER_BYTES + f + 3 }));
  spool = await Spool.open({ dir, segmentBytes: 4096, maxBytes: 64 * 1024, maxRecordBytes: 1024 });
  t.teardown(() => spool.close());
  t.same(ids((await spool.read(100, 1 << 20)).records), ['id-1', 'id-2', 'id-3']);
});

t.test('limits and options are enforced', async (t) => {
  const dir = t.testdir();
  const spool = await openSpool(t, dir);
  await t.rejects(spool.append([rec(0), rec(1, 2000)]), { code: 'UPLINK_ERR_TELEMETRY_LIMIT' });
  t.equal(spool.stats().records, 0, 'a refused append writes nothing');
  const huge = range(0, 200).map((i) => rec(i, 200)); // ~50 KiB: over half of maxBytes
  await t.rejects(spool.append(huge), { code: 'UPLINK_ERR_TELEMETRY_LIMIT', details: { limit: 'maxBytes' } });
  await t.rejects(Spool.open({ dir: t.testdir(), maxBytes: 8192, segmentBytes: 8192 }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  await t.rejects(Spool.open({ dir: t.testdir(), fsync: 'sometimes' as 'always' }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  await t.rejects(Spool.open({ dir: t.testdir(), segmentBytes: 4096, maxRecordBytes: 8192, maxBytes: 65536 }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  await t.rejects(Spool.open({ dir: t.testdir(), maxByte: 1 } as unknown as SpoolOptions), { code: 'UPLINK_ERR_CONFIG_INVALID' }, 'unknown key');
});

t.test('every fsync policy stores and returns the same data', async (t) => {
  const root = t.testdir();
  for (const fsync of ['always', 'batch', 'interval', 'never'] as const) {
    const dir = join(root, fsync);
    let spool = await Spool.open({ dir, fsync, fsyncIntervalMs: 5, segmentBytes: 4096, maxBytes: 65536, maxRecordBytes: 1024 });
    await spool.append(range(0, 30).map((i) => rec(i)));
    await new Promise((r) => setTimeout(r, 15));
    await spool.close();
    spool = await Spool.open({ dir, fsync, segmentBytes: 4096, maxBytes: 65536, maxRecordBytes: 1024 });
    t.equal((await spool.read(100, 1 << 20)).count, 30, fsync);
    await spool.close();
  }
});

t.test('a closed spool refuses work with a stable code', async (t) => {
  const spool = await openSpool(t, t.testdir());
  await spool.close();
  const err = await spool.append([rec(0)]).catch((e: unknown) => e);
  t.ok(isUplinkError(err, 'UPLINK_ERR_TELEMETRY_SPOOL_UNAVAILABLE'));
  await t.rejects(spool.read(1, 1), { code: 'UPLINK_ERR_TELEMETRY_SPOOL_UNAVAILABLE' });
});

t.test('stats report the oldest unacknowledged append time', async (t) => {
  const spool = await openSpool(t, t.testdir());
  const before = Date.now();
  await spool.append([rec(0)]);
  const after = Date.now();
  const oldest = spool.stats().oldestAppendedAtMs!;
  t.ok(oldest >= before && oldest <= after);
  t.equal((await spool.read(1, 1 << 20)).oldestAppendedAtMs, oldest);
});

t.test('after an ack the oldest append time is the next record\'s, however the batch was read', async (t) => {
  const spool = await openSpool(t, t.testdir());
  // Four groups of three records, appended at distinguishable times.
  const when: Array<[number, number]> = [];
  for (let g = 0; g < 4; g++) {
    const before = Date.now();
    await spool.append(range(g * 3, g * 3 + 3).map((n) => rec(n)));
    when.push([before, Date.now()]);
    await new Promise((r) => setTimeout(r, 5));
  }
  const inGroup = (g: number, what: string): void => {
    const at = spool.stats().oldestAppendedAtMs;
    t.ok(at !== null && at >= when[g]![0] && at <= when[g]![1], `${what}: group ${g}'s time (${at} in ${when[g]!.join('..')})`);
  };
  inGroup(0, 'before any ack');

  const groupBytes = Buffer.byteLength(JSON.stringify(range(0, 3).map((n) => rec(n))));
  const a = await spool.read(100, groupBytes);
  t.equal(a.count, 3, 'cut by maxBytes (the read looked at the next record)');
  await spool.ack(a.batchId);
  inGroup(1, 'after a batch cut by maxBytes');

  const b = await spool.read(3, 1 << 20);
  const c = await spool.read(3, 1 << 20, b.batchId);
  await spool.ack(b.batchId);
  inGroup(2, 'after a batch with one read ahead behind it');
  t.equal(spool.stats().oldestAppendedAtMs, c.oldestAppendedAtMs);

  await spool.ack(c.batchId);
  inGroup(3, 'after a batch cut by maxRecords (read from disk)');
  const d = await spool.read(2, 1 << 20);
  await spool.ack(d.batchId);
  inGroup(3, 'the last record of a group');
  await spool.ack((await spool.read(100, 1 << 20)).batchId);
  t.equal(spool.stats().oldestAppendedAtMs, null, 'empty: no time');
});

t.test('frames encoded together are byte for byte the frames encoded one by one', async (t) => {
  const texts = ['{"a":1}', '{"b":"h\u00e9llo \u2603 \ud83d\ude00"}', '{}'];
  const sizes = texts.map((x) => Buffer.byteLength(x));
  const one = Buffer.concat(texts.map((x) => encodeFrame(Buffer.from(x), 1234.5)));
  t.same(encodeFrames(texts, sizes, 0, 3, one.length, 1234.5), one);
  const tail = Buffer.concat(texts.slice(1).map((x) => encodeFrame(Buffer.from(x), 7)));
  t.same(encodeFrames(texts, sizes, 1, 3, tail.length, 7), tail, 'a sub-range');
  t.throws(() => encodeFrames(texts, sizes, 0, 3, one.length + 1, 1), /expected/, 'a wrong total is refused');
});
