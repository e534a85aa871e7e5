/**
 * Owner-only files for credentials and approval state. Writes are atomic (temp file in the
 * same directory, fsync, rename) so a reader such as credential_process never sees half a
 * file, and every file is created 0600 inside a 0700 directory: created with that mode, not
 * chmod-ed later, so there is no window in which another user could open it.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm, chmod } from 'node:fs/promises';
import { dirname, join, basename } from 'node:path';

export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

/** Create a directory (and parents) readable only by the owner. */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  // mkdir applies the umask and leaves existing directories alone: set the mode explicitly.
  await chmod(dir, PRIVATE_DIR_MODE);
}

/** Replace `path` atomically with `data`, mode 0600. */
export async function writePrivateFile(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', PRIVATE_FILE_MODE);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
