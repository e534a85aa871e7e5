/**
 * A cross-process lock on one file path, for the few places where two processes on one
 * host append to the same file (the running agent and the `uplink-agent grant` CLI both
 * append to the audit log). Node has no flock(2), so the lock is a file created with
 * O_CREAT|O_EXCL holding "<pid> <random token>".
 *
 * Holders keep the lock for one short critical section (milliseconds). A lock is stale when
 * its holder process is gone, or when it is older than `staleMs` whatever its pid says (pid
 * reuse after a crash must not wedge the log forever). Breaking a stale lock renames it
 * aside first and re-reads it, so two processes that both judged it stale cannot both
 * delete a fresh lock taken in between: the one that moved a lock it did not judge puts it
 * back. Release only removes the file when it still holds our token.
 */
import { open, readFile, rename, link, unlink, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { UplinkError } from '../errors.js';

export interface LockFileOptions {
  /** Give up (UPLINK_ERR_AUDIT_LOCKED) after waiting this long. */
  timeoutMs: number;
  /** A lock older than this is stale even if its pid is alive. */
  staleMs: number;
  /** Pause between attempts while the lock is held. */
  retryMs: number;
}

export const DEFAULT_LOCK_FILE_OPTIONS: Readonly<LockFileOptions> = Object.freeze({ timeoutMs: 10_000, staleMs: 30_000, retryMs: 10 });

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readLock(path: string): Promise<{ text: string; pid: number | undefined; ageMs: number } | undefined> {
  try {
    const [text, st] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    const pid = Number.parseInt(text.split(' ')[0] ?? '', 10);
    return { text, pid: Number.isInteger(pid) && pid > 0 ? pid : undefined, ageMs: Date.now() - st.mtimeMs };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Move a stale lock out of the way; put it back if it changed since it was judged stale. */
async function breakStale(path: string, judged: string): Promise<void> {
  const aside = `${path}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await rename(path, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const moved = await readFile(aside, 'utf8').catch(() => judged);
  if (moved !== judged) {
    // Someone broke the stale lock and took a fresh one before our rename: restore theirs.
    await link(aside, path).catch(() => {});
  }
  await unlink(aside).catch(() => {});
}

/** Take the lock at `path`, run `fn`, release. Throws UPLINK_ERR_AUDIT_LOCKED on timeout. */
export async function withLockFile<T>(path: string, options: LockFileOptions, fn: () => Promise<T>): Promise<T> {
  const token = `${process.pid} ${randomBytes(8).toString('hex')}\n`;
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    try {
      const fh = await open(path, 'wx', 0o600);
      try {
        await fh.writeFile(token);
      } finally {
        await fh.close();
      }
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const held = await readLock(path);
    // An empty file is a lock whose holder died between create and write; age decides.
    if (held && ((held.pid !== undefined && !pidAlive(held.pid)) || held.ageMs > options.staleMs)) {
      await breakStale(path, held.text);
      continue;
    }
    if (Date.now() >= deadline) {
      throw new UplinkError('UPLINK_ERR_AUDIT_LOCKED', `lock ${path} is held by pid ${held?.pid ?? 'unknown'}`, {
        details: { lockPath: path, holderPid: held?.pid ?? null, waitedMs: options.timeoutMs },
      });
    }
    await sleep(options.retryMs);
  }
  try {
    return await fn();
  } finally {
    const current = await readFile(path, 'utf8').catch(() => undefined);
    if (current === token) await unlink(path).catch(() => {});
  }
}
