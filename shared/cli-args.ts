/**
 * Argument parsing for the three CLIs, on node:util parseArgs (works on Node 20 and 22):
 * unknown flags are errors (UPLINK_ERR_USAGE), every command has --help, and errors print
 * as `error CODE: message` (or JSON with --json) with a stable exit status.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UplinkError, toUplinkError } from './errors.js';

export type OptionSpec = NonNullable<ParseArgsConfig['options']>;

export interface Parsed {
  values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  positionals: string[];
}

export function parseCommand(argv: string[], options: OptionSpec, opts: { allowPositionals?: boolean } = {}): Parsed {
  try {
    const r = parseArgs({ args: argv, options, allowPositionals: opts.allowPositionals ?? true, strict: true });
    return { values: r.values as Parsed['values'], positionals: r.positionals };
  } catch (err) {
    throw new UplinkError('UPLINK_ERR_USAGE', (err as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
}

export function str(v: Parsed['values'][string]): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

export function list(v: Parsed['values'][string]): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : typeof v === 'string' ? [v] : [];
}

/** Exit statuses shared by the CLIs. Remote command statuses pass through unchanged. */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  /** Like timeout(1). */
  timeout: 124,
  /** Like ssh: the tool itself failed (connection, auth, refused), not the remote command. */
  uplinkError: 255,
} as const;

export interface Io {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export function printError(io: Io, err: unknown, json: boolean): number {
  const e = toUplinkError(err);
  if (json) io.stderr.write(`${JSON.stringify({ error: e.toJSON() })}\n`);
  else io.stderr.write(`error ${e.code}: ${e.message}\n`);
  return e.code === 'UPLINK_ERR_USAGE' ? EXIT.usage : EXIT.failure;
}

/** A program's commands: each gets the arguments after its name and returns the exit status. */
export type Commands = Record<string, (rest: string[]) => Promise<number> | number>;

/**
 * The entry of a daemon's command line: `--version`, `--help` (no command at all is a usage
 * error that prints the help), dispatch to a command, and any error printed with its code
 * (as JSON when `--json` is anywhere in argv) and turned into the exit status.
 */
export async function runProgram(argv: string[], program: { version: string; help: string; commands: Commands }, io: Io = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const json = argv.includes('--json');
  try {
    const [cmd, ...rest] = argv;
    if (cmd === '--version' || cmd === '-v' || cmd === 'version') {
      io.stdout.write(`${program.version}\n`);
      return EXIT.ok;
    }
    if (cmd === undefined || cmd === '--help' || cmd === '-h' || cmd === 'help') {
      io.stdout.write(program.help);
      return cmd === undefined ? EXIT.usage : EXIT.ok;
    }
    const command = Object.hasOwn(program.commands, cmd) ? program.commands[cmd] : undefined;
    if (!command) throw new UplinkError('UPLINK_ERR_USAGE', `unknown command "${cmd}" (try --help)`);
    return await command(rest);
  } catch (err) {
    return printError(io, err, json);
  }
}
