/**
 * The demo's guided tour, one step per capability. A capability adds its step here when it
 * lands; each step runs the real CLI and fails loudly if the output is not what it shows.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

export interface DemoContext {
  env: NodeJS.ProcessEnv;
  dir: string;
  bin: { relay: string; cli: string; agent: string };
  children: ChildProcess[];
  runCli(args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<{ code: number; stdout: string; stderr: string }>;
  waitForLine(child: ChildProcess, match: (line: Record<string, unknown>) => boolean, timeoutMs: number): Promise<Record<string, unknown>>;
}

export interface DemoStep {
  title: string;
  run(ctx: DemoContext): Promise<void>;
}

async function runAgentCli(ctx: DemoContext, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [ctx.bin.agent, ...args], {
      env: { ...process.env, UPLINK_STATE_DIR: join(ctx.dir, 'agent') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`uplink-agent ${args[0]} exited ${code}: ${out}`))));
  });
}

function show(cmd: string, out: string): void {
  console.log(`   $ ${cmd}`);
  for (const line of out.trimEnd().split('\n')) console.log(`   ${line}`);
}

async function cli(ctx: DemoContext, args: string[], expectCode = 0, input?: string): Promise<string> {
  const r = await ctx.runCli(args, ctx.env, input);
  show(`uplink ${args.map((a) => (/\s/.test(a) ? `'${a}'` : a)).join(' ')}`, r.stdout + r.stderr);
  if (r.code !== expectCode) throw new Error(`uplink ${args[0]} exited ${r.code}, expected ${expectCode}`);
  return r.stdout;
}

export const DEMO_STEPS: DemoStep[] = [
  {
    title: 'The vendor registers an appliance for a customer and gets a one-time enrollment token',
    async run(ctx) {
      const out = await ctx.runCli(['appliance', 'create', 'demo', '--customer', 'acme', '--instance-id', 'i-0demo', '--json'], ctx.env);
      if (out.code !== 0) throw new Error(out.stderr);
      const r = JSON.parse(out.stdout) as { enrollmentToken: string; expiresAt: string };
      show('uplink appliance create demo --customer acme --instance-id i-0demo', `created; enrollment token expires ${r.expiresAt}`);
      ctx.env.DEMO_ENROLLMENT_TOKEN = r.enrollmentToken;
    },
  },
  {
    title: 'The customer starts the agent with that token; it dials out, nothing listens',
    async run(ctx) {
      const agent = spawn(process.execPath, [ctx.bin.agent, 'run'], {
        env: {
          ...process.env,
          UPLINK_RELAY_URL: ctx.env.UPLINK_URL,
          UPLINK_ENROLLMENT_TOKEN: ctx.env.DEMO_ENROLLMENT_TOKEN,
          UPLINK_STATE_DIR: join(ctx.dir, 'agent'),
          UPLINK_LOG_LEVEL: 'info',
        },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      ctx.children.push(agent);
      await ctx.waitForLine(agent, (l) => l.msg === 'connected to relay', 60_000);
      console.log('   agent enrolled (Ed25519 key made in the appliance) and connected');
    },
  },
  {
    title: 'The vendor sees the appliance connected',
    async run(ctx) {
      const out = await cli(ctx, ['appliances']);
      if (!/demo\s+acme\s+i-0demo\s+connected/.test(out)) throw new Error('appliance not shown as connected');
    },
  },
  {
    title: 'Operate access is the customer\'s to give: without it the agent refuses',
    async run(ctx) {
      await cli(ctx, ['exec', 'demo', '--', 'true'], 255);
      const grant = await runAgentCli(ctx, ['grant', 'operate', '--for', '1h', '--reason', 'demo tour']);
      show('uplink-agent grant operate --for 1h --reason "demo tour"   (customer side)', grant);
    },
  },
  {
    title: 'The vendor runs a command in the appliance: output streams back, the exit status comes through',
    async run(ctx) {
      const out = await cli(ctx, ['exec', 'demo', '--', 'uname', '-sr']);
      if (!out.trim()) throw new Error('no output from uname');
      await cli(ctx, ['exec', 'demo', '--', 'sh', '-c', 'echo "to stderr" >&2; exit 3'], 3);
    },
  },
];
