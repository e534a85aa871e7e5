/**
 * Deterministic packing of a stack directory into a .tar.gz for `uplink release create`.
 *
 * Same directory contents => byte-identical tar, and byte-identical gzip for a given zlib
 * build: entries sorted by the UTF-8 bytes of their path, regular files only (directories
 * are implied by paths), mtime 0, uid/gid 0, empty user/group names, mode 0644 or 0755
 * (0755 when the source has any execute bit), gzip header with mtime 0 and OS byte 255
 * ("unknown") so the host OS does not leak into the bytes. Reproducible archives let a
 * customer rebuild a release from the vendor's tagged source and compare digests.
 *
 * Only regular files and directories are packed; a symlink, socket, FIFO or device in the
 * source is refused (UPLINK_ERR_RELEASE_SOURCE_INVALID) rather than silently followed or
 * skipped, because either choice would make the release differ from what the vendor sees.
 */
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync, constants as zconst } from 'node:zlib';
import tar from 'tar-stream';
import { UplinkError } from '../errors.js';
import { resolveReleaseLimits, type ReleaseLimits } from './limits.js';
import type { FileMode, ManifestFile } from './manifest.js';
import { collisionKey, compareReleasePaths, normalizeReleasePath } from './release-path.js';

/**
 * Names skipped wherever they appear: terraform's working data (providers, which also hold
 * symlinks), local state that must never ship to customers, and VCS metadata.
 */
export const DEFAULT_PACK_EXCLUDES: readonly string[] = Object.freeze([
  '.terraform',
  '.git',
  'terraform.tfstate',
  'terraform.tfstate.backup',
  '.terraform.tfstate.lock.info',
]);

export interface PackOptions {
  limits?: Partial<ReleaseLimits>;
  /** Base names to skip at any depth; replaces DEFAULT_PACK_EXCLUDES. */
  exclude?: readonly string[];
}

export interface PackedArchive {
  /** The .tar.gz bytes. */
  archive: Buffer;
  /** Hex SHA-256 of `archive`. */
  sha256: string;
  /** One entry per packed file, sorted like the archive. */
  files: ManifestFile[];
}

interface SourceFile {
  path: string;
  abs: string;
  mode: FileMode;
  size: number;
}

/** gzip header byte 9 is the OS that wrote it; 255 means unknown, the same everywhere. */
const GZIP_OS_BYTE = 9;
const GZIP_OS_UNKNOWN = 0xff;

function sourceError(message: string, details: Record<string, unknown>): UplinkError {
  return new UplinkError('UPLINK_ERR_RELEASE_SOURCE_INVALID', message, { details });
}

async function collect(root: string, limits: ReleaseLimits, exclude: ReadonlySet<string>): Promise<SourceFile[]> {
  const out: SourceFile[] = [];
  const keys = new Map<string, string>();
  let total = 0;
  const walk = async (absDir: string, relDir: string): Promise<void> => {
    const entries = await readdir(absDir, { withFileTypes: true });
    for (const entry of entries) {
      if (exclude.has(entry.name)) continue;
      const rel = relDir ? `${relDir}/${entry.name}` : entry.name;
      const abs = join(absDir, entry.name);
      let path: string;
      try {
        path = normalizeReleasePath(rel, limits.maxPathLength);
      } catch (err) {
        if (err instanceof UplinkError && err.code === 'UPLINK_ERR_RELEASE_UNSAFE_PATH') {
          throw sourceError(`${abs}: the name cannot be packed (${String(err.details?.reason)})`, { path: rel });
        }
        throw err;
      }
      const info = await lstat(abs);
      if (info.isSymbolicLink()) throw sourceError(`${abs} is a symbolic link; releases hold regular files only`, { path: rel, type: 'symlink' });
      if (info.isDirectory()) {
        await walk(abs, rel);
        continue;
      }
      if (!info.isFile()) throw sourceError(`${abs} is not a regular file or directory`, { path: rel, type: 'special' });
      const key = collisionKey(path);
      const other = keys.get(key);
      if (other !== undefined) {
        throw new UplinkError('UPLINK_ERR_RELEASE_NAME_COLLISION', `${JSON.stringify(rel)} and ${JSON.stringify(other)} are the same name on case- or normalisation-insensitive filesystems`, {
          details: { path: rel, other },
        });
      }
      keys.set(key, rel);
      if (out.length + 1 > limits.maxFiles) {
        throw new UplinkError('UPLINK_ERR_RELEASE_TOO_MANY_FILES', `${root} holds more than ${limits.maxFiles} files`, { details: { maxFiles: limits.maxFiles } });
      }
      total += info.size;
      if (total > limits.maxUncompressedBytes) {
        throw new UplinkError('UPLINK_ERR_RELEASE_TOO_LARGE', `${root} holds more than ${limits.maxUncompressedBytes} bytes`, {
          details: { maxUncompressedBytes: limits.maxUncompressedBytes },
        });
      }
      out.push({ path, abs, mode: (info.mode & 0o111) !== 0 ? 0o755 : 0o644, size: info.size });
    }
  };
  await walk(root, '');
  return out.sort((a, b) => compareReleasePaths(a.path, b.path));
}

