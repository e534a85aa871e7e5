import { UplinkError } from '../../../shared/errors.js';
import { EXIT, parseCommand, str } from '../../../shared/cli-args.js';
import { ApiClient } from '../api-client.js';
import { saveClientConfig } from '../client-config.js';
import type { Command } from '../context.js';

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks).toString('utf8').trim();
}

export const loginCommand: Command = {
  words: ['login'],
  summary: 'verify a relay URL and token, and save them for later commands',
  usage: `Usage: uplink login --url URL --token TOKEN|- [--ca FILE] [--json]
  --token -   read the token from stdin (keeps it out of shell history)
Writes ~/.config/uplink/config.json (mode 0600). UPLINK_URL / UPLINK_TOKEN override it.`,
  async run(ctx) {
    const { values } = parseCommand(ctx.argv, { url: { type: 'string' }, token: { type: 'string' }, ca: { type: 'string' }, json: { type: 'boolean' } }, { allowPositionals: false });
    const url = str(values.url) ?? ctx.env.UPLINK_URL;
    let token = str(values.token) ?? ctx.env.UPLINK_TOKEN;
    if (token === '-') token = await readAll(ctx.io.stdin);
    if (!url || !token) throw new UplinkError('UPLINK_ERR_USAGE', 'login needs --url and --token');
    const cfg = { url: url.replace(/\/$/, ''), token, caFile: str(values.ca) };
    const client = new ApiClient(cfg);
    try {
      const who = await client.call<{ name: string; scopes: string[] }>('GET', '/v1/whoami');
      const path = saveClientConfig(cfg, ctx.env);
      if (values.json) ctx.io.stdout.write(`${JSON.stringify({ url: cfg.url, token: who, configPath: path })}\n`);
      else ctx.io.stdout.write(`Logged in to ${cfg.url} as ${who.name} (${who.scopes.join(', ')}); saved to ${path}\n`);
    } finally {
      await client.close();
    }
    return EXIT.ok;
  },
};
