/**
 * Runs a verified, extracted stack with OpenTofu or Terraform.
 *
 * One deployment at a time per state directory. Each run:
 * 1. recovers from a crash: deployments the journal still lists are reported back as
 *    `interrupted` (never succeeded); a terraform process such a run left behind is stopped
 *    (SIGINT, then SIGKILL to its process group) and a stale local lock file is removed,
 *    with a log line saying why;
 * 2. decides where state lives: the stack's own backend if it declares one, else a local
 *    state kept per appliance at <stateDir>/deploy/state/terraform.tfstate (written into
 *    the work directory as a generated backend file, so every command agrees on it);
 * 3. journals the start durably, then runs `init`, then `plan -out` + `apply` of that plan
 *    (`apply`), `plan -destroy -out` + `apply` (`destroy`), or `plan` alone (`plan`), and
 *    finally `output -json` for apply/destroy; output streams live to `onOutput`;
 * 4. removes the journal entry once the outcome is known.
 *
 * The child environment is built from nothing: PATH, HOME, TF_IN_AUTOMATION, TF_INPUT,
 * CHECKPOINT_DISABLE, TF_DATA_DIR, TF_PLUGIN_CACHE_DIR, TF_VAR_instance_id, the Deploy
 * phase's credentials and the operator's `extraEnv` (which may not touch any of those).
 * The agent's own environment, which may hold other phases' credentials, never leaks in.
 */
import { constants as fsc } from 'node:fs';
import { access, readFile, readlink, unlink } from 'node:fs/promises';
import { delimiter, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { parseDuration } from '../../shared/duration.js';
import { UplinkError } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import { DEPLOYMENT_ID_PATTERN, DeployJournal, type JournalEntry } from './deploy-journal.js';
import { Run, signal, type DeploymentRequest, type DeploymentRun, type OutputChunk, type RunContext } from './terraform-run.js';

export { LOCAL_BACKEND_FILE } from './terraform-run.js';
export type { DeployCredentials, DeployStep, DeploymentRequest, DeploymentResult, DeploymentRun, OutputChunk, TerraformOutput } from './terraform-run.js';

/** Runner settings; durations are text for parseDuration ("10s", "2m"). */
export interface TerraformRunnerSettings {
  binaryPath: string | null;
  pluginCacheDir: string | null;
  searchPath: string | null;
  homeDir: string | null;
  cliConfigFile: string | null;
  extraEnv: Readonly<Record<string, string>>;
  cancelGrace: string;
  orphanGrace: string;
  lockTimeout: string;
  maxOutputJsonBytes: number;
  redactSensitiveOutputs: boolean;
}

/** The defaults; every field can be overridden in TerraformRunnerOptions. */
export const TERRAFORM_RUNNER_DEFAULTS: Readonly<TerraformRunnerSettings> = Object.freeze({
  /** Explicit tofu/terraform binary; null searches `searchPath` for tofu, then terraform. */
  binaryPath: null,
  /** Provider plugin cache shared by runs; null means <stateDir>/deploy/plugin-cache. */
  pluginCacheDir: null,
  /** PATH for finding the binary and for the child; null means the agent's PATH. */
  searchPath: null,
  /** HOME for the child (terraform reads ~/.terraformrc); null means the agent's HOME. */
  homeDir: null,
  /** TF_CLI_CONFIG_FILE for the child (provider mirrors in isolated VPCs), if any. */
  cliConfigFile: null,
  /** Extra variables for the child, e.g. HTTPS_PROXY. May not set AWS_*, TF_* or the fixed ones. */
  extraEnv: Object.freeze({}),
  /** After SIGINT on cancel, how long terraform gets to stop before SIGKILL. */
  cancelGrace: '10s',
  /** Same, for a terraform process left running by a crashed agent. */
  orphanGrace: '30s',
  /** Passed as -lock-timeout: wait this long for a state lock held by someone else. */
  lockTimeout: '60s',
  /** Largest `output -json` document kept with the deployment. */
  maxOutputJsonBytes: 4 * 1024 * 1024,
  /** Replace values of outputs marked sensitive by null before they leave the agent. */
  redactSensitiveOutputs: true,
});

export type TerraformRunnerOptions = { stateDir: string; logger?: Logger } & Partial<TerraformRunnerSettings>;

const FIXED_ENV = new Set(['PATH', 'HOME', 'CHECKPOINT_DISABLE']);
const isDuration = (field: string) => (v: string): boolean => {
  try {
    parseDuration(v, field);
    return true;
  } catch {
    return false;
  }
};
const duration = (field: string) => z.string().refine(isDuration(field), `${field} must be a duration such as 30s`);
const optionsSchema = z.strictObject({
  stateDir: z.string().min(1),
  logger: z.custom<Logger>((v) => typeof v === 'object' && v !== null).optional(),
  binaryPath: z.string().min(1).nullable().optional(),
  pluginCacheDir: z.string().min(1).nullable().optional(),
  searchPath: z.string().nullable().optional(),
  homeDir: z.string().min(1).nullable().optional(),
  cliConfigFile: z.string().min(1).nullable().optional(),
  extraEnv: z
    .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string())
    .refine((env) => Object.keys(env).every((k) => !FIXED_ENV.has(k) && !/^(AWS_|TF_)/i.test(k)), 'extraEnv may not set PATH, HOME, CHECKPOINT_DISABLE, AWS_* or TF_*')
    .optional(),
  cancelGrace: duration('cancelGrace').optional(),
  orphanGrace: duration('orphanGrace').optional(),
  lockTimeout: duration('lockTimeout').optional(),
  maxOutputJsonBytes: z.number().int().positive().optional(),
  redactSensitiveOutputs: z.boolean().optional(),
});

