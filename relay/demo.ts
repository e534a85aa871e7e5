#!/usr/bin/env node
/**
 * `npm run demo`: a relay on PGlite in a fresh temporary directory, an appliance, an agent
 * enrolled into it, and a short guided tour run with the real CLI. Then it keeps running
 * and prints the lines to try more, until Ctrl-C. `--once` exits after the tour: 0 when
 * every step passed, 1 otherwise.
 *
 * Everything runs as separate processes, exactly as a vendor and a customer would run them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { DEMO_STEPS, type DemoStep } from './demo-steps.js';

const here = dirname(fileURLToPath(import.meta.url));
const BIN = {
  relay: join(here, 'main.js'),
  cli: join(here, 'cli', 'main.js'),
  agent: join(here, '..', 'agent', 'main.js'),
};

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string) => (process.stdout.isTTY ? `\x1b[2m${s}\x1b[0m` : s);

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A free port on 127.0.0.1 (the OS picks it; released at once for the agent to bind). */
function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

export function runCli(args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN.cli, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(input ?? '');
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

async function waitForLine(child: ChildProcess, match: (line: Record<string, unknown>) => boolean, timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
    const onData = (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const obj = JSON.parse(line) as Record<string, unknown>;
          if (match(obj)) {
            clearTimeout(timer);
            child.stderr?.off('data', onData);
            resolve(obj);
            return;
          }
        } catch {
          // not a log line
        }
      }
    };
    child.stderr?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`exited with ${code} before it was ready`)));
  });
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { once: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true });
  if (values.help) {
    process.stdout.write('Usage: npm run demo [-- --once]\nStarts a relay (PGlite), enrolls an agent and tours what uplink does. --once exits after the tour.\n');
    return 0;
  }
  const dir = mkdtempSync(join(tmpdir(), 'uplink-demo-'));
  const token = `demo-${randomBytes(18).toString('base64url')}`;
  const children: ChildProcess[] = [];
  const cleanup = () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  };
  process.on('exit', () => {
    cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  console.log(bold('uplink demo') + dim(`  (state in ${dir})`));
  console.log('\n1. Starting a relay on the embedded store (PGlite)…');
  // Telemetry: a file sink in the demo dir, and the agent's OTLP receiver on a free loopback port.
  const relayConfig = join(dir, 'relay-config.json');
  writeFileSync(relayConfig, JSON.stringify({ telemetry: { sinks: [{ type: 'file', name: 'demo-file', path: join(dir, 'telemetry.jsonl') }], pullIntervalMs: 100 } }));
  const otlpPort = await freeLoopbackPort();
  // A service "inside the appliance" for the forward step; the customer allowlists exactly it.
  const servicePort = await freeLoopbackPort();
  const agentConfig = join(dir, 'agent-config.json');
  writeFileSync(
    agentConfig,
    JSON.stringify({
      telemetry: { otlpReceiver: { enabled: true, port: otlpPort } },
      operations: { forward: { allow: [{ name: 'demo-service', cidrs: ['127.0.0.1/32'], ports: [servicePort] }] } },
    }),
  );
  const relay = spawn(process.execPath, [BIN.relay, 'serve', '--listen', '127.0.0.1:0', '--data-dir', join(dir, 'relay'), '--insecure-http', '--config', relayConfig], {
    env: { ...process.env, UPLINK_BOOTSTRAP_TOKEN: token, UPLINK_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(relay);
  const listening = await waitForLine(relay, (l) => l.msg === 'relay listening', 120_000);
  const url = String(listening.url);
  console.log(`   relay listening on ${url}`);
  const env = { ...process.env, UPLINK_URL: url, UPLINK_TOKEN: token, DEMO_AGENT_CONFIG: agentConfig, DEMO_OTLP_PORT: String(otlpPort), DEMO_SERVICE_PORT: String(servicePort) };

  const steps: DemoStep[] = DEMO_STEPS;
  let failed = 0;
  const ctx = { env, dir, bin: BIN, children, runCli, waitForLine };
  let n = 2;
  for (const step of steps) {
    console.log(`\n${n++}. ${step.title}`);
    try {
      await step.run(ctx);
    } catch (err) {
      failed++;
      console.log(`   ${bold('FAILED')}: ${(err as Error).message}`);
    }
  }

  console.log(`\n${failed === 0 ? bold('Tour complete.') : bold(`${failed} step(s) failed.`)}`);
  if (values.once) {
    cleanup();
    return failed === 0 ? 0 : 1;
  }
  console.log(`\nThe relay and agent keep running. In another terminal:\n\n  export UPLINK_URL=${url} UPLINK_TOKEN=${token}\n  npx uplink appliances\n  npx uplink exec demo -- uname -a\n\nPress Ctrl-C to stop.`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  cleanup();
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`demo failed: ${err.message}`);
    process.exit(1);
  },
);
