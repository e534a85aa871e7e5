/**
 * The release manifest: what a vendor signs and what the agent checks before it writes a
 * byte of a stack to disk.
 *
 * The signature is a detached Ed25519 signature over
 *   "uplink-release-manifest-v1\n" + canonicalJson(manifest)
 * The prefix separates these signatures from anything else the same key could ever sign.
 * Everything the agent decides on is inside the signed bytes: version, appliance binding,
 * `allowDowngrade`, every file's digest, and the archive digest and size, so a relay can
 * neither swap the archive nor flip a flag without breaking the signature.
 */
import nacl from 'tweetnacl';
import { z } from 'zod';
import { UplinkError } from '../errors.js';
import { decodeKeyBytes } from './release-key.js';
import { collisionKey, compareReleasePaths, normalizeReleasePath } from './release-path.js';
import { RELEASE_LIMIT_DEFAULTS, type ReleaseLimits } from './limits.js';

export const MANIFEST_FORMAT = 1;
export const MANIFEST_SIGNATURE_DOMAIN = 'uplink-release-manifest-v1\n';

/** Release versions: semver or any other dotted/dashed token, at most 128 characters. */
export const VERSION_PATTERN = /^[0-9A-Za-z][0-9A-Za-z._+-]{0,127}$/;
/** Appliance names a release may be bound to; '*' (from `--all`) binds to every appliance. */
export const APPLIANCE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
export const ALL_APPLIANCES = '*';

/** Only these two modes are packed, so that a release never carries setuid or odd bits. */
export const FILE_MODES = [0o644, 0o755] as const;
export type FileMode = (typeof FILE_MODES)[number];

export interface ManifestFile {
  /** Relative, NFC-normalised, '/'-separated path (see release-path.ts). */
  path: string;
  /** Lower-case hex SHA-256 of the file's bytes. */
  sha256: string;
  size: number;
  mode: FileMode;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  version: string;
  /** The appliance name this release may be applied to, or '*' for every appliance. */
  appliance: string;
  /** Set by `uplink release create --allow-downgrade`; signed, so only the key holder can set it. */
  allowDowngrade: boolean;
  /** Sorted by the UTF-8 bytes of `path`. */
  files: ManifestFile[];
  archiveSha256: string;
  archiveSize: number;
  /** ISO-8601 UTC time of `release create`. */
  createdAt: string;
  keyId: string;
  notes?: string;
}

/** What travels from the CLI through the relay to the agent. */
export interface SignedRelease {
  manifest: Manifest;
  /** base64 of the 64-byte detached signature. */
  signature: string;
  /** The .tar.gz bytes. */
  archive: Buffer;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;
const size = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

const manifestSchema = z.strictObject({
  format: z.literal(MANIFEST_FORMAT),
  version: z.string().regex(VERSION_PATTERN, 'must be 1-128 characters of letters, digits, ".", "_", "+", "-"'),
  appliance: z.union([z.literal(ALL_APPLIANCES), z.string().regex(APPLIANCE_PATTERN, 'must be an appliance name or "*"')]),
  allowDowngrade: z.boolean(),
  files: z.array(
    z.strictObject({
      path: z.string(),
      sha256: z.string().regex(SHA256_HEX, 'must be 64 lower-case hex characters'),
      size,
      mode: z.union([z.literal(0o644), z.literal(0o755)]),
    }),
  ),
  archiveSha256: z.string().regex(SHA256_HEX, 'must be 64 lower-case hex characters'),
  archiveSize: size,
  createdAt: z.string().regex(ISO_UTC, 'must be an ISO-8601 UTC time').refine((s) => !Number.isNaN(Date.parse(s)), 'must be a valid time'),
  keyId: z.string().regex(/^[0-9a-f]{16}$/, 'must be 16 lower-case hex characters'),
  notes: z.string().optional(),
});

/**
 * Encode a JSON value canonically: object keys sorted (by UTF-16 code unit; every key in a
 * manifest is ASCII), no whitespace, strings as JSON.stringify writes them, integers only
 * (no float formatting differences between languages). `undefined` members are omitted.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'boolean') return JSON.stringify(value);
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw malformed('manifest numbers must be safe integers');
    return String(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object') {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) throw malformed('manifest values must be plain JSON');
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  throw malformed(`manifest holds a ${typeof value}, which JSON cannot carry`);
}

function malformed(message: string, details: Record<string, unknown> = {}): UplinkError {
  return new UplinkError('UPLINK_ERR_RELEASE_MALFORMED', message, { details });
}

/** The exact bytes that are signed. */
export function manifestSigningBytes(manifest: unknown): Uint8Array {
  return new Uint8Array(Buffer.from(MANIFEST_SIGNATURE_DOMAIN + canonicalJson(manifest), 'utf8'));
}

/** Sign a manifest with a 64-byte tweetnacl secret key; returns base64. */
export function signManifest(manifest: Manifest, secretKey: Uint8Array): string {
  return Buffer.from(nacl.sign.detached(manifestSigningBytes(manifest), secretKey)).toString('base64');
}

/**
 * True when `signature` (base64) is a valid signature of `manifest` by `publicKey`.
 * A malformed signature is simply not valid; a manifest that is not plain JSON throws
 * UPLINK_ERR_RELEASE_MALFORMED.
 */
export function verifyManifestSignature(manifest: unknown, signature: unknown, publicKey: Uint8Array): boolean {
  const sig = typeof signature === 'string' ? decodeKeyBytes(signature, nacl.sign.signatureLength) : null;
  if (!sig) return false;
  return nacl.sign.detached.verify(manifestSigningBytes(manifest), sig, publicKey);
}

/**
 * Validate an untrusted manifest against the format and the limits. Throws
 * UPLINK_ERR_RELEASE_MALFORMED (shape, unsorted or duplicate files, non-NFC paths),
 * UPLINK_ERR_RELEASE_UNSAFE_PATH / _PATH_TOO_LONG (a listed path),
 * UPLINK_ERR_RELEASE_NAME_COLLISION, _TOO_MANY_FILES or _TOO_LARGE.
 */
export function parseManifest(value: unknown, limits: ReleaseLimits = RELEASE_LIMIT_DEFAULTS): Manifest {
  return checkManifestRules(checkManifestShape(value), limits);
}

/**
 * The structural half of `parseManifest`: field names and types only. The agent runs it
 * before verifying the signature so that it never canonicalises (recurses into) a value of
 * unbounded depth; it returns a fresh copy holding exactly the schema's fields.
 */
export function checkManifestShape(value: unknown): Manifest {
  const parsed = manifestSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.join('.') || (issue.code === 'unrecognized_keys' ? issue.keys.join(', ') : 'manifest');
    throw malformed(`manifest ${field}: ${issue.message}`, { field });
  }
  return parsed.data as Manifest;
}

