/**
 * Deploy start-up overhead: the time from `uplink deploy` until the agent starts terraform,
 * for a stack of BENCH_DEPLOY_STACK_MIB (10) MiB of random, incompressible files plus a tiny
 * terraform_data main.tf, beside the time `terraform init` itself takes on the same stack.
 *
 * Real processes: a relay (dist/, PGlite), one agent (dist/, Deploy enabled in local mode,
 * the bench's release key pinned) and the CLI for every `uplink deploy`. Each run deploys
 * the same release again (same version and archive, which the agent accepts as a re-apply)
 * and waits for it to end before the next. Split, per run, from timestamps on one machine:
 * - cli + api: CLI process start until the relay stored the deployment (createdAt);
 * - queue: createdAt until the scheduler took it (startedAt);
 * - push: startedAt until the agent had the whole request decoded (relay reads the release
 *   from its store, base64 in JSON over the tunnel, agent parses); `receive` is the agent's
 *   own share of it (from the request's headers to the decoded body);
 * - verify (signature, digests), phase (Deploy phase session), extract (to a fresh directory);
 * - runner: from the agent's "starting terraform" log line to the runner's "terraform step"
 *   init line, logged right before it spawns terraform (journal, backend file, plugin cache).
 * The agent's log lines carry their own durations (agent/deploy/deploy-service.ts).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiClient } from '../../relay/cli/api-client.js';
import { generateReleaseKey, pinnedKeyOf, writeReleaseKey } from '../../shared/release/release-key.js';
import type { CaseResult } from './agents-cases.js';
import { startRelayProcess } from './relay-process.js';
import { figure, median } from './stats.js';
import { envNumber } from './env.js';
import { setTimeout as sleep } from 'node:timers/promises';

export interface DeployOpts {
  runs: number;
  stackMiB: number;
}


/** BENCH_DEPLOY_RUNS (5), BENCH_DEPLOY_STACK_MIB (10). */
export function deployOptsFromEnv(): DeployOpts {
  return { runs: envNumber('BENCH_DEPLOY_RUNS', 5), stackMiB: envNumber('BENCH_DEPLOY_STACK_MIB', 10) };
}

const ROOT = new URL('../../', import.meta.url).pathname;
const CLI = join(ROOT, 'dist/relay/cli/main.js');
const AGENT = join(ROOT, 'dist/agent/main.js');
const TOKEN = 'bench-admin-token-0123456789abcdef';
const APPLIANCE = 'bench-deploy';

const MAIN_TF = `variable "instance_id" {
  type = string
}

resource "terraform_data" "bench" {
  input = var.instance_id
}
`;

/** main.tf plus `mib` files of 1 MiB of random bytes (gzip cannot shrink them). */
function writeStack(dir: string, mib: number): void {
  mkdirSync(join(dir, 'blobs'), { recursive: true });
  writeFileSync(join(dir, 'main.tf'), MAIN_TF);
  for (let i = 0; i < mib; i++) writeFileSync(join(dir, 'blobs', `blob-${String(i).padStart(3, '0')}.bin`), randomBytes(1024 * 1024));
}

function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, ...args], { env, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => (err ? reject(new Error(`uplink ${args.join(' ')}: ${stderr}`)) : resolve(stdout)));
  });
}

interface LogLine {
  time: string;
  msg: string;
  deployment?: string;
  step?: string;
  archiveBytes?: number;
  ms?: { receive: number | null; verify: number; phase: number; extract: number };
}

/** The agent as a process; its JSON log lines (stderr) are kept for the markers. */
function startAgent(dir: string, relayUrl: string, enrollmentToken: string, releaseKeys: unknown[]): { child: ChildProcess; lines: LogLine[] } {
  const stateDir = join(dir, 'agent-state');
  mkdirSync(stateDir, { recursive: true });
  const cfgFile = join(dir, 'agent.json');
  writeFileSync(cfgFile, JSON.stringify({ local: { deploy: 'enabled' }, releaseKeys }));
  const child = spawn(process.execPath, [AGENT, 'run'], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, UPLINK_RELAY_URL: relayUrl, UPLINK_ENROLLMENT_TOKEN: enrollmentToken, UPLINK_STATE_DIR: stateDir, UPLINK_CONFIG: cfgFile, UPLINK_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const lines: LogLine[] = [];
  let buf = '';
  child.stderr!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        lines.push(JSON.parse(line) as LogLine);
      } catch {
        // not a log line
      }
    }
  });
  return { child, lines };
}

