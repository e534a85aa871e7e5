/**
 * One deployment's execution: the terraform steps in order, each in its own process group,
 * with live output, journal updates, and cancellation (one SIGINT, then SIGKILL to the
 * group after the grace period). TerraformRunner (terraform-runner.ts) owns configuration,
 * crash recovery and the one-at-a-time rule, and starts these.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as fsc } from 'node:fs';
import { mkdir, open, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { UplinkError, toUplinkError, type ErrorBody } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import type { DeployAction, DeployJournal, JournalEntry } from './deploy-journal.js';
import { stackDeclaresBackend } from './stack-backend.js';

/** The Deploy phase's temporary credentials (from STS AssumeRole). */
export interface DeployCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  region?: string;
}

export type DeployStep = 'init' | 'plan' | 'apply' | 'output';

/** A piece of live output. `offset` counts bytes across all steps and both streams. */
export interface OutputChunk {
  stream: 'stdout' | 'stderr';
  step: DeployStep;
  offset: number;
  data: Buffer;
}

export interface DeploymentRequest {
  deploymentId: string;
  action: DeployAction;
  /** The extracted stack (extractRelease). The runner writes its data dir and plan there. */
  workDir: string;
  /** Becomes TF_VAR_instance_id. */
  instanceId: string;
  /** null in local mode (no phase roles): the child then gets no AWS credentials at all. */
  credentials: DeployCredentials | null;
  onOutput?: (chunk: OutputChunk) => void;
}



export interface TerraformOutput {
  value: unknown;
  type: unknown;
  sensitive: boolean;
  /** True when `value` was replaced by null because the output is sensitive. */
  redacted?: true;
}

export interface DeploymentResult {
  deploymentId: string;
  action: DeployAction;
  status: 'succeeded' | 'failed' | 'cancelled';
  /** Exit code of the last step run; null if it died from a signal or none ran. */
  exitCode: number | null;
  /** The step that failed or was cancelled. */
  step?: DeployStep;
  /** Parsed `output -json` (apply and destroy only). */
  outputs: Record<string, TerraformOutput> | null;
  /** For `plan`: whether the plan has changes (from -detailed-exitcode). */
  planHasChanges?: boolean;
  /** Earlier deployments found interrupted by a crash; report them, then acknowledge(). */
  interrupted: JournalEntry[];
  stateMode: 'local' | 'stack';
  tool: string;
  /** For failed and cancelled: the code and message to report. */
  error?: ErrorBody;
}

export interface DeploymentRun {
  readonly deploymentId: string;
  readonly result: Promise<DeploymentResult>;
  /** SIGINT now, SIGKILL to the process group after cancelGrace. Idempotent. */
  cancel(): void;
}

/** Name of the backend file written when the stack declares none. */
export const LOCAL_BACKEND_FILE = 'uplink_agent_backend.tf.json';
/** After a step exits, how long its pipes may stay open (held by a stray grandchild). */
const STDIO_DRAIN_MS = 2000;

/** What a run needs from its runner (TerraformRunner implements it). */
export interface RunContext {
  readonly stateDir: string;
  readonly journal: DeployJournal;
  readonly localStatePath: string;
  locateBinary(): Promise<string>;
  recover(log: Logger): Promise<JournalEntry[]>;
  buildEnv(request: DeploymentRequest, dataDir: string, pluginCacheDir: string): Record<string, string>;
  settings(): { pluginCacheDir: string | null; cancelGraceMs: number; lockTimeoutS: number; maxOutputJsonBytes: number; redactSensitiveOutputs: boolean };
}

/** One deployment's execution; see TerraformRunner.start. */
export class Run {
  private child: ChildProcess | null = null;
  private cancelled = false;
  private interruptSent = false;
  private killTimer: NodeJS.Timeout | null = null;
  private offset = 0;

