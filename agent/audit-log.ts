/**
 * The customer's copy of the audit chain: JSON lines in <stateDir>/audit/audit.log, one
 * sealed event (canonical JSON, see shared/audit/chain.ts) per line.
 *
 * Durability and ordering contract:
 * - `append()` resolves only after the line is written and fdatasync'd; a rejected append
 *   wrote nothing that the next append keeps (a partial line is repaired, see below).
 * - Appends in one process are serialised by a promise queue; appends from other processes
 *   (the `uplink-agent grant` CLI runs while the agent does) are serialised by a lock file
 *   (shared/audit/lock-file.ts). Under the lock the writer re-reads the tail whenever the
 *   file changed since its own last append, so the chain stays one chain.
 * - A torn last line (a crash mid-write, a full disk) is repaired under the lock: if the
 *   fragment is in fact a complete, correctly chained event that lost only its newline, the
 *   newline is added; otherwise the fragment is copied to `audit.log.torn-<ms>-<pid>` for
 *   inspection and cut off. Either way it is reported in `recovery` and logged.
 * - A last complete line that is not a valid event is not repaired: appending after it
 *   would hide the damage, so open and append fail with UPLINK_ERR_AUDIT_CORRUPT.
 * Rotation is not implemented: events are small and operations are human-paced.
 */
