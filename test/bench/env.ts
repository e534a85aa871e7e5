/** The benchmark's settings from the environment (BENCH_*). */
import { join } from 'node:path';

/** A number from `name`, or `def` when unset. */
export function envNumber(name: string, def: number): number {
  const v = process.env[name];
  return v ? Number(v) : def;
}

/** BENCH_CPU_PROF=DIR: where a group's processes write their `--cpu-prof` profiles; undefined when unset. */
export function profileDirFor(group: string): string | undefined {
  const root = process.env.BENCH_CPU_PROF;
  return root ? join(root, group) : undefined;
}
