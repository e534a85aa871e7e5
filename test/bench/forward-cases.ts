/**
 * `uplink forward` against OpenSSH's `ssh -L` and a direct loopback connection, all three
 * measured in the same script against the same target server (traffic.ts): bulk throughput
 * of one stream (download and upload), 16 concurrent streams through one forward (aggregate
 * and Jain fairness), and one-byte request/response latency. Each figure is the median of
 * `runs` runs, the paths interleaved within each run so load from elsewhere hits them alike.
 *
 * The uplink path is CLI process → TLS WebSocket → relay process → TLS WebSocket (HTTP/2
 * inside) → agent process → target; the ssh path is ssh client → sshd → target.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import type { CaseResult } from './agents-cases.js';
import { profileClockUs, profileNotes } from './cpu-profile.js';
import { cpuSeconds, stopChild, treeCpuSeconds } from './proc.js';
import { startForwardCli, startNetCluster } from './net-cluster.js';
import { startSshPeer, waitListening, type SshPeer } from './ssh-peer.js';
import { freePort } from '../helpers/net.js';
import { figure, jain, percentile } from './stats.js';
import { download, downloadWindow, pingPong, startTarget, upload } from './traffic.js';
import { envNumber, profileDirFor } from './env.js';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ForwardOpts {
  runs: number;
  /** Bytes of one bulk transfer, each direction. */
  bulkMiB: number;
  streams: number;
  /** Length of the measured window of the concurrent-streams case. */
  windowMs: number;
  pingSamples: number;
  /** When set, relay, agent and CLI run under --cpu-prof and the hot frames go into the notes. */
  profileDir?: string | undefined;
}


/**
 * BENCH_NET_RUNS (5), BENCH_FORWARD_MIB (128), BENCH_FORWARD_STREAMS (16),
 * BENCH_FORWARD_WINDOW_MS (3000), BENCH_PING_SAMPLES (1000), BENCH_CPU_PROF (a directory:
 * profile relay, agent and CLI there).
 */
export function forwardOptsFromEnv(): ForwardOpts {
  return {
    runs: envNumber('BENCH_NET_RUNS', 5),
    bulkMiB: envNumber('BENCH_FORWARD_MIB', 128),
    streams: envNumber('BENCH_FORWARD_STREAMS', 16),
    windowMs: envNumber('BENCH_FORWARD_WINDOW_MS', 3000),
    pingSamples: envNumber('BENCH_PING_SAMPLES', 1000),
    profileDir: profileDirFor('forward'),
  };
}

type Path = 'direct' | 'ssh' | 'uplink';
const PATHS: Path[] = ['direct', 'ssh', 'uplink'];
const MiB = 1024 * 1024;

