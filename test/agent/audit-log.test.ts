import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { appendFile, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentAuditLog, auditLogPath, readAuditLog, verifyAuditFile } from '../../agent/audit-log.js';
import { canonicalJson } from '../../shared/audit/canonical-json.js';
import { sealEvent } from '../../shared/audit/chain.js';
import { normalizeAuditInput, type AuditInput, type AuditRecord } from '../../shared/audit/event.js';
import { tsLoaderArgs } from '../helpers/ts-loader.js';

const NOW = new Date('2030-05-06T07:08:09.010Z');
const ev = (i: number, extra: Partial<AuditInput> = {}): AuditInput => ({
  actor: 'vendor:alice', appliance: 'acme-prod', operation: 'sql', outcome: 'ok', phase: 'operate', requestId: `r${i}`, target: 'main', bytesOut: i, ...extra,
});

async function stateDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'uplink-audit-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function openLog(t: Test, dir: string, opts: Parameters<typeof AgentAuditLog.open>[1] = {}): Promise<AgentAuditLog> {
  const log = await AgentAuditLog.open(dir, opts, { now: () => NOW });
  t.teardown(() => log.close());
  return log;
}

async function lines(path: string): Promise<string[]> {
  return (await readFile(path, 'utf8')).split('\n').filter((l) => l !== '');
}

async function writeLines(path: string, ls: string[]): Promise<void> {
  await writeFile(path, ls.map((l) => `${l}\n`).join(''));
}

async function filled(t: Test, n: number): Promise<{ dir: string; path: string; records: AuditRecord[] }> {
  const dir = await stateDir(t);
  const log = await AgentAuditLog.open(dir, {}, { now: () => NOW });
  const records: AuditRecord[] = [];
  for (let i = 1; i <= n; i++) records.push(await log.append(ev(i)));
  await log.close();
  return { dir, path: auditLogPath(dir), records };
}

t.test('appends canonical JSON lines with fsync, private permissions, and a verifiable chain', async (t) => {
  const dir = await stateDir(t);
  const log = await openLog(t, dir);
  const a = await log.append(ev(1));
  const b = await log.append(ev(2, { outcome: 'error', detail: { code: 'UPLINK_ERR_SQL_TIMEOUT' } }));
  t.match(a, { seq: 1, time: '2030-05-06T07:08:09.010Z', actor: 'vendor:alice', requestId: 'r1', start: null, bytesIn: 0, bytesOut: 1 });
  t.equal(b.seq, 2);
  t.same(await lines(log.path), [canonicalJson(a), canonicalJson(b)]);
  t.equal(log.path, join(dir, 'audit', 'audit.log'));
  t.equal((await stat(log.path)).mode & 0o777, 0o600);
  t.equal((await stat(join(dir, 'audit'))).mode & 0o777, 0o700);
  t.same(await verifyAuditFile(log.path), { ok: true, count: 2, lastSeq: 2, lastHash: b.hash, tornTail: false });
  t.same(log.head, { lastSeq: 2, prevHash: b.hash });
  await t.rejects(log.append(ev(3, { actor: '' })), { code: 'UPLINK_ERR_AUDIT_EVENT_INVALID' });
  t.equal((await lines(log.path)).length, 2, 'an invalid event writes nothing');
  await log.close();
  await log.close();
  await t.rejects(log.append(ev(4)), { code: 'UPLINK_ERR_AUDIT_WRITE_FAILED' });
});

t.test('reopening recovers the tail: the chain continues', async (t) => {
  const { dir, path, records } = await filled(t, 3);
  const log = await openLog(t, dir);
  t.same(log.head, { lastSeq: 3, prevHash: records[2]!.hash });
  t.equal((await log.append(ev(4))).seq, 4);
  t.match(await verifyAuditFile(path), { ok: true, count: 4 });
});

