/** The exec request spec sent by the CLI (through the relay), validated on the agent. */
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { formatIssues } from '../../shared/config-validate.js';

export const execSpecSchema = z.strictObject({
  command: z.string().min(1).max(4096),
  args: z.array(z.string().max(128 * 1024)).default([]),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string().max(32 * 1024)).default({}),
  cwd: z.string().min(1).max(4096).optional(),
  /** 0 = no timeout (the agent's maxTimeoutMs still applies). */
  timeoutMs: z.number().int().min(0).default(0),
});

export type ExecSpec = z.output<typeof execSpecSchema>;

export function parseExecSpec(input: unknown, limits: { maxArgs: number; maxEnvVars: number }): ExecSpec {
  const r = execSpecSchema.safeParse(input);
  if (!r.success) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', formatIssues(r.error, 'exec spec'));
  if (r.data.args.length > limits.maxArgs) throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `exec: more than ${limits.maxArgs} arguments`);
  if (Object.keys(r.data.env).length > limits.maxEnvVars) throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `exec: more than ${limits.maxEnvVars} environment variables`);
  return r.data;
}
