/**
 * Vendor release keys: Ed25519 key pairs (tweetnacl) that sign release manifests.
 *
 * The key file is JSON `{kind:'uplink-release-key', keyId, publicKey, secretKey}` with both
 * keys in base64, written with mode 0600 and never overwritten. Customers pin the public
 * half in the agent's `releaseKeys` as `{id, publicKey}`. The key id is the first 16 hex
 * characters of SHA-256(publicKey): short enough to read aloud, long enough that two keys of
 * one vendor never share it, and derived, so a pinned entry cannot claim a wrong id.
 */
import { createHash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import nacl from 'tweetnacl';
import { z } from 'zod';
import { UplinkError } from '../errors.js';

export const RELEASE_KEY_KIND = 'uplink-release-key';

/** A key file is about 200 bytes; anything far larger is not one. */
export const MAX_RELEASE_KEY_FILE_BYTES = 4096;

const PUBLIC_KEY_BYTES = nacl.sign.publicKeyLength;
const SECRET_KEY_BYTES = nacl.sign.secretKeyLength;
const KEY_ID = /^[0-9a-f]{16}$/;

/** A full release key, as held in the key file. */
export interface ReleaseKey {
  kind: typeof RELEASE_KEY_KIND;
  keyId: string;
  /** base64 of the 32-byte Ed25519 public key. */
  publicKey: string;
  /** base64 of the 64-byte tweetnacl secret key (seed followed by public key). */
  secretKey: string;
}

/** A public key pinned in the agent's config (`releaseKeys`). */
export interface PinnedReleaseKey {
  id: string;
  /** base64 of the 32-byte Ed25519 public key. */
  publicKey: string;
}

function keyError(message: string, details: Record<string, unknown> = {}, cause?: unknown): UplinkError {
  return new UplinkError('UPLINK_ERR_RELEASE_KEY_INVALID', message, cause === undefined ? { details } : { details, cause });
}

/**
 * Decode canonical base64 of an exact length. Node's decoder skips invalid characters, so
 * the input is re-encoded and compared: one key has exactly one accepted spelling.
 */
export function decodeKeyBytes(text: string, length: number): Uint8Array | null {
  if (typeof text !== 'string') return null;
  const bytes = Buffer.from(text, 'base64');
  if (bytes.length !== length || bytes.toString('base64') !== text) return null;
  return new Uint8Array(bytes);
}

/** First 16 hex characters of SHA-256 over the raw public key bytes. */
export function releaseKeyId(publicKey: Uint8Array): string {
  return createHash('sha256').update(publicKey).digest('hex').slice(0, 16);
}

/** Make a new release key from the system CSPRNG (tweetnacl uses crypto.getRandomValues). */
export function generateReleaseKey(): ReleaseKey {
  const pair = nacl.sign.keyPair();
  return {
    kind: RELEASE_KEY_KIND,
    keyId: releaseKeyId(pair.publicKey),
    publicKey: Buffer.from(pair.publicKey).toString('base64'),
    secretKey: Buffer.from(pair.secretKey).toString('base64'),
  };
}

/** The public half, in the shape customers pin. */
export function pinnedKeyOf(key: ReleaseKey): PinnedReleaseKey {
  return { id: key.keyId, publicKey: key.publicKey };
}

const keyFileSchema = z.strictObject({
  kind: z.literal(RELEASE_KEY_KIND),
  keyId: z.string().regex(KEY_ID),
  publicKey: z.string(),
  secretKey: z.string(),
});

/**
 * Check a parsed key file object and return the raw secret key. Throws
 * UPLINK_ERR_RELEASE_KEY_INVALID naming what is wrong.
 */
export function parseReleaseKey(value: unknown, source = 'release key'): { key: ReleaseKey; secretKey: Uint8Array } {
  const parsed = keyFileSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw keyError(`${source}: ${issue.path.join('.') || 'file'}: ${issue.message}`, { source });
  }
  const key = parsed.data;
  const pub = decodeKeyBytes(key.publicKey, PUBLIC_KEY_BYTES);
  if (!pub) throw keyError(`${source}: publicKey is not ${PUBLIC_KEY_BYTES} bytes of base64`, { source });
  const secret = decodeKeyBytes(key.secretKey, SECRET_KEY_BYTES);
  if (!secret) throw keyError(`${source}: secretKey is not ${SECRET_KEY_BYTES} bytes of base64`, { source });
  // A tweetnacl secret key is seed || public key. Derive from the seed and compare both, so a
  // file spliced from two keys (which would sign with a key nobody pinned) is caught here.
  const derived = nacl.sign.keyPair.fromSeed(secret.subarray(0, 32)).publicKey;
  if (!Buffer.from(derived).equals(Buffer.from(pub)) || !Buffer.from(secret.subarray(32)).equals(Buffer.from(pub))) {
    throw keyError(`${source}: secretKey does not belong to publicKey`, { source });
  }
  if (releaseKeyId(pub) !== key.keyId) throw keyError(`${source}: keyId does not match publicKey`, { source });
  return { key, secretKey: secret };
}

