/**
 * `uplink-agent access | grant | revoke`: the customer's controls over the vendor's Deploy
 * and Operate access, run on the agent host (or anywhere with the agent's config and the
 * customer's AWS credentials).
 *
 *     uplink-agent access [--json]
 *     uplink-agent grant deploy|operate --for 2h [--reason TEXT] [--scheduled] [--json]
 *     uplink-agent revoke deploy|operate [--json]
 *
 * Exit codes: 0 done, 1 failed (the message says why, with its UPLINK_ERR_* code),
 * 2 usage error.
 */
import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import type { Writable } from 'node:stream';
import { IAMClient, type IAMClientConfig } from '@aws-sdk/client-iam';
import { UplinkError } from '../../shared/errors.js';
import { parseDuration } from '../../shared/duration.js';
import { iamRoleTagReader, type ApprovalView } from '../phases/approval.js';
import { ApprovalSource, asUplinkError } from '../phases/approval-source.js';
import { parsePhaseConfig, type PhaseConfig } from '../phases/config.js';
import { AccessControl, type AuditSink } from '../phases/grant.js';
import { isGrantablePhase, PHASES, phaseTitle, systemClock, type Clock, type GrantablePhase, type Phase } from '../phases/phase.js';
import { describeView, formatPhaseSummary } from '../phases/summary.js';
import { fileAuditSink } from './access-audit.js';

export type AccessCommandName = 'access' | 'grant' | 'revoke';

export const ACCESS_EXIT = { ok: 0, failed: 1, usage: 2 } as const;

export interface AccessCommandContext {
  /** The agent's state directory (local state, change marker, default audit file). */
  stateDir?: string;
  /** The phase section of the agent config (raw or parsed). */
  config: PhaseConfig | unknown;
  io: { stdout: Pick<Writable, 'write'>; stderr: Pick<Writable, 'write'> };
  /** Where grant/revoke record their audit event; default `<stateDir>/access-audit.jsonl`. */
  audit?: AuditSink;
  /** The customer's AWS credentials; default: the SDK default chain of this shell. */
  credentials?: NonNullable<IAMClientConfig['credentials']>;
  clock?: Clock;
}

const HELP: Record<AccessCommandName, string> = {
  access: `Usage: uplink-agent access [--json]

Shows whether the vendor may use each of the four phase roles right now (Install,
SteadyState, Deploy, Operate), until when, and why not. Reads the approval tags on the
roles with your AWS credentials (local mode: the agent's local access state).
`,
  grant: `Usage: uplink-agent grant deploy|operate --for DURATION [--reason TEXT] [--scheduled] [--json]

Allows the vendor to deploy or operate for DURATION (e.g. 30m, 2h, 1d) from now, by setting
the DeployAccess/OperateAccess tags on the role (local mode: the agent's access file).
  --for DURATION   required; between 1m and 7d
  --reason TEXT    recorded on the role and in the audit log
  --scheduled      allow only inside the maintenance windows of the agent config, until DURATION ends
  --json           print the result as JSON
`,
  revoke: `Usage: uplink-agent revoke deploy|operate [--json]

Withdraws the vendor's Deploy or Operate access now. New requests are refused at once; open
Operate sessions on this agent end at once (within the agent's re-check interval when run
from another machine).
`,
};

class UsageError extends Error {}

const OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  json: { type: 'boolean' },
  for: { type: 'string' },
  reason: { type: 'string' },
  scheduled: { type: 'boolean' },
} as const;

const GRANT_ONLY = ['for', 'reason', 'scheduled'] as const;

function parse(name: AccessCommandName, argv: readonly string[]) {
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, strict: true, allowPositionals: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (name !== 'grant') {
    const misplaced = GRANT_ONLY.find((o) => parsed.values[o] !== undefined);
    if (misplaced) throw new UsageError(`--${misplaced} is only valid for grant`);
  }
  if (name === 'access' && parsed.positionals.length > 0) throw new UsageError(`unexpected argument "${parsed.positionals[0]}"`);
  return parsed;
}

function phaseArg(name: 'grant' | 'revoke', positionals: string[]): GrantablePhase {
  if (positionals.length !== 1) throw new UsageError(`${name} takes exactly one phase: deploy or operate`);
  const p = positionals[0]!.toLowerCase();
  if (!isGrantablePhase(p)) throw new UsageError(`"${positionals[0]}" cannot be ${name === 'grant' ? 'granted' : 'revoked'}: use deploy or operate (SteadyState is switched in the agent config, Install is not gated)`);
  return p;
}

