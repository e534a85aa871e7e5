/**
 * The agent's trust decision for a release, made in memory before anything touches disk.
 *
 * Order matters and is fixed: shape (so nothing of unbounded depth is canonicalised), key
 * id against the pinned keys, signature, then the signed fields (limits, paths), appliance
 * binding, archive size and digest, and version order. A relay that alters any byte of the
 * manifest fails at the signature; one that swaps the archive fails at the digest, which
 * is itself signed.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { UplinkError } from '../../shared/errors.js';
import { resolveReleaseLimits, type ReleaseLimits } from '../../shared/release/limits.js';
import { ALL_APPLIANCES, checkManifestRules, checkManifestShape, verifyManifestSignature, type Manifest } from '../../shared/release/manifest.js';
import { parsePinnedKeys, type PinnedReleaseKey } from '../../shared/release/release-key.js';
import { compareVersions } from '../../shared/release/version-order.js';

/** The release last applied successfully on this appliance. */
export interface AppliedRelease {
  version: string;
  archiveSha256: string;
}

export interface VerifyReleaseOptions {
  /** The agent's `releaseKeys`. */
  pinnedKeys: readonly PinnedReleaseKey[];
  /** This appliance's name. */
  appliance: string;
  /**
   * The last successfully applied release, or null when none was (first deployment) or
   * when the caller does not enforce ordering (a plan-only run changes nothing).
   */
  lastApplied: AppliedRelease | null;
  limits?: Partial<ReleaseLimits>;
}

/** An untrusted release as received from the relay. */
export interface ReceivedRelease {
  manifest: unknown;
  signature: unknown;
  archive: Buffer;
}

export interface VerifiedRelease {
  manifest: Manifest;
  archive: Buffer;
  keyId: string;
  /** True when this release is older than (or re-uses the version of) the last applied one and allowDowngrade let it through. */
  downgrade: boolean;
}

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

/**
 * Verify a received release. Returns the typed manifest on success; throws an UplinkError
 * with one of UPLINK_ERR_RELEASE_MALFORMED, _UNKNOWN_KEY, _BAD_SIGNATURE, _TOO_LARGE,
 * _TOO_MANY_FILES, _UNSAFE_PATH, _PATH_TOO_LONG, _NAME_COLLISION, _WRONG_APPLIANCE,
 * _DIGEST_MISMATCH, _DOWNGRADE, or _KEY_INVALID (a bad pin in the agent's own config).
 */
export function verifyRelease(release: ReceivedRelease, opts: VerifyReleaseOptions): VerifiedRelease {
  const limits = resolveReleaseLimits(opts.limits ?? {});
  const pins = parsePinnedKeys(opts.pinnedKeys);
  if (!Buffer.isBuffer(release.archive)) throw new UplinkError('UPLINK_ERR_RELEASE_MALFORMED', 'release archive is missing');
  // Before any hashing: an oversized upload costs nothing more than this comparison.
  if (release.archive.length > limits.maxArchiveBytes) {
    throw new UplinkError('UPLINK_ERR_RELEASE_TOO_LARGE', `archive is ${release.archive.length} bytes; the limit is ${limits.maxArchiveBytes}`, {
      details: { archiveSize: release.archive.length, maxArchiveBytes: limits.maxArchiveBytes },
    });
  }
  const shaped = checkManifestShape(release.manifest);
  const publicKey = pins.get(shaped.keyId);
  if (!publicKey) {
    throw new UplinkError('UPLINK_ERR_RELEASE_UNKNOWN_KEY', `release is signed by key ${shaped.keyId}, which is not pinned (pinned: ${[...pins.keys()].join(', ') || 'none'})`, {
      details: { keyId: shaped.keyId, pinned: [...pins.keys()] },
    });
  }
  // `shaped` holds exactly the schema's fields, so its canonical bytes are those the vendor signed.
  if (!verifyManifestSignature(shaped, release.signature, publicKey)) {
    throw new UplinkError('UPLINK_ERR_RELEASE_BAD_SIGNATURE', `release ${shaped.version}: the manifest signature does not verify with key ${shaped.keyId}`, {
      details: { keyId: shaped.keyId, version: shaped.version },
    });
  }
  const manifest = checkManifestRules(shaped, limits);
  if (manifest.appliance !== ALL_APPLIANCES && manifest.appliance !== opts.appliance) {
    throw new UplinkError('UPLINK_ERR_RELEASE_WRONG_APPLIANCE', `release ${manifest.version} is bound to appliance ${manifest.appliance}, not ${opts.appliance}`, {
      details: { bound: manifest.appliance, appliance: opts.appliance },
    });
  }
  const digest = sha256(release.archive);
  if (release.archive.length !== manifest.archiveSize || !timingSafeEqual(digest, Buffer.from(manifest.archiveSha256, 'hex'))) {
    throw new UplinkError('UPLINK_ERR_RELEASE_DIGEST_MISMATCH', `release ${manifest.version}: the archive does not match the signed digest`, {
      details: { expected: manifest.archiveSha256, actual: digest.toString('hex'), expectedSize: manifest.archiveSize, actualSize: release.archive.length },
    });
  }
  const downgrade = checkOrder(manifest, opts.lastApplied);
  return Object.freeze({ manifest: Object.freeze(manifest), archive: release.archive, keyId: manifest.keyId, downgrade });
}

/**
 * Newer versions pass. The same version passes only with the same archive (a re-apply of
 * identical content, e.g. after a failed run or to fix drift): a second, different build
 * under an old version number is how a replayed release would try to sneak back in.
 * Returns true when `allowDowngrade` was needed.
 */
function checkOrder(manifest: Manifest, last: AppliedRelease | null): boolean {
  if (!last) return false;
  const order = compareVersions(manifest.version, last.version);
  if (order > 0) return false;
  if (order === 0 && manifest.archiveSha256 === last.archiveSha256) return false;
  if (manifest.allowDowngrade) return true;
  const reason = order < 0 ? 'older' : 'same-version-different-content';
  const message =
    order < 0
      ? `release ${manifest.version} is older than the applied ${last.version}; create it with --allow-downgrade to roll back`
      : `release ${manifest.version} has the same version as the applied one but different content; give it a new version`;
  throw new UplinkError('UPLINK_ERR_RELEASE_DOWNGRADE', message, { details: { version: manifest.version, applied: last.version, reason } });
}
