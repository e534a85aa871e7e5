import t from 'tap';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { verifyRelease, type ReceivedRelease } from '../../../agent/deploy/verify-release.js';
import { createRelease } from '../../../shared/release/create-release.js';
import { signManifest, type SignedRelease } from '../../../shared/release/manifest.js';
import { generateReleaseKey, parseReleaseKey, pinnedKeyOf } from '../../../shared/release/release-key.js';

const vendor = parseReleaseKey(generateReleaseKey());
const stranger = parseReleaseKey(generateReleaseKey());
const pinnedKeys = [pinnedKeyOf(vendor.key)];
let stackDir = '';

t.before(async () => {
  stackDir = await mkdtemp(join(tmpdir(), 'uplink-verify-'));
  await writeFile(join(stackDir, 'main.tf'), 'resource "terraform_data" "x" {}\n');
});
t.teardown(() => rm(stackDir, { recursive: true, force: true }));

async function release(version = '1.2.0', over: { appliance?: string; allowDowngrade?: boolean; key?: typeof vendor } = {}): Promise<SignedRelease> {
  return createRelease(stackDir, { version, appliance: over.appliance ?? 'acme-prod', allowDowngrade: over.allowDowngrade ?? false, key: over.key ?? vendor });
}

/** As it would arrive over the wire: JSON manifest, base64 signature. */
function received(r: SignedRelease): ReceivedRelease {
  return { manifest: JSON.parse(JSON.stringify(r.manifest)), signature: r.signature, archive: Buffer.from(r.archive) };
}

const opts = { pinnedKeys, appliance: 'acme-prod', lastApplied: null };

t.test('a good release verifies, and nothing touches disk', async (t) => {
  const before = await readdir(stackDir);
  const r = await release();
  const v = verifyRelease(received(r), opts);
  t.equal(v.keyId, vendor.key.keyId);
  t.equal(v.downgrade, false);
  t.same(v.manifest, r.manifest);
  t.ok(Object.isFrozen(v.manifest));
  t.same(await readdir(stackDir), before);
  t.ok(verifyRelease(received(await release('1.2.0', { appliance: '*' })), opts), "'*' binds to every appliance");
});

t.test('tampered archive => UPLINK_ERR_RELEASE_DIGEST_MISMATCH', async (t) => {
  const r = received(await release());
  r.archive[r.archive.length - 10] ^= 0xff;
  t.throws(() => verifyRelease(r, opts), { code: 'UPLINK_ERR_RELEASE_DIGEST_MISMATCH' });
  const swapped = received(await release());
  swapped.archive = Buffer.concat([swapped.archive, Buffer.alloc(1)]);
  t.throws(() => verifyRelease(swapped, opts), { code: 'UPLINK_ERR_RELEASE_DIGEST_MISMATCH' }, 'appended bytes');
});

t.test('tampered manifest => UPLINK_ERR_RELEASE_BAD_SIGNATURE (a relay cannot flip allowDowngrade)', async (t) => {
  const base = await release();
  for (const change of [{ allowDowngrade: true }, { version: '9.9.9' }, { appliance: '*' }, { notes: 'added' }]) {
    const r = received(base);
    Object.assign(r.manifest as object, change);
    t.throws(() => verifyRelease(r, opts), { code: 'UPLINK_ERR_RELEASE_BAD_SIGNATURE' }, Object.keys(change)[0]);
  }
  const r = received(base);
  r.signature = Buffer.alloc(64).toString('base64');
  t.throws(() => verifyRelease(r, opts), { code: 'UPLINK_ERR_RELEASE_BAD_SIGNATURE' }, 'zero signature');
  r.signature = undefined;
  t.throws(() => verifyRelease(r, opts), { code: 'UPLINK_ERR_RELEASE_BAD_SIGNATURE' }, 'missing signature');
});

t.test('unknown key => UPLINK_ERR_RELEASE_UNKNOWN_KEY, even when the signature is valid for it', async (t) => {
  const r = received(await release('1.2.0', { key: stranger }));
  t.throws(() => verifyRelease(r, opts), { code: 'UPLINK_ERR_RELEASE_UNKNOWN_KEY', details: { keyId: stranger.key.keyId } });
  // Claiming the vendor's key id while signing with another key is a bad signature.
  const forged = received(await release('1.2.0', { key: stranger }));
  const m = { ...(forged.manifest as SignedRelease['manifest']), keyId: vendor.key.keyId };
  forged.manifest = m;
  forged.signature = signManifest(m, stranger.secretKey);
  t.throws(() => verifyRelease(forged, opts), { code: 'UPLINK_ERR_RELEASE_BAD_SIGNATURE' });
});

t.test("other appliance's bundle => UPLINK_ERR_RELEASE_WRONG_APPLIANCE", async (t) => {
  const r = received(await release('1.2.0', { appliance: 'globex-prod' }));
  t.throws(() => verifyRelease(r, opts), { code: 'UPLINK_ERR_RELEASE_WRONG_APPLIANCE', details: { bound: 'globex-prod', appliance: 'acme-prod' } });
});

t.test('downgrade => UPLINK_ERR_RELEASE_DOWNGRADE unless signed with allowDowngrade', async (t) => {
  const applied = await release('1.10.0');
  const last = { version: '1.10.0', archiveSha256: applied.manifest.archiveSha256 };
  const older = received(await release('1.9.0'));
  t.throws(() => verifyRelease(older, { ...opts, lastApplied: last }), { code: 'UPLINK_ERR_RELEASE_DOWNGRADE', details: { reason: 'older' } });
  const rollback = verifyRelease(received(await release('1.9.0', { allowDowngrade: true })), { ...opts, lastApplied: last });
  t.equal(rollback.downgrade, true);
  t.equal(verifyRelease(received(await release('1.11.0')), { ...opts, lastApplied: last }).downgrade, false, 'newer passes');
  t.equal(verifyRelease(received(applied), { ...opts, lastApplied: last }).downgrade, false, 'same version, same archive: re-apply');
  t.throws(() => verifyRelease(received(applied), { ...opts, lastApplied: { ...last, archiveSha256: 'f'.repeat(64) } }), {
    code: 'UPLINK_ERR_RELEASE_DOWNGRADE',
    details: { reason: 'same-version-different-content' },
  });
});

t.test('malformed and oversized input', async (t) => {
  const r = received(await release());
  t.throws(() => verifyRelease({ ...r, manifest: 'nope' }, opts), { code: 'UPLINK_ERR_RELEASE_MALFORMED' });
  t.throws(() => verifyRelease({ ...r, manifest: { ...(r.manifest as object), injected: { deep: 1 } } }, opts), { code: 'UPLINK_ERR_RELEASE_MALFORMED' });
  t.throws(() => verifyRelease(r, { ...opts, limits: { maxArchiveBytes: 10 } }), { code: 'UPLINK_ERR_RELEASE_TOO_LARGE' });
  t.throws(() => verifyRelease(r, { ...opts, pinnedKeys: [{ id: 'ffffffffffffffff', publicKey: vendor.key.publicKey }] }), { code: 'UPLINK_ERR_RELEASE_KEY_INVALID' });
});