function renderTable(states: Record<Phase, ApprovalView>, config: PhaseConfig): string {
  const lines: string[] = [];
  lines.push(config.aws ? `Mode: aws (region ${config.aws.region})` : 'Mode: local (no AWS roles configured: decisions come from the agent config and its access file)');
  const width = Math.max(...PHASES.map((p) => phaseTitle(p).length));
  for (const p of PHASES) {
    const v = states[p];
    lines.push(`  ${phaseTitle(p).padEnd(width)}  ${describeView(v)}${v.mode === 'aws' ? `  ${v.role}` : ''}`);
  }
  const closed = PHASES.map((p) => states[p]).filter((v) => v.state === 'closed');
  if (closed.length > 0) {
    lines.push('');
    for (const v of closed) lines.push(`${phaseTitle(v.phase)}: ${v.reason}${v.code ? ` [${v.code}]` : ''}`);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * Run one of the access subcommands with its arguments (after the subcommand name).
 * Returns the exit code; never throws.
 */
export async function runAccessCommand(name: AccessCommandName, argv: readonly string[], ctx: AccessCommandContext): Promise<number> {
  const { io } = ctx;
  const fail = (err: UplinkError): number => {
    io.stderr.write(`uplink-agent ${name}: ${err.message} [${err.code}]\n`);
    return err.code === 'UPLINK_ERR_USAGE' ? ACCESS_EXIT.usage : ACCESS_EXIT.failed;
  };
  let args;
  try {
    if (!Object.prototype.hasOwnProperty.call(HELP, name)) throw new UsageError(`unknown command "${name}" (access, grant, revoke)`);
    args = parse(name, argv);
  } catch (err) {
    io.stderr.write(`uplink-agent ${name}: ${(err as Error).message}\n\n${HELP[name] ?? ''}`);
    return ACCESS_EXIT.usage;
  }
  if (args.values.help) {
    io.stdout.write(HELP[name]);
    return ACCESS_EXIT.ok;
  }
  const json = args.values.json === true;
  let control: AccessControl | undefined;
  let iam: IAMClient | undefined;
  try {
    const config = parsePhaseConfig(ctx.config);
    const clock = ctx.clock ?? systemClock;
    if (name === 'access') {
      if (config.aws) {
        iam = new IAMClient({ region: config.aws.region, ...(config.aws.endpoint ? { endpoint: config.aws.endpoint } : {}), ...(ctx.credentials ? { credentials: ctx.credentials } : {}) });
      }
      const source = new ApprovalSource({ config, stateDir: ctx.stateDir, tags: iam ? iamRoleTagReader(iam, 'your AWS credentials') : undefined, clock });
      const states = await source.state();
      io.stdout.write(json ? `${JSON.stringify({ mode: source.mode, summary: formatPhaseSummary(states), phases: states }, null, 2)}\n` : renderTable(states, config));
      return ACCESS_EXIT.ok;
    }
    const phase = phaseArg(name, args.positionals);
    const audit = ctx.audit ?? (ctx.stateDir ? fileAuditSink(ctx.stateDir) : undefined);
    if (!audit) throw new UplinkError('UPLINK_ERR_USAGE', 'no audit destination: set the agent state directory (UPLINK_STATE_DIR)');
    control = new AccessControl({ config, audit, clock, ...(ctx.stateDir ? { stateDir: ctx.stateDir } : {}), ...(ctx.credentials ? { credentials: ctx.credentials } : {}) });
    const actor = await control.whoAmI(userInfo().username);
    if (name === 'grant') {
      if (!args.values.for) throw new UsageError('--for DURATION is required (e.g. --for 2h)');
      const forMs = parseDuration(String(args.values.for), '--for');
      const reason = typeof args.values.reason === 'string' ? args.values.reason : undefined;
      const result = await control.grant(phase, forMs, reason, actor, { access: args.values.scheduled ? 'scheduled' : 'enabled' });
      const scope = result.access === 'scheduled' ? ' inside maintenance windows' : '';
      io.stdout.write(json ? `${JSON.stringify({ ...result, actor })}\n` : `${phaseTitle(phase)} granted${scope} until ${result.until} (${result.mode} mode${result.role ? `, ${result.role}` : ''}) by ${actor}\n`);
    } else {
      const result = await control.revoke(phase, actor);
      io.stdout.write(json ? `${JSON.stringify({ ...result, actor })}\n` : `${phaseTitle(phase)} revoked (${result.mode} mode${result.role ? `, ${result.role}` : ''}) by ${actor}; new requests are refused and open sessions end\n`);
    }
    return ACCESS_EXIT.ok;
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`uplink-agent ${name}: ${err.message}\n\n${HELP[name]}`);
      return ACCESS_EXIT.usage;
    }
    return fail(asUplinkError(err));
  } finally {
    control?.close();
    iam?.destroy();
  }
}
