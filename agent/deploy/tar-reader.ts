/**
 * A strict, in-memory reader for the tar archives inside releases.
 *
 * It accepts what `uplink release create` writes (POSIX ustar, with pax 'x' headers for
 * long or non-ASCII paths) plus plain directory entries, and refuses everything else by
 * type: links, devices, FIFOs, sparse and contiguous files, GNU long-name records, global
 * pax headers. Every number in a header is checked against a limit before it is used, so a
 * header claiming a 2 GB entry is refused on the spot without reading (or needing) the data,
 * and an archive of 100k entries is refused at entry maxFiles + 1.
 *
 * The reader does not judge paths beyond decoding them; extract.ts does, with the same
 * rules the packer used.
 */
import { posix } from 'node:path';
import { UplinkError } from '../../shared/errors.js';

const BLOCK = 512;
const utf8 = new TextDecoder('utf-8', { fatal: true });

export interface TarEntry {
  /** The entry path as recorded (pax path if present, else ustar prefix/name), undecided. */
  path: string;
  type: 'file' | 'directory';
  /** Permission bits from the header (0o7777 mask). */
  mode: number;
  size: number;
  /** The entry's bytes: a view into the tar buffer, no copy. */
  data: Buffer;
}

export interface TarReadLimits {
  maxFiles: number;
  maxUncompressedBytes: number;
  maxPathLength: number;
}

/** Largest pax extended header accepted: room for a path and a link path plus the usual times. */
export function maxPaxBytes(limits: Pick<TarReadLimits, 'maxPathLength'>): number {
  return 2 * limits.maxPathLength + 1024;
}

function malformed(message: string, offset: number): UplinkError {
  return new UplinkError('UPLINK_ERR_RELEASE_MALFORMED', `archive: ${message} (at byte ${offset} of the tar)`, { details: { offset } });
}

function cString(block: Buffer, start: number, length: number): Buffer {
  const field = block.subarray(start, start + length);
  const nul = field.indexOf(0);
  return nul === -1 ? field : field.subarray(0, nul);
}

function decodeText(bytes: Buffer, what: string, offset: number): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new UplinkError('UPLINK_ERR_RELEASE_UNSAFE_PATH', `archive: ${what} is not valid UTF-8 (at byte ${offset})`, { details: { offset, reason: 'invalid UTF-8' } });
  }
}

function octal(block: Buffer, start: number, length: number, what: string, offset: number): number {
  const text = block.subarray(start, start + length).toString('latin1').replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (!/^[0-7]{1,12}$/.test(text)) throw malformed(`bad ${what} field`, offset);
  return parseInt(text, 8);
}

/** Size fields may be octal or, for huge values, GNU base-256; anything past 2^53 is Infinity. */
function sizeField(block: Buffer, offset: number): number {
  const first = block[124]!;
  if ((first & 0x80) === 0) return octal(block, 124, 12, 'size', offset);
  if (first === 0xff) throw malformed('negative size', offset);
  let value = BigInt(first & 0x7f);
  for (let i = 125; i < 136; i++) value = (value << 8n) | BigInt(block[i]!);
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.POSITIVE_INFINITY : Number(value);
}

function checksumOk(block: Buffer, offset: number): boolean {
  const stored = octal(block, 148, 8, 'checksum', offset);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  return sum === stored;
}

interface Pax {
  path?: string;
  linkpath?: string;
  size?: number;
}

function parsePax(data: Buffer, offset: number): Pax {
  const pax: Pax = {};
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    const lenText = space === -1 ? '' : data.subarray(pos, space).toString('latin1');
    if (!/^[1-9]\d{0,6}$/.test(lenText)) throw malformed('bad pax record length', offset);
    const end = pos + Number(lenText);
    if (end > data.length || data[end - 1] !== 0x0a) throw malformed('bad pax record', offset);
    const record = decodeText(data.subarray(space + 1, end - 1), 'a pax record', offset);
    const eq = record.indexOf('=');
    if (eq <= 0) throw malformed('bad pax record', offset);
    const key = record.slice(0, eq);
    const value = record.slice(eq + 1);
    if (key === 'path') pax.path = value;
    else if (key === 'linkpath') pax.linkpath = value;
    else if (key === 'size') {
      if (!/^\d{1,20}$/.test(value)) throw malformed('bad pax size', offset);
      const n = Number(value);
      pax.size = Number.isSafeInteger(n) ? n : Number.POSITIVE_INFINITY;
    } else if (key.startsWith('GNU.sparse.')) {
      throw new UplinkError('UPLINK_ERR_RELEASE_SPECIAL_FILE', `archive: sparse file (pax ${key}) at byte ${offset}`, { details: { offset, type: 'sparse' } });
    }
    // Times, owners, charset, comments: ignored; the extractor sets its own.
    pos = end;
  }
  return pax;
}

function linkEscapes(path: string, target: string, hard: boolean): boolean {
  if (target.startsWith('/')) return true;
  const resolved = posix.normalize(hard ? target : posix.join(posix.dirname(path), target));
  return resolved === '..' || resolved.startsWith('../');
}

const SPECIAL_TYPES: Record<string, string> = { '3': 'character device', '4': 'block device', '6': 'FIFO', '7': 'contiguous file', S: 'sparse file' };