async function tarFiles(files: SourceFile[], limits: ReleaseLimits): Promise<{ tar: Buffer; manifestFiles: ManifestFile[] }> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (chunk: unknown) => {
    chunks.push(chunk as Buffer);
  });
  const ended = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  const manifestFiles: ManifestFile[] = [];
  let total = 0;
  for (const file of files) {
    const data = await readFile(file.abs);
    // Re-check with the bytes actually read: a file may have grown since lstat.
    total += data.length;
    if (total > limits.maxUncompressedBytes) {
      throw new UplinkError('UPLINK_ERR_RELEASE_TOO_LARGE', `files grew past ${limits.maxUncompressedBytes} bytes while packing`, {
        details: { maxUncompressedBytes: limits.maxUncompressedBytes },
      });
    }
    await new Promise<void>((resolve, reject) => {
      pack.entry(
        { name: file.path, type: 'file', size: data.length, mode: file.mode, mtime: new Date(0), uid: 0, gid: 0, uname: '', gname: '' },
        data,
        (err) => (err ? reject(err) : resolve()),
      );
    });
    manifestFiles.push({ path: file.path, sha256: createHash('sha256').update(data).digest('hex'), size: data.length, mode: file.mode });
  }
  pack.finalize();
  await ended;
  return { tar: Buffer.concat(chunks), manifestFiles };
}

/**
 * Pack `dir` into a deterministic .tar.gz. Throws UPLINK_ERR_RELEASE_SOURCE_INVALID,
 * _NAME_COLLISION, _TOO_MANY_FILES, _TOO_LARGE or _PATH_TOO_LONG.
 */
export async function packDirectory(dir: string, opts: PackOptions = {}): Promise<PackedArchive> {
  const limits = resolveReleaseLimits(opts.limits ?? {});
  const rootInfo = await lstat(dir).catch((err: unknown) => {
    throw sourceError(`${dir}: ${(err as Error).message}`, { dir });
  });
  if (!rootInfo.isDirectory()) throw sourceError(`${dir} is not a directory`, { dir });
  const files = await collect(dir, limits, new Set(opts.exclude ?? DEFAULT_PACK_EXCLUDES));
  if (files.length === 0) throw sourceError(`${dir} holds no files to pack`, { dir });
  const { tar: tarBytes, manifestFiles } = await tarFiles(files, limits);
  const archive = gzipSync(tarBytes, { level: zconst.Z_BEST_COMPRESSION });
  archive[GZIP_OS_BYTE] = GZIP_OS_UNKNOWN;
  if (archive.length > limits.maxArchiveBytes) {
    throw new UplinkError('UPLINK_ERR_RELEASE_TOO_LARGE', `the archive is ${archive.length} bytes; the limit is ${limits.maxArchiveBytes}`, {
      details: { archiveSize: archive.length, maxArchiveBytes: limits.maxArchiveBytes },
    });
  }
  return { archive, sha256: createHash('sha256').update(archive).digest('hex'), files: manifestFiles };
}
