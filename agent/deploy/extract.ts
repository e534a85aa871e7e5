/**
 * Safe extraction of a verified release into a fresh work directory.
 *
 * Two passes. The first decides everything in memory: gunzip with an output cap, parse
 * the tar strictly (tar-reader.ts), check every path (release-path.ts), reject collisions
 * under case and Unicode folding, and match every file against the signed manifest (no
 * missing, no extra, same size, mode and SHA-256). Any violation rejects the whole release
 * and nothing is created: not even the work directory. Only then does the second pass
 * create a new directory with mkdtemp and write into it with O_EXCL | O_NOFOLLOW, so no
 * pre-existing file or link can be written through.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { UplinkError, toUplinkError } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import { resolveReleaseLimits, type ReleaseLimits } from '../../shared/release/limits.js';
import type { Manifest } from '../../shared/release/manifest.js';
import { collisionKey, compareReleasePaths, normalizeReleasePath } from '../../shared/release/release-path.js';
import { maxPaxBytes, readTar } from './tar-reader.js';

const BLOCK = 512;
/** GNU tar pads archives to 20-block records; allow one record of trailing zeros. */
const RECORD_BYTES = 20 * BLOCK;

export interface ExtractOptions {
  /** Directory under which the fresh work directory is created. */
  parentDir: string;
  limits?: Partial<ReleaseLimits>;
  logger?: Logger;
}

/** A planned file: checked, not yet written. */
export interface PlannedFile {
  path: string;
  mode: number;
  data: Buffer;
}

export interface ExtractionPlan {
  /** Directories to create (explicit entries and parents of files), parents first. */
  directories: string[];
  files: PlannedFile[];
  bytes: number;
}

export interface ExtractedRelease {
  /** The fresh work directory holding the stack. */
  dir: string;
  files: number;
  bytes: number;
}

/**
 * Upper bound of the tar for given limits: file data plus, per entry, a header, data
 * padding and a pax header with its data, plus end marker and record padding.
 */
export function maxTarBytes(limits: ReleaseLimits): number {
  const perEntry = BLOCK + (BLOCK - 1) + BLOCK + Math.ceil(maxPaxBytes(limits) / BLOCK) * BLOCK;
  return limits.maxUncompressedBytes + (limits.maxFiles + 1) * perEntry + RECORD_BYTES;
}

function gunzip(archive: Buffer, limits: ReleaseLimits): Buffer {
  const cap = maxTarBytes(limits);
  try {
    return gunzipSync(archive, { maxOutputLength: cap });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError) {
      throw new UplinkError('UPLINK_ERR_RELEASE_TOO_LARGE', `archive inflates past ${cap} bytes`, { details: { maxTarBytes: cap } });
    }
    throw new UplinkError('UPLINK_ERR_RELEASE_MALFORMED', `archive is not valid gzip: ${(err as Error).message}`, { cause: err });
  }
}

function collision(path: string, other: string, why: string): UplinkError {
  return new UplinkError('UPLINK_ERR_RELEASE_NAME_COLLISION', `${JSON.stringify(path)} collides with ${JSON.stringify(other)} (${why})`, {
    details: { path, other, reason: why },
  });
}

function mismatch(message: string, details: Record<string, unknown>): UplinkError {
  return new UplinkError('UPLINK_ERR_RELEASE_DIGEST_MISMATCH', message, { details });
}

/**
 * First pass: decide, in memory, exactly what would be written. Throws on the first
 * violation; see the module comment for the checks.
 */
