/**
 * The deployment journal: what makes "interrupted, never succeeded" true after a kill -9.
 *
 * Before a deployment starts, <stateDir>/deploy/current.json is written durably (temp file,
 * fsync, rename, fsync of the directory) and it is rewritten at every step; it is removed
 * only after the outcome is known. So after any crash the file either names the deployment
 * that was running or does not exist, never something half-written.
 *
 * On start the agent calls `recoverInterrupted()`: a leftover current.json is moved to
 * <stateDir>/deploy/interrupted/<id>.json, and every entry there is returned. Entries stay
 * until `acknowledge(id)`, called once the relay has recorded the deployment as
 * interrupted, so a crash between recovery and reporting loses nothing (delivery is
 * at-least-once; reporting the same id twice is harmless).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';

export const DEPLOYMENT_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export type DeployAction = 'apply' | 'plan' | 'destroy';
/** Where a deployment is: the terraform step running, or before/after them. */
export type DeployPhase = 'starting' | 'init' | 'plan' | 'apply' | 'output';

export interface JournalEntry {
  format: 1;
  deploymentId: string;
  action: DeployAction;
  /** ISO-8601 UTC. */
  startedAt: string;
  updatedAt: string;
  phase: DeployPhase;
  /** The agent process that ran it. */
  agentPid: number;
  /** The terraform process of the current step (its own process group), if one runs. */
  toolPid: number | null;
  /** The stack's work directory. */
  workDir: string;
  /** 'local' when the agent keeps the state, 'stack' when the stack declares a backend. */
  stateMode: 'local' | 'stack';
}

const entrySchema = z.strictObject({
  format: z.literal(1),
  deploymentId: z.string().regex(DEPLOYMENT_ID_PATTERN),
  action: z.enum(['apply', 'plan', 'destroy']),
  startedAt: z.string(),
  updatedAt: z.string(),
  phase: z.enum(['starting', 'init', 'plan', 'apply', 'output']),
  agentPid: z.number().int().positive(),
  toolPid: z.number().int().positive().nullable(),
  workDir: z.string().min(1),
  stateMode: z.enum(['local', 'stack']),
});

/** A journal file is a few hundred bytes; a larger one is not ours. */
const MAX_JOURNAL_BYTES = 64 * 1024;

export class DeployJournal {
  readonly dir: string;
  readonly currentPath: string;
  readonly interruptedDir: string;
  private readonly log: Logger;
  private current: JournalEntry | null = null;

  constructor(stateDir: string, opts: { logger?: Logger } = {}) {
    this.dir = join(stateDir, 'deploy');
    this.currentPath = join(this.dir, 'current.json');
    this.interruptedDir = join(this.dir, 'interrupted');
    this.log = (opts.logger ?? silentLogger).child({ component: 'deploy-journal' });
  }

