/**
 * Path rules for entries in a release. Both sides use them: `uplink release create` refuses
 * to pack a name the agent would refuse, and the agent checks every tar entry with them
 * before it writes anything.
 *
 * A release path is relative, '/'-separated, NFC-normalised UTF-8, with no empty, '.' or
 * '..' segment, no backslash (a separator on Windows and an escape in many tools), no
 * drive letter and no control character.
 */
import { UplinkError } from '../errors.js';
import { NAME_MAX_BYTES } from './limits.js';

// C0 controls, DEL and C1 controls: never legitimate in a file name, and terminal-hostile.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const DRIVE = /^[A-Za-z]:/;

function unsafe(path: string, reason: string): UplinkError {
  return new UplinkError('UPLINK_ERR_RELEASE_UNSAFE_PATH', `unsafe path ${JSON.stringify(path)}: ${reason}`, {
    details: { path, reason },
  });
}

/**
 * Check one entry path and return its NFC form (the name that gets written). Throws
 * UPLINK_ERR_RELEASE_UNSAFE_PATH or UPLINK_ERR_RELEASE_PATH_TOO_LONG.
 */
export function normalizeReleasePath(path: string, maxPathLength: number): string {
  if (path.length === 0) throw unsafe(path, 'empty path');
  if (CONTROL.test(path)) throw unsafe(path, 'control character');
  if (path.includes('\\')) throw unsafe(path, 'backslash');
  if (path.startsWith('/')) throw unsafe(path, 'absolute path');
  if (DRIVE.test(path)) throw unsafe(path, 'drive letter');
  const normalized = path.normalize('NFC');
  if (Buffer.byteLength(normalized, 'utf8') > maxPathLength) {
    throw new UplinkError('UPLINK_ERR_RELEASE_PATH_TOO_LONG', `path is longer than ${maxPathLength} bytes: ${JSON.stringify(path.slice(0, 80))}…`, {
      details: { path, maxPathLength },
    });
  }
  for (const segment of normalized.split('/')) {
    if (segment === '') throw unsafe(path, 'empty segment');
    if (segment === '.' || segment === '..') throw unsafe(path, `"${segment}" segment`);
    if (Buffer.byteLength(segment, 'utf8') > NAME_MAX_BYTES) {
      throw new UplinkError('UPLINK_ERR_RELEASE_PATH_TOO_LONG', `a path segment is longer than ${NAME_MAX_BYTES} bytes in ${JSON.stringify(path.slice(0, 80))}`, {
        details: { path, maxSegmentBytes: NAME_MAX_BYTES },
      });
    }
  }
  return normalized;
}

/**
 * The key two names collide on: compatibility-normalised and case-folded. Case-insensitive
 * (macOS, Windows) and normalisation-insensitive (APFS) filesystems would put both names in
 * one file, so a release may not hold two names with the same key. The fold goes through
 * upper case first so that "ß" and "ss" collide as they do on those filesystems.
 */
export function collisionKey(path: string): string {
  return path.normalize('NFKC').toUpperCase().toLowerCase().normalize('NFKC');
}

/** Order release paths by their UTF-8 bytes: the one order every language agrees on. */
export function compareReleasePaths(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}
