/**
 * Real-tool availability for tests. Outside CI a missing tool skips the test with a printed
 * reason; under CI=true a missing tool fails the test, because the CI machine has them all
 * and a skip there would hide a hole.
 */
import { spawnSync } from 'node:child_process';
import type { Test } from 'tap';

export function hasTool(name: string): boolean {
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim().length > 0;
}

/** Options for `t.test(name, requireTools(['terraform']), fn)`. */
export function requireTools(tools: string[]): { skip?: string } {
  const missing = tools.filter((tool) => !hasTool(tool));
  if (missing.length === 0) return {};
  if (process.env.CI === 'true') {
    throw new Error(`CI=true and required tool(s) missing: ${missing.join(', ')}`);
  }
  return { skip: `missing tool(s) on PATH: ${missing.join(', ')}` };
}

/** Inside a test: fail under CI, skip elsewhere. Returns true when the test should go on. */
export function needTools(t: Test, tools: string[]): boolean {
  const missing = tools.filter((tool) => !hasTool(tool));
  if (missing.length === 0) return true;
  if (process.env.CI === 'true') {
    t.fail(`CI=true and required tool(s) missing: ${missing.join(', ')}`);
  } else {
    (t.skip as unknown as (name: string) => void)(`missing tool(s) on PATH: ${missing.join(', ')}`);
  }
  return false;
}