const requestSchema = z.strictObject({
  deploymentId: z.string().regex(DEPLOYMENT_ID_PATTERN),
  action: z.enum(['apply', 'plan', 'destroy']),
  workDir: z.string().min(1),
  instanceId: z.string().min(1).max(256),
  credentials: z.strictObject({
    accessKeyId: z.string().min(1),
    secretAccessKey: z.string().min(1),
    sessionToken: z.string().min(1).optional(),
    region: z.string().min(1).optional(),
  }).nullable(),
  onOutput: z.custom<(chunk: OutputChunk) => void>((v) => typeof v === 'function').optional(),
});

const ORPHAN_POLL_MS = 100;

/** State directories with a run in progress in this process. */
const running = new Set<string>();

export class TerraformRunner implements RunContext {
  readonly stateDir: string;
  readonly journal: DeployJournal;
  private readonly opts: Readonly<TerraformRunnerSettings>;
  private readonly cancelGraceMs: number;
  private readonly orphanGraceMs: number;
  private readonly lockTimeoutS: number;
  private readonly log: Logger;

  constructor(options: TerraformRunnerOptions) {
    const parsed = optionsSchema.safeParse(options);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const field = issue.path.join('.') || (issue.code === 'unrecognized_keys' ? issue.keys.join(', ') : 'options');
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `deploy runner: ${field}: ${issue.message}`, { details: { field } });
    }
    const { stateDir, logger, ...rest } = parsed.data;
    const merged: TerraformRunnerSettings = { ...TERRAFORM_RUNNER_DEFAULTS, ...Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)) };
    this.stateDir = resolve(stateDir);
    this.log = (logger ?? silentLogger).child({ component: 'terraform-runner' });
    this.journal = new DeployJournal(this.stateDir, { logger: this.log });
    this.cancelGraceMs = parseDuration(merged.cancelGrace, 'cancelGrace');
    this.orphanGraceMs = parseDuration(merged.orphanGrace, 'orphanGrace');
    this.lockTimeoutS = Math.ceil(parseDuration(merged.lockTimeout, 'lockTimeout') / 1000);
    this.opts = Object.freeze({ ...merged, extraEnv: Object.freeze({ ...merged.extraEnv }) });
  }

  /** <stateDir>/deploy/state/terraform.tfstate: the appliance's state when the stack has no backend. */
  get localStatePath(): string {
    return join(this.stateDir, 'deploy', 'state', 'terraform.tfstate');
  }

  /**
   * The binary to run: `binaryPath` if configured (it must be executable), else `tofu`,
   * else `terraform` on the search path. Throws UPLINK_ERR_DEPLOY_TOOL_MISSING.
   */
  async locateBinary(): Promise<string> {
    if (this.opts.binaryPath) {
      if (await isExecutable(this.opts.binaryPath)) return this.opts.binaryPath;
      throw new UplinkError('UPLINK_ERR_DEPLOY_TOOL_MISSING', `configured deploy binary ${this.opts.binaryPath} is missing or not executable`, {
        details: { binaryPath: this.opts.binaryPath },
      });
    }
    const dirs = this.searchPath().split(delimiter).filter(Boolean);
    for (const name of ['tofu', 'terraform']) {
      for (const dir of dirs) {
        const candidate = join(dir, name);
        if (await isExecutable(candidate)) return candidate;
      }
    }
    throw new UplinkError('UPLINK_ERR_DEPLOY_TOOL_MISSING', `neither tofu nor terraform is on the agent's PATH (${this.searchPath()})`, {
      details: { searchPath: this.searchPath() },
    });
  }

  /**
   * Start a deployment. Throws synchronously UPLINK_ERR_DEPLOY_BUSY when one runs for this
   * state directory, UPLINK_ERR_BAD_REQUEST for a malformed request. The result promise
   * rejects only when the deployment could not start (UPLINK_ERR_DEPLOY_TOOL_MISSING, an
   * unusable work directory); terraform failures resolve with status 'failed'.
   */
  start(request: DeploymentRequest): DeploymentRun {
    const parsed = requestSchema.safeParse(request);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `deployment request: ${issue.path.join('.') || 'request'}: ${issue.message}`);
    }
    if (running.has(this.stateDir)) {
      throw new UplinkError('UPLINK_ERR_DEPLOY_BUSY', 'a deployment is already running on this agent', { details: { stateDir: this.stateDir } });
    }
    running.add(this.stateDir);
    const run = new Run(this, request, this.log.child({ deployment: request.deploymentId, action: request.action }));
    const result = run.execute().finally(() => running.delete(this.stateDir));
    return { deploymentId: request.deploymentId, result, cancel: () => run.cancel() };
  }

  /** @internal used by Run */
  searchPath(): string {
    return this.opts.searchPath ?? process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin';
  }

  /** @internal the child's whole environment; see the module comment. */
  buildEnv(request: DeploymentRequest, dataDir: string, pluginCacheDir: string): Record<string, string> {
    const creds = request.credentials;
    return {
      ...this.opts.extraEnv,
      PATH: this.searchPath(),
      HOME: this.opts.homeDir ?? process.env.HOME ?? this.stateDir,
      TF_IN_AUTOMATION: '1',
      TF_INPUT: '0',
      CHECKPOINT_DISABLE: '1', // no calls home from a customer's isolated VPC
      TF_DATA_DIR: dataDir,
      TF_PLUGIN_CACHE_DIR: pluginCacheDir,
      TF_VAR_instance_id: request.instanceId,
      ...(this.opts.cliConfigFile ? { TF_CLI_CONFIG_FILE: this.opts.cliConfigFile } : {}),
      // Local mode (no phase roles): no AWS credentials at all, and no way to find the
      // agent's own (instance metadata, shared files) either.
      ...(creds === null
        ? { AWS_EC2_METADATA_DISABLED: 'true', AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null' }
        : {
            AWS_ACCESS_KEY_ID: creds.accessKeyId,
            AWS_SECRET_ACCESS_KEY: creds.secretAccessKey,
            ...(creds.sessionToken ? { AWS_SESSION_TOKEN: creds.sessionToken } : {}),
            ...(creds.region ? { AWS_REGION: creds.region, AWS_DEFAULT_REGION: creds.region } : {}),
          }),
    };
  }

  /** @internal */
  settings() {
    return { ...this.opts, cancelGraceMs: this.cancelGraceMs, orphanGraceMs: this.orphanGraceMs, lockTimeoutS: this.lockTimeoutS };
  }

  /**
   * Crash recovery, run before every deployment: report interrupted runs, stop a terraform
   * one left behind, and clear the stale local lock file it leaves. `note` receives, per
   * interrupted deployment, one sentence for each thing done about it (for its own log).
   */
  async recover(log: Logger, note: (deploymentId: string, text: string) => void = () => {}): Promise<JournalEntry[]> {
    const interrupted = await this.journal.recoverInterrupted();
    if (interrupted.length === 0) return interrupted;
    for (const entry of interrupted) {
      if (await this.stopOrphan(entry, log)) {
        note(entry.deploymentId, `its terraform process (pid ${entry.toolPid}, step ${entry.phase}) was still running and has been stopped: SIGINT, then SIGKILL to its process group`);
      }
    }
    const local = interrupted.filter((e) => e.stateMode === 'local');
    if (local.length > 0) {
      const lockInfo = join(this.stateDir, 'deploy', 'state', '.terraform.tfstate.lock.info');
      const info = await readFile(lockInfo, 'utf8').catch(() => null);
      if (info !== null) {
        await unlink(lockInfo);
        const lock = safeJson(info);
        log.warn(
          { lockInfo, lock, interrupted: interrupted.map((e) => e.deploymentId) },
          'removed a stale state lock: the deployment holding it was interrupted and its terraform process is gone',
        );
        const id = lock && typeof lock === 'object' && typeof (lock as { ID?: unknown }).ID === 'string' ? ` ${(lock as { ID: string }).ID}` : '';
        for (const e of local) {
          note(
            e.deploymentId,
            `removed the stale state lock${id} (${lockInfo}) it left: terraform's lock on the local state is a file lock held by its process, and that process is gone, so no run holds it any more; the next deployment starts from the state as last saved`,
          );
        }
      }
    }
    return interrupted;
  }

  /**
   * A terraform started by a crashed agent may still run (it has its own process group).
   * Identify it by its working directory (a unique mkdtemp path) so a reused pid is never
   * signalled, then stop it the way cancel does. True when one was found and stopped.
   */
  private async stopOrphan(entry: JournalEntry, log: Logger): Promise<boolean> {
    const pid = entry.toolPid;
    if (!pid || pid === process.pid) return false;
    if (!(await runsIn(pid, entry.workDir))) return false;
    log.warn({ pid, interrupted: entry.deploymentId, phase: entry.phase }, 'stopping the terraform process left running by an interrupted deployment');
    signal(pid, 'SIGINT');
    const deadline = Date.now() + this.orphanGraceMs;
    while (Date.now() < deadline && (await runsIn(pid, entry.workDir))) await sleep(ORPHAN_POLL_MS);
    signal(-pid, 'SIGKILL');
    while (await runsIn(pid, entry.workDir)) await sleep(ORPHAN_POLL_MS);
    return true;
  }
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, fsc.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Whether `pid` is a live (not zombie) process whose cwd is `dir`. Linux /proc only. */
async function runsIn(pid: number, dir: string): Promise<boolean> {
  try {
    return (await readlink(`/proc/${pid}/cwd`)) === dir;
  } catch {
    return false;
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text.slice(0, 512);
  }
}
