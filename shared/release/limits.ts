/**
 * Size and count limits for release bundles. The vendor CLI applies them when it packs a
 * stack and the agent applies them again to whatever arrives, so a release that packs
 * within the defaults also extracts within them. Every number that comes from a bundle
 * (sizes in tar headers, entry counts, path lengths, note text) is checked against one of
 * these before it is trusted.
 */
import { z } from 'zod';
import { UplinkError } from '../errors.js';

export interface ReleaseLimits {
  /** Largest compressed archive (the .tar.gz), in bytes. */
  readonly maxArchiveBytes: number;
  /** Largest total of file sizes once uncompressed, in bytes. */
  readonly maxUncompressedBytes: number;
  /** Most entries (files and directories) in one release. */
  readonly maxFiles: number;
  /** Longest entry path, in UTF-8 bytes (each segment is also capped at NAME_MAX_BYTES). */
  readonly maxPathLength: number;
  /** Longest release notes, in UTF-8 bytes. */
  readonly maxNotesBytes: number;
}

const MIB = 1024 * 1024;

/** Defaults sized for Terraform stacks: text files and a few modules, never provider binaries. */
export const RELEASE_LIMIT_DEFAULTS: Readonly<ReleaseLimits> = Object.freeze({
  maxArchiveBytes: 64 * MIB,
  maxUncompressedBytes: 256 * MIB,
  maxFiles: 10_000,
  maxPathLength: 512,
  maxNotesBytes: 16 * 1024,
});

/** The largest segment (file or directory name) any Linux filesystem accepts. */
export const NAME_MAX_BYTES = 255;

const positive = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);

const limitsSchema = z.strictObject({
  maxArchiveBytes: positive.optional(),
  maxUncompressedBytes: positive.optional(),
  maxFiles: positive.optional(),
  maxPathLength: positive.max(4096).optional(),
  maxNotesBytes: positive.optional(),
});

/**
 * Merge caller overrides over the defaults. Unknown keys and non-positive values are
 * rejected with UPLINK_ERR_CONFIG_INVALID naming the field, so a misspelt limit never
 * silently falls back to the default.
 */
export function resolveReleaseLimits(overrides: unknown = {}): Readonly<ReleaseLimits> {
  const parsed = limitsSchema.safeParse(overrides ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.join('.') || (issue.code === 'unrecognized_keys' ? issue.keys.join(', ') : 'limits');
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `release limits: ${field}: ${issue.message}`, { details: { field } });
  }
  const merged: ReleaseLimits = { ...RELEASE_LIMIT_DEFAULTS };
  for (const [key, value] of Object.entries(parsed.data)) {
    if (value !== undefined) (merged as unknown as Record<string, number>)[key] = value;
  }
  return Object.freeze(merged);
}
