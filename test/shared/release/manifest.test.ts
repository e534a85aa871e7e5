import t from 'tap';
import nacl from 'tweetnacl';
import {
  MANIFEST_SIGNATURE_DOMAIN,
  buildManifest,
  canonicalJson,
  manifestSigningBytes,
  parseManifest,
  signManifest,
  verifyManifestSignature,
  type Manifest,
} from '../../../shared/release/manifest.js';
import { RELEASE_LIMIT_DEFAULTS } from '../../../shared/release/limits.js';

const SHA = 'a'.repeat(64);

function manifest(over: Partial<Manifest> = {}): Manifest {
  return {
    format: 1,
    version: '1.2.3',
    appliance: 'acme-prod',
    allowDowngrade: false,
    files: [
      { path: 'main.tf', sha256: SHA, size: 10, mode: 0o644 },
      { path: 'modules/net/main.tf', sha256: SHA, size: 5, mode: 0o755 },
    ],
    archiveSha256: 'b'.repeat(64),
    archiveSize: 100,
    createdAt: '2025-01-02T03:04:05.000Z',
    keyId: '0123456789abcdef',
    ...over,
  };
}

t.test('canonical JSON sorts keys, drops undefined, and refuses floats', async (t) => {
  t.equal(canonicalJson({ b: 1, a: [true, null, 'x'], c: undefined, d: { z: 1, y: 2 } }), '{"a":[true,null,"x"],"b":1,"d":{"y":2,"z":1}}');
  t.equal(canonicalJson({ s: 'é"\n' }), '{"s":"é\\"\\n"}');
  t.throws(() => canonicalJson({ x: 1.5 }), { code: 'UPLINK_ERR_RELEASE_MALFORMED' });
  t.throws(() => canonicalJson({ x: new Date(0) }), { code: 'UPLINK_ERR_RELEASE_MALFORMED' });
  t.equal(canonicalJson(manifest()), canonicalJson(JSON.parse(JSON.stringify(manifest()))), 'stable through a JSON round trip');
});

t.test('signature is domain-separated and covers every field', async (t) => {
  const pair = nacl.sign.keyPair();
  const m = manifest();
  const sig = signManifest(m, pair.secretKey);
  t.ok(verifyManifestSignature(m, sig, pair.publicKey));
  t.ok(Buffer.from(manifestSigningBytes(m)).toString('utf8').startsWith(MANIFEST_SIGNATURE_DOMAIN));
  // A signature over the bare canonical JSON (no domain prefix) must not verify.
  const bare = Buffer.from(nacl.sign.detached(new Uint8Array(Buffer.from(canonicalJson(m))), pair.secretKey)).toString('base64');
  t.notOk(verifyManifestSignature(m, bare, pair.publicKey), 'no cross-protocol signatures');
  const flips: Array<Partial<Manifest>> = [
    { allowDowngrade: true },
    { appliance: '*' },
    { version: '1.2.4' },
    { archiveSha256: 'c'.repeat(64) },
    { files: [{ path: 'main.tf', sha256: SHA, size: 11, mode: 0o644 }] },
    { notes: 'hi' },
  ];
  for (const flip of flips) t.notOk(verifyManifestSignature(manifest(flip), sig, pair.publicKey), `changing ${Object.keys(flip)[0]} breaks it`);
  t.notOk(verifyManifestSignature(m, sig, nacl.sign.keyPair().publicKey), 'another key');
  t.notOk(verifyManifestSignature(m, 'not base64!', pair.publicKey), 'garbage signature');
  t.notOk(verifyManifestSignature(m, 42, pair.publicKey), 'non-string signature');
});