/**
 * Parse a whole tar held in memory. Throws UPLINK_ERR_RELEASE_MALFORMED, _TOO_LARGE,
 * _TOO_MANY_FILES, _LINK_ESCAPE, _SPECIAL_FILE or _UNSAFE_PATH (undecodable name) at the
 * first bad entry.
 */
export function readTar(tar: Buffer, limits: TarReadLimits): TarEntry[] {
  const entries: TarEntry[] = [];
  const paxLimit = maxPaxBytes(limits);
  let total = 0;
  let pax: Pax | null = null;
  let off = 0;
  for (;;) {
    if (off + BLOCK > tar.length) throw malformed('truncated archive (no end marker)', off);
    const block = tar.subarray(off, off + BLOCK);
    if (block.every((b) => b === 0)) {
      if (pax) throw malformed('pax header without an entry', off);
      // End of archive. Only zero padding may follow: bytes after the marker are what a
      // second tar implementation might read and this one would not.
      for (let i = off; i < tar.length; i++) if (tar[i] !== 0) throw malformed('data after the end-of-archive marker', i);
      return entries;
    }
    if (block.subarray(257, 262).toString('latin1') !== 'ustar') throw malformed('not a ustar header', off);
    if (!checksumOk(block, off)) throw malformed('header checksum mismatch', off);
    const typeflag = block[156] === 0 ? '0' : String.fromCharCode(block[156]!);
    const headerSize = sizeField(block, off);
    const dataStart = off + BLOCK;

    if (typeflag === 'x') {
      if (pax) throw malformed('two pax headers in a row', off);
      if (headerSize > paxLimit) throw malformed(`pax header larger than ${paxLimit} bytes`, off);
      if (dataStart + headerSize > tar.length) throw malformed('truncated pax header', off);
      pax = parsePax(tar.subarray(dataStart, dataStart + headerSize), off);
      off = dataStart + Math.ceil(headerSize / BLOCK) * BLOCK;
      continue;
    }

    const ustarPrefix = block[262] === 0; // "ustar\0" has a prefix field; GNU "ustar " does not
    const nameBytes = cString(block, 0, 100);
    const prefixBytes = ustarPrefix ? cString(block, 345, 155) : Buffer.alloc(0);
    const headerPath = decodeText(prefixBytes.length ? Buffer.concat([prefixBytes, Buffer.from('/'), nameBytes]) : nameBytes, 'an entry name', off);
    const path = pax?.path ?? headerPath;
    const size = pax?.size ?? headerSize;
    const linkname = pax?.linkpath ?? decodeText(cString(block, 157, 100), 'a link name', off);
    const mode = octal(block, 100, 8, 'mode', off) & 0o7777;
    pax = null;

    if (typeflag === '1' || typeflag === '2') {
      const hard = typeflag === '1';
      const escapes = linkEscapes(path, linkname, hard);
      throw new UplinkError(
        'UPLINK_ERR_RELEASE_LINK_ESCAPE',
        `archive: ${JSON.stringify(path)} is a ${hard ? 'hard' : 'symbolic'} link to ${JSON.stringify(linkname)}${escapes ? ', outside the stack' : ''}; releases may not hold links`,
        { details: { path, target: linkname, kind: hard ? 'hardlink' : 'symlink', escapes } },
      );
    }
    const special = SPECIAL_TYPES[typeflag];
    if (special) {
      throw new UplinkError('UPLINK_ERR_RELEASE_SPECIAL_FILE', `archive: ${JSON.stringify(path)} is a ${special}`, { details: { path, type: special } });
    }
    if (typeflag !== '0' && typeflag !== '5') throw malformed(`unsupported entry type ${JSON.stringify(typeflag)} for ${JSON.stringify(path)}`, off);
    if ((mode & 0o7000) !== 0) {
      throw new UplinkError('UPLINK_ERR_RELEASE_SPECIAL_FILE', `archive: ${JSON.stringify(path)} has setuid, setgid or sticky bits (mode ${mode.toString(8)})`, {
        details: { path, mode },
      });
    }
    if (entries.length + 1 > limits.maxFiles) {
      throw new UplinkError('UPLINK_ERR_RELEASE_TOO_MANY_FILES', `archive holds more than ${limits.maxFiles} entries`, { details: { maxFiles: limits.maxFiles } });
    }
    if (typeflag === '5') {
      if (size !== 0) throw malformed(`directory ${JSON.stringify(path)} has a size`, off);
      entries.push({ path: path.endsWith('/') ? path.slice(0, -1) : path, type: 'directory', mode, size: 0, data: Buffer.alloc(0) });
      off = dataStart;
      continue;
    }
    // Decided from the header alone: the data is never read, so a claimed 2 GB costs nothing.
    if (size > limits.maxUncompressedBytes - total) {
      throw new UplinkError('UPLINK_ERR_RELEASE_TOO_LARGE', `archive entry ${JSON.stringify(path)} claims ${size} bytes; the release limit is ${limits.maxUncompressedBytes} in total`, {
        details: { path, size, maxUncompressedBytes: limits.maxUncompressedBytes },
      });
    }
    if (dataStart + size > tar.length) throw malformed(`truncated data for ${JSON.stringify(path)}`, off);
    total += size;
    entries.push({ path, type: 'file', mode, size, data: tar.subarray(dataStart, dataStart + size) });
    off = dataStart + Math.ceil(size / BLOCK) * BLOCK;
  }
}
