/**
 * The uplink side of the network benchmarks, as a user would run it: a relay serving HTTPS
 * with a self-signed certificate (made with `openssl`), one agent process trusting it
 * (UPLINK_RELAY_CA) with forward and shell operations allowed, and the real CLI
 * (dist/relay/cli/main.js) trusting it too (UPLINK_CA). With `profileDir`, the relay, the
 * agent and every CLI process run under `node --cpu-prof` and write their profiles there
 * when they stop.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { ApiClient } from '../../relay/cli/api-client.js';
import { startRelayProcess, type RelayProc } from './relay-process.js';
import { selfSignedCert } from '../helpers/tls.js';
import { stopChild } from './proc.js';
import { extraNodeArgs, profileArgs } from './env.js';
import { setTimeout as sleep } from 'node:timers/promises';

const ROOT = new URL('../../', import.meta.url).pathname;
export const CLI = join(ROOT, 'dist/relay/cli/main.js');
const AGENT = join(ROOT, 'dist/agent/main.js');
const TOKEN = 'bench-admin-token-0123456789abcdef';
export const APPLIANCE = 'bench-net';

export interface NetCluster {
  relay: RelayProc;
  agent: ChildProcess;
  /** Environment for a CLI process: relay URL, admin token, the CA file. */
  cliEnv: NodeJS.ProcessEnv;
  /** Node arguments for a CLI process running `command` (the profiler flags when profiling). */
  cliNodeArgs(command: string): string[];
  /** `openssl` names the certificate's key this way, e.g. "EC P-256". */
  certKey: string;
  /** What a default Node TLS client negotiates with the relay, e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384". */
  tls: string;
  stop(): Promise<void>;
}

export async function startNetCluster(dir: string, opts: { forwardPorts: number[]; profileDir?: string | undefined }): Promise<NetCluster> {
  mkdirSync(dir, { recursive: true });
  const tls = selfSignedCert(dir);
  const prof = (who: string) => [...extraNodeArgs(), ...profileArgs(opts.profileDir, who)];
  const relay = await startRelayProcess({ dir: join(dir, 'relay'), token: TOKEN, tls, nodeArgs: prof('relay'), config: { shutdown: { drainTimeoutMs: 1000 }, recordings: { enabled: process.env.BENCH_RECORDINGS !== '0' } } });
  const client = new ApiClient({ url: relay.url, token: TOKEN, caFile: tls.certFile });
  let agent: ChildProcess | undefined;
  try {
    const { enrollmentToken } = await client.call<{ enrollmentToken: string }>('POST', '/v1/appliances', { name: APPLIANCE, customer: 'bench', instanceId: 'i-bench-net' });
    const stateDir = join(dir, 'agent-state');
    mkdirSync(stateDir, { recursive: true });
    const cfgFile = join(dir, 'agent.json');
    writeFileSync(
      cfgFile,
      JSON.stringify({
        local: { operate: 'enabled' },
        operations: {
          shell: { shell: '/bin/sh' },
          forward: { allow: [{ name: 'bench-loopback', cidrs: ['127.0.0.1/32'], ports: opts.forwardPorts }], maxConnections: 1024 },
        },
      }),
    );
    agent = spawn(process.execPath, [...prof('agent'), AGENT, 'run'], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, UPLINK_RELAY_URL: relay.url, UPLINK_RELAY_CA: tls.certFile, UPLINK_ENROLLMENT_TOKEN: enrollmentToken, UPLINK_STATE_DIR: stateDir, UPLINK_CONFIG: cfgFile, UPLINK_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const deadline = Date.now() + 60_000;
    for (;;) {
      const { appliances } = await client.call<{ appliances: { name: string; connected: boolean }[] }>('GET', '/v1/appliances');
      if (appliances.find((a) => a.name === APPLIANCE)?.connected) break;
      if (agent.exitCode !== null) throw new Error(`agent exited ${agent.exitCode}`);
      if (Date.now() > deadline) throw new Error('agent did not connect in 60 s');
      await sleep(100);
    }
  } catch (err) {
    if (agent) await stopChild(agent);
    await relay.stop();
    throw err;
  } finally {
    await client.close();
  }
  const certKey = /Public-Key: \((\d+) bit\)/.exec(execFileSync('openssl', ['x509', '-in', tls.certFile, '-noout', '-text'], { encoding: 'utf8' }))?.[1];
  const running = agent;
  const negotiated = await new Promise<string>((resolve) => {
    const u = new URL(relay.url);
    const sock = tlsConnect({ host: u.hostname, port: Number(u.port), ca: readFileSync(tls.certFile) }, () => {
      resolve(`${sock.getProtocol()} ${sock.getCipher().standardName}`);
      sock.end();
    });
    sock.once('error', (err) => resolve(`unknown (${err.message})`));
  });
  return {
    relay,
    agent: running,
    cliEnv: { PATH: process.env.PATH, HOME: process.env.HOME, UPLINK_URL: relay.url, UPLINK_TOKEN: TOKEN, UPLINK_CA: tls.certFile, UPLINK_CLI_CONFIG: join(dir, 'cli-config.json'), TERM: 'xterm' },
    cliNodeArgs: (command) => prof(`cli-${command}`),
    certKey: `EC P-${certKey ?? '?'}`,
    tls: negotiated,
    async stop() {
      await stopChild(running);
      await relay.stop();
    },
  };
}

/** `uplink forward APPLIANCE 0:127.0.0.1:PORT --json` as its own process; resolves with the local port. */
export async function startForwardCli(cluster: NetCluster, targetPort: number): Promise<{ port: number; child: ChildProcess; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [...cluster.cliNodeArgs('forward'), CLI, 'forward', APPLIANCE, `0:127.0.0.1:${targetPort}`, '--json'], { env: cluster.cliEnv, stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const line = buf.split('\n')[0];
      if (buf.includes('\n')) resolve((JSON.parse(line!) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`uplink forward exited ${code}`)));
  });
  return { port, child, stop: () => stopChild(child) };
}
