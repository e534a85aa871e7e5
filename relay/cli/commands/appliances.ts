import { UplinkError } from '../../../shared/errors.js';
import { EXIT, parseCommand, str } from '../../../shared/cli-args.js';
import { parseDuration } from '../../../shared/duration.js';
import { ago, renderTable } from '../table.js';
import type { Command } from '../context.js';

export interface ApplianceView {
  id: string;
  name: string;
  customer: string;
  instanceId: string;
  enrolled: boolean;
  keyId: string | null;
  keyRevoked: boolean;
  connected: boolean;
  connectedAt: string | null;
  lastSeenAt: string | null;
  agentVersion: string | null;
  remoteAddress: string | null;
  phases: { summary?: string } | null;
}

interface EnrollmentView {
  enrollmentToken: string;
  expiresAt: string;
  agentCommand: string;
}

function printEnrollment(out: NodeJS.WritableStream, name: string, e: EnrollmentView): void {
  out.write(
    `Enrollment token for ${name} (one-time, expires ${e.expiresAt}):\n  ${e.enrollmentToken}\n\n` +
      `Start the agent in the customer's account with:\n  ${e.agentCommand}\n`,
  );
}

function ttlSeconds(value: string | undefined): number | undefined {
  return value === undefined ? undefined : Math.round(parseDuration(value, '--token-ttl') / 1000);
}

export const applianceCreateCommand: Command = {
  words: ['appliance', 'create'],
  summary: 'register an appliance and print its one-time enrollment token (admin)',
  usage: `Usage: uplink appliance create NAME --customer C --instance-id ID [--token-ttl 24h] [--json]
NAME: lower-case letters, digits and '-'. The token and the exact agent start command are printed once.`,
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, {
      customer: { type: 'string' },
      'instance-id': { type: 'string' },
      'token-ttl': { type: 'string' },
      json: { type: 'boolean' },
    });
    if (positionals.length !== 1) throw new UplinkError('UPLINK_ERR_USAGE', 'appliance create takes exactly one NAME');
    const customer = str(values.customer);
    const instanceId = str(values['instance-id']);
    if (!customer || !instanceId) throw new UplinkError('UPLINK_ERR_USAGE', 'appliance create needs --customer and --instance-id');
    const ttl = ttlSeconds(str(values['token-ttl']));
    const r = await ctx.client().call<{ appliance: ApplianceView } & EnrollmentView>('POST', '/v1/appliances', {
      name: positionals[0],
      customer,
      instanceId,
      ...(ttl !== undefined ? { tokenTtlSeconds: ttl } : {}),
    });
    if (values.json) ctx.io.stdout.write(`${JSON.stringify(r)}\n`);
    else {
      ctx.io.stdout.write(`Created appliance ${r.appliance.name} (${r.appliance.id}) for ${r.appliance.customer}, instance ${r.appliance.instanceId}.\n\n`);
      printEnrollment(ctx.io.stdout, r.appliance.name, r);
    }
    return EXIT.ok;
  },
};

export const applianceEnrollTokenCommand: Command = {
  words: ['appliance', 'enroll-token'],
  summary: 'issue a new one-time enrollment token for an appliance (admin)',
  usage: 'Usage: uplink appliance enroll-token NAME [--token-ttl 24h] [--json]',
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, { 'token-ttl': { type: 'string' }, json: { type: 'boolean' } });
    if (positionals.length !== 1) throw new UplinkError('UPLINK_ERR_USAGE', 'appliance enroll-token takes exactly one NAME');
    const ttl = ttlSeconds(str(values['token-ttl']));
    const r = await ctx.client().call<EnrollmentView>('POST', `/v1/appliances/${encodeURIComponent(positionals[0]!)}/enrollment-token`, ttl !== undefined ? { tokenTtlSeconds: ttl } : {});
    if (values.json) ctx.io.stdout.write(`${JSON.stringify(r)}\n`);
    else printEnrollment(ctx.io.stdout, positionals[0]!, r);
    return EXIT.ok;
  },
};

export const applianceRevokeCommand: Command = {
  words: ['appliance', 'revoke'],
  summary: "revoke an appliance's agent key and disconnect it (admin)",
  usage: 'Usage: uplink appliance revoke NAME [--json]\nThe agent is cut off at once; re-enroll it with `uplink appliance enroll-token NAME`.',
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, { json: { type: 'boolean' } });
    if (positionals.length !== 1) throw new UplinkError('UPLINK_ERR_USAGE', 'appliance revoke takes exactly one NAME');
    const r = await ctx.client().call<{ keyId: string }>('POST', `/v1/appliances/${encodeURIComponent(positionals[0]!)}/revoke`);
    ctx.io.stdout.write(values.json ? `${JSON.stringify(r)}\n` : `Revoked key ${r.keyId} of ${positionals[0]}; its agent is disconnected.\n`);
    return EXIT.ok;
  },
};

export const appliancesCommand: Command = {
  words: ['appliances'],
  summary: 'list appliances: connection, last seen, agent version, address, phases',
  usage: 'Usage: uplink appliances [--json]',
  async run(ctx) {
    const { values } = parseCommand(ctx.argv, { json: { type: 'boolean' } }, { allowPositionals: false });
    const { appliances } = await ctx.client().call<{ appliances: ApplianceView[] }>('GET', '/v1/appliances');
    if (values.json) {
      ctx.io.stdout.write(`${JSON.stringify(appliances)}\n`);
      return EXIT.ok;
    }
    const state = (a: ApplianceView) => (a.keyRevoked ? 'revoked' : !a.enrolled ? 'not enrolled' : a.connected ? 'connected' : 'disconnected');
    ctx.io.stdout.write(
      renderTable(
        ['NAME', 'CUSTOMER', 'INSTANCE', 'STATE', 'LAST SEEN', 'VERSION', 'ADDRESS', 'PHASES'],
        appliances.map((a) => [
          a.name,
          a.customer,
          a.instanceId,
          state(a),
          a.connected ? 'now' : ago(a.lastSeenAt),
          a.agentVersion ?? '-',
          a.remoteAddress ?? '-',
          a.phases?.summary ?? '-',
        ]),
      ),
    );
    return EXIT.ok;
  },
};
