import t, { type Test } from 'tap';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import {
  generateReleaseKey,
  loadReleaseKey,
  parsePinnedKeys,
  pinnedKeyOf,
  releaseKeyId,
  writeReleaseKey,
  MAX_RELEASE_KEY_FILE_BYTES,
} from '../../../shared/release/release-key.js';

async function tmp(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'uplink-key-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test('keygen writes a 0600 file whose key id is the sha256 prefix of the public key', async (t) => {
  const dir = await tmp(t);
  const key = generateReleaseKey();
  const file = join(dir, 'release.key');
  const old = process.umask(0o022);
  try {
    await writeReleaseKey(file, key);
  } finally {
    process.umask(old);
  }
  t.equal((await stat(file)).mode & 0o777, 0o600);
  const pub = Buffer.from(key.publicKey, 'base64');
  t.equal(pub.length, 32);
  t.equal(key.keyId, createHash('sha256').update(pub).digest('hex').slice(0, 16));
  t.equal(releaseKeyId(new Uint8Array(pub)), key.keyId);
  const loaded = await loadReleaseKey(file);
  t.same(loaded.key, key);
  t.equal(loaded.secretKey.length, 64);
  t.same(pinnedKeyOf(key), { id: key.keyId, publicKey: key.publicKey });
  const onDisk = JSON.parse(await readFile(file, 'utf8'));
  t.equal(onDisk.kind, 'uplink-release-key');
});

t.test('keygen never overwrites an existing key', async (t) => {
  const dir = await tmp(t);
  const file = join(dir, 'release.key');
  const first = generateReleaseKey();
  await writeReleaseKey(file, first);
  await t.rejects(writeReleaseKey(file, generateReleaseKey()), { code: 'UPLINK_ERR_CONFLICT' });
  t.same((await loadReleaseKey(file)).key, first, 'the first key survives');
});

t.test('load refuses bad key files with UPLINK_ERR_RELEASE_KEY_INVALID', async (t) => {
  const dir = await tmp(t);
  const good = generateReleaseKey();
  const other = generateReleaseKey();
  const cases: Array<[string, string]> = [
    ['not json', 'this is not json'],
    ['wrong kind', JSON.stringify({ ...good, kind: 'ssh-key' })],
    ['unknown field', JSON.stringify({ ...good, extra: 1 })],
    ['short public key', JSON.stringify({ ...good, publicKey: Buffer.alloc(31).toString('base64') })],
    ['non-canonical base64', JSON.stringify({ ...good, publicKey: good.publicKey.replace(/=*$/, '') + '!' })],
    ['spliced secret', JSON.stringify({ ...good, secretKey: other.secretKey })],
    ['wrong key id', JSON.stringify({ ...good, keyId: other.keyId })],
    ['too large', ' '.repeat(MAX_RELEASE_KEY_FILE_BYTES + 1)],
  ];
  for (const [name, text] of cases) {
    const file = join(dir, name.replace(/ /g, '-'));
    await writeFile(file, text, { mode: 0o600 });
    await t.rejects(loadReleaseKey(file), { code: 'UPLINK_ERR_RELEASE_KEY_INVALID' }, name);
  }
  await t.rejects(loadReleaseKey(join(dir, 'missing')), { code: 'UPLINK_ERR_RELEASE_KEY_INVALID' }, 'missing file');
  await t.rejects(loadReleaseKey(dir), { code: 'UPLINK_ERR_RELEASE_KEY_INVALID' }, 'a directory');
});

t.test('a key file readable by others is refused, like ssh does', { skip: process.platform === 'win32' }, async (t) => {
  const dir = await tmp(t);
  const file = join(dir, 'release.key');
  await writeReleaseKey(file, generateReleaseKey());
  await chmod(file, 0o644);
  const err = await loadReleaseKey(file).catch((e: unknown) => e);
  t.match(err, { code: 'UPLINK_ERR_RELEASE_KEY_INVALID', details: { mode: '0644' } });
  t.match((err as Error).message, /chmod 600/);
});

t.test('pinned keys: id must be derived from the public key', async (t) => {
  const a = generateReleaseKey();
  const b = generateReleaseKey();
  const pins = parsePinnedKeys([pinnedKeyOf(a), pinnedKeyOf(b)]);
  t.same([...pins.keys()], [a.keyId, b.keyId]);
  t.throws(() => parsePinnedKeys([{ id: b.keyId, publicKey: a.publicKey }]), { code: 'UPLINK_ERR_RELEASE_KEY_INVALID' });
  t.throws(() => parsePinnedKeys([{ id: a.keyId, publicKey: 'AAAA' }]), { code: 'UPLINK_ERR_RELEASE_KEY_INVALID' });
  t.throws(() => parsePinnedKeys([{ id: a.keyId } as never]), { code: 'UPLINK_ERR_RELEASE_KEY_INVALID' });
});
