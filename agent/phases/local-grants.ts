/**
 * Local-mode approval state: `<stateDir>/access.json`, written by `uplink-agent grant` and
 * `revoke`, read by the agent on every request. An entry for a phase overrides the `local`
 * config section for that phase. A damaged file refuses access (fail closed) rather than
 * falling back to the config, because the file may be what recorded a revoke.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { ensurePrivateDir, writePrivateFile } from './private-files.js';
import type { GrantablePhase } from './phase.js';

export const ACCESS_FILE = 'access.json';

export const LOCAL_GRANT_LIMITS = {
  /** access.json larger than this is refused: it holds two small entries. */
  maxFileBytes: 64 * 1024,
} as const;

const entrySchema = z.strictObject({
  access: z.enum(['enabled', 'disabled', 'scheduled']),
  until: z.string().max(64).optional(),
  reason: z.string().max(1024).optional(),
  actor: z.string().max(256),
  at: z.string().max(64),
});

const fileSchema = z.strictObject({
  version: z.literal(1),
  phases: z.strictObject({ deploy: entrySchema.optional(), operate: entrySchema.optional() }),
});

export type LocalGrantEntry = z.infer<typeof entrySchema>;
export type LocalGrants = z.infer<typeof fileSchema>;

export function accessFilePath(stateDir: string): string {
  return join(stateDir, ACCESS_FILE);
}

/** Read access.json; an absent file means no grants. Throws UPLINK_ERR_CONFIG_INVALID if damaged. */
export async function readLocalGrants(stateDir: string): Promise<LocalGrants> {
  const path = accessFilePath(stateDir);
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, phases: {} };
    throw err;
  }
  if (size > LOCAL_GRANT_LIMITS.maxFileBytes) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `${path} is ${size} bytes, over the ${LOCAL_GRANT_LIMITS.maxFileBytes}-byte limit; access is refused until it is fixed`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `${path} is not valid JSON; access is refused until it is fixed or removed (then grant again)`, { cause: err });
  }
  const result = fileSchema.safeParse(parsed);
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `${path} is malformed (${problems}); access is refused until it is fixed or removed`);
  }
  return result.data;
}

/**
 * Set one phase's entry. Read-modify-write: two CLI invocations racing on the same phase
 * end with one of them winning, which is what the customer's last command intends.
 */
export async function writeLocalGrant(stateDir: string, phase: GrantablePhase, entry: LocalGrantEntry): Promise<void> {
  await ensurePrivateDir(stateDir);
  let current: LocalGrants;
  try {
    current = await readLocalGrants(stateDir);
  } catch (err) {
    // A damaged file is replaced by a new grant or revoke: that is how the customer repairs it.
    if (!(err instanceof UplinkError)) throw err;
    current = { version: 1, phases: {} };
  }
  const next: LocalGrants = { version: 1, phases: { ...current.phases, [phase]: entrySchema.parse(entry) } };
  await writePrivateFile(accessFilePath(stateDir), `${JSON.stringify(next, null, 2)}\n`);
}
