import { UplinkError } from '../../../shared/errors.js';
import { EXIT, list, parseCommand } from '../../../shared/cli-args.js';
import { ago, renderTable } from '../table.js';
import type { Command } from '../context.js';

interface TokenView {
  id: string;
  name: string;
  scopes: string[];
  createdAt: string;
  createdBy: string | null;
  revokedAt: string | null;
  lastUsedAt: string | null;
  token?: string;
}

export const tokenCreateCommand: Command = {
  words: ['token', 'create'],
  summary: 'create an API token (admin)',
  usage: `Usage: uplink token create NAME --scope read|operate|deploy|admin [--scope …] [--json]
Prints the token once; only its hash is stored.`,
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, { scope: { type: 'string', multiple: true }, json: { type: 'boolean' } });
    const [name, ...extra] = positionals;
    if (!name || extra.length) throw new UplinkError('UPLINK_ERR_USAGE', 'token create takes exactly one NAME');
    const scopes = list(values.scope);
    if (scopes.length === 0) throw new UplinkError('UPLINK_ERR_USAGE', 'give at least one --scope');
    const t = await ctx.client().call<TokenView>('POST', '/v1/tokens', { name, scopes });
    if (values.json) ctx.io.stdout.write(`${JSON.stringify(t)}\n`);
    else ctx.io.stdout.write(`Created token ${t.id} "${t.name}" (${t.scopes.join(', ')}). It is shown once:\n${t.token}\n`);
    return EXIT.ok;
  },
};

export const tokenListCommand: Command = {
  words: ['token', 'list'],
  summary: 'list API tokens (admin)',
  usage: 'Usage: uplink token list [--all] [--json]\n  --all  include revoked tokens',
  async run(ctx) {
    const { values } = parseCommand(ctx.argv, { json: { type: 'boolean' }, all: { type: 'boolean' } }, { allowPositionals: false });
    const { tokens } = await ctx.client().call<{ tokens: TokenView[] }>('GET', '/v1/tokens');
    const shown = values.all ? tokens : tokens.filter((t) => !t.revokedAt);
    if (values.json) {
      ctx.io.stdout.write(`${JSON.stringify(shown)}\n`);
      return EXIT.ok;
    }
    ctx.io.stdout.write(
      renderTable(
        ['ID', 'NAME', 'SCOPES', 'CREATED', 'LAST USED', 'STATUS'],
        shown.map((t) => [t.id, t.name, t.scopes.join(','), ago(t.createdAt), ago(t.lastUsedAt), t.revokedAt ? 'revoked' : 'active']),
      ),
    );
    return EXIT.ok;
  },
};

export const tokenRevokeCommand: Command = {
  words: ['token', 'revoke'],
  summary: 'revoke an API token by id or name (admin)',
  usage: 'Usage: uplink token revoke ID|NAME [--json]',
  async run(ctx) {
    const { values, positionals } = parseCommand(ctx.argv, { json: { type: 'boolean' } });
    if (positionals.length !== 1) throw new UplinkError('UPLINK_ERR_USAGE', 'token revoke takes exactly one ID or NAME');
    const r = await ctx.client().call('DELETE', `/v1/tokens/${encodeURIComponent(positionals[0]!)}`);
    ctx.io.stdout.write(values.json ? `${JSON.stringify(r)}\n` : `Revoked ${positionals[0]}\n`);
    return EXIT.ok;
  },
};
