/**
 * `npm run bench`: runs the benchmark cases, prints a table and writes
 * test/bench/results/latest.json and latest.md (machine, versions, date; each figure as the
 * median of several runs with min and max, and ratios against baselines measured in the same
 * run). Not part of `npm test`.
 *
 * Environment: BENCH_AGENTS (default 10000), BENCH_EXEC_AGENTS (1000: exec dispatch is measured
 * first with this many connected, then with all), BENCH_EXEC_SAMPLES (200), BENCH_WINDOWS (3),
 * BENCH_HEARTBEAT_MS (15000), BENCH_DATABASE_URL (PostgreSQL for the relay; default PGlite),
 * BENCH_ONLY (comma-separated case groups, the keys of GROUPS below).
 */
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { cpus, totalmem, tmpdir, release } from 'node:os';
import { join } from 'node:path';
import { VERSION } from '../../shared/version.js';
import { runFleetCases, type CaseResult } from './agents-cases.js';
import { runTelemetryCases, telemetryOptsFromEnv } from './telemetry-cases.js';
import { forwardOptsFromEnv, runForwardCases } from './forward-cases.js';
import { runShellCases, shellOptsFromEnv } from './shell-cases.js';
import { deployOptsFromEnv, runDeployCases } from './deploy-cases.js';
import { framesOptsFromEnv, runFramesCases } from './frames-cases.js';
import { runTunnelCases, tunnelOptsFromEnv } from './tunnel-cases.js';
import { envNumber } from './env.js';

const env = process.env;

/**
 * Case groups, run in this order; BENCH_ONLY picks some. Each gets its own scratch dir. The
 * two that measure inside this process (frames, tunnel) go first: after the fleet group this
 * process's heap is large, and its collector then weighs on their figures (seen: the tunnel's
 * CPU per GiB 2.7 s first, 8.8 s last).
 */
const GROUPS: Record<string, (dir: string) => Promise<CaseResult[]>> = {
  frames: (dir) => runFramesCases(dir, framesOptsFromEnv()),
  tunnel: (dir) => runTunnelCases(dir, tunnelOptsFromEnv()),
  fleet: (dir) =>
    runFleetCases(dir, {
      agents: envNumber('BENCH_AGENTS', 10000),
      execAgents: envNumber('BENCH_EXEC_AGENTS', 1000),
      execSamples: envNumber('BENCH_EXEC_SAMPLES', 200),
      windows: envNumber('BENCH_WINDOWS', 3),
      heartbeatMs: envNumber('BENCH_HEARTBEAT_MS', 15000),
      ...(env.BENCH_DATABASE_URL ? { databaseUrl: env.BENCH_DATABASE_URL } : {}),
    }),
  telemetry: (dir) => runTelemetryCases(dir, telemetryOptsFromEnv()),
  forward: (dir) => runForwardCases(dir, forwardOptsFromEnv()),
  shell: (dir) => runShellCases(dir, shellOptsFromEnv()),
  deploy: (dir) => runDeployCases(dir, deployOptsFromEnv()),
};

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'uplink-bench-'));
  const only = env.BENCH_ONLY ? new Set(env.BENCH_ONLY.split(',')) : undefined;
  for (const name of only ?? []) if (!GROUPS[name]) throw new Error(`BENCH_ONLY: unknown group "${name}" (known: ${Object.keys(GROUPS).join(', ')})`);
  const results: CaseResult[] = [];
  const failed: string[] = [];
  try {
    for (const [name, run] of Object.entries(GROUPS)) {
      if (only && !only.has(name)) continue;
      process.stderr.write(`bench: ${name}\n`);
      const groupDir = join(dir, name);
      mkdirSync(groupDir, { recursive: true });
      try {
        results.push(...(await run(groupDir)));
      } catch (err) {
        // One group failing (a hung fleet, a missing sshd) must not cost the others' figures.
        process.stderr.write(`bench: ${name} failed: ${(err as Error).stack ?? String(err)}\n`);
        results.push({ name: `${name} (failed)`, figures: {}, target: '-', met: false, notes: [`the group failed: ${(err as Error).message}`] });
        failed.push(name);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const report = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, memoryGiB: Math.round(totalmem() / 2 ** 30), kernel: release() },
    versions: { node: process.version, uplink: VERSION },
    results,
  };
  const out = new URL('./results/', import.meta.url).pathname;
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);
  const lines = [
    `# uplink benchmarks`,
    '',
    `${report.date} · node ${report.versions.node} · uplink ${VERSION} · ${report.machine.cpus} × ${report.machine.model} · ${report.machine.memoryGiB} GiB`,
    '',
    '| case | figure | median | min | max | target | met |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const r of results) {
    for (const [name, f] of Object.entries(r.figures)) {
      lines.push(`| ${r.name} | ${name} (${f.unit}) | ${f.median.toFixed(2)} | ${f.min.toFixed(2)} | ${f.max.toFixed(2)} | ${r.target} | ${r.met === null ? '-' : r.met ? 'yes' : 'NO'} |`);
    }
  }
  lines.push('', ...results.flatMap((r) => r.notes.map((n) => `- ${r.name}: ${n}`)), '');
  writeFileSync(join(out, 'latest.md'), lines.join('\n'));
  process.stdout.write(lines.join('\n'));
  if (failed.length > 0) {
    process.stderr.write(`bench: failed groups: ${failed.join(', ')}\n`);
    process.exitCode = 1;
  }
}

main().catch((err: Error) => {
  process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