t.test('verify catches an edited line, a deleted line, a reordered pair and an inserted line', async (t) => {
  const { path } = await filled(t, 5);
  const orig = await lines(path);

  await writeLines(path, orig.map((l, i) => (i === 2 ? l.replace('vendor:alice', 'vendor:bob') : l)));
  t.match(await verifyAuditFile(path), { ok: false, count: 2, firstBadSeq: 3, firstBadIndex: 3, reason: 'hash-mismatch' }, 'edited');

  await writeLines(path, orig.filter((_, i) => i !== 1));
  t.match(await verifyAuditFile(path), { ok: false, count: 1, firstBadSeq: 3, firstBadIndex: 2, reason: 'seq-mismatch' }, 'deleted');

  await writeLines(path, [orig[0]!, orig[2]!, orig[1]!, orig[3]!, orig[4]!]);
  t.match(await verifyAuditFile(path), { ok: false, count: 1, firstBadSeq: 3, reason: 'seq-mismatch' }, 'reordered');

  const prev = JSON.parse(orig[1]!) as AuditRecord;
  const forged = canonicalJson(sealEvent(prev.hash, normalizeAuditInput(ev(99), 3, NOW)));
  await writeLines(path, [orig[0]!, orig[1]!, forged, ...orig.slice(2)]);
  t.match(await verifyAuditFile(path), { ok: false, count: 3, firstBadIndex: 4, reason: 'seq-mismatch' }, 'inserted');

  await writeLines(path, [orig[0]!, '{not json', ...orig.slice(1)]);
  t.match(await verifyAuditFile(path), { ok: false, count: 1, firstBadIndex: 2, reason: 'malformed', message: /line 2 is not JSON/ }, 'garbage');

  await writeLines(path, [orig[0]!, 'x'.repeat(2000), ...orig.slice(1)]);
  t.match(await verifyAuditFile(path, { maxLineBytes: 1024 }), { ok: false, count: 1, reason: 'malformed', message: /longer than maxLineBytes/ }, 'over-long line');

  await writeLines(path, orig);
  t.match(await verifyAuditFile(path), { ok: true, count: 5 }, 'restored');
  await t.rejects(verifyAuditFile(join(path, '..', 'missing.log')), { code: 'UPLINK_ERR_NOT_FOUND' });
});

t.test('a torn last line is reported by verify, saved aside and cut off by the writer', async (t) => {
  const { dir, path, records } = await filled(t, 3);
  const fragment = '{"actor":"vendor:alice","appl';
  await appendFile(path, fragment);
  t.match(await verifyAuditFile(path), { ok: true, count: 3, tornTail: true });
  const log = await openLog(t, dir);
  t.equal(log.recovery.completedTail, false);
  t.equal(log.recovery.tornTail?.bytes, fragment.length);
  t.equal(await readFile(log.recovery.tornTail!.savedAs, 'utf8'), fragment);
  t.same(log.head, { lastSeq: 3, prevHash: records[2]!.hash });
  await log.append(ev(4));
  t.match(await verifyAuditFile(path), { ok: true, count: 4, lastSeq: 4, tornTail: false });
});

t.test('a last event that lost only its newline is completed, not discarded', async (t) => {
  const { dir, path } = await filled(t, 2);
  const text = await readFile(path, 'utf8');
  await writeFile(path, text.slice(0, -1));
  const log = await openLog(t, dir);
  t.equal(log.recovery.completedTail, true);
  t.equal(log.recovery.tornTail, null);
  t.equal((await log.append(ev(3))).seq, 3);
  t.match(await verifyAuditFile(path), { ok: true, count: 3, tornTail: false });
});

t.test('a torn first line in an otherwise empty log restarts at the genesis', async (t) => {
  const dir = await stateDir(t);
  await mkdir(join(dir, 'audit'), { recursive: true });
  await writeFile(auditLogPath(dir), '{"seq":1,"ti');
  const log = await openLog(t, dir);
  t.ok(log.recovery.tornTail);
  t.equal((await log.append(ev(1))).seq, 1);
  t.match(await verifyAuditFile(log.path), { ok: true, count: 1 });
});

t.test('a corrupt last complete line stops the writer instead of being papered over', async (t) => {
  const { dir, path } = await filled(t, 2);
  const orig = await lines(path);
  await writeLines(path, [orig[0]!, orig[1]!.replace('"seq":2', '"seq":"2"')]);
  await t.rejects(AgentAuditLog.open(dir), { code: 'UPLINK_ERR_AUDIT_CORRUPT' });
  await writeLines(path, [orig[0]!, 'y'.repeat(5000)]);
  await t.rejects(AgentAuditLog.open(dir, { maxLineBytes: 1024 }), { code: 'UPLINK_ERR_AUDIT_CORRUPT', message: /longer than maxLineBytes/ });
});

t.test('concurrent appends in one process are serialised into one chain', async (t) => {
  const dir = await stateDir(t);
  const log = await openLog(t, dir);
  const recs = await Promise.all(Array.from({ length: 40 }, (_, i) => log.append(ev(i + 1))));
  t.same(recs.map((r) => r.seq), Array.from({ length: 40 }, (_, i) => i + 1), 'seq follows call order');
  t.match(await verifyAuditFile(log.path), { ok: true, count: 40 });
});