/**
 * Write a new key file with mode 0600. Refuses to replace an existing file
 * (UPLINK_ERR_CONFLICT): losing a release key means customers must re-pin.
 */
export async function writeReleaseKey(file: string, key: ReleaseKey): Promise<void> {
  parseReleaseKey(key, 'new release key');
  let handle;
  try {
    handle = await open(file, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new UplinkError('UPLINK_ERR_CONFLICT', `${file} already exists; refusing to overwrite a release key`, { details: { file } });
    }
    throw keyError(`${file}: cannot create key file: ${(err as Error).message}`, { file }, err);
  }
  try {
    await handle.chmod(0o600); // the open() mode is filtered by umask; be exact.
    await handle.writeFile(JSON.stringify(key, null, 2) + '\n');
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Load and check a key file. Like ssh, a key file readable by group or others is refused:
 * a signing key that leaked through a shared machine cannot be taken back from every
 * customer's pin list quickly.
 */
export async function loadReleaseKey(file: string): Promise<{ key: ReleaseKey; secretKey: Uint8Array }> {
  let info;
  try {
    info = await stat(file);
  } catch (err) {
    throw keyError(`${file}: cannot read key file: ${(err as Error).message}`, { file }, err);
  }
  if (!info.isFile()) throw keyError(`${file}: not a regular file`, { file });
  if (info.size > MAX_RELEASE_KEY_FILE_BYTES) throw keyError(`${file}: larger than ${MAX_RELEASE_KEY_FILE_BYTES} bytes, not a key file`, { file });
  if (process.platform !== 'win32' && (info.mode & 0o077) !== 0) {
    const mode = (info.mode & 0o777).toString(8).padStart(4, '0');
    throw keyError(`${file}: permissions ${mode} are too open; run chmod 600 ${file}`, { file, mode });
  }
  const handle = await open(file, 'r');
  let text: string;
  try {
    const buf = Buffer.alloc(MAX_RELEASE_KEY_FILE_BYTES + 1);
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
    if (bytesRead > MAX_RELEASE_KEY_FILE_BYTES) throw keyError(`${file}: larger than ${MAX_RELEASE_KEY_FILE_BYTES} bytes, not a key file`, { file });
    text = buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await handle.close();
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw keyError(`${file}: not JSON`, { file }, err);
  }
  return parseReleaseKey(value, file);
}

/**
 * Check pinned keys from the agent's config and return them keyed by id, with raw bytes.
 * An id that is not the hash of its public key is refused: pins are copied by hand.
 */
export function parsePinnedKeys(keys: readonly PinnedReleaseKey[]): Map<string, Uint8Array> {
  const byId = new Map<string, Uint8Array>();
  keys.forEach((pin, i) => {
    const where = `releaseKeys[${i}]`;
    if (!pin || typeof pin !== 'object' || typeof pin.id !== 'string' || typeof pin.publicKey !== 'string') {
      throw keyError(`${where}: expected {id, publicKey}`, { index: i });
    }
    const pub = decodeKeyBytes(pin.publicKey, PUBLIC_KEY_BYTES);
    if (!pub) throw keyError(`${where}: publicKey is not ${PUBLIC_KEY_BYTES} bytes of base64`, { index: i, id: pin.id });
    if (releaseKeyId(pub) !== pin.id) throw keyError(`${where}: id ${pin.id} does not match the public key (expected ${releaseKeyId(pub)})`, { index: i, id: pin.id });
    byId.set(pin.id, pub);
  });
  return byId;
}
