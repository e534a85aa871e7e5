/**
 * The spool's read cursor: the position of the oldest record the relay has not acknowledged.
 *
 * Stored as `cursor.json` and replaced atomically (write a temp file, fsync it, rename over
 * the old one, fsync the directory), so after a crash the file holds either the old or the
 * new position, never a mix. A missing or unreadable cursor is not fatal: the spool starts
 * from its oldest segment and the relay receives some records again (at-least-once; ids
 * let readers drop the repeats).
 */
import { open, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';

/** A position in the spool: segment sequence number and byte offset inside it. */
export interface SpoolPosition {
  seq: number;
  offset: number;
}

export const CURSOR_FILE = 'cursor.json';
const CURSOR_TMP = 'cursor.json.tmp';
const CURSOR_VERSION = 1;
/** A cursor file is a few dozen bytes; anything bigger is not ours. */
const MAX_CURSOR_FILE_BYTES = 4096;

/** Order two positions: negative when a is before b. */
export function comparePositions(a: SpoolPosition, b: SpoolPosition): number {
  return a.seq !== b.seq ? a.seq - b.seq : a.offset - b.offset;
}

/** Outcome of loading the cursor: a position, or why there is none. */
export type CursorLoad = { position: SpoolPosition } | { position: undefined; reason: 'missing' | 'unreadable' };

/** Read the cursor file of `dir`. */
export async function loadCursor(dir: string): Promise<CursorLoad> {
  let text: string;
  try {
    const buf = await readFile(join(dir, CURSOR_FILE));
    if (buf.length > MAX_CURSOR_FILE_BYTES) return { position: undefined, reason: 'unreadable' };
    text = buf.toString('utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { position: undefined, reason: 'missing' };
    throw err;
  }
  try {
    const value = JSON.parse(text) as Record<string, unknown>;
    const { version, seq, offset } = value;
    if (version === CURSOR_VERSION && Number.isSafeInteger(seq) && Number.isSafeInteger(offset) && (seq as number) >= 0 && (offset as number) >= 0) {
      return { position: { seq: seq as number, offset: offset as number } };
    }
  } catch {
    // fall through: a torn or foreign file is treated like a missing one
  }
  return { position: undefined, reason: 'unreadable' };
}

/** fsync a directory so a rename, create or unlink in it survives a crash. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Durably replace the cursor file of `dir` with `position`. */
export async function saveCursor(dir: string, position: SpoolPosition): Promise<void> {
  const tmp = join(dir, CURSOR_TMP);
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(JSON.stringify({ version: CURSOR_VERSION, seq: position.seq, offset: position.offset }));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, join(dir, CURSOR_FILE));
  await syncDir(dir);
}
