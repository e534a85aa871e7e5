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
