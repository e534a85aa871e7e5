/**
 * Durable JSON checkpoints for telemetry collectors, one file per collector in the agent's
 * state directory.
 *
 * Contract: `save()` is atomic and durable. The value goes to a unique temporary file in
 * the same directory, that file is fsynced, renamed over `<name>.json`, and the directory
 * is fsynced so the rename itself survives a power loss. A reader therefore sees either
 * the previous checkpoint or the new one, never a torn mix. Saves of one name are applied
 * in call order.
 *
 * A file that cannot be parsed or fails the caller's schema is never silently replaced by
 * "start over": `load()` throws UPLINK_ERR_TELEMETRY_CHECKPOINT_CORRUPT and the operator
 * decides (see docs/errors.md), because guessing would skip or repeat customer records.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';

/** Defaults for CheckpointStore options. */
export const CHECKPOINT_STORE_DEFAULTS = {
  /** Checkpoint files larger than this are refused on read and on write. */
  maxBytes: 4 * 1024 * 1024,
} as const;

export interface CheckpointStoreOptions {
  maxBytes?: number;
}

const NAME = /^[a-z0-9][a-z0-9-]{0,63}$/;

/** Where collector checkpoints live inside the agent state directory. */
export function checkpointDir(stateDir: string): string {
  return join(stateDir, 'telemetry', 'checkpoints');
}

/** Atomic, fsynced JSON checkpoint files under one directory. */
export class CheckpointStore {
  readonly dir: string;
  readonly maxBytes: number;
  #dirReady: Promise<void> | undefined;
  readonly #queues = new Map<string, Promise<void>>();
  readonly #createdAt = Date.now();

  constructor(dir: string, opts: CheckpointStoreOptions = {}) {
    const maxBytes = opts.maxBytes ?? CHECKPOINT_STORE_DEFAULTS.maxBytes;
    if (!Number.isInteger(maxBytes) || maxBytes < 2) {
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `checkpoint maxBytes must be an integer >= 2, got ${maxBytes}`);
    }
    this.dir = dir;
    this.maxBytes = maxBytes;
  }

  /** Path of the checkpoint file for `name` (kebab-case, at most 64 characters). */
  pathOf(name: string): string {
    if (!NAME.test(name)) throw new UplinkError('UPLINK_ERR_INTERNAL', `invalid checkpoint name "${name}"`);
    return join(this.dir, `${name}.json`);
  }

  /**
   * Read and validate a checkpoint. Returns undefined when none was ever saved.
   * @throws UplinkError UPLINK_ERR_TELEMETRY_CHECKPOINT_CORRUPT when the file is too large,
   *   not JSON, or does not match `schema`.
   */
  async load<S extends z.ZodType>(name: string, schema: S): Promise<z.output<S> | undefined> {
    const path = this.pathOf(name);
    // Wait for saves already queued so a caller reads its own writes.
    await this.#queues.get(name);
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw corrupt(path, `cannot stat: ${(err as Error).message}`, err);
    }
    if (size > this.maxBytes) throw corrupt(path, `file is ${size} bytes, limit ${this.maxBytes}`);
    let text: string;
    const fh = await open(path, 'r');
    try {
      // Read at most maxBytes + 1 so a file growing between stat and read cannot exceed the limit.
      const buf = Buffer.alloc(size + 1);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      if (bytesRead > this.maxBytes) throw corrupt(path, `file exceeds ${this.maxBytes} bytes`);
      text = buf.subarray(0, bytesRead).toString('utf8');
    } finally {
      await fh.close();
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw corrupt(path, 'not valid JSON', err);
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw corrupt(path, `unexpected content at ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`);
    }
    return parsed.data;
  }

  /** Atomically replace the checkpoint `name` with `value` (JSON-serialisable). */
  save(name: string, value: unknown): Promise<void> {
    const path = this.pathOf(name);
    const text = JSON.stringify(value);
    if (text === undefined) return Promise.reject(new UplinkError('UPLINK_ERR_INTERNAL', `checkpoint "${name}" is not JSON-serialisable`));
    const bytes = Buffer.byteLength(text);
    if (bytes > this.maxBytes) return Promise.reject(corrupt(path, `new checkpoint is ${bytes} bytes, limit ${this.maxBytes}`));
    const prev = this.#queues.get(name) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(() => this.#write(path, text));
    const tracked = next.catch(() => undefined);
    this.#queues.set(name, tracked);
    void tracked.then(() => {
      if (this.#queues.get(name) === tracked) this.#queues.delete(name);
    });
    return next;
  }

  /** Delete a checkpoint (and any temporary files a crash left behind for it). */
  async remove(name: string): Promise<void> {
    const path = this.pathOf(name);
    await this.#queues.get(name);
    await rm(path, { force: true });
    await this.#removeTemps(name);
  }

  async #write(path: string, text: string): Promise<void> {
    await this.#ensureDir();
    const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(text, 'utf8');
      await fh.sync();
    } catch (err) {
      await fh.close().catch(() => undefined);
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
    await this.#syncDir();
  }

  #ensureDir(): Promise<void> {
    this.#dirReady ??= mkdir(this.dir, { recursive: true, mode: 0o700 }).then(
      async () => {
        // Temporary files from a crash mid-save are garbage: the rename never happened.
        // Only files older than this store are removed, so another live writer is left alone.
        for (const entry of await readdir(this.dir)) {
          if (!entry.endsWith('.tmp')) continue;
          const file = join(this.dir, entry);
          const info = await stat(file).catch(() => undefined);
          if (info && info.mtimeMs < this.#createdAt) await rm(file, { force: true });
        }
      },
      (err: unknown) => {
        this.#dirReady = undefined;
        throw err;
      },
    );
    return this.#dirReady;
  }

  async #syncDir(): Promise<void> {
    const dh = await open(this.dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  }

  async #removeTemps(name: string): Promise<void> {
    let entries: string[];
    try {
      entries = await readdir(this.dir);
    } catch {
      return;
    }
    for (const entry of entries) {
      if (entry.startsWith(`${name}.json.`) && entry.endsWith('.tmp')) await rm(join(this.dir, entry), { force: true });
    }
  }
}

function corrupt(path: string, reason: string, cause?: unknown): UplinkError {
  return new UplinkError('UPLINK_ERR_TELEMETRY_CHECKPOINT_CORRUPT', `checkpoint ${path}: ${reason}`, {
    details: { path, reason },
    ...(cause === undefined ? {} : { cause }),
  });
}