  constructor(
    private readonly runner: RunContext,
    private readonly req: DeploymentRequest,
    private readonly log: Logger,
  ) {}

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.log.info('cancel requested');
    this.interruptChild();
  }

  /**
   * One SIGINT per child: terraform treats a second one as "exit immediately, lose state".
   * SIGKILL to the whole process group follows after the grace period.
   */
  private interruptChild(): void {
    const child = this.child;
    if (!child?.pid || this.interruptSent || child.exitCode !== null || child.signalCode !== null) return;
    this.interruptSent = true;
    signal(child.pid, 'SIGINT'); // terraform stops its provisioners and saves state
    const pid = child.pid;
    this.killTimer = setTimeout(() => {
      this.log.warn({ pid }, 'terraform did not stop within the grace period; SIGKILL');
      signal(-pid, 'SIGKILL');
    }, this.runner.settings().cancelGraceMs);
  }

  async execute(): Promise<DeploymentResult> {
    const tool = await this.runner.locateBinary();
    const interrupted = await this.runner.recover(this.log);
    const workDir = await realpath(this.req.workDir).catch((err: unknown) => {
      throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `work directory ${this.req.workDir} is not usable`, { cause: err });
    });
    const stateMode = (await stackDeclaresBackend(workDir)) ? 'stack' : 'local';
    if (stateMode === 'local') await this.writeLocalBackend(workDir);
    const settings = this.runner.settings();
    const pluginCacheDir = settings.pluginCacheDir ?? join(this.runner.stateDir, 'deploy', 'plugin-cache');
    await mkdir(pluginCacheDir, { recursive: true, mode: 0o700 });
    const dataDir = join(workDir, '.terraform');
    const env = this.runner.buildEnv(this.req, dataDir, pluginCacheDir);
    const base: Omit<DeploymentResult, 'status' | 'exitCode'> = { deploymentId: this.req.deploymentId, action: this.req.action, outputs: null, interrupted, stateMode, tool };

    await this.runner.journal.begin({ deploymentId: this.req.deploymentId, action: this.req.action, workDir, stateMode });
    try {
      const lock = `-lock-timeout=${settings.lockTimeoutS}s`;
      const planFile = join(dataDir, 'uplink.tfplan');
      const steps: Array<[DeployStep, string[]]> = [['init', ['init', '-input=false', '-no-color', lock]]];
      if (this.req.action === 'plan') steps.push(['plan', ['plan', '-input=false', '-no-color', lock, '-detailed-exitcode']]);
      else {
        steps.push(['plan', ['plan', '-input=false', '-no-color', lock, `-out=${planFile}`, ...(this.req.action === 'destroy' ? ['-destroy'] : [])]]);
        steps.push(['apply', ['apply', '-input=false', '-no-color', lock, planFile]]);
      }
      let exitCode: number | null = null;
      let planHasChanges: boolean | undefined;
      for (const [step, args] of steps) {
        if (this.cancelled) return this.cancelledResult(base, exitCode, step);
        const exit = await this.spawnStep(tool, step, args, workDir, env);
        exitCode = exit.code;
        if (this.cancelled) return this.cancelledResult(base, exitCode, step);
        const ok = exit.code === 0 || (step === 'plan' && this.req.action === 'plan' && exit.code === 2);
        if (!ok) return this.failed(base, step, exitCode, `terraform ${step} exited with ${exit.code ?? exit.signal}`);
        if (step === 'plan' && this.req.action === 'plan') planHasChanges = exit.code === 2;
      }
      if (this.req.action === 'plan') return { ...base, status: 'succeeded', exitCode, ...(planHasChanges === undefined ? {} : { planHasChanges }) };
      if (this.cancelled) return this.cancelledResult(base, exitCode, 'output');
      const captured = await this.spawnStep(tool, 'output', ['output', '-json', '-no-color'], workDir, env, settings.maxOutputJsonBytes);
      if (this.cancelled) return this.cancelledResult(base, captured.code, 'output');
      if (captured.overflow) return this.failed(base, 'output', captured.code, `output -json is larger than ${settings.maxOutputJsonBytes} bytes`);
      if (captured.code !== 0) return this.failed(base, 'output', captured.code, `terraform output exited with ${captured.code ?? captured.signal}`);
      const outputs = parseOutputs(captured.stdout, settings.redactSensitiveOutputs);
      if (!outputs) return this.failed(base, 'output', captured.code, 'terraform output -json did not print a JSON object');
      return { ...base, status: 'succeeded', exitCode: 0, outputs };
    } catch (err) {
      const e = toUplinkError(err);
      this.log.error({ err }, 'deployment failed to run');
      return { ...base, status: 'failed', exitCode: null, error: e.toJSON() };
    } finally {
      if (this.killTimer) clearTimeout(this.killTimer);
      await this.runner.journal.finish();
    }
  }

  private cancelledResult(base: Omit<DeploymentResult, 'status' | 'exitCode'>, exitCode: number | null, step: DeployStep): DeploymentResult {
    const error = new UplinkError('UPLINK_ERR_DEPLOY_CANCELLED', `deployment ${this.req.deploymentId} was cancelled during ${step}`, { details: { step } });
    return { ...base, status: 'cancelled', exitCode, step, error: error.toJSON() };
  }

  private failed(base: Omit<DeploymentResult, 'status' | 'exitCode'>, step: DeployStep, exitCode: number | null, message: string): DeploymentResult {
    this.log.warn({ step, exitCode }, message);
    const error = new UplinkError('UPLINK_ERR_DEPLOY_FAILED', message, { details: { step, exitCode } });
    return { ...base, status: 'failed', exitCode, step, error: error.toJSON() };
  }

  /** Without a backend in the stack, point terraform at the appliance's local state. */
  private async writeLocalBackend(workDir: string): Promise<void> {
    await mkdir(join(this.runner.stateDir, 'deploy', 'state'), { recursive: true, mode: 0o700 });
    const doc = { '//': 'Written by uplink-agent: the stack declares no backend, so its state is kept per appliance in the agent state directory.', terraform: { backend: { local: { path: this.runner.localStatePath } } } };
    const handle = await open(join(workDir, LOCAL_BACKEND_FILE), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o644).catch((err: NodeJS.ErrnoException) => {
      throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `cannot write ${LOCAL_BACKEND_FILE} in the work directory (${err.code}); is this a fresh extraction?`, { cause: err });
    });
    try {
      await handle.writeFile(JSON.stringify(doc, null, 2) + '\n');
    } finally {
      await handle.close();
    }
  }

  /**
   * Run one step in its own process group. stdout/stderr stream to onOutput, except for
   * `output`, whose stdout is captured (up to `capture` bytes) instead.
   */
  private async spawnStep(
    tool: string,
    step: DeployStep,
    args: string[],
    cwd: string,
    env: Record<string, string>,
    capture?: number,
  ): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: Buffer; overflow: boolean }> {
    this.log.info({ step, args }, 'terraform step');
    const child = spawn(tool, args, { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const captured: Buffer[] = [];
    let capturedBytes = 0;
    let overflow = false;
    const spawned = new Promise<void>((res, rej) => {
      child.once('spawn', res);
      child.once('error', rej);
    });
    const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
      child.once('exit', () => {
        // A stray grandchild may hold the pipes open; do not wait on it forever.
        setTimeout(() => {
          child.stdout?.destroy();
          child.stderr?.destroy();
        }, STDIO_DRAIN_MS).unref();
      });
      child.once('close', (code, sig) => res({ code, signal: sig }));
    });
    child.stdout!.on('data', (data: Buffer) => {
      if (capture === undefined) return this.emit('stdout', step, data);
      capturedBytes += data.length;
      if (capturedBytes > capture) {
        if (!overflow) signal(-child.pid!, 'SIGKILL');
        overflow = true;
      } else captured.push(data);
    });
    child.stderr!.on('data', (data: Buffer) => this.emit('stderr', step, data));
    await spawned;
    await this.runner.journal.update({ phase: step, toolPid: child.pid ?? null });
    // cancel() may have come while spawning; the child now exists, so signal it.
    if (this.cancelled) this.interruptChild();
    const exit = await closed;
    this.child = null;
    if (this.killTimer) {
      clearTimeout(this.killTimer);
      this.killTimer = null;
    }
    if (this.cancelled && child.pid) signal(-child.pid, 'SIGKILL'); // leave no provisioner behind
    await this.runner.journal.update({ phase: step, toolPid: null });
    return { ...exit, stdout: Buffer.concat(captured), overflow };
  }

  private emit(stream: 'stdout' | 'stderr', step: DeployStep, data: Buffer): void {
    const chunk: OutputChunk = { stream, step, offset: this.offset, data };
    this.offset += data.length;
    if (!this.req.onOutput) return;
    try {
      this.req.onOutput(chunk);
    } catch (err) {
      this.log.error({ err }, 'onOutput callback threw; output continues');
    }
  }
}

function parseOutputs(stdout: Buffer, redact: boolean): Record<string, TerraformOutput> | null {
  let doc: unknown;
  try {
    doc = JSON.parse(stdout.toString('utf8'));
  } catch {
    return null;
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return null;
  const out: Record<string, TerraformOutput> = {};
  for (const [name, raw] of Object.entries(doc as Record<string, { value?: unknown; type?: unknown; sensitive?: unknown }>)) {
    const sensitive = raw?.sensitive === true;
    out[name] = sensitive && redact ? { value: null, type: raw?.type ?? null, sensitive, redacted: true } : { value: raw?.value ?? null, type: raw?.type ?? null, sensitive };
  }
  return out;
}

/** Send a signal; a process that is already gone is not an error. */
export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}
