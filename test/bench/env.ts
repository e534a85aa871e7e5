/** The benchmark's settings from the environment (BENCH_*). */
import { join } from 'node:path';

/** A number from `name`, or `def` when unset. */
export function envNumber(name: string, def: number): number {
  const v = process.env[name];
  return v ? Number(v) : def;
}

/** Node arguments that profile a process into `profileDir/who` (one directory per program: a profile's file name carries only the pid); none when not profiling. */
export function profileArgs(profileDir: string | undefined, who: string): string[] {
  return profileDir ? ['--cpu-prof', `--cpu-prof-dir=${join(profileDir, who)}`] : [];
}

/** BENCH_CPU_PROF=DIR: where a group's processes write their `--cpu-prof` profiles; undefined when unset. */
export function profileDirFor(group: string): string | undefined {
  const root = process.env.BENCH_CPU_PROF;
  return root ? join(root, group) : undefined;
}

/**
 * BENCH_NODE_ARGS="--flag …": extra Node options for the uplink processes of the forward and
 * shell groups (relay, agent, CLI), to try a runtime setting such as a GC option A/B.
 */
export function extraNodeArgs(): string[] {
  return (process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter((a) => a.length > 0);
}