import { mkdir, open, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { join, dirname } from 'node:path';
import { z } from 'zod';
import { UplinkError } from '../shared/errors.js';
import { silentLogger, type Logger } from '../shared/logger.js';
import { canonicalJson } from '../shared/audit/canonical-json.js';
import { ChainVerifier, GENESIS, hashEvent, sealEvent, type ChainStart, type ChainVerifyResult } from '../shared/audit/chain.js';
import { normalizeAuditInput, parseAuditRecord, type AuditInput, type AuditLimits, type AuditRecord } from '../shared/audit/event.js';
import { withLockFile, type LockFileOptions } from '../shared/audit/lock-file.js';

export const AUDIT_LOG_DEFAULTS = Object.freeze({
  /** Longest accepted line in bytes (without the newline); bounds what a reader buffers. */
  maxLineBytes: 65_536,
  maxFieldChars: 1024,
  maxDetailBytes: 4096,
  lockTimeoutMs: 10_000,
  staleLockMs: 30_000,
  lockRetryMs: 10,
});

const optionsSchema = z.strictObject({
  maxLineBytes: z.number().int().min(1024).max(16 * 1024 * 1024),
  maxFieldChars: z.number().int().min(16).max(65_536),
  maxDetailBytes: z.number().int().min(2).max(1024 * 1024),
  lockTimeoutMs: z.number().int().min(1).max(600_000),
  staleLockMs: z.number().int().min(100).max(3_600_000),
  lockRetryMs: z.number().int().min(1).max(10_000),
});

export type AuditLogOptions = z.infer<typeof optionsSchema>;

function resolveOptions(options: Partial<AuditLogOptions> = {}): Readonly<AuditLogOptions> {
  const r = optionsSchema.safeParse({ ...AUDIT_LOG_DEFAULTS, ...options });
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `audit log options: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
  }
  return Object.freeze(r.data);
}

/** The audit log's file inside an agent state directory. */
export function auditLogPath(stateDir: string): string {
  return join(stateDir, 'audit', 'audit.log');
}

/** What opening (or re-syncing) found at the end of the file. */
export interface AuditRecovery {
  /** A torn last line that was cut off, and where its bytes were saved. */
  tornTail: { bytes: number; savedAs: string } | null;
  /** True when the last line lacked only its newline and was completed. */
  completedTail: boolean;
}

interface TailState {
  start: ChainStart;
  size: number;
  recovery: AuditRecovery;
}

/** The agent's hash-chained audit file. Open with `AgentAuditLog.open(stateDir)`. */
export class AgentAuditLog {
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  private tail: ChainStart = GENESIS;
  /** File size after our last write; -1 forces a re-read of the tail. */
  private size = -1;
  private lastRecovery: AuditRecovery = { tornTail: null, completedTail: false };

  private constructor(
    readonly path: string,
    private fh: FileHandle,
    private readonly options: Readonly<AuditLogOptions>,
    private readonly logger: Logger,
    private readonly now: () => Date,
  ) {}

  /** Open (creating if needed) the log in `stateDir` and recover its tail. */
  static async open(stateDir: string, options: Partial<AuditLogOptions> = {}, deps: { logger?: Logger; now?: () => Date } = {}): Promise<AgentAuditLog> {
    const opts = resolveOptions(options);
    const path = auditLogPath(stateDir);
    const fh = await openLogFile(path);
    const log = new AgentAuditLog(path, fh, opts, deps.logger ?? silentLogger, deps.now ?? (() => new Date()));
    try {
      await log.locked(() => log.sync());
    } catch (err) {
      await fh.close().catch(() => {});
      throw err;
    }
    return log;
  }

  /** What the last tail recovery found (torn or completed line). */
  get recovery(): AuditRecovery {
    return this.lastRecovery;
  }

  /** seq and hash of the last event this process knows of. */
  get head(): ChainStart {
    return { ...this.tail };
  }

  /** Append one event; resolves with the sealed record once it is on disk. */
  append(input: AuditInput): Promise<AuditRecord> {
    if (this.closed) return Promise.reject(new UplinkError('UPLINK_ERR_AUDIT_WRITE_FAILED', 'audit log is closed'));
    const run = this.queue.then(() => this.locked(() => this.appendLocked(input)));
    this.queue = run.catch(() => {});
    return run;
  }

  /** Wait for queued appends, then close the file. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue;
    await this.fh.close();
  }

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const lock: LockFileOptions = { timeoutMs: this.options.lockTimeoutMs, staleMs: this.options.staleLockMs, retryMs: this.options.lockRetryMs };
    return withLockFile(`${this.path}.lock`, lock, fn);
  }

  /** Under the lock: make sure our handle is the file at `path` and our tail is current. */
  private async sync(): Promise<void> {
    let onDisk;
    try {
      onDisk = await stat(this.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      onDisk = undefined;
    }
    const own = await this.fh.stat();
    if (!onDisk || onDisk.ino !== own.ino || onDisk.dev !== own.dev) {
      // Moved aside or deleted by an operator: continue in a fresh file, which starts a new chain.
      this.logger.warn({ path: this.path }, 'audit log file was replaced or removed; continuing in the file now at that path');
      await this.fh.close().catch(() => {});
      this.fh = await openLogFile(this.path);
      this.size = -1;
    } else if (own.size === this.size) {
      return;
    }
    const state = await recoverTail(this.fh, this.path, this.options, this.logger);
    this.tail = state.start;
    this.size = state.size;
    this.lastRecovery = state.recovery;
  }

  private async appendLocked(input: AuditInput): Promise<AuditRecord> {
    await this.sync();
    const limits: AuditLimits = { maxFieldChars: this.options.maxFieldChars, maxDetailBytes: this.options.maxDetailBytes };
    const record = sealEvent(this.tail.prevHash, normalizeAuditInput(input, this.tail.lastSeq + 1, this.now(), limits));
    const line = Buffer.from(`${canonicalJson(record)}\n`);
    if (line.length - 1 > this.options.maxLineBytes) {
      throw new UplinkError('UPLINK_ERR_AUDIT_EVENT_INVALID', `audit event is ${line.length - 1} bytes, over maxLineBytes ${this.options.maxLineBytes}`);
    }
    try {
      const { bytesWritten } = await this.fh.write(line);
      if (bytesWritten !== line.length) throw new Error(`short write: ${bytesWritten} of ${line.length} bytes`);
      await this.fh.datasync();
    } catch (err) {
      this.size = -1; // whatever reached the file is repaired by the next sync
      throw new UplinkError('UPLINK_ERR_AUDIT_WRITE_FAILED', `audit log ${this.path}: ${(err as Error).message}`, { cause: err });
    }
    this.size += line.length;
    this.tail = { lastSeq: record.seq, prevHash: record.hash };
    return record;
  }
}

async function openLogFile(path: string): Promise<FileHandle> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const fh = await open(path, 'a+', 0o600);
  // Make the file's directory entry durable too; a no-op cost after the first open.
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
  return fh;
}

function corrupt(path: string, message: string): UplinkError {
  return new UplinkError('UPLINK_ERR_AUDIT_CORRUPT', `audit log ${path}: ${message}`, { details: { path } });
}

/**
 * Find the last event and repair a torn tail. Reads only the end of the file: at most two
 * lines of maxLineBytes, however long the log is.
 */
async function recoverTail(fh: FileHandle, path: string, options: Readonly<AuditLogOptions>, logger: Logger): Promise<TailState> {
  const recovery: AuditRecovery = { tornTail: null, completedTail: false };
  let size = (await fh.stat()).size;
  if (size === 0) return { start: GENESIS, size, recovery };
  const window = Math.min(size, 2 * (options.maxLineBytes + 1));
  const base = size - window;
  const buf = Buffer.alloc(window);
  await fh.read(buf, 0, window, base);

  // [fragmentStart, size) is a torn fragment when the file does not end with a newline.
  const lastNl = buf.lastIndexOf(0x0a);
  const fragmentStart = buf[window - 1] === 0x0a ? window : lastNl + 1;
  // Our own lines are never longer than maxLineBytes, so neither is a fragment of one.
  if (window - fragmentStart > options.maxLineBytes) throw corrupt(path, `unterminated last line is longer than maxLineBytes ${options.maxLineBytes}`);

  // The last complete line ends just before fragmentStart.
  let start: ChainStart = GENESIS;
  if (fragmentStart > 0) {
    const lineStart = fragmentStart >= 2 ? buf.lastIndexOf(0x0a, fragmentStart - 2) + 1 : 0;
    if (lineStart === 0 && base > 0) throw corrupt(path, `last complete line is longer than maxLineBytes ${options.maxLineBytes}`);
    const record = parseLine(buf.subarray(lineStart, fragmentStart - 1), options);
    if (!record) throw corrupt(path, 'the last complete line is not a valid audit event; run `uplink-agent audit --verify`');
    start = { lastSeq: record.seq, prevHash: record.hash };
  }

  if (fragmentStart < window) {
    const fragment = buf.subarray(fragmentStart);
    const record = parseLine(fragment, options);
    if (record && record.seq === start.lastSeq + 1 && hashEvent(start.prevHash, record) === record.hash) {
      await fh.write('\n');
      await fh.datasync();
      size += 1;
      start = { lastSeq: record.seq, prevHash: record.hash };
      recovery.completedTail = true;
      logger.warn({ path, seq: record.seq }, 'audit log: last event lacked its newline; completed it');
    } else {
      const savedAs = `${path}.torn-${Date.now()}-${process.pid}`;
      await writeFile(savedAs, fragment, { mode: 0o600 });
      await fh.truncate(base + fragmentStart);
      await fh.datasync();
      size = base + fragmentStart;
      recovery.tornTail = { bytes: fragment.length, savedAs };
      logger.warn({ path, bytes: fragment.length, savedAs }, 'audit log: torn last line cut off (an interrupted write)');
    }
  }
  return { start, size, recovery };
}

function parseLine(line: Buffer, options: Readonly<AuditLogOptions>): AuditRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line.toString('utf8'));
  } catch {
    return undefined;
  }
  const r = parseAuditRecord(value, { maxFieldChars: options.maxFieldChars, maxDetailBytes: options.maxDetailBytes });
  return r.ok ? r.record : undefined;
}

interface RawLine {
  lineNo: number;
  /** undefined when the line exceeded maxLineBytes (reading stops there). */
  text: string | undefined;
  /** true for a last line without its newline. */
  torn: boolean;
}

/** Split a file into lines without ever buffering more than maxLineBytes of one line. */
async function* readLines(path: string, maxLineBytes: number): AsyncGenerator<RawLine> {
  const parts: Buffer[] = [];
  let pending = 0;
  let lineNo = 0;
  const stream = createReadStream(path);
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let from = 0;
      for (let nl = chunk.indexOf(0x0a, from); ; nl = chunk.indexOf(0x0a, from)) {
        const end = nl === -1 ? chunk.length : nl;
        pending += end - from;
        if (pending > maxLineBytes) {
          yield { lineNo: lineNo + 1, text: undefined, torn: false };
          return;
        }
        parts.push(chunk.subarray(from, end));
        if (nl === -1) break;
        lineNo++;
        yield { lineNo, text: Buffer.concat(parts).toString('utf8'), torn: false };
        parts.length = 0;
        pending = 0;
        from = nl + 1;
      }
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new UplinkError('UPLINK_ERR_NOT_FOUND', `audit log ${path} does not exist`, { details: { path } });
    throw err;
  } finally {
    stream.destroy();
  }
  if (pending > 0) yield { lineNo: lineNo + 1, text: Buffer.concat(parts).toString('utf8'), torn: true };
}

export interface AuditFileVerifyResult extends ChainVerifyResult {
  /** The file ends with a line without a newline (an interrupted write; not counted). */
  tornTail: boolean;
}

/**
 * Verify the whole file from the genesis hash, streaming. A torn last line is reported in
 * `tornTail` but does not fail verification (the writer repairs it on its next open);
 * `firstBadIndex` is the 1-based line number of the first bad line.
 */
export async function verifyAuditFile(path: string, options: Partial<AuditLogOptions> = {}): Promise<AuditFileVerifyResult> {
  const opts = resolveOptions(options);
  const verifier = new ChainVerifier(GENESIS, { maxFieldChars: opts.maxFieldChars, maxDetailBytes: opts.maxDetailBytes });
  let tornTail = false;
  for await (const line of readLines(path, opts.maxLineBytes)) {
    if (line.torn) {
      tornTail = true;
      break;
    }
    if (line.text === undefined) {
      verifier.pushUnreadable(`line ${line.lineNo} is longer than maxLineBytes ${opts.maxLineBytes}`);
      break;
    }
    let value: unknown;
    try {
      value = JSON.parse(line.text);
    } catch {
      verifier.pushUnreadable(`line ${line.lineNo} is not JSON`);
      break;
    }
    if (!verifier.push(value)) break;
  }
  return { ...verifier.result(), tornTail };
}

/**
 * Read events for display (`uplink-agent audit`), oldest first, without verifying the
 * chain (use verifyAuditFile for that). A malformed line throws UPLINK_ERR_AUDIT_CORRUPT;
 * a torn last line is skipped.
 */
export async function* readAuditLog(
  path: string,
  filter: { afterSeq?: number; limit?: number } = {},
  options: Partial<AuditLogOptions> = {},
): AsyncGenerator<AuditRecord> {
  const opts = resolveOptions(options);
  let yielded = 0;
  for await (const line of readLines(path, opts.maxLineBytes)) {
    if (line.torn) return;
    const record = line.text === undefined ? undefined : parseLine(Buffer.from(line.text), opts);
    if (!record) throw corrupt(path, `line ${line.lineNo} is not a valid audit event`);
    if (filter.afterSeq !== undefined && record.seq <= filter.afterSeq) continue;
    yield record;
    if (filter.limit !== undefined && ++yielded >= filter.limit) return;
  }
}
