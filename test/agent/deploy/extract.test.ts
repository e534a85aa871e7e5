import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { extractRelease, planExtraction } from '../../../agent/deploy/extract.js';
import { createRelease } from '../../../shared/release/create-release.js';
import type { Manifest, ManifestFile } from '../../../shared/release/manifest.js';
import { generateReleaseKey, parseReleaseKey } from '../../../shared/release/release-key.js';
import type { ReleaseLimits } from '../../../shared/release/limits.js';
import { gz, manyFilesTar, paxRecords, tarOf, type RawEntry } from '../../fixtures/release-tar.js';

const key = parseReleaseKey(generateReleaseKey());

function sha(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

function manifestFor(files: ManifestFile[]): Manifest {
  return {
    format: 1, version: '1.0.0', appliance: '*', allowDowngrade: false, files,
    archiveSha256: '0'.repeat(64), archiveSize: 0, createdAt: '2025-01-01T00:00:00.000Z', keyId: key.key.keyId,
  };
}

/** A sandbox: `parent` is where extraction may create its directory; `root` holds it and nothing else. */
async function sandbox(t: Test): Promise<{ root: string; parent: string }> {
  const root = await mkdtemp(join(tmpdir(), 'uplink-extract-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const parent = join(root, 'work');
  await mkdir(parent);
  return { root, parent };
}

async function expectRejected(t: Test, name: string, archive: Buffer, code: string, opts: { manifest?: Manifest; limits?: Partial<ReleaseLimits>; escapeTargets?: string[]; details?: object } = {}): Promise<void> {
  const { root, parent } = await sandbox(t);
  const err = await extractRelease(archive, opts.manifest ?? manifestFor([]), { parentDir: parent, ...(opts.limits ? { limits: opts.limits } : {}) }).catch((e: unknown) => e);
  t.match(err, { code, ...(opts.details ? { details: opts.details } : {}) }, `${name}: ${code}`);
  t.same(await readdir(parent), [], `${name}: nothing created inside, not even the work directory`);
  t.same(await readdir(root), ['work'], `${name}: nothing written outside`);
  for (const target of opts.escapeTargets ?? []) {
    t.equal(await stat(target).then(() => true, () => false), false, `${name}: ${target} was not created`);
  }
}

t.test('a real release extracts into a fresh directory with exact modes', async (t) => {
  const src = await mkdtemp(join(tmpdir(), 'uplink-src-'));
  t.teardown(() => rm(src, { recursive: true, force: true }));
  await mkdir(join(src, 'modules', 'net'), { recursive: true });
  await writeFile(join(src, 'main.tf'), 'a');
  await writeFile(join(src, 'run.sh'), '#!/bin/sh\n', { mode: 0o755 });
  await writeFile(join(src, 'modules', 'net', 'main.tf'), 'b');
  const release = await createRelease(src, { version: '1.0.0', appliance: '*', key });
  const { root, parent } = await sandbox(t);
  const old = process.umask(0o077);
  const out = await extractRelease(release.archive, release.manifest, { parentDir: parent }).finally(() => process.umask(old));
  t.same({ files: out.files, bytes: out.bytes }, { files: 3, bytes: 12 });
  t.equal(join(out.dir, '..'), parent);
  t.match(out.dir, /release-/);
  t.equal(await readFile(join(out.dir, 'modules', 'net', 'main.tf'), 'utf8'), 'b');
  t.equal((await stat(join(out.dir, 'run.sh'))).mode & 0o7777, 0o755, 'signed mode, despite the umask');
  t.equal((await stat(join(out.dir, 'main.tf'))).mode & 0o7777, 0o644);
  t.same(await readdir(root), ['work']);
  const second = await extractRelease(release.archive, release.manifest, { parentDir: parent });
  t.not(second.dir, out.dir, 'every extraction gets its own directory');
});

t.test('malicious-archive corpus: each refused with its code, nothing written', async (t) => {
  const evil = join(tmpdir(), `uplink-evil-${process.pid}-${Date.now()}`);
  const data = Buffer.from('pwned\n');
  const file = (name: string, extra: Partial<RawEntry> = {}): RawEntry => ({ name, data, ...extra });
  const corpus: Array<[string, Buffer, string, object?]> = [
    ['absolute path', gz(tarOf([file(`${evil}/x.tf`)])), 'UPLINK_ERR_RELEASE_UNSAFE_PATH', { reason: 'absolute path' }],
    ['dot-dot', gz(tarOf([file('../escape.tf')])), 'UPLINK_ERR_RELEASE_UNSAFE_PATH', { reason: '".." segment' }],
    ['nested dot-dot', gz(tarOf([file('a/../../escape.tf')])), 'UPLINK_ERR_RELEASE_UNSAFE_PATH'],
    ['backslash dot-dot', gz(tarOf([file('..\\escape.tf')])), 'UPLINK_ERR_RELEASE_UNSAFE_PATH', { reason: 'backslash' }],
    ['pax path overrides a harmless name', gz(tarOf([{ name: 'PaxHeader', type: 'x', data: paxRecords({ path: '../pax-escape.tf' }) }, file('harmless.tf')])), 'UPLINK_ERR_RELEASE_UNSAFE_PATH'],
    ['symlink escape', gz(tarOf([{ name: 'link', type: '2', linkname: '../../..' + evil }, file('link/x.tf')])), 'UPLINK_ERR_RELEASE_LINK_ESCAPE', { kind: 'symlink', escapes: true }],
    ['absolute symlink', gz(tarOf([{ name: 'etc', type: '2', linkname: '/etc' }])), 'UPLINK_ERR_RELEASE_LINK_ESCAPE', { escapes: true }],
    ['symlink inside the tree', gz(tarOf([file('a.tf'), { name: 'b.tf', type: '2', linkname: 'a.tf' }])), 'UPLINK_ERR_RELEASE_LINK_ESCAPE', { escapes: false }],
    ['hardlink escape', gz(tarOf([{ name: 'passwd', type: '1', linkname: '../../../etc/passwd' }])), 'UPLINK_ERR_RELEASE_LINK_ESCAPE', { kind: 'hardlink', escapes: true }],
    ['NFC/NFD collision', gz(tarOf([file('caf\u00e9.tf'), file('cafe\u0301.tf')])), 'UPLINK_ERR_RELEASE_NAME_COLLISION'],
    ['case collision', gz(tarOf([file('Main.tf'), file('main.tf')])), 'UPLINK_ERR_RELEASE_NAME_COLLISION'],
    ['duplicate entry', gz(tarOf([file('main.tf'), file('main.tf')])), 'UPLINK_ERR_RELEASE_NAME_COLLISION', { reason: 'duplicate entry' }],
    ['file used as directory', gz(tarOf([file('a'), file('a/b.tf')])), 'UPLINK_ERR_RELEASE_NAME_COLLISION'],
    ['100k files', gz(manyFilesTar(100_000)), 'UPLINK_ERR_RELEASE_TOO_MANY_FILES'],
    ['2 GB sparse entry (header only)', gz(tarOf([{ name: 'big.bin', size: 2 * 1024 ** 3 }])), 'UPLINK_ERR_RELEASE_TOO_LARGE', { size: 2 * 1024 ** 3 }],
    ['1 TiB base-256 size', gz(tarOf([{ name: 'huge.bin', size: 1024 ** 4, base256: true }])), 'UPLINK_ERR_RELEASE_TOO_LARGE'],
    ['GNU sparse type', gz(tarOf([{ name: 'sparse.bin', type: 'S', size: 0 }])), 'UPLINK_ERR_RELEASE_SPECIAL_FILE'],
    ['pax sparse', gz(tarOf([{ name: 'PaxHeader', type: 'x', data: paxRecords({ 'GNU.sparse.major': '1' }) }, file('s.bin')])), 'UPLINK_ERR_RELEASE_SPECIAL_FILE'],
    ['character device', gz(tarOf([{ name: 'null', type: '3' }])), 'UPLINK_ERR_RELEASE_SPECIAL_FILE'],
    ['block device', gz(tarOf([{ name: 'sda', type: '4' }])), 'UPLINK_ERR_RELEASE_SPECIAL_FILE'],
    ['FIFO', gz(tarOf([{ name: 'fifo', type: '6' }])), 'UPLINK_ERR_RELEASE_SPECIAL_FILE'],
    ['setuid file', gz(tarOf([file('suid', { mode: 0o4755 })])), 'UPLINK_ERR_RELEASE_SPECIAL_FILE'],
    ['path too long', gz(tarOf([{ name: 'PaxHeader', type: 'x', data: paxRecords({ path: 'd/'.repeat(300) + 'x.tf' }) }, file('x')])), 'UPLINK_ERR_RELEASE_PATH_TOO_LONG'],
    ['GNU long name record', gz(tarOf([{ name: '././@LongLink', type: 'L', data: Buffer.from('../x\0') }, file('x')])), 'UPLINK_ERR_RELEASE_MALFORMED'],
    ['global pax header', gz(tarOf([{ name: 'g', type: 'g', data: paxRecords({ path: 'x' }) }])), 'UPLINK_ERR_RELEASE_MALFORMED'],
    ['trailing data after end marker', gz(Buffer.concat([tarOf([file('a.tf')]), tarOf([file('../late.tf')], { end: false })])), 'UPLINK_ERR_RELEASE_MALFORMED'],
    ['truncated entry', gz(tarOf([file('a.tf', { size: 4096 })], { end: false })), 'UPLINK_ERR_RELEASE_MALFORMED'],
    ['not gzip', Buffer.from('plain text, not an archive'), 'UPLINK_ERR_RELEASE_MALFORMED'],
  ];
  const badChecksum = tarOf([file('a.tf')]);
  badChecksum[0] ^= 1;
  corpus.push(['bad header checksum', gz(badChecksum), 'UPLINK_ERR_RELEASE_MALFORMED']);
  for (const [name, archive, code, details] of corpus) {
    await expectRejected(t, name, archive, code, { escapeTargets: [evil, join(tmpdir(), 'escape.tf')], ...(details ? { details } : {}) });
  }
});

t.test('limits: archive size, gzip bomb, total size', async (t) => {
  const ok = gz(tarOf([{ name: 'a.tf', data: Buffer.alloc(600, 0x61) }]));
  await expectRejected(t, 'archive over maxArchiveBytes', ok, 'UPLINK_ERR_RELEASE_TOO_LARGE', { limits: { maxArchiveBytes: 10 } });
  const bomb = gz(Buffer.alloc(8 * 1024 * 1024));
  await expectRejected(t, 'gzip bomb', bomb, 'UPLINK_ERR_RELEASE_TOO_LARGE', { limits: { maxUncompressedBytes: 1000, maxFiles: 4 }, details: { maxTarBytes: Number } });
  const two = gz(tarOf([{ name: 'a.tf', data: Buffer.alloc(600) }, { name: 'b.tf', data: Buffer.alloc(600) }]));
  await expectRejected(t, 'total over maxUncompressedBytes', two, 'UPLINK_ERR_RELEASE_TOO_LARGE', { limits: { maxUncompressedBytes: 1000 } });
});

t.test('the archive must hold exactly the signed files', async (t) => {
  const a = Buffer.from('resource "terraform_data" "a" {}\n');
  const b = Buffer.from('resource "terraform_data" "b" {}\n');
  const archive = gz(tarOf([{ name: 'a.tf', data: a }, { name: 'b.tf', data: b }]));
  const entry = (path: string, data: Buffer, mode: 0o644 | 0o755 = 0o644): ManifestFile => ({ path, sha256: sha(data), size: data.length, mode });
  const good = manifestFor([entry('a.tf', a), entry('b.tf', b)]);
  t.same(planExtraction(archive, good).files.map((f) => f.path), ['a.tf', 'b.tf'], 'baseline plans fine');
  const c = Buffer.from('resource "terraform_data" "c" {}\n');
  await expectRejected(t, 'tampered file', archive, 'UPLINK_ERR_RELEASE_DIGEST_MISMATCH', { manifest: manifestFor([entry('a.tf', a), { ...entry('b.tf', c) }]), details: { path: 'b.tf', reason: 'sha256' } });
  await expectRejected(t, 'extra file', archive, 'UPLINK_ERR_RELEASE_DIGEST_MISMATCH', { manifest: manifestFor([entry('a.tf', a)]), details: { path: 'b.tf', reason: 'extra' } });
  await expectRejected(t, 'missing file', archive, 'UPLINK_ERR_RELEASE_DIGEST_MISMATCH', { manifest: manifestFor([entry('a.tf', a), entry('b.tf', b), entry('c.tf', c)]), details: { reason: 'missing', missing: ['c.tf'] } });
  await expectRejected(t, 'mode differs', archive, 'UPLINK_ERR_RELEASE_DIGEST_MISMATCH', { manifest: manifestFor([entry('a.tf', a, 0o755), entry('b.tf', b)]), details: { reason: 'mode' } });
  await expectRejected(t, 'size differs', archive, 'UPLINK_ERR_RELEASE_DIGEST_MISMATCH', { manifest: manifestFor([{ ...entry('a.tf', a), size: 1 }, entry('b.tf', b)]), details: { reason: 'size' } });
});

t.test('explicit directory entries and NFD names are accepted and normalised', async (t) => {
  const data = Buffer.from('x');
  const archive = gz(tarOf([{ name: 'mods/', type: '5', mode: 0o755 }, { name: 'mods/cafe\u0301.tf', data }]));
  const { parent } = await sandbox(t);
  const out = await extractRelease(archive, manifestFor([{ path: 'mods/caf\u00e9.tf', sha256: sha(data), size: 1, mode: 0o644 }]), { parentDir: parent });
  t.same(await readdir(join(out.dir, 'mods')), ['caf\u00e9.tf'], 'written under its NFC name');
});
