/**
 * Keystroke echo in `uplink shell` against `ssh -tt` to a local OpenSSH server. Both clients
 * run on a PTY here (node-pty), as a terminal would drive them; the remote side runs
 * `stty raw -echo; cat`, so every typed byte comes straight back. One byte is written at a
 * time and the time to its echo is measured; idle, then while one endless download through
 * a forward saturates the same path: `uplink forward` through the same agent (a second CLI
 * process, as a user would run it), and for ssh an `-L` on the same ssh connection as the
 * shell (one TCP connection carrying both, as uplink's one agent connection does). The load
 * generator and its target run in a separate process (traffic.ts) so they do not share the
 * event loop that timestamps keystrokes.
 */
import { spawn as spawnChild, type ChildProcess } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { spawn as spawnPty, type IPty } from 'node-pty';
import type { CaseResult } from './agents-cases.js';
import { profileClockUs, profileNotes } from './cpu-profile.js';
import { treeCpuSeconds } from './proc.js';
import { APPLIANCE, CLI, startForwardCli, startNetCluster } from './net-cluster.js';
import { startSshPeer, waitListening } from './ssh-peer.js';
import { freePort } from '../helpers/net.js';
import { figure, percentile } from './stats.js';
import { withStarted, type Starter } from './forward-cases.js';
import { envNumber, profileDirFor } from './env.js';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ShellOpts {
  runs: number;
  keystrokes: number;
  /** Pause between one echo and the next keystroke. */
  gapMs: number;
  /** Keystrokes typed on each path before anything is measured. */
  warmup: number;
  profileDir?: string | undefined;
}


/** BENCH_NET_RUNS (5), BENCH_KEYSTROKES (200), BENCH_KEY_GAP_MS (5), BENCH_KEY_WARMUP (1000), BENCH_RECORDINGS, BENCH_CPU_PROF (a directory). */
export function shellOptsFromEnv(): ShellOpts {
  return {
    runs: envNumber('BENCH_NET_RUNS', 5),
    keystrokes: envNumber('BENCH_KEYSTROKES', 200),
    gapMs: envNumber('BENCH_KEY_GAP_MS', 5),
    warmup: envNumber('BENCH_KEY_WARMUP', 1000),
    profileDir: profileDirFor('shell'),
  };
}

const REMOTE = 'stty raw -echo; echo READY; exec cat';
const LETTERS = 'abcdefghijklmnopqrstuvwxyz';

/** A PTY running `file args`; resolves once the remote `cat` is ready. */
async function terminal(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<IPty> {
  let out = '';
  const term = spawnPty(file, args, { name: 'xterm', cols: 80, rows: 24, env: env as Record<string, string> });
  term.onData((d) => (out = (out + d).slice(-4000)));
  const deadline = Date.now() + 30_000;
  while (!out.includes('READY')) {
    if (Date.now() > deadline) {
      term.kill();
      throw new Error(`${file} ${args.join(' ')}: no READY in 30 s; output: ${JSON.stringify(out)}`);
    }
    await sleep(20);
  }
  await sleep(200);
  return term;
}

/** Write one letter at a time; milliseconds until each came back. */
async function keystrokes(term: IPty, n: number, gapMs: number): Promise<number[]> {
  const lat: number[] = [];
  for (let i = 0; i < n; i++) {
    const ch = LETTERS[i % LETTERS.length]!;
    const ms = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        sub.dispose();
        reject(new Error(`no echo of "${ch}" in 10 s`));
      }, 10_000);
      const sub = term.onData((d) => {
        if (!d.includes(ch)) return;
        clearTimeout(timer);
        sub.dispose();
        resolve(performance.now() - t0);
      });
      const t0 = performance.now();
      term.write(ch);
    });
    lat.push(ms);
    await sleep(gapMs);
  }
  return lat;
}