export function planExtraction(archive: Buffer, manifest: Manifest, limitsIn: Partial<ReleaseLimits> = {}): ExtractionPlan {
  const limits = resolveReleaseLimits(limitsIn);
  if (archive.length > limits.maxArchiveBytes) {
    throw new UplinkError('UPLINK_ERR_RELEASE_TOO_LARGE', `archive is ${archive.length} bytes; the limit is ${limits.maxArchiveBytes}`, {
      details: { archiveSize: archive.length, maxArchiveBytes: limits.maxArchiveBytes },
    });
  }
  const entries = readTar(gunzip(archive, limits), limits);

  // Every name, file or directory, by its folded key: two entries may not share one.
  const seen = new Map<string, { path: string; type: 'file' | 'directory' }>();
  const explicitDirs: string[] = [];
  const files: PlannedFile[] = [];
  for (const entry of entries) {
    const path = normalizeReleasePath(entry.path, limits.maxPathLength);
    const key = collisionKey(path);
    const other = seen.get(key);
    if (other) {
      // A directory listed twice is harmless in tar; anything else is ambiguous.
      if (!(other.type === 'directory' && entry.type === 'directory' && other.path === path)) {
        throw collision(path, other.path, other.path === path ? 'duplicate entry' : 'same name ignoring case and Unicode normalisation');
      }
      continue;
    }
    seen.set(key, { path, type: entry.type });
    if (entry.type === 'directory') explicitDirs.push(path);
    else files.push({ path, mode: entry.mode, data: entry.data });
  }

  // Parents of files are directories: no file may sit where another file needs a directory.
  const parents = new Map<string, string>();
  for (const file of files) {
    const parts = file.path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      const key = collisionKey(dir);
      const other = seen.get(key);
      if (other && other.type === 'file') throw collision(file.path, other.path, 'a file is used as a directory');
      const known = parents.get(key);
      if (known !== undefined && known !== dir) throw collision(dir, known, 'same directory name ignoring case and Unicode normalisation');
      if (other && other.type === 'directory' && other.path !== dir) throw collision(dir, other.path, 'same directory name ignoring case and Unicode normalisation');
      parents.set(key, dir);
    }
  }

  // The archive must hold exactly the signed files, byte for byte.
  const expected = new Map(manifest.files.map((f) => [f.path, f]));
  let bytes = 0;
  for (const file of files) {
    const want = expected.get(file.path);
    if (!want) throw mismatch(`archive holds ${JSON.stringify(file.path)}, which the manifest does not list`, { path: file.path, reason: 'extra' });
    if (want.size !== file.data.length) {
      throw mismatch(`${JSON.stringify(file.path)} is ${file.data.length} bytes; the manifest says ${want.size}`, { path: file.path, reason: 'size' });
    }
    if (want.mode !== file.mode) {
      throw mismatch(`${JSON.stringify(file.path)} has mode ${file.mode.toString(8)}; the manifest says ${want.mode.toString(8)}`, { path: file.path, reason: 'mode' });
    }
    const digest = createHash('sha256').update(file.data).digest();
    if (!timingSafeEqual(digest, Buffer.from(want.sha256, 'hex'))) {
      throw mismatch(`${JSON.stringify(file.path)} does not match its signed SHA-256`, { path: file.path, reason: 'sha256', actual: digest.toString('hex') });
    }
    expected.delete(file.path);
    bytes += file.data.length;
  }
  if (expected.size > 0) {
    const missing = [...expected.keys()];
    throw mismatch(`the archive lacks ${missing.length} signed file(s), first ${JSON.stringify(missing[0])}`, { reason: 'missing', missing: missing.slice(0, 20) });
  }

  const directories = [...new Set([...explicitDirs, ...parents.values()])].sort(
    (a, b) => a.split('/').length - b.split('/').length || compareReleasePaths(a, b),
  );
  return { directories, files, bytes };
}

/**
 * Verify-then-write: plan, then create a fresh directory under `parentDir` and write the
 * plan into it. On a write failure the new directory is removed. Returns its path.
 */
export async function extractRelease(archive: Buffer, manifest: Manifest, opts: ExtractOptions): Promise<ExtractedRelease> {
  const plan = planExtraction(archive, manifest, opts.limits ?? {});
  const log = (opts.logger ?? silentLogger).child({ component: 'extract', version: manifest.version });
  const dir = await mkdtemp(join(opts.parentDir, 'release-'));
  try {
    for (const sub of plan.directories) await mkdir(join(dir, sub), { mode: 0o755 });
    for (const file of plan.files) {
      const handle = await open(join(dir, file.path), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, file.mode);
      try {
        await handle.writeFile(file.data);
        await handle.chmod(file.mode); // open() applied the umask; the signed mode is exact
      } finally {
        await handle.close();
      }
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    log.error({ err, dir }, 'extraction failed; work directory removed');
    throw toUplinkError(err);
  }
  log.info({ dir, files: plan.files.length, bytes: plan.bytes }, 'release extracted');
  return { dir, files: plan.files.length, bytes: plan.bytes };
}
