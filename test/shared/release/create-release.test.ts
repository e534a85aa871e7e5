import t from 'tap';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nacl from 'tweetnacl';
import { createRelease } from '../../../shared/release/create-release.js';
import { verifyManifestSignature } from '../../../shared/release/manifest.js';
import { generateReleaseKey, parseReleaseKey } from '../../../shared/release/release-key.js';

t.test('createRelease packs, describes and signs', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'uplink-create-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'main.tf'), 'output "x" { value = 1 }\n');
  const key = parseReleaseKey(generateReleaseKey());
  const now = new Date(Date.UTC(2025, 5, 1, 12));
  const release = await createRelease(dir, { version: '1.4.0', appliance: '*', allowDowngrade: true, notes: 'rollback', key, now });
  t.match(release.manifest, { format: 1, version: '1.4.0', appliance: '*', allowDowngrade: true, notes: 'rollback', keyId: key.key.keyId, createdAt: '2025-06-01T12:00:00.000Z' });
  t.equal(release.manifest.archiveSize, release.archive.length);
  t.same(release.manifest.files.map((f) => f.path), ['main.tf']);
  t.ok(verifyManifestSignature(release.manifest, release.signature, new Uint8Array(Buffer.from(key.key.publicKey, 'base64'))));
  t.notOk(verifyManifestSignature(release.manifest, release.signature, nacl.sign.keyPair().publicKey));
  const again = await createRelease(dir, { version: '1.4.0', appliance: '*', allowDowngrade: true, notes: 'rollback', key, now });
  t.equal(again.signature, release.signature, 'Ed25519 is deterministic: same inputs, same signature');
  t.notOk((await createRelease(dir, { version: '1.4.0', appliance: 'acme', key, now })).manifest.allowDowngrade, 'allowDowngrade defaults to false');
});

t.test('bad --version or --appliance fails before packing', async (t) => {
  const key = parseReleaseKey(generateReleaseKey());
  await t.rejects(createRelease('/nonexistent', { version: '1 0', appliance: '*', key }), { code: 'UPLINK_ERR_USAGE' });
  await t.rejects(createRelease('/nonexistent', { version: '1.0.0', appliance: '../x', key }), { code: 'UPLINK_ERR_USAGE' });
  await t.rejects(createRelease('/nonexistent', { version: '1.0.0', appliance: 'acme', key }), { code: 'UPLINK_ERR_RELEASE_SOURCE_INVALID' });
});
