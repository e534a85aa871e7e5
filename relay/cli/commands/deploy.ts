/**
 * `uplink deploy`, `uplink deployments`, `uplink deploy logs` and `uplink deploy cancel`.
 *
 * `--follow` streams the terraform output as the agent produces it (the relay resumes by
 * byte offset) and the exit status says how the deployment ended: 0 succeeded, 1 otherwise.
 */
import { UplinkError } from '../../../shared/errors.js';
import { EXIT, parseCommand } from '../../../shared/cli-args.js';
import { renderTable, ago } from '../table.js';
import type { CliContext, Command } from '../context.js';

interface DeploymentView {
  id: string;
  appliance?: string;
  version: string;
  action: string;
  status: string;
  createdBy: string;
  createdAt: string;
  startedAt: string | null;
  endedAt: string | null;
  outputs: Record<string, { value: unknown; sensitive?: boolean }> | null;
  error: { code: string; message: string } | null;
}

/** Stream the log to stdout until the deployment ends; return the exit status for its outcome. */
async function followLogs(ctx: CliContext, id: string, follow: boolean): Promise<number> {
  const { body } = await ctx.client().stream(`/v1/deployments/${encodeURIComponent(id)}/logs?offset=0${follow ? '&follow=1' : ''}`);
  for await (const chunk of body) {
    if (!ctx.io.stdout.write(chunk)) await new Promise((r) => ctx.io.stdout.once('drain', r));
  }
  if (!follow) return EXIT.ok;
  const { deployment: d } = await ctx.client().call<{ deployment: DeploymentView }>('GET', `/v1/deployments/${encodeURIComponent(id)}`);
  ctx.io.stderr.write(`deployment ${d.id} ${d.status}${d.error ? `: ${d.error.code}: ${d.error.message}` : ''}\n`);
  return d.status === 'succeeded' ? EXIT.ok : EXIT.failure;
}

export const deployCommand: Command = {
  words: ['deploy'],
  summary: 'deploy a release to an appliance (deploy)',
  usage: `Usage: uplink deploy APPLIANCE VERSION [--plan | --destroy] [--allow-downgrade] [--follow] [--json]
Queues the deployment on the relay; the agent runs one at a time, in order.
  --plan             terraform plan only          --destroy   destroy the stack
  --allow-downgrade  confirm a rollback the release was signed for
  --follow           stream the output; exit 1 unless the deployment succeeded`,
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, {
      plan: { type: 'boolean' },
      destroy: { type: 'boolean' },
      'allow-downgrade': { type: 'boolean' },
      follow: { type: 'boolean' },
      json: { type: 'boolean' },
    });
    if (positionals.length !== 2) throw new UplinkError('UPLINK_ERR_USAGE', 'deploy takes APPLIANCE and VERSION');
    if (values.plan && values.destroy) throw new UplinkError('UPLINK_ERR_USAGE', '--plan and --destroy exclude each other');
    const [appliance, version] = positionals as [string, string];
    const action = values.plan ? 'plan' : values.destroy ? 'destroy' : 'apply';
    const { deployment: d } = await ctx.client().call<{ deployment: DeploymentView }>('POST', `/v1/appliances/${encodeURIComponent(appliance)}/deployments`, {
      version,
      action,
      allowDowngrade: values['allow-downgrade'] === true,
    });
    if (values.json && !values.follow) ctx.io.stdout.write(`${JSON.stringify(d)}\n`);
    else ctx.io.stderr.write(`deployment ${d.id} queued: ${action} ${version} on ${appliance}\n`);
    return values.follow ? followLogs(ctx, d.id, true) : EXIT.ok;
  },
};

export const deploymentsCommand: Command = {
  words: ['deployments'],
  summary: "list an appliance's deployments",
  usage: 'Usage: uplink deployments APPLIANCE [--json]',
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, { json: { type: 'boolean' } });
    if (positionals.length !== 1) throw new UplinkError('UPLINK_ERR_USAGE', 'deployments takes exactly one APPLIANCE');
    const { deployments } = await ctx.client().call<{ deployments: DeploymentView[] }>('GET', `/v1/appliances/${encodeURIComponent(positionals[0]!)}/deployments`);
    if (values.json) {
      ctx.io.stdout.write(`${JSON.stringify(deployments)}\n`);
      return EXIT.ok;
    }
    ctx.io.stdout.write(
      renderTable(
        ['ID', 'VERSION', 'ACTION', 'STATUS', 'CREATED', 'BY', 'ERROR'],
        deployments.map((d) => [d.id, d.version, d.action, d.status, ago(d.createdAt), d.createdBy, d.error?.code ?? '']),
      ),
    );
    return EXIT.ok;
  },
};

export const deployLogsCommand: Command = {
  words: ['deploy', 'logs'],
  summary: "print a deployment's terraform output",
  usage: 'Usage: uplink deploy logs ID [--follow]\n  --follow  keep streaming until it ends; exit 1 unless it succeeded',
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, { follow: { type: 'boolean' } });
    if (positionals.length !== 1) throw new UplinkError('UPLINK_ERR_USAGE', 'deploy logs takes exactly one ID');
    return followLogs(ctx, positionals[0]!, values.follow === true);
  },
};

export const deployCancelCommand: Command = {
  words: ['deploy', 'cancel'],
  summary: 'cancel a queued or running deployment (deploy)',
  usage: 'Usage: uplink deploy cancel ID [--json]',
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, { json: { type: 'boolean' } });
    if (positionals.length !== 1) throw new UplinkError('UPLINK_ERR_USAGE', 'deploy cancel takes exactly one ID');
    const { deployment: d } = await ctx.client().call<{ deployment: DeploymentView }>('POST', `/v1/deployments/${encodeURIComponent(positionals[0]!)}/cancel`);
    ctx.io.stdout.write(values.json ? `${JSON.stringify(d)}\n` : `deployment ${d.id}: ${d.status === 'running' ? 'cancelling' : d.status}\n`);
    return EXIT.ok;
  },
};