/** The load generator process (traffic.ts `load`): a target on `targetPort`, one endless download from `connectPort`. */
async function startLoad(targetPort: number, connectPort: number): Promise<{ bytes(): number; stop(): Promise<void> }> {
  const script = new URL('./traffic.ts', import.meta.url).pathname;
  const child: ChildProcess = spawnChild(process.execPath, ['--import', 'tsx', script, 'load', String(targetPort), String(connectPort), '1'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let bytes = 0;
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const msg = JSON.parse(buf.slice(0, i)) as { bytes?: number };
      if (msg.bytes !== undefined) bytes = msg.bytes;
      buf = buf.slice(i + 1);
    }
  });
  const deadline = Date.now() + 30_000;
  while (bytes === 0) {
    if (child.exitCode !== null) throw new Error(`load generator exited ${child.exitCode}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('load generator moved no bytes in 30 s');
    }
    await sleep(50);
  }
  return {
    bytes: () => bytes,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** Keystrokes measured while a load runs; also the load's throughput over the same time, MiB/s. */
async function underLoad(term: IPty, opts: ShellOpts, load: () => Promise<{ bytes(): number; stop(): Promise<void> }>): Promise<{ lat: number[]; mibps: number }> {
  const l = await load();
  try {
    await sleep(1000);
    const b0 = l.bytes();
    const t0 = performance.now();
    const lat = await keystrokes(term, opts.keystrokes, opts.gapMs);
    await sleep(600); // the generator reports twice a second
    const mibps = (l.bytes() - b0) / (1024 * 1024) / ((performance.now() - t0) / 1000);
    return { lat, mibps };
  } finally {
    await l.stop();
    await sleep(500);
  }
}

/** A PTY as something to stop: hang up, wait for the client to exit, then give the server a moment. */
function stoppable(term: IPty): { stop(): Promise<void> } {
  const exited = new Promise<void>((resolve) => term.onExit(() => resolve()));
  let stopping: Promise<void> | undefined;
  return {
    stop: () =>
      (stopping ??= (async () => {
        try {
          term.kill();
        } catch {
          // already gone
        }
        await Promise.race([exited.then(() => sleep(500)), sleep(5000)]);
      })()),
  };
}

export function runShellCases(dir: string, opts: ShellOpts): Promise<CaseResult[]> {
  return withStarted((start) => measure(dir, opts, start));
}

async function measure(dir: string, opts: ShellOpts, start: Starter): Promise<CaseResult[]> {
  const sourcePort = await freePort();
  const ssh = await start(startSshPeer(join(dir, 'ssh')));
  const cluster = await start(startNetCluster(join(dir, 'uplink'), { forwardPorts: [sourcePort], profileDir: opts.profileDir }));
  const sshLPort = await freePort();
  const idleWindow: [number, number] = [0, 0];
  const loadWindow: [number, number] = [0, 0];
  const load0 = loadavg()[0]!;
  const idle = { ssh: { p50: [] as number[], p99: [] as number[], cpuUs: [] as number[] }, uplink: { p50: [] as number[], p99: [] as number[], cpuUs: [] as number[] } };
  /** uplink's keystroke CPU by process (the agent with its children: the shell and cat). */
  const byProcess = { cli: [] as number[], relay: [] as number[], agent: [] as number[] };
  const loaded = { ssh: { p50: [] as number[], p99: [] as number[], mibps: [] as number[] }, uplink: { p50: [] as number[], p99: [] as number[], mibps: [] as number[] } };
  const sshTerm = await terminal('ssh', [...ssh.args(['-tt', '-o', 'ExitOnForwardFailure=yes', '-L', `127.0.0.1:${sshLPort}:127.0.0.1:${sourcePort}`]), REMOTE], { PATH: process.env.PATH, HOME: process.env.HOME, TERM: 'xterm' });
  const sshSession = await start(Promise.resolve(stoppable(sshTerm)));
  await waitListening(sshLPort, 10_000, 'ssh -L');
  const uplinkTerm = await terminal(process.execPath, [...cluster.cliNodeArgs('shell'), CLI, 'shell', APPLIANCE, '--command', REMOTE], cluster.cliEnv);
  const uplinkSession = await start(Promise.resolve(stoppable(uplinkTerm)));
  const term = { ssh: sshTerm, uplink: uplinkTerm };
  for (const p of ['ssh', 'uplink'] as const) await keystrokes(term[p], opts.warmup, opts.gapMs); // warm-up
  // CPU time of each path's own processes (the PTYs' owner, this process, left out).
  const uplinkParts = (): { cli: number; relay: number; agent: number } => ({ cli: treeCpuSeconds(uplinkTerm.pid), relay: treeCpuSeconds(cluster.relay.pid), agent: treeCpuSeconds(cluster.agent.pid!) });
  const cpuOf = {
    ssh: () => treeCpuSeconds(sshTerm.pid) + treeCpuSeconds(ssh.pid),
    uplink: () => {
      const c = uplinkParts();
      return c.cli + c.relay + c.agent;
    },
  };
  idleWindow[0] = profileClockUs();
  for (let r = 0; r < opts.runs; r++) {
    for (const p of ['ssh', 'uplink'] as const) {
      const parts0 = p === 'uplink' ? uplinkParts() : undefined;
      const c0 = cpuOf[p]();
      const lat = await keystrokes(term[p], opts.keystrokes, opts.gapMs);
      idle[p].cpuUs.push(((cpuOf[p]() - c0) / opts.keystrokes) * 1e6);
      if (parts0) {
        const parts1 = uplinkParts();
        for (const k of ['cli', 'relay', 'agent'] as const) byProcess[k].push(((parts1[k] - parts0[k]) / opts.keystrokes) * 1e6);
      }
      idle[p].p50.push(percentile(lat, 50));
      idle[p].p99.push(percentile(lat, 99));
    }
  }
  idleWindow[1] = profileClockUs();
  const fwd = await start(startForwardCli(cluster, sourcePort));
  loadWindow[0] = profileClockUs();
  for (let r = 0; r < opts.runs; r++) {
    for (const p of ['ssh', 'uplink'] as const) {
      const m = await underLoad(term[p], opts, () => startLoad(sourcePort, p === 'ssh' ? sshLPort : fwd.port));
      loaded[p].p50.push(percentile(m.lat, 50));
      loaded[p].p99.push(percentile(m.lat, 99));
      loaded[p].mibps.push(m.mibps);
    }
  }
  loadWindow[1] = profileClockUs();
  // Profiles are written when the processes exit (stopping twice is harmless).
  await fwd.stop();
  await uplinkSession.stop();
  await sshSession.stop();
  await cluster.stop();
  const load1 = loadavg()[0]!;
  const f = (xs: number[], unit: string) => ({ ...figure(xs), unit });
  const idleRatio = idle.uplink.p50.map((x, i) => x / idle.ssh.p50[i]!);
  const idleRatio99 = idle.uplink.p99.map((x, i) => x / idle.ssh.p99[i]!);
  const common = [
    `${opts.warmup} keystrokes on each path before measuring (V8 optimises the hot paths meanwhile), then ${opts.keystrokes} per run, ${opts.gapMs} ms between an echo and the next key, ${opts.runs} runs; remote command \`${REMOTE}\`; ssh and uplink alternate within each run`,
    `ssh: ${ssh.version}, cipher ${ssh.cipher}; uplink: TLS on both hops, ${cluster.tls}, session recording ${process.env.BENCH_RECORDINGS === '0' ? 'off (BENCH_RECORDINGS=0)' : "on (the relay's default)"}`,
    `1-minute load average ${load0.toFixed(2)} before, ${load1.toFixed(2)} after (other work shares this machine)`,
  ];
  return [
    {
      name: 'shell: keystroke echo, idle',
      figures: {
        'uplink p50': f(idle.uplink.p50, 'ms'),
        'ssh -tt p50': f(idle.ssh.p50, 'ms'),
        'uplink / ssh p50': f(idleRatio, '×'),
        'uplink p99': f(idle.uplink.p99, 'ms'),
        'ssh -tt p99': f(idle.ssh.p99, 'ms'),
        'uplink / ssh p99': f(idleRatio99, '×'),
        'uplink CPU per keystroke (CLI + relay + agent)': f(idle.uplink.cpuUs, 'µs'),
        'ssh CPU per keystroke (ssh + sshd)': f(idle.ssh.cpuUs, 'µs'),
        'uplink CPU per keystroke: CLI': f(byProcess.cli, 'µs'),
        'uplink CPU per keystroke: relay': f(byProcess.relay, 'µs'),
        'uplink CPU per keystroke: agent (with the shell and cat)': f(byProcess.agent, 'µs'),
      },
      target: 'p50 ≤ 1.5× ssh -tt',
      met: figure(idleRatio).median <= 1.5,
      notes: [...common, ...profileNotes(opts.profileDir, idleWindow, 'the idle runs (uplink and ssh alternating)')],
    },
    {
      name: 'shell: keystroke echo while a bulk forward saturates the same agent',
      figures: {
        'uplink p99': f(loaded.uplink.p99, 'ms'),
        'uplink p50': f(loaded.uplink.p50, 'ms'),
        'uplink forward load': f(loaded.uplink.mibps, 'MiB/s'),
        'ssh -tt p99 (-L on the same connection)': f(loaded.ssh.p99, 'ms'),
        'ssh -tt p50 (-L on the same connection)': f(loaded.ssh.p50, 'ms'),
        'ssh -L load': f(loaded.ssh.mibps, 'MiB/s'),
      },
      target: 'uplink p99 ≤ 5 ms',
      met: figure(loaded.uplink.p99).median <= 5,
      notes: ['one endless download through the forward, started 1 s before the keystrokes and measured over the same time', ...profileNotes(opts.profileDir, loadWindow, 'the runs under load (uplink and ssh alternating)')],
    },
  ];
}