  /**
   * Record that a deployment starts. Throws UPLINK_ERR_DEPLOY_BUSY when a journal already
   * exists (a run in progress, or a crash not yet recovered), UPLINK_ERR_BAD_REQUEST for
   * an id that cannot be a file name.
   */
  async begin(input: { deploymentId: string; action: DeployAction; workDir: string; stateMode: 'local' | 'stack' }): Promise<JournalEntry> {
    if (!DEPLOYMENT_ID_PATTERN.test(input.deploymentId)) {
      throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `deployment id ${JSON.stringify(input.deploymentId)} must match ${DEPLOYMENT_ID_PATTERN}`);
    }
    if (this.current || (await this.readCurrent()) !== null) {
      throw new UplinkError('UPLINK_ERR_DEPLOY_BUSY', `deployment ${this.current?.deploymentId ?? '(recorded in the journal)'} is running; one deployment runs at a time`, {
        details: { running: this.current?.deploymentId },
      });
    }
    const now = new Date().toISOString();
    const entry: JournalEntry = {
      format: 1,
      deploymentId: input.deploymentId,
      action: input.action,
      startedAt: now,
      updatedAt: now,
      phase: 'starting',
      agentPid: process.pid,
      toolPid: null,
      workDir: input.workDir,
      stateMode: input.stateMode,
    };
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await this.writeDurably(this.currentPath, entry);
    this.current = entry;
    return entry;
  }

  /** Record the step now running and its process. Durable before it returns. */
  async update(patch: { phase: DeployPhase; toolPid: number | null }): Promise<void> {
    if (!this.current) throw new UplinkError('UPLINK_ERR_INTERNAL', 'deploy journal: update() without begin()');
    this.current = { ...this.current, ...patch, updatedAt: new Date().toISOString() };
    await this.writeDurably(this.currentPath, this.current);
  }

  /** The outcome is known (and reported by the caller): forget the running deployment. */
  async finish(): Promise<void> {
    if (!this.current) return;
    await unlink(this.currentPath).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    await this.syncDir(this.dir);
    this.current = null;
  }

  /**
   * Move a leftover current.json (a deployment that never finished) to interrupted/ and
   * return every unacknowledged interrupted deployment, oldest first. Call before the first
   * deployment after start; it refuses while this process has one running.
   */
  async recoverInterrupted(): Promise<JournalEntry[]> {
    if (this.current) {
      throw new UplinkError('UPLINK_ERR_DEPLOY_BUSY', `deployment ${this.current.deploymentId} is running in this process`);
    }
    const leftover = await this.readCurrent();
    if (leftover) {
      await mkdir(this.interruptedDir, { recursive: true, mode: 0o700 });
      await rename(this.currentPath, join(this.interruptedDir, `${leftover.deploymentId}.json`));
      await this.syncDir(this.interruptedDir);
      await this.syncDir(this.dir);
      this.log.warn(
        { deployment: leftover.deploymentId, phase: leftover.phase, startedAt: leftover.startedAt },
        'deployment was interrupted (the agent stopped while it ran); it is reported as interrupted, never as succeeded',
      );
    }
    let names: string[];
    try {
      names = (await readdir(this.interruptedDir)).filter((n) => n.endsWith('.json'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const found: JournalEntry[] = [];
    for (const name of names) {
      const entry = await this.readEntry(join(this.interruptedDir, name));
      if (entry) found.push(entry);
    }
    return found.sort((a, b) => (a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : 0));
  }

  /** The relay has recorded `deploymentId` as interrupted: stop reporting it. */
  async acknowledge(deploymentId: string): Promise<void> {
    if (!DEPLOYMENT_ID_PATTERN.test(deploymentId)) return;
    await unlink(join(this.interruptedDir, `${deploymentId}.json`)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }

  private async readCurrent(): Promise<JournalEntry | null> {
    return this.readEntry(this.currentPath);
  }

  /**
   * Read one entry. A file that does not parse cannot name a deployment; it is set aside
   * as <name>.corrupt (kept for a human) and logged, and never blocks deployments.
   */
  private async readEntry(path: string): Promise<JournalEntry | null> {
    let text: string;
    try {
      const handle = await open(path, 'r');
      try {
        const buf = Buffer.alloc(MAX_JOURNAL_BYTES + 1);
        const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
        text = buf.subarray(0, bytesRead).toString('utf8');
      } finally {
        await handle.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    try {
      if (text.length > MAX_JOURNAL_BYTES) throw new Error('too large');
      return entrySchema.parse(JSON.parse(text)) as JournalEntry;
    } catch (err) {
      const aside = `${path}.corrupt-${Date.now()}`;
      await rename(path, aside);
      this.log.error({ err, path, movedTo: aside }, 'deploy journal entry is unreadable; set aside');
      return null;
    }
  }

  private async writeDurably(path: string, entry: JournalEntry): Promise<void> {
    const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    const handle = await open(tmp, 'wx', 0o600);
    try {
      await handle.writeFile(JSON.stringify(entry) + '\n');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
    await this.syncDir(this.dir);
  }

  /** fsync a directory so a rename or unlink in it survives power loss. */
  private async syncDir(dir: string): Promise<void> {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
}

