#!/usr/bin/env node
/**
 * uplink: the vendor CLI. Reads UPLINK_URL and UPLINK_TOKEN (or `uplink login`'s file).
 */
import { UplinkError, toUplinkError } from '../../shared/errors.js';
import { EXIT, printError } from '../../shared/cli-args.js';
import { VERSION } from '../../shared/version.js';
import { makeContext, type Command } from './context.js';
import { loginCommand } from './commands/login.js';
import { tokenCreateCommand, tokenListCommand, tokenRevokeCommand } from './commands/tokens.js';
import { applianceCreateCommand, applianceEnrollTokenCommand, applianceRevokeCommand, appliancesCommand } from './commands/appliances.js';
import { execCommand } from './commands/exec.js';
import { releaseCreateCommand, releaseKeygenCommand, releasesCommand } from './commands/release.js';
import { deployCancelCommand, deployCommand, deployLogsCommand, deploymentsCommand } from './commands/deploy.js';
import { kubeconfigCommand } from './commands/kubeconfig.js';
import { kubectlCommand } from './commands/kubectl.js';
import { forwardCommand } from './commands/forward.js';
import { sqlCommand } from './commands/sql.js';
import { shellCommand } from './commands/shell.js';
import { replayCommand, sessionsCommand } from './commands/sessions.js';
import { auditCommand } from './commands/audit.js';
import { telemetryTailCommand } from './commands/telemetry.js';

export const COMMANDS: Command[] = [
  loginCommand,
  appliancesCommand,
  applianceCreateCommand,
  applianceEnrollTokenCommand,
  applianceRevokeCommand,
  execCommand,
  releaseKeygenCommand,
  releaseCreateCommand,
  releasesCommand,
  deployCommand,
  deploymentsCommand,
  deployLogsCommand,
  deployCancelCommand,
  kubeconfigCommand,
  kubectlCommand,
  forwardCommand,
  sqlCommand,
  shellCommand,
  sessionsCommand,
  replayCommand,
  auditCommand,
  telemetryTailCommand,
  tokenCreateCommand,
  tokenListCommand,
  tokenRevokeCommand,
];

export function registerCommands(extra: Command[]): void {
  COMMANDS.push(...extra);
}

function globalHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.words.join(' ').length));
  return `uplink ${VERSION}: operate your product inside customers' accounts.

Usage: uplink COMMAND [options]   (every command takes --help)

Commands:
${COMMANDS.map((c) => `  ${c.words.join(' ').padEnd(width)}  ${c.summary}`).join('\n')}

Environment:
  UPLINK_URL     relay URL (or run \`uplink login\`)
  UPLINK_TOKEN   API token
  UPLINK_CA      PEM file of a private CA for the relay's certificate
Errors print as "error CODE: message" (docs/errors.md); --json prints them as JSON.
`;
}

/** Longest match of command words at the start of argv. */
export function findCommand(argv: string[]): { command: Command; rest: string[] } | undefined {
  let best: { command: Command; rest: string[] } | undefined;
  for (const c of COMMANDS) {
    if (c.words.every((w, i) => argv[i] === w) && (!best || c.words.length > best.command.words.length)) {
      best = { command: c, rest: argv.slice(c.words.length) };
    }
  }
  return best;
}

export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const json = argv.includes('--json');
  const ctx = makeContext([], env);
  try {
    const first = argv[0];
    if (first === '--version' || first === '-v' || first === 'version') {
      ctx.io.stdout.write(`${VERSION}\n`);
      return EXIT.ok;
    }
    if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
      ctx.io.stdout.write(globalHelp());
      return first === undefined ? EXIT.usage : EXIT.ok;
    }
    const found = findCommand(argv);
    if (!found) {
      const group = COMMANDS.filter((c) => c.words[0] === first);
      if (group.length) throw new UplinkError('UPLINK_ERR_USAGE', `"${first}" needs a subcommand: ${group.map((c) => c.words.slice(1).join(' ')).join(', ')}`);
      throw new UplinkError('UPLINK_ERR_USAGE', `unknown command "${first}" (try uplink --help)`);
    }
    const dashdash = found.rest.indexOf('--');
    const flags = dashdash === -1 ? found.rest : found.rest.slice(0, dashdash);
    if (flags.includes('--help') || flags.includes('-h')) {
      ctx.io.stdout.write(`${found.command.summary}\n\n${found.command.usage}\n`);
      return EXIT.ok;
    }
    ctx.argv = found.rest;
    return await found.command.run(ctx);
  } catch (err) {
    const e = toUplinkError(err);
    const code = printError(ctx.io, e, json);
    // Operations (exec, shell…) exit 255 like ssh when uplink itself failed.
    return code === EXIT.usage ? code : ['exec', 'shell'].includes(argv[0] ?? '') ? EXIT.uplinkError : code;
  }
}

main(process.argv.slice(2)).then((code) => {
  // Flush stdout (a pipe may still hold output) before leaving: stdin may be open forever.
  process.stdout.write('', () => process.exit(code));
});
