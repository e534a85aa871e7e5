import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { packDirectory } from '../../../shared/release/pack.js';
import { readTar } from '../../../agent/deploy/tar-reader.js';
import { RELEASE_LIMIT_DEFAULTS } from '../../../shared/release/limits.js';

async function tmp(t: Test, prefix = 'uplink-pack-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function stack(dir: string): Promise<void> {
  await mkdir(join(dir, 'modules', 'net'), { recursive: true });
  await writeFile(join(dir, 'main.tf'), 'resource "terraform_data" "x" {}\n');
  await writeFile(join(dir, 'modules', 'net', 'main.tf'), 'variable "cidr" {}\n');
  await writeFile(join(dir, 'hook.sh'), '#!/bin/sh\necho hi\n', { mode: 0o700 });
  await writeFile(join(dir, 'caf\u00e9.tf'), '# accent\n');
  await writeFile(join(dir, `${'d'.repeat(120)}.tf`), '# long name: needs a pax header\n');
  // Excluded by default: working data, local state, VCS metadata (even with symlinks inside).
  await mkdir(join(dir, '.terraform', 'providers'), { recursive: true });
  await symlink('/etc/passwd', join(dir, '.terraform', 'providers', 'link'));
  await writeFile(join(dir, 'terraform.tfstate'), '{"secret": true}');
  await mkdir(join(dir, '.git'));
  await writeFile(join(dir, '.git', 'HEAD'), 'ref: refs/heads/main\n');
}

t.test('packs sorted regular files with fixed metadata and records digests', async (t) => {
  const dir = await tmp(t);
  await stack(dir);
  const packed = await packDirectory(dir);
  t.equal(packed.sha256, createHash('sha256').update(packed.archive).digest('hex'));
  t.equal(packed.archive[9], 0xff, 'gzip OS byte is "unknown"');
  t.equal(packed.archive.readUInt32LE(4), 0, 'gzip mtime is 0');
  const paths = packed.files.map((f) => f.path);
  t.same(paths, ['caf\u00e9.tf', `${'d'.repeat(120)}.tf`, 'hook.sh', 'main.tf', 'modules/net/main.tf']);
  t.same(packed.files.find((f) => f.path === 'hook.sh')?.mode, 0o755, 'any execute bit => 0755');
  t.same(packed.files.find((f) => f.path === 'main.tf'), {
    path: 'main.tf',
    sha256: createHash('sha256').update('resource "terraform_data" "x" {}\n').digest('hex'),
    size: 33,
    mode: 0o644,
  });
  const tar = gunzipSync(packed.archive);
  const entries = readTar(tar, RELEASE_LIMIT_DEFAULTS);
  t.same(entries.map((e) => e.path), paths, 'our own reader reads it back');
  // Raw header fields of the first non-pax entry: mtime 0, uid/gid 0, no user or group names.
  let off = 0;
  while (String.fromCharCode(tar[off + 156]!) === 'x') off += 512 + Math.ceil(parseInt(tar.toString('latin1', off + 124, off + 135), 8) / 512) * 512;
  t.equal(parseInt(tar.toString('latin1', off + 136, off + 147), 8), 0, 'mtime 0');
  t.equal(parseInt(tar.toString('latin1', off + 108, off + 115), 8), 0, 'uid 0');
  t.equal(parseInt(tar.toString('latin1', off + 116, off + 123), 8), 0, 'gid 0');
  t.equal(tar.subarray(off + 265, off + 329).every((b) => b === 0), true, 'uname and gname empty');
});

t.test('same input => byte-identical output, whatever the mtimes, umask or creation order', async (t) => {
  const a = await tmp(t);
  const b = await tmp(t);
  await stack(a);
  // Same content created in another order, with other times and permission bits.
  await writeFile(join(b, `${'d'.repeat(120)}.tf`), '# long name: needs a pax header\n');
  await writeFile(join(b, 'caf\u00e9.tf'), '# accent\n');
  await mkdir(join(b, 'modules', 'net'), { recursive: true });
  await writeFile(join(b, 'modules', 'net', 'main.tf'), 'variable "cidr" {}\n', { mode: 0o600 });
  await writeFile(join(b, 'main.tf'), 'resource "terraform_data" "x" {}\n', { mode: 0o664 });
  await writeFile(join(b, 'hook.sh'), '#!/bin/sh\necho hi\n');
  await chmod(join(b, 'hook.sh'), 0o751);
  await utimes(join(b, 'main.tf'), new Date(1e12), new Date(1e12));
  const first = await packDirectory(a);
  const second = await packDirectory(b);
  t.ok(first.archive.equals(second.archive), 'archives are byte-identical');
  t.same(first.files, second.files);
  t.ok((await packDirectory(a)).archive.equals(first.archive), 'and stable across runs');
  await writeFile(join(b, 'main.tf'), 'resource "terraform_data" "y" {}\n');
  t.not((await packDirectory(b)).sha256, first.sha256, 'a content change changes the digest');
});

