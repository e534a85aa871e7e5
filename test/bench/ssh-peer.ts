/**
 * A throwaway OpenSSH server for the network benchmarks' baselines: `/usr/sbin/sshd -D` on a
 * free loopback port with its own host key, a user key for the current user in its own
 * authorized_keys, StrictModes off and the PID file in the scratch dir. Nothing outside
 * `dir` is touched except, when running as root, the privilege-separation directory sshd
 * insists on (/run/sshd), created if missing as the packaged service would.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../helpers/net.js';
import { stopChild } from './proc.js';

export const SSHD = '/usr/sbin/sshd';

export interface SshPeer {
  /** The listening sshd; each connection is served by processes forked under it. */
  pid: number;
  port: number;
  user: string;
  keyFile: string;
  /** `OpenSSH_9.2p1 …` as `ssh -V` prints it. */
  version: string;
  /** The cipher the client's and server's defaults agree on (from one `ssh -v`). */
  cipher: string;
  /** Arguments that reach this server: options, then `user@127.0.0.1`; append the command. */
  args(extra?: string[]): string[];
  stop(): Promise<void>;
}

/** Resolve once something accepts TCP connections on 127.0.0.1:port. */
export async function waitListening(port: number, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what}: nothing listening on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const keygen = (file: string) => execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'uplink-bench', '-f', file], { stdio: 'ignore' });

export async function startSshPeer(dir: string): Promise<SshPeer> {
  if (!existsSync(SSHD)) throw new Error(`${SSHD} not found: install openssh-server (apt-get install -y openssh-server openssh-client)`);
  mkdirSync(dir, { recursive: true });
  const hostKey = join(dir, 'host_ed25519');
  const keyFile = join(dir, 'user_ed25519');
  keygen(hostKey);
  keygen(keyFile);
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(`${keyFile}.pub`));
  if (process.getuid?.() === 0 && !existsSync('/run/sshd')) mkdirSync('/run/sshd', { mode: 0o755 });
  const port = await freePort();
  const cfg = join(dir, 'sshd_config');
  writeFileSync(
    cfg,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'StrictModes no',
      'UsePAM no',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PermitRootLogin prohibit-password',
      'AllowTcpForwarding yes',
      'PermitTTY yes',
      'PrintMotd no',
      'PrintLastLog no',
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn(SSHD, ['-D', '-e', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`sshd exited ${code}: ${err}`))));
  exited.catch(() => {});
  try {
    await Promise.race([waitListening(port, 10_000, 'sshd'), exited]);
  } catch (err) {
    child.kill('SIGTERM');
    throw err;
  }
  const user = userInfo().username;
  const version = spawnSync('ssh', ['-V'], { encoding: 'utf8' }).stderr.trim();
  const args = (extra: string[] = []): string[] => [
    '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'LogLevel=ERROR',
    '-o', 'BatchMode=yes',
    '-F', '/dev/null',
    '-i', keyFile,
    '-p', String(port),
    ...extra,
    `${user}@127.0.0.1`,
  ];
  // One verbose login tells which cipher the defaults negotiate.
  const probe = spawnSync('ssh', [...args(['-v']), 'true'], { encoding: 'utf8', timeout: 30_000 });
  if (probe.status !== 0) {
    child.kill('SIGTERM');
    throw new Error(`ssh to the bench sshd failed (${probe.status}): ${probe.stderr.slice(-2000)}`);
  }
  const cipher = /kex: server->client cipher: (\S+)/.exec(probe.stderr)?.[1] ?? 'unknown';
  return {
    pid: child.pid!,
    port,
    user,
    keyFile,
    version,
    cipher,
    args,
    stop: () => stopChild(child),
  };
}
