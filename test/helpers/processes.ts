/**
 * The real binaries from dist/ as child processes (build first: `npx tsc -p tsconfig.json`):
 * a relay, an agent, the CLI, and /proc readings about them (RSS, listening sockets).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, readlinkSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Test } from 'tap';
import { ADMIN_TOKEN, tempDir, waitFor } from './cluster.js';

export const DIST = resolve(import.meta.dirname, '../../dist');

export interface Proc {
  child: ChildProcess;
  pid: number;
  stderr(): string;
}

function track(t: Test, child: ChildProcess): Proc {
  let err = '';
  child.stderr?.on('data', (c: Buffer) => {
    if (err.length < 1_000_000) err += c.toString('utf8');
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, pid: child.pid!, stderr: () => err };
}

/** `uplink-relay serve` on a free loopback port; resolves once it logged its URL. */
export async function startRelayProcess(t: Test, opts: { databaseUrl?: string; config?: Record<string, unknown> } = {}): Promise<Proc & { url: string }> {
  const dir = tempDir(t, 'uplink-relayproc-');
  const cfgFile = join(dir, 'relay.json');
  writeFileSync(cfgFile, JSON.stringify(opts.config ?? {}));
  const store = opts.databaseUrl ? ['--database-url', opts.databaseUrl] : ['--data-dir', join(dir, 'data')];
  const child = spawn(process.execPath, [join(DIST, 'relay/main.js'), 'serve', '--listen', '127.0.0.1:0', '--insecure-http', ...store, '--config', cfgFile], {
    env: { ...process.env, UPLINK_BOOTSTRAP_TOKEN: ADMIN_TOKEN, UPLINK_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const p = track(t, child);
  let url = '';
  await waitFor(() => {
    const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(p.stderr());
    if (m) url = m[1]!;
    if (child.exitCode !== null) throw new Error(`relay exited ${child.exitCode}: ${p.stderr()}`);
    return url !== '';
  }, 120_000, 'relay process listening');
  return { ...p, url };
}

/** `uplink-agent run` against `relayUrl`; `opts.stateDir` restarts an agent on an existing state dir. */
export function startAgentProcess(t: Test, relayUrl: string, enrollmentToken: string, config: Record<string, unknown> = {}, opts: { stateDir?: string } = {}): Proc & { stateDir: string } {
  const dir = tempDir(t, 'uplink-agentproc-');
  const stateDir = opts.stateDir ?? join(dir, 'state');
  mkdirSync(stateDir, { recursive: true });
  const cfgFile = join(dir, 'agent.json');
  writeFileSync(cfgFile, JSON.stringify(config));
  const child = spawn(process.execPath, [join(DIST, 'agent/main.js'), 'run'], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, UPLINK_RELAY_URL: relayUrl, UPLINK_ENROLLMENT_TOKEN: enrollmentToken, UPLINK_STATE_DIR: stateDir, UPLINK_CONFIG: cfgFile },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return { ...track(t, child), stateDir };
}

/** Resident set size of a live process, in bytes, from /proc/<pid>/status. */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** Socket inodes a process holds open, from /proc/<pid>/fd. */
export function socketInodes(pid: number): Set<string> {
  const out = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) out.add(m[1]!);
    } catch {
      // fd closed meanwhile
    }
  }
  return out;
}

/** TCP sockets in LISTEN (state 0A) and unix sockets listening (flags 00010000), by inode. */
export function listeningInodes(): Map<string, string> {
  const out = new Map<string, string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.trim().split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[3] === '0A') out.set(f[9]!, `${file} ${f[1]}`);
    }
  }
  const unix = readFileSync('/proc/net/unix', 'utf8').trim().split('\n').slice(1);
  for (const line of unix) {
    const f = line.trim().split(/\s+/);
    // Num RefCount Protocol Flags Type St Inode Path; __SO_ACCEPTCON (0x10000) marks a listener.
    if ((parseInt(f[3]!, 16) & 0x10000) !== 0) out.set(f[6]!, `unix ${f[7] ?? '(anonymous)'}`);
  }
  return out;
}

/** Run a built CLI (`node ARGS`) without blocking this process (a relay under test may live here). */
export function runNode(args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}