t.test('parseManifest enforces shape, order, NFC and limits', async (t) => {
  t.same(parseManifest(manifest()), manifest());
  t.throws(() => parseManifest({ ...manifest(), extra: 1 }), { code: 'UPLINK_ERR_RELEASE_MALFORMED', details: { field: 'extra' } });
  t.throws(() => parseManifest(manifest({ format: 2 as 1 })), { code: 'UPLINK_ERR_RELEASE_MALFORMED' });
  t.throws(() => parseManifest(manifest({ version: '../1' })), { code: 'UPLINK_ERR_RELEASE_MALFORMED' });
  t.throws(() => parseManifest(manifest({ appliance: 'a b' })), { code: 'UPLINK_ERR_RELEASE_MALFORMED' });
  t.throws(() => parseManifest(manifest({ createdAt: 'yesterday' })), { code: 'UPLINK_ERR_RELEASE_MALFORMED' });
  t.throws(() => parseManifest(manifest({ files: [{ path: 'a', sha256: SHA, size: 1, mode: 0o4755 as 0o755 }] })), { code: 'UPLINK_ERR_RELEASE_MALFORMED' });
  const f = (path: string) => ({ path, sha256: SHA, size: 1, mode: 0o644 as const });
  t.throws(() => parseManifest(manifest({ files: [f('b'), f('a')] })), { code: 'UPLINK_ERR_RELEASE_MALFORMED' }, 'unsorted');
  t.throws(() => parseManifest(manifest({ files: [f('a'), f('a')] })), { code: 'UPLINK_ERR_RELEASE_MALFORMED' }, 'duplicate');
  t.throws(() => parseManifest(manifest({ files: [f('A'), f('a')] })), { code: 'UPLINK_ERR_RELEASE_NAME_COLLISION' });
  t.throws(() => parseManifest(manifest({ files: [f('cafe\u0301')] })), { code: 'UPLINK_ERR_RELEASE_MALFORMED' }, 'NFD path');
  t.throws(() => parseManifest(manifest({ files: [f('../x')] })), { code: 'UPLINK_ERR_RELEASE_UNSAFE_PATH' });
  const limits = { ...RELEASE_LIMIT_DEFAULTS, maxFiles: 1, maxUncompressedBytes: 12, maxNotesBytes: 3 };
  t.throws(() => parseManifest(manifest(), limits), { code: 'UPLINK_ERR_RELEASE_TOO_MANY_FILES' });
  t.throws(() => parseManifest(manifest({ files: [f('a'), f('b')].map((x) => ({ ...x, size: 7 })) }), { ...limits, maxFiles: 5 }), { code: 'UPLINK_ERR_RELEASE_TOO_LARGE' });
  t.throws(() => parseManifest(manifest({ notes: 'four' }), { ...limits, maxFiles: 5, maxUncompressedBytes: 100 }), { code: 'UPLINK_ERR_RELEASE_TOO_LARGE' });
  t.throws(() => parseManifest(manifest({ archiveSize: RELEASE_LIMIT_DEFAULTS.maxArchiveBytes + 1 })), { code: 'UPLINK_ERR_RELEASE_TOO_LARGE' });
});

t.test('buildManifest sorts files and reports bad CLI input as UPLINK_ERR_USAGE', async (t) => {
  const input = {
    version: '2.0.0',
    appliance: '*',
    allowDowngrade: true,
    files: [
      { path: 'z.tf', sha256: SHA, size: 1, mode: 0o644 as const },
      { path: 'a.tf', sha256: SHA, size: 1, mode: 0o644 as const },
    ],
    archiveSha256: SHA,
    archiveSize: 10,
    keyId: '0123456789abcdef',
    createdAt: new Date(Date.UTC(2025, 0, 1)),
    notes: undefined,
  };
  const m = buildManifest(input);
  t.same(m.files.map((f) => f.path), ['a.tf', 'z.tf']);
  t.equal(m.createdAt, '2025-01-01T00:00:00.000Z');
  t.notOk('notes' in m, 'absent notes are omitted, not null');
  t.equal(m.allowDowngrade, true);
  t.throws(() => buildManifest({ ...input, version: 'has space' }), { code: 'UPLINK_ERR_USAGE' });
});