async function waitFor<T>(what: string, timeoutMs: number, get: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`deploy bench: timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** `terraform init` as the agent runs it (same flags, a local backend, a fresh data dir). */
function timeInit(stackDir: string, workDir: string, pluginCache: string): Promise<number> {
  cpSync(stackDir, workDir, { recursive: true });
  writeFileSync(join(workDir, 'backend.tf.json'), JSON.stringify({ terraform: { backend: { local: { path: join(workDir, 'terraform.tfstate') } } } }));
  const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', TF_IN_AUTOMATION: '1', TF_INPUT: '0', CHECKPOINT_DISABLE: '1', TF_DATA_DIR: join(workDir, '.terraform'), TF_PLUGIN_CACHE_DIR: pluginCache };
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    execFile('terraform', ['init', '-input=false', '-no-color', '-lock-timeout=60s'], { cwd: workDir, env }, (err, _out, stderr) => (err ? reject(new Error(`terraform init: ${stderr}`)) : resolve(performance.now() - t0)));
  });
}

export async function runDeployCases(dir: string, opts: DeployOpts): Promise<CaseResult[]> {
  const stackDir = join(dir, 'stack');
  writeStack(stackDir, opts.stackMiB);
  const keyFile = join(dir, 'release.key');
  const key = generateReleaseKey();
  await writeReleaseKey(keyFile, key);

  // Baseline first, on a quiet machine: terraform init of the same stack, run directly.
  const pluginCache = join(dir, 'plugin-cache');
  mkdirSync(pluginCache, { recursive: true });
  const inits: number[] = [];
  for (let i = 0; i < opts.runs; i++) {
    const work = join(dir, `init-${i}`);
    inits.push(await timeInit(stackDir, work, pluginCache));
    rmSync(work, { recursive: true, force: true });
  }

  const relay = await startRelayProcess({ dir: join(dir, 'relay'), token: TOKEN });
  const client = new ApiClient({ url: relay.url, token: TOKEN });
  const cliEnv = { PATH: process.env.PATH, HOME: process.env.HOME, UPLINK_URL: relay.url, UPLINK_TOKEN: TOKEN, UPLINK_CLI_CONFIG: join(dir, 'cli-config.json') };
  let agent: ReturnType<typeof startAgent> | undefined;
  try {
    const { enrollmentToken } = await client.call<{ enrollmentToken: string }>('POST', '/v1/appliances', { name: APPLIANCE, customer: 'bench', instanceId: 'i-bench-deploy' });
    agent = startAgent(dir, relay.url, enrollmentToken, [pinnedKeyOf(key)]);
    const running = agent;
    await waitFor('the agent to connect', 60_000, async () => {
      if (running.child.exitCode !== null) throw new Error(`agent exited ${running.child.exitCode}`);
      const { appliances } = await client.call<{ appliances: { name: string; connected: boolean }[] }>('GET', '/v1/appliances');
      return appliances.find((a) => a.name === APPLIANCE)?.connected ? true : undefined;
    });
    await runCli(['release', 'create', stackDir, '--version', '1.0.0', '--appliance', APPLIANCE, '--key', keyFile], cliEnv);

    const rows = { total: [] as number[], cli: [] as number[], queue: [] as number[], push: [] as number[], receive: [] as number[], verify: [] as number[], phase: [] as number[], extract: [] as number[], runner: [] as number[] };
    let archiveBytes = 0;
    // One run more than reported: the first warms the plugin cache, the store and the agent's code paths.
    for (let i = 0; i <= opts.runs; i++) {
      const t0 = Date.now();
      const out = await runCli(['deploy', APPLIANCE, '1.0.0', '--json'], cliEnv);
      const id = (JSON.parse(out) as { id: string }).id;
      const handover = await waitFor('the agent to start terraform', 120_000, () => running.lines.find((l) => l.deployment === id && l.msg === 'release verified and extracted; starting terraform'));
      const spawned = await waitFor('the terraform init step', 120_000, () => running.lines.find((l) => l.deployment === id && l.msg === 'terraform step' && l.step === 'init'));
      const ended = await waitFor('the deployment to end', 300_000, async () => {
        const { deployment } = await client.call<{ deployment: { status: string; createdAt: string; startedAt: string } }>('GET', `/v1/deployments/${id}`);
        return ['succeeded', 'failed', 'cancelled', 'interrupted'].includes(deployment.status) ? deployment : undefined;
      });
      if (ended.status !== 'succeeded') throw new Error(`deploy bench: deployment ${id} ${ended.status}`);
      if (i === 0) continue;
      const ms = handover.ms!;
      const created = Date.parse(ended.createdAt);
      const started = Date.parse(ended.startedAt);
      const decoded = Date.parse(handover.time) - (ms.verify + ms.phase + ms.extract);
      archiveBytes = handover.archiveBytes ?? 0;
      rows.total.push(Date.parse(spawned.time) - t0);
      rows.cli.push(created - t0);
      rows.queue.push(started - created);
      rows.push.push(decoded - started);
      rows.receive.push(ms.receive ?? NaN);
      rows.verify.push(ms.verify);
      rows.phase.push(ms.phase);
      rows.extract.push(ms.extract);
      rows.runner.push(Date.parse(spawned.time) - Date.parse(handover.time));
    }
    const init = figure(inits);
    const agentSide = rows.push.map((p, i) => p + rows.verify[i]! + rows.extract[i]!);
    const ratio = (xs: number[]) => figure(xs.map((x) => x / init.median));
    const ms = (xs: number[]) => ({ ...figure(xs), unit: 'ms' });
    return [
      {
        name: `deploy: ${opts.stackMiB} MiB stack, uplink deploy → terraform starts`,
        figures: {
          'total (uplink deploy → terraform init spawned)': ms(rows.total),
          'cli + api (CLI start → deployment stored)': ms(rows.cli),
          'queue (stored → scheduler took it)': ms(rows.queue),
          'push (relay store → agent decoded the request)': ms(rows.push),
          'receive (agent: headers → decoded body)': ms(rows.receive),
          'verify (signature, digest)': ms(rows.verify),
          'phase (Deploy session)': ms(rows.phase),
          'extract': ms(rows.extract),
          'runner (→ terraform spawned)': ms(rows.runner),
          'push + verify + extract': ms(agentSide),
          'terraform init (same stack, run directly)': { ...init, unit: 'ms' },
          'total / terraform init': { ...ratio(rows.total), unit: 'ratio' },
          '(push + verify + extract) / terraform init': { ...ratio(agentSide), unit: 'ratio' },
        },
        target: 'report beside terraform init (no target set)',
        met: null,
        notes: [
          `archive ${(archiveBytes / 2 ** 20).toFixed(2)} MiB (random files do not compress), sent base64 in JSON over the tunnel; ${opts.runs} runs after one warm-up, each deploying the same release again`,
          `terraform init median ${median(inits).toFixed(0)} ms over ${opts.runs} fresh copies of the stack (terraform_data is built in: no provider download)`,
          'timestamps: the CLI start here, createdAt/startedAt from the relay store, the agent log lines; all on one machine clock',
        ],
      },
    ];
  } finally {
    if (agent && agent.child.exitCode === null) {
      const exited = new Promise((r) => agent!.child.once('exit', r));
      agent.child.kill('SIGTERM');
      await exited;
    }
    await client.close();
    await relay.stop();
  }
}