/** `ssh -N -L 127.0.0.1:LPORT:127.0.0.1:TARGET` to the bench sshd; resolves once LPORT listens. */
export async function startSshForward(ssh: SshPeer, targetPort: number): Promise<{ port: number; child: ChildProcess; stop(): Promise<void> }> {
  const port = await freePort();
  const child = spawn('ssh', ssh.args(['-N', '-o', 'ExitOnForwardFailure=yes', '-L', `127.0.0.1:${port}:127.0.0.1:${targetPort}`]), { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitListening(port, 15_000, 'ssh -L');
  return {
    port,
    child,
    stop: () => stopChild(child),
  };
}

const per = <T>(make: () => T): Record<Path, T> => ({ direct: make(), ssh: make(), uplink: make() });
const ratio = (a: number[], b: number[]) => a.map((x, i) => x / b[i]!);
const mbps = (bytes: number, ms: number) => bytes / MiB / (ms / 1000);

type Stoppable = { stop?(): Promise<void>; close?(): Promise<void> };
/** Registers something just started so that it is stopped at the end. */
export type Starter = <T extends Stoppable>(p: Promise<T>) => Promise<T>;

/** Run `fn`; everything it started through `start` is stopped in reverse order, whether it finished or threw. */
export async function withStarted<R>(fn: (start: Starter) => Promise<R>): Promise<R> {
  const started: (() => Promise<void>)[] = [];
  const start: Starter = async (p) => {
    const x = await p;
    started.unshift(() => (x.stop ? x.stop() : x.close!()));
    return x;
  };
  try {
    return await fn(start);
  } finally {
    for (const stop of started) await stop();
  }
}

export function runForwardCases(dir: string, opts: ForwardOpts): Promise<CaseResult[]> {
  return withStarted((start) => measure(dir, opts, start));
}

async function measure(dir: string, opts: ForwardOpts, start: Starter): Promise<CaseResult[]> {
  const target = await start(startTarget());
  const ssh = await start(startSshPeer(join(dir, 'ssh')));
  const cluster = await start(startNetCluster(join(dir, 'uplink'), { forwardPorts: [target.port], profileDir: opts.profileDir }));
  const sshFwd = await start(startSshForward(ssh, target.port));
  const uplinkFwd = await start(startForwardCli(cluster, target.port));
  const port: Record<Path, number> = { direct: target.port, ssh: sshFwd.port, uplink: uplinkFwd.port };
  const load0 = loadavg()[0]!;
  const bulk = opts.bulkMiB * MiB;
  const down = per<number[]>(() => []);
  const up = per<number[]>(() => []);
  const agg = per<number[]>(() => []);
  const fair = per<number[]>(() => []);
  const p50 = per<number[]>(() => []);
  const p99 = per<number[]>(() => []);
  // CPU time of the processes in each path (the target and the client, the same for all, left out).
  const uplinkProcs = { CLI: uplinkFwd.child.pid!, relay: cluster.relay.pid, agent: cluster.agent.pid! };
  const uplinkCpu = () => Object.values(uplinkProcs).map((pid) => cpuSeconds(pid));
  const sum = (xs: number[]) => xs.reduce((x, y) => x + y, 0);
  const cpuOf: Record<Exclude<Path, 'direct'>, () => number> = {
    ssh: () => treeCpuSeconds(sshFwd.child.pid!) + treeCpuSeconds(ssh.pid),
    uplink: () => sum(uplinkCpu()),
  };
  const cpuPerGiB = { ssh: [] as number[], uplink: [] as number[] };
  const cpuByProc: Record<keyof typeof uplinkProcs, number[]> = { CLI: [], relay: [], agent: [] };
  const cpuPerTrip = { ssh: [] as number[], uplink: [] as number[] };
  const GiB = (2 * bulk) / 2 ** 30; // both directions of one run

  // Warm-up: every path once (first TLS handshakes, JIT, ssh channel setup).
  for (const p of PATHS) {
    await download(port[p], 16 * MiB);
    await upload(port[p], 16 * MiB);
    await pingPong(port[p], 10, 10);
  }
  const bulkWindow: [number, number] = [profileClockUs(), 0];
  for (let r = 0; r < opts.runs; r++) {
    for (const p of PATHS) {
      const c0 = p === 'direct' ? 0 : cpuOf[p]();
      const each0 = uplinkCpu();
      down[p].push(mbps(bulk, await download(port[p], bulk)));
      await sleep(200);
      up[p].push(mbps(bulk, await upload(port[p], bulk)));
      if (p !== 'direct') cpuPerGiB[p].push((cpuOf[p]() - c0) / GiB);
      if (p === 'uplink') {
        const each1 = uplinkCpu();
        (Object.keys(uplinkProcs) as (keyof typeof uplinkProcs)[]).forEach((name, i) => cpuByProc[name].push((each1[i]! - each0[i]!) / GiB));
      }
      await sleep(200);
    }
  }
  for (let r = 0; r < opts.runs; r++) {
    for (const p of PATHS) {
      const w = await downloadWindow(port[p], opts.streams, 500, opts.windowMs);
      agg[p].push(mbps(sum(w.perStream), w.ms));
      fair[p].push(jain(w.perStream));
      await sleep(300);
    }
  }
  bulkWindow[1] = profileClockUs();
  for (let r = 0; r < opts.runs; r++) {
    for (const p of PATHS) {
      const c0 = p === 'direct' ? 0 : cpuOf[p]();
      const lat = await pingPong(port[p], opts.pingSamples, 50);
      if (p !== 'direct') cpuPerTrip[p].push(((cpuOf[p]() - c0) / (opts.pingSamples + 50)) * 1e6);
      p50[p].push(percentile(lat, 50));
      p99[p].push(percentile(lat, 99));
    }
  }
  // Profiles are written when the processes exit.
  await uplinkFwd.stop();
  await cluster.stop();
  const load1 = loadavg()[0]!;
  const env = [
    `ssh: ${ssh.version}, cipher ${ssh.cipher} (the defaults); uplink: TLS on both hops, ${cluster.tls} (self-signed ${cluster.certKey} certificate trusted through UPLINK_CA / UPLINK_RELAY_CA)`,
    `1-minute load average ${load0.toFixed(2)} before, ${load1.toFixed(2)} after (other work shares this machine)`,
  ];
  const f = (xs: number[], unit: string) => ({ ...figure(xs), unit });
  const downRatio = ratio(down.uplink, down.ssh);
  const upRatio = ratio(up.uplink, up.ssh);
  const aggRatio = ratio(agg.uplink, agg.ssh);
  const added = p99.uplink.map((x, i) => x - p99.direct[i]!);
  const addedSsh = p99.ssh.map((x, i) => x - p99.direct[i]!);
  const results: CaseResult[] = [
    {
      name: 'forward: bulk throughput, one stream',
      figures: {
        'uplink download': f(down.uplink, 'MiB/s'),
        'ssh -L download': f(down.ssh, 'MiB/s'),
        'direct download': f(down.direct, 'MiB/s'),
        'uplink / ssh -L download': f(downRatio, '×'),
        'uplink upload': f(up.uplink, 'MiB/s'),
        'ssh -L upload': f(up.ssh, 'MiB/s'),
        'direct upload': f(up.direct, 'MiB/s'),
        'uplink / ssh -L upload': f(upRatio, '×'),
        'uplink CPU (CLI + relay + agent)': f(cpuPerGiB.uplink, 's per GiB'),
        'ssh -L CPU (ssh + sshd)': f(cpuPerGiB.ssh, 's per GiB'),
        'uplink / ssh -L CPU': f(ratio(cpuPerGiB.uplink, cpuPerGiB.ssh), '×'),
        'uplink CPU: CLI': f(cpuByProc.CLI, 's per GiB'),
        'uplink CPU: relay': f(cpuByProc.relay, 's per GiB'),
        'uplink CPU: agent': f(cpuByProc.agent, 's per GiB'),
      },
      target: '≥ 1.0× ssh -L',
      met: figure(downRatio).median >= 1 && figure(upRatio).median >= 1,
      notes: [
        `${opts.bulkMiB} MiB per transfer, each direction, ${opts.runs} runs; time from connect to the last byte (download) or to the target's acknowledgement (upload)`,
        "CPU: user+system seconds the path's own processes spent per GiB moved (download and upload together, from /proc); less sensitive to other load on the machine than MiB/s",
        ...env,
      ],
    },
    {
      name: `forward: ${opts.streams} concurrent streams through one forward`,
      figures: {
        'uplink aggregate': f(agg.uplink, 'MiB/s'),
        'ssh -L aggregate': f(agg.ssh, 'MiB/s'),
        'direct aggregate': f(agg.direct, 'MiB/s'),
        'uplink / ssh -L aggregate': f(aggRatio, '×'),
        'uplink Jain fairness': f(fair.uplink, 'index'),
        'ssh -L Jain fairness': f(fair.ssh, 'index'),
      },
      target: 'aggregate ≥ 1.0× ssh -L; Jain ≥ 0.9',
      met: figure(aggRatio).median >= 1 && figure(fair.uplink).median >= 0.9,
      notes: [`${opts.streams} endless downloads at once; bytes per stream over a ${opts.windowMs} ms window after 500 ms of warm-up; ${opts.runs} runs`],
    },
    {
      name: 'forward: request/response latency, 1 byte echoed',
      figures: {
        'uplink p99': f(p99.uplink, 'ms'),
        'ssh -L p99': f(p99.ssh, 'ms'),
        'direct p99': f(p99.direct, 'ms'),
        'uplink added p99 over direct': f(added, 'ms'),
        'ssh -L added p99 over direct': f(addedSsh, 'ms'),
        'uplink p50': f(p50.uplink, 'ms'),
        'ssh -L p50': f(p50.ssh, 'ms'),
        'direct p50': f(p50.direct, 'ms'),
        'uplink CPU per round trip (CLI + relay + agent)': f(cpuPerTrip.uplink, 'µs'),
        'ssh -L CPU per round trip (ssh + sshd)': f(cpuPerTrip.ssh, 'µs'),
      },
      target: 'added p99 ≤ 1 ms over direct',
      met: figure(added).median <= 1,
      notes: [`${opts.pingSamples} sequential round trips on one connection per run (after 50 unmeasured), TCP_NODELAY on the client and target sockets; ${opts.runs} runs`],
    },
  ];
  results[0]!.notes.push(...profileNotes(opts.profileDir, bulkWindow, 'the one-stream and concurrent-stream runs'));
  return results;
}