t.test('GNU tar agrees with the archive', { skip: !hasTar() && 'tar not on PATH' }, async (t) => {
  const dir = await tmp(t);
  await stack(dir);
  const packed = await packDirectory(dir);
  const out = await tmp(t);
  await writeFile(join(out, 'r.tar.gz'), packed.archive);
  const list = execFileSync('tar', ['-tzvf', join(out, 'r.tar.gz')], { encoding: 'utf8' });
  t.match(list, /-rwxr-xr-x 0\/0 +\d+ 1970-01-01 00:00 hook\.sh/);
  t.match(list, /modules\/net\/main\.tf/);
});

t.test('refuses symlinks and special files in the source', async (t) => {
  const dir = await tmp(t);
  await writeFile(join(dir, 'main.tf'), '#\n');
  await symlink('main.tf', join(dir, 'alias.tf'));
  await t.rejects(packDirectory(dir), { code: 'UPLINK_ERR_RELEASE_SOURCE_INVALID', details: { path: 'alias.tf', type: 'symlink' } });
  const fifoDir = await tmp(t);
  execFileSync('mkfifo', [join(fifoDir, 'pipe')]);
  await t.rejects(packDirectory(fifoDir), { code: 'UPLINK_ERR_RELEASE_SOURCE_INVALID', details: { path: 'pipe', type: 'special' } });
  const badName = await tmp(t);
  await writeFile(join(badName, 'a\\b.tf'), '#\n');
  await t.rejects(packDirectory(badName), { code: 'UPLINK_ERR_RELEASE_SOURCE_INVALID', details: { path: 'a\\b.tf' } });
  await t.rejects(packDirectory(await tmp(t)), { code: 'UPLINK_ERR_RELEASE_SOURCE_INVALID' }, 'empty directory');
  await t.rejects(packDirectory(join(dir, 'main.tf')), { code: 'UPLINK_ERR_RELEASE_SOURCE_INVALID' }, 'not a directory');
});

t.test('refuses names that collide on case-insensitive filesystems', async (t) => {
  const dir = await tmp(t);
  await writeFile(join(dir, 'Main.tf'), '#\n');
  await writeFile(join(dir, 'main.tf'), '#\n');
  await t.rejects(packDirectory(dir), { code: 'UPLINK_ERR_RELEASE_NAME_COLLISION' });
});

t.test('limits apply when packing', async (t) => {
  const dir = await tmp(t);
  await writeFile(join(dir, 'a.tf'), 'x'.repeat(100));
  await writeFile(join(dir, 'b.tf'), 'y'.repeat(100));
  await t.rejects(packDirectory(dir, { limits: { maxFiles: 1 } }), { code: 'UPLINK_ERR_RELEASE_TOO_MANY_FILES' });
  await t.rejects(packDirectory(dir, { limits: { maxUncompressedBytes: 150 } }), { code: 'UPLINK_ERR_RELEASE_TOO_LARGE' });
  await t.rejects(packDirectory(dir, { limits: { maxArchiveBytes: 20 } }), { code: 'UPLINK_ERR_RELEASE_TOO_LARGE' });
  await t.rejects(packDirectory(dir, { limits: { maxPathLength: 3 } }), { code: 'UPLINK_ERR_RELEASE_PATH_TOO_LONG' });
  await t.rejects(packDirectory(dir, { limits: { maxFiels: 1 } as never }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  const packed = await packDirectory(dir, { exclude: ['b.tf'] });
  t.same(packed.files.map((f) => f.path), ['a.tf'], 'custom exclude list');
});

function hasTar(): boolean {
  try {
    execFileSync('tar', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
