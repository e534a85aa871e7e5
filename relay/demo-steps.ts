/**
 * The demo's guided tour, one step per capability. A capability adds its step here when it
 * lands; each step runs the real CLI and fails loudly if the output is not what it shows.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
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

/** `uplink forward … --json` as a process; resolves once it listens, with its local port. */
async function startForward(ctx: DemoContext, target: string): Promise<{ child: ChildProcess; port: number; stderr: () => string }> {
  const child = spawn(process.execPath, [ctx.bin.cli, 'forward', 'demo', `0:${target}`, '--ttl', '60s', '--json'], { env: ctx.env, stdio: ['ignore', 'pipe', 'pipe'] });
  ctx.children.push(child);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve((JSON.parse(out.slice(0, nl)) as { port: number }).port);
    });
    child.once('close', (code) => reject(new Error(`uplink forward exited ${code}: ${err}`)));
  });
  return { child, port, stderr: () => err };
}

/** One line to a local port; resolves what came back before the connection closed or a line arrived. */
function ask(port: number, line: string): Promise<string> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    let got = '';
    sock.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.endsWith('\n')) sock.end();
    });
    sock.on('error', () => {});
    sock.on('close', () => resolve(got));
    sock.write(line);
  });
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
    title: 'The vendor makes a release signing key; the customer pins its public half in the agent',
    async run(ctx) {
      const out = await cli(ctx, ['release', 'keygen', '--out', join(ctx.dir, 'release.key'), '--json']);
      const pinned = JSON.parse(out) as { id: string; publicKey: string };
      if (!/^[0-9a-f]{16}$/.test(pinned.id)) throw new Error('release keygen printed no key id');
      ctx.env.DEMO_RELEASE_KEYS = JSON.stringify([pinned]);
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
          ...(ctx.env.DEMO_AGENT_CONFIG ? { UPLINK_CONFIG: ctx.env.DEMO_AGENT_CONFIG } : {}),
          ...(ctx.env.DEMO_RELEASE_KEYS ? { UPLINK_RELEASE_KEYS: ctx.env.DEMO_RELEASE_KEYS } : {}),
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
    title: 'The vendor sees the customer\'s approval per appliance (the grant reaches the relay at once)',
    async run(ctx) {
      // The agent answers the relay's held /v1/phases poll when the grant lands; allow a
      // few seconds for the round trip on a slow machine.
      const deadline = Date.now() + 15_000;
      for (;;) {
        const r = await ctx.runCli(['appliances'], ctx.env);
        if (r.code === 0 && /operate: open until \S+/.test(r.stdout)) {
          show('uplink appliances', r.stdout);
          if (!/\[local mode\]/.test(r.stdout)) throw new Error('the demo agent runs without AWS: the PHASES column must say [local mode]');
          return;
        }
        if (Date.now() > deadline) throw new Error(`the PHASES column does not show operate open:\n${r.stdout}${r.stderr}`);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
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
  {
    title: 'A shell on the appliance (a real PTY); every session is recorded and every operation audited',
    async run(ctx) {
      const out = await cli(ctx, ['shell', 'demo', '--command', 'echo hi; exit 4'], 4);
      if (!/^hi\r?\n/.test(out)) throw new Error('shell output is not "hi"');
      const sessions = await cli(ctx, ['sessions', '--appliance', 'demo']);
      if (!/\sshell\s.*\scomplete$/m.test(sessions)) throw new Error('the shell session is not listed as a complete recording');
      const audit = await cli(ctx, ['audit', '--verify']);
      if (!/chain intact/.test(audit)) throw new Error('the relay audit chain did not verify');
    },
  },
  {
    title: 'The vendor reaches a service inside the appliance with uplink forward, only where the customer allows it',
    async run(ctx) {
      const servicePort = Number(ctx.env.DEMO_SERVICE_PORT);
      if (!servicePort) throw new Error('the demo agent has no allowlisted service port');
      // The service in the appliance: answers each line in capitals. Its port is the only
      // destination the customer's operations.forward.allow lets the agent dial.
      const conns = new Set<Socket>();
      const service = createServer((s) => {
        conns.add(s);
        s.on('close', () => conns.delete(s));
        s.on('data', (d: Buffer) => s.write(d.toString().toUpperCase()));
        s.on('error', () => {});
      });
      await new Promise<void>((resolve) => service.listen(servicePort, '127.0.0.1', resolve));
      try {
        const allowed = await startForward(ctx, `127.0.0.1:${servicePort}`);
        const answer = await ask(allowed.port, 'hello from the vendor\n');
        show(`uplink forward demo 0:127.0.0.1:${servicePort}   (then: echo 'hello from the vendor' | nc 127.0.0.1 ${allowed.port})`, answer);
        if (answer !== 'HELLO FROM THE VENDOR\n') throw new Error(`the service's answer did not come back through the forward: ${JSON.stringify(answer)}`);
        // Deny by default: the same forward to a port nobody allowlisted is refused, naming why.
        const denied = await startForward(ctx, '127.0.0.1:22');
        await ask(denied.port, 'hello\n');
        for (let i = 0; i < 100 && !/UPLINK_ERR_FORWARD_DENIED/.test(denied.stderr()); i++) await new Promise((resolve) => setTimeout(resolve, 50));
        show(`uplink forward demo 0:127.0.0.1:22   (then a connection to ${denied.port})`, denied.stderr());
        if (!/^error UPLINK_ERR_FORWARD_DENIED: .*demo-service/m.test(denied.stderr())) throw new Error('the refusal does not name the customer rule that was tried');
        for (const f of [allowed, denied]) f.child.kill('SIGINT');
        console.log('   (uplink sql is not in the tour: its targets are PostgreSQL servers, and the demo starts no external service)');
      } finally {
        for (const c of conns) c.destroy();
        await new Promise<void>((resolve) => service.close(() => resolve()));
      }
    },
  },
  {
    title: "An application in the appliance sends OTLP logs to the agent; the relay delivers them and tails them live",
    async run(ctx) {
      const port = ctx.env.DEMO_OTLP_PORT;
      if (!port) throw new Error('the demo agent has no OTLP receiver port');
      const tail = ctx.runCli(['telemetry', 'tail', 'demo', '--logs', '--json', '--limit', '1'], ctx.env);
      let done = false;
      void tail.finally(() => (done = true));
      // The tail shows records delivered after it subscribed: post until one comes through.
      for (let n = 0; !done && n < 100; n++) {
        const body = { resourceLogs: [{ resource: { attributes: [{ key: 'service.name', value: { stringValue: 'demo-app' } }] }, scopeLogs: [{ logRecords: [{ timeUnixNano: `${Date.now()}000000`, severityText: 'INFO', body: { stringValue: `order 42 shipped (${n})` } }] }] }] };
        const res = await fetch(`http://127.0.0.1:${port}/v1/logs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
        if (res.status !== 200) throw new Error(`the agent's OTLP receiver answered ${res.status}`);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      const r = await tail;
      show('curl -X POST http://127.0.0.1:' + port + '/v1/logs …   (the application, inside the appliance)', 'HTTP 200');
      show('uplink telemetry tail demo --logs --json --limit 1', r.stdout + r.stderr);
      if (r.code !== 0) throw new Error(`uplink telemetry tail exited ${r.code}`);
      const line = JSON.parse(r.stdout.trim().split('\n')[0] ?? '{}') as { payload?: { body?: { stringValue?: string } }; resource?: Record<string, unknown> };
      if (!/^order 42 shipped/.test(line.payload?.body?.stringValue ?? '')) throw new Error('the tailed record is not the posted log');
      if (line.resource?.['instance-id'] !== 'i-0demo') throw new Error('the tailed record lacks the instance-id resource attribute');
    },
  },
  {
    title: 'The vendor signs a Terraform stack and deploys it; the customer approved Deploy; output streams live',
    async run(ctx) {
      const tool = ['tofu', 'terraform'].find((name) => spawnSync('sh', ['-c', `command -v ${name}`]).status === 0);
      if (!tool) {
        console.log('   skipped: neither tofu nor terraform is on PATH (the agent runs stacks with one of them)');
        return;
      }
      const stack = join(ctx.dir, 'stack');
      mkdirSync(stack, { recursive: true });
      writeFileSync(
        join(stack, 'main.tf'),
        'variable "instance_id" {\n  type = string\n}\n\nresource "terraform_data" "hello" {\n  input = "hello from ${var.instance_id}"\n}\n\noutput "hello" {\n  value = terraform_data.hello.output\n}\n',
      );
      await cli(ctx, ['release', 'create', stack, '--version', '1.0.0', '--appliance', 'demo', '--key', join(ctx.dir, 'release.key'), '--notes', 'demo stack']);
      const grant = await runAgentCli(ctx, ['grant', 'deploy', '--for', '1h', '--reason', 'demo tour']);
      show('uplink-agent grant deploy --for 1h --reason "demo tour"   (customer side)', grant);
      const out = await cli(ctx, ['deploy', 'demo', '1.0.0', '--follow']);
      if (!/Apply complete! Resources: 1 added/.test(out)) throw new Error(`${tool} apply output missing`);
      const list = await cli(ctx, ['deployments', 'demo', '--json']);
      const [d] = JSON.parse(list) as { status: string; outputs: { hello?: { value?: string } } }[];
      if (d?.status !== 'succeeded' || d.outputs.hello?.value !== 'hello from i-0demo') throw new Error('the deployment did not store its outputs');
    },
  },
];
