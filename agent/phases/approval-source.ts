/**
 * Where approval decisions come from: role tags (AWS mode, through a RoleTagReader) or the
 * local config plus access.json (local mode). Shared by the running agent (PhaseAccess,
 * reading tags with the SteadyState role) and by `uplink-agent access` (reading them with
 * the customer's own credentials).
 */
import { UplinkError } from '../../shared/errors.js';
import { errorView, evaluateApproval, type AccessSetting, type ApprovalView, type PhaseMode, type RoleTagReader } from './approval.js';
import type { PhaseConfig } from './config.js';
import { readLocalGrants } from './local-grants.js';
import { PHASES, phaseTags, type Clock, type Phase } from './phase.js';
import { MaintenanceSchedule } from './schedule.js';

export class ApprovalSource {
  readonly mode: PhaseMode;
  readonly schedule: MaintenanceSchedule;
  private readonly config: PhaseConfig;
  private readonly stateDir: string | undefined;
  private readonly tags: RoleTagReader | undefined;
  private readonly clock: Clock;

  /** `tags` is required in AWS mode, `stateDir` in local mode. */
  constructor(opts: { config: PhaseConfig; stateDir?: string | undefined; tags?: RoleTagReader | undefined; clock: Clock }) {
    this.config = opts.config;
    this.mode = opts.config.aws ? 'aws' : 'local';
    this.stateDir = opts.stateDir;
    this.tags = opts.tags;
    this.clock = opts.clock;
    this.schedule = MaintenanceSchedule.parse(opts.config.aws ? opts.config.aws.maintenanceWindows : opts.config.local.maintenanceWindows);
    if (this.mode === 'aws' && !this.tags) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'AWS mode needs a role tag reader');
    if (this.mode === 'local' && !this.stateDir) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'local mode needs the agent state directory');
  }

  /** The role ARN of a phase (AWS mode) or "local". */
  roleOf(phase: Phase): string {
    return this.config.aws ? this.config.aws.roles[phase] : 'local';
  }

  /** The customer's current decision for one phase. Throws only when it cannot be read. */
  async approval(phase: Phase): Promise<ApprovalView> {
    const names = phaseTags(phase);
    const aws = this.config.aws;
    if (aws) {
      const role = aws.roles[phase];
      let setting: AccessSetting = {};
      // Install is not gated, and a SteadyState disabled in config needs no IAM call.
      if (phase !== 'install' && !(phase === 'steadyState' && !aws.steadyState.enabled)) {
        const tags = await this.tags!(role);
        setting = { access: tags[names.access], until: tags[names.until] };
      }
      return evaluateApproval({
        phase, mode: 'aws', role, setting, schedule: this.schedule, requireUntil: true, now: this.clock(),
        accessSource: phase === 'steadyState' && !aws.steadyState.enabled ? 'aws.steadyState.enabled' : names.access,
        untilSource: names.until,
        steadyStateEnabled: aws.steadyState.enabled,
      });
    }
    const local = this.config.local;
    let setting: AccessSetting = {};
    let accessSource = `local.${phase}`;
    if (phase === 'deploy' || phase === 'operate') {
      const entry = (await readLocalGrants(this.stateDir!)).phases[phase];
      if (entry) {
        setting = { access: entry.access, until: entry.until };
        accessSource = `access.json:${phase}`;
      } else {
        setting = { access: local[phase] };
      }
    }
    return evaluateApproval({
      phase, mode: 'local', role: 'local', setting, schedule: this.schedule, requireUntil: false, now: this.clock(),
      accessSource, untilSource: `access.json:${phase}.until`, steadyStateEnabled: local.steadyState,
    });
  }

  /** All four phases. Never throws: a phase whose state cannot be read shows as closed with the error's code. */
  async state(): Promise<Record<Phase, ApprovalView>> {
    const entries = await Promise.all(
      PHASES.map(async (phase): Promise<[Phase, ApprovalView]> => {
        try {
          return [phase, await this.approval(phase)];
        } catch (err) {
          return [phase, errorView(phase, this.mode, this.roleOf(phase), asUplinkError(err), this.clock())];
        }
      }),
    );
    return Object.fromEntries(entries) as Record<Phase, ApprovalView>;
  }
}

export function asUplinkError(err: unknown): UplinkError {
  return err instanceof UplinkError ? err : new UplinkError('UPLINK_ERR_INTERNAL', err instanceof Error ? err.message : String(err), { cause: err });
}
