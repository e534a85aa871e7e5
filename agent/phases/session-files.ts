/**
 * The files a child process uses to get phase credentials, one private directory per session:
 *
 *     <stateDir>/phase-sessions/<random id>/   (0700)
 *         config        AWS config: [default] credential_process = <agent> credentials --session-file …
 *         credentials   empty; AWS_SHARED_CREDENTIALS_FILE points here so ~/.aws never leaks in
 *         session.json  the current credentials (rewritten before expiry) or the reason the session ended
 *
 * The agent rewrites session.json; `uplink-agent credentials` (credential-process.ts) reads
 * it each time an SDK or CLI in the child needs credentials. That is how a long terraform
 * apply gets fresh credentials while the window is open and none after it closes.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ensurePrivateDir, writePrivateFile } from './private-files.js';

export const SESSIONS_DIR = 'phase-sessions';
export const SESSION_FILE = 'session.json';

/** session.json while credentials are handed out. */
const activeSchema = z.strictObject({
  version: z.literal(1),
  state: z.literal('active'),
  phase: z.string().max(32),
  roleArn: z.string().max(2048),
  sessionName: z.string().max(64),
  accessKeyId: z.string().max(256),
  secretAccessKey: z.string().max(1024),
  sessionToken: z.string().max(8192),
  /** When STS says the credentials expire. */
  expiration: z.string().max(64),
  /** When the approval window closes: no credentials are handed out from then on. */
  notAfter: z.string().max(64).optional(),
});

/** session.json after the session ended. */
const endedSchema = z.strictObject({
  version: z.literal(1),
  state: z.literal('ended'),
  phase: z.string().max(32),
  code: z.string().max(128),
  reason: z.string().max(4096),
  endedAt: z.string().max(64),
});

export const sessionFileSchema = z.discriminatedUnion('state', [activeSchema, endedSchema]);
export type SessionFile = z.infer<typeof sessionFileSchema>;
export type ActiveSessionFile = z.infer<typeof activeSchema>;

/** Quote one argument for a POSIX shell (credential_process is split shell-style by SDKs and the CLI). */
export function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

export interface SessionPaths {
  dir: string;
  config: string;
  credentials: string;
  session: string;
}

/** Create the private directory of a new session with its config and empty credentials file. */
export async function createSessionFiles(
  stateDir: string,
  opts: { credentialProcessCommand: readonly string[]; region: string; endpoint?: string | undefined },
): Promise<SessionPaths> {
  const root = join(stateDir, SESSIONS_DIR);
  await ensurePrivateDir(root);
  const dir = join(root, randomBytes(12).toString('hex'));
  await ensurePrivateDir(dir);
  const paths: SessionPaths = { dir, config: join(dir, 'config'), credentials: join(dir, 'credentials'), session: join(dir, SESSION_FILE) };
  const command = [...opts.credentialProcessCommand, '--session-file', paths.session].map(shellQuote).join(' ');
  const lines = ['[default]', `credential_process = ${command}`, `region = ${opts.region}`];
  // Only set for emulators and endpoints without private DNS: it applies to every service.
  if (opts.endpoint) lines.push(`endpoint_url = ${opts.endpoint}`);
  await writePrivateFile(paths.config, `${lines.join('\n')}\n`);
  await writePrivateFile(paths.credentials, '');
  return paths;
}

/** An empty, private file for AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE in local mode. */
export async function emptyAwsFile(stateDir: string): Promise<string> {
  const root = join(stateDir, SESSIONS_DIR);
  await ensurePrivateDir(root);
  const path = join(root, 'empty');
  await writePrivateFile(path, '');
  return path;
}

export async function writeSessionFile(path: string, content: SessionFile): Promise<void> {
  await writePrivateFile(path, `${JSON.stringify(sessionFileSchema.parse(content))}\n`);
}

export async function removeSessionFiles(paths: SessionPaths): Promise<void> {
  await rm(paths.dir, { recursive: true, force: true });
}
