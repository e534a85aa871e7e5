/** What every CLI command receives: argv after the command words, I/O, env, and a client factory. */
import type { Io } from '../../shared/cli-args.js';
import { ApiClient } from './api-client.js';
import { resolveClientConfig } from './client-config.js';

export interface CliContext {
  argv: string[];
  io: Io & { stdin: NodeJS.ReadableStream & { isTTY?: boolean } };
  env: NodeJS.ProcessEnv;
  client(): ApiClient;
}

export function makeContext(argv: string[], env: NodeJS.ProcessEnv = process.env): CliContext {
  let client: ApiClient | undefined;
  return {
    argv,
    io: { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin },
    env,
    client: () => (client ??= new ApiClient(resolveClientConfig(env))),
  };
}

export type Command = {
  /** Words that select it, e.g. ['token', 'create']. */
  words: string[];
  summary: string;
  usage: string;
  run(ctx: CliContext): Promise<number>;
};
