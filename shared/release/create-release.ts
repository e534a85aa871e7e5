/**
 * `uplink release create` without the CLI: pack a stack, describe it in a manifest and
 * sign it. The result is what gets uploaded to the relay and, unchanged, sent to agents.
 */
import { UplinkError } from '../errors.js';
import { resolveReleaseLimits, type ReleaseLimits } from './limits.js';
import { ALL_APPLIANCES, APPLIANCE_PATTERN, VERSION_PATTERN, buildManifest, signManifest, type SignedRelease } from './manifest.js';
import { packDirectory } from './pack.js';
import type { ReleaseKey } from './release-key.js';

export interface CreateReleaseOptions {
  version: string;
  /** An appliance name (`--appliance`), or '*' (`--all`). */
  appliance: string;
  /** `--allow-downgrade`: lets agents apply this release over a newer one. Signed. */
  allowDowngrade?: boolean;
  notes?: string;
  /** The loaded key file (see loadReleaseKey). */
  key: { key: ReleaseKey; secretKey: Uint8Array };
  limits?: Partial<ReleaseLimits>;
  exclude?: readonly string[];
  /** Time written as `createdAt`; tests pass a fixed one. */
  now?: Date;
}

/**
 * Pack, describe and sign. Throws UPLINK_ERR_USAGE for a bad version or appliance (before
 * reading the directory) and the pack errors for a bad directory.
 */
export async function createRelease(dir: string, opts: CreateReleaseOptions): Promise<SignedRelease> {
  if (!VERSION_PATTERN.test(opts.version)) {
    throw new UplinkError('UPLINK_ERR_USAGE', `--version ${JSON.stringify(opts.version)}: use letters, digits, ".", "_", "+", "-" (at most 128)`);
  }
  if (opts.appliance !== ALL_APPLIANCES && !APPLIANCE_PATTERN.test(opts.appliance)) {
    throw new UplinkError('UPLINK_ERR_USAGE', `--appliance ${JSON.stringify(opts.appliance)} is not an appliance name`);
  }
  const limits = resolveReleaseLimits(opts.limits ?? {});
  const packed = await packDirectory(dir, { limits, ...(opts.exclude ? { exclude: opts.exclude } : {}) });
  const manifest = buildManifest(
    {
      version: opts.version,
      appliance: opts.appliance,
      allowDowngrade: opts.allowDowngrade ?? false,
      files: packed.files,
      archiveSha256: packed.sha256,
      archiveSize: packed.archive.length,
      keyId: opts.key.key.keyId,
      createdAt: opts.now ?? new Date(),
      notes: opts.notes,
    },
    limits,
  );
  return { manifest, signature: signManifest(manifest, opts.key.secretKey), archive: packed.archive };
}
