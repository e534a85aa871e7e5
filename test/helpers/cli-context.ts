/** A CliContext for running a CLI command in-process against `client`, with its output captured. */
import { PassThrough } from 'node:stream';
import type { ApiClient } from '../../relay/cli/api-client.js';
import type { CliContext } from '../../relay/cli/context.js';

export function cliContext(client: ApiClient, argv: string[]): CliContext & { out: () => string; err: () => string; stdout: PassThrough } {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d: Buffer) => (out += d.toString()));
  stderr.on('data', (d: Buffer) => (err += d.toString()));
  return { argv, io: { stdout, stderr, stdin: new PassThrough() }, env: {}, client: () => client, out: () => out, err: () => err, stdout };
}