const CHILD = `
const [, modUrl, dir, count] = process.argv;
const { AgentAuditLog } = await import(modUrl);
const log = await AgentAuditLog.open(dir);
for (let i = 0; i < Number(count); i++) {
  await log.append({ actor: 'customer:grant-cli', appliance: 'acme-prod', operation: 'grant', outcome: 'ok', requestId: 'child-' + process.pid + '-' + i });
}
await log.close();
`;

function runChild(dir: string, count: number): Promise<number> {
  const modUrl = new URL('../../agent/audit-log.ts', import.meta.url).href;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...tsLoaderArgs(), '--input-type=module', '-e', CHILD, '--', modUrl, dir, String(count)], {
      stdio: ['ignore', 'ignore', 'inherit'],
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
    });
    child.once('error', reject);
    child.once('exit', (code) => resolve(code ?? -1));
  });
}

t.test('two other processes append while this one does: one unbroken chain', async (t) => {
  const dir = await stateDir(t);
  const log = await openLog(t, dir);
  await log.append(ev(0));
  const children = [runChild(dir, 25), runChild(dir, 25)];
  for (let i = 1; i <= 25; i++) await log.append(ev(i));
  t.same(await Promise.all(children), [0, 0]);
  await log.append(ev(26));
  const result = await verifyAuditFile(log.path);
  t.match(result, { ok: true, count: 77, lastSeq: 77, tornTail: false });
  const recs: AuditRecord[] = [];
  for await (const r of readAuditLog(log.path)) recs.push(r);
  t.equal(recs.filter((r) => r.operation === 'grant').length, 50);
  t.equal(recs.at(-1)?.requestId, 'r26');
});

t.test('stale locks are broken; a live fresh lock times out with UPLINK_ERR_AUDIT_LOCKED', async (t) => {
  const dir = await stateDir(t);
  const log = await openLog(t, dir, { lockTimeoutMs: 200, lockRetryMs: 5 });
  const lock = `${log.path}.lock`;
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  await writeFile(lock, `${dead.stdout} deadbeef\n`);
  t.equal((await log.append(ev(1))).seq, 1, 'dead holder: lock broken');

  await writeFile(lock, `${process.pid} someoneelse\n`);
  const err = await t.rejects(log.append(ev(2)), { code: 'UPLINK_ERR_AUDIT_LOCKED' });
  t.match(err, { details: { holderPid: process.pid, lockPath: lock } });
  t.equal(await readFile(lock, 'utf8'), `${process.pid} someoneelse\n`, 'a lock we do not own is left alone');

  const old = new Date(Date.now() - 60_000);
  const { utimes } = await import('node:fs/promises');
  await utimes(lock, old, old);
  t.equal((await log.append(ev(3))).seq, 2, 'an old lock is stale whatever its pid says');
  await t.rejects(stat(lock), { code: 'ENOENT' }, 'released after the append');
});

t.test('a log moved aside by an operator: the writer starts a new file and chain', async (t) => {
  const { dir, path } = await filled(t, 2);
  const log = await openLog(t, dir);
  await rename(path, `${path}.1`);
  t.equal((await log.append(ev(3))).seq, 1);
  t.match(await verifyAuditFile(path), { ok: true, count: 1 });
  t.match(await verifyAuditFile(`${path}.1`), { ok: true, count: 2 });
});

t.test('readAuditLog filters by seq and limit and refuses malformed lines', async (t) => {
  const { path } = await filled(t, 5);
  const seqs: number[] = [];
  for await (const r of readAuditLog(path, { afterSeq: 1, limit: 3 })) seqs.push(r.seq);
  t.same(seqs, [2, 3, 4]);
  await appendFile(path, 'garbage\n');
  const all = async (): Promise<void> => {
    for await (const _r of readAuditLog(path)) void _r;
  };
  await t.rejects(all(), { code: 'UPLINK_ERR_AUDIT_CORRUPT', message: /line 6/ });
});

t.test('options are validated: unknown keys and bad values refused', async (t) => {
  const dir = await stateDir(t);
  await t.rejects(AgentAuditLog.open(dir, { lockTimeoutMS: 5 } as never), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  await t.rejects(AgentAuditLog.open(dir, { maxLineBytes: 10 }), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /maxLineBytes/ });
});
