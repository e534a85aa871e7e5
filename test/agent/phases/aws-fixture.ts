/**
 * Phase roles in a real moto_server, created through the SDK, and the agent config that
 * names them. Shared by the phase tests; not a test file itself.
 */
import { fileURLToPath } from 'node:url';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateRoleCommand, IAMClient, TagRoleCommand, UntagRoleCommand } from '@aws-sdk/client-iam';
import type { Test } from 'tap';
import type { Moto } from '../../helpers/moto.js';

export const ACCOUNT = '123456789012';
export const REGION = 'us-east-1';
export const BASE_CREDENTIALS = { accessKeyId: 'testing', secretAccessKey: 'testing' };

const TRUST = JSON.stringify({
  Version: '2012-10-17',
  Statement: [{ Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${ACCOUNT}:root` }, Action: ['sts:AssumeRole', 'sts:TagSession'] }],
});

export interface PhaseRoles {
  iam: IAMClient;
  /** Role names are unique per call so tests in one moto do not see each other's tags. */
  names: { install: string; steadyState: string; deploy: string; operate: string };
  config: { aws: Record<string, unknown> };
  tag(role: 'deploy' | 'operate' | 'steadyState', tags: Record<string, string>): Promise<void>;
  untag(role: 'deploy' | 'operate' | 'steadyState', keys: string[]): Promise<void>;
}

let counter = 0;

export async function createPhaseRoles(t: Test, moto: Moto, initial: { deploy?: Record<string, string>; operate?: Record<string, string> } = {}, aws: Record<string, unknown> = {}): Promise<PhaseRoles> {
  const iam = new IAMClient({ region: REGION, endpoint: moto.endpoint, credentials: BASE_CREDENTIALS });
  t.teardown(() => iam.destroy());
  const suffix = `${process.pid}-${++counter}`;
  const names = { install: `UplinkInstall-${suffix}`, steadyState: `UplinkSteadyState-${suffix}`, deploy: `UplinkDeploy-${suffix}`, operate: `UplinkOperate-${suffix}` };
  const arns: Record<string, string> = {};
  for (const [phase, name] of Object.entries(names)) {
    const tags = Object.entries((initial as Record<string, Record<string, string> | undefined>)[phase] ?? {}).map(([Key, Value]) => ({ Key, Value }));
    const out = await iam.send(new CreateRoleCommand({ RoleName: name, AssumeRolePolicyDocument: TRUST, ...(tags.length ? { Tags: tags } : {}) }));
    arns[phase] = out.Role!.Arn!;
  }
  return {
    iam,
    names,
    config: { aws: { region: REGION, endpoint: moto.endpoint, roles: arns, ...aws } },
    async tag(role, tags) {
      await iam.send(new TagRoleCommand({ RoleName: names[role], Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })) }));
    },
    async untag(role, keys) {
      await iam.send(new UntagRoleCommand({ RoleName: names[role], TagKeys: keys }));
    },
  };
}

/** A private temporary state directory removed after the test. */
export async function stateDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'uplink-phases-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The credential_process command prefix for tests: node + tsx running the fixture main. */
export function credentialCommand(): string[] {
  return [process.execPath, '--import', import.meta.resolve('tsx'), fileURLToPath(new URL('./fixtures/credential-process-main.ts', import.meta.url)), 'credentials'];
}

/** A clock the test moves by hand. Starts at the real time so STS expirations line up. */
export function manualClock(start = Date.now()): { now: () => number; advance(ms: number): void; set(t: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => { t += ms; }, set: (v) => { t = v; } };
}

export const iso = (t: number): string => new Date(t).toISOString();
