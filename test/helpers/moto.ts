/**
 * Starts a real `moto_server` (the AWS emulator) on a free loopback port for one test file
 * and points the AWS SDK and CLI at it through AWS_ENDPOINT_URL and static test credentials.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Test } from 'tap';
import { needTools } from './tools.js';
import { freePort } from './net.js';

export interface Moto {
  endpoint: string;
  /** Environment for SDK clients and the aws CLI talking to this moto. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

export async function startMoto(t: Test): Promise<Moto | undefined> {
  if (!needTools(t, ['moto_server'])) return undefined;
  const port = await freePort();
  const child: ChildProcess = spawn('moto_server', ['-H', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const res = await fetch(`${endpoint}/moto-api/`);
      if (res.status < 500) break;
    } catch {
      // not up yet
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`moto_server did not start on ${endpoint}: ${stderr.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const env = {
    AWS_ENDPOINT_URL: endpoint,
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: 'testing',
    AWS_REGION: 'us-east-1',
    AWS_DEFAULT_REGION: 'us-east-1',
  };
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
    if (child.exitCode === null) child.kill('SIGKILL');
  };
  t.teardown(stop);
  return { endpoint, env, stop };
}

/**
 * The start of an end-to-end test against moto: the built `files` must exist (a missing
 * dist/ fails the test; it is not a skip), and so must the `aws` CLI and moto_server; then
 * moto runs, stopped at teardown.
 */
export async function startE2eMoto(t: Test, files: readonly string[]): Promise<Moto | undefined> {
  if (files.some((f) => !existsSync(f))) {
    t.fail('dist/ is missing: run `npx tsc -p tsconfig.json` before this test');
    return undefined;
  }
  if (!needTools(t, ['aws', 'moto_server'])) return undefined;
  return startMoto(t);
}