/** The semantic half of `parseManifest`: paths, order, collisions and limits. */
export function checkManifestRules(manifest: Manifest, limits: ReleaseLimits = RELEASE_LIMIT_DEFAULTS): Manifest {
  if (manifest.files.length > limits.maxFiles) {
    throw new UplinkError('UPLINK_ERR_RELEASE_TOO_MANY_FILES', `manifest lists ${manifest.files.length} files; the limit is ${limits.maxFiles}`, {
      details: { files: manifest.files.length, maxFiles: limits.maxFiles },
    });
  }
  if (manifest.archiveSize > limits.maxArchiveBytes) {
    throw new UplinkError('UPLINK_ERR_RELEASE_TOO_LARGE', `archive is ${manifest.archiveSize} bytes; the limit is ${limits.maxArchiveBytes}`, {
      details: { archiveSize: manifest.archiveSize, maxArchiveBytes: limits.maxArchiveBytes },
    });
  }
  if (manifest.notes !== undefined && Buffer.byteLength(manifest.notes, 'utf8') > limits.maxNotesBytes) {
    throw new UplinkError('UPLINK_ERR_RELEASE_TOO_LARGE', `release notes exceed ${limits.maxNotesBytes} bytes`, {
      details: { maxNotesBytes: limits.maxNotesBytes },
    });
  }
  let total = 0;
  const keys = new Map<string, string>();
  manifest.files.forEach((file, i) => {
    if (normalizeReleasePath(file.path, limits.maxPathLength) !== file.path) {
      throw malformed(`manifest files[${i}].path is not NFC-normalised`, { path: file.path });
    }
    if (i > 0 && compareReleasePaths(manifest.files[i - 1]!.path, file.path) >= 0) {
      throw malformed(`manifest files are not sorted and unique at ${JSON.stringify(file.path)}`, { path: file.path });
    }
    const key = collisionKey(file.path);
    const other = keys.get(key);
    if (other !== undefined) {
      throw new UplinkError('UPLINK_ERR_RELEASE_NAME_COLLISION', `${JSON.stringify(file.path)} collides with ${JSON.stringify(other)}`, {
        details: { path: file.path, other },
      });
    }
    keys.set(key, file.path);
    total += file.size;
  });
  if (total > limits.maxUncompressedBytes) {
    throw new UplinkError('UPLINK_ERR_RELEASE_TOO_LARGE', `files total ${total} bytes; the limit is ${limits.maxUncompressedBytes}`, {
      details: { totalBytes: total, maxUncompressedBytes: limits.maxUncompressedBytes },
    });
  }
  return manifest;
}

/** Inputs of `buildManifest`, as the CLI collects them. */
export interface ManifestInput {
  version: string;
  appliance: string;
  allowDowngrade: boolean;
  files: ManifestFile[];
  archiveSha256: string;
  archiveSize: number;
  keyId: string;
  createdAt: Date;
  notes?: string | undefined;
}

/**
 * Assemble a manifest at `release create` time and check it with the same rules the agent
 * applies, so a bad `--version` or `--appliance` fails on the vendor's machine with
 * UPLINK_ERR_USAGE instead of on every agent.
 */
export function buildManifest(input: ManifestInput, limits: ReleaseLimits = RELEASE_LIMIT_DEFAULTS): Manifest {
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    version: input.version,
    appliance: input.appliance,
    allowDowngrade: input.allowDowngrade,
    files: [...input.files].sort((a, b) => compareReleasePaths(a.path, b.path)),
    archiveSha256: input.archiveSha256,
    archiveSize: input.archiveSize,
    createdAt: input.createdAt.toISOString(),
    keyId: input.keyId,
    ...(input.notes === undefined ? {} : { notes: input.notes }),
  };
  try {
    return parseManifest(manifest, limits);
  } catch (err) {
    if (err instanceof UplinkError && err.code === 'UPLINK_ERR_RELEASE_MALFORMED') {
      throw new UplinkError('UPLINK_ERR_USAGE', err.message.replace(/^manifest /, ''), { details: err.details, cause: err });
    }
    throw err;
  }
}
