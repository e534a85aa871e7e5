/**
 * `uplink-agent credentials --session-file F`: the AWS `credential_process` of a child
 * process (terraform, a shell running `aws`, kubectl's exec plugin).
 *
 * It prints the session's current credentials in the credential_process format
 * (https://docs.aws.amazon.com/sdkref/latest/guide/feature-process-credentials.html) and
 * exits 0, or prints why there are none on stderr and exits 1. The printed Expiration is
 * capped at the approval window's end, so a well-behaved SDK comes back for new credentials
 * exactly when the window closes, and then gets none.
 */
import { lstat, readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { Writable } from 'node:stream';
import { sessionFileSchema } from './session-files.js';
import { parseIsoInstant } from './approval.js';
import { PRIVATE_FILE_MODE } from './private-files.js';

export const CREDENTIAL_PROCESS_LIMITS = {
  /** A session file is a few KiB; refuse anything much larger. */
  maxSessionFileBytes: 64 * 1024,
} as const;

/** Exit codes of the subcommand. */
export const CREDENTIAL_PROCESS_EXIT = { ok: 0, refused: 1, usage: 2 } as const;

export interface CredentialProcessIo {
  stdout: Pick<Writable, 'write'>;
  stderr: Pick<Writable, 'write'>;
}

const HELP = `Usage: uplink-agent credentials --session-file FILE

Prints the current AWS credentials of one phase session in the credential_process format.
The agent writes this line into the AWS config file it gives each child process; there is
no reason to run it by hand.
`;

/**
 * Run the subcommand. `argv` excludes the subcommand name. Never throws: every failure is a
 * message on stderr and a non-zero exit code, which is what credential_process callers read.
 */
export async function runCredentialProcess(argv: readonly string[], io: CredentialProcessIo, now: () => number = Date.now): Promise<number> {
  let file: string;
  try {
    const { values } = parseArgs({ args: [...argv], options: { 'session-file': { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false });
    if (values.help) {
      io.stdout.write(HELP);
      return CREDENTIAL_PROCESS_EXIT.ok;
    }
    if (!values['session-file']) throw new Error('--session-file is required');
    file = values['session-file'];
  } catch (err) {
    io.stderr.write(`uplink-agent credentials: ${(err as Error).message}\n${HELP}`);
    return CREDENTIAL_PROCESS_EXIT.usage;
  }
  const refuse = (message: string): number => {
    io.stderr.write(`uplink-agent credentials: ${message}\n`);
    return CREDENTIAL_PROCESS_EXIT.refused;
  };
  let raw: string;
  try {
    const st = await lstat(file);
    if (!st.isFile()) return refuse(`${file} is not a regular file`);
    // Credentials readable by others are already leaked; do not keep using such a file.
    if ((st.mode & 0o777 & ~PRIVATE_FILE_MODE) !== 0) return refuse(`${file} is accessible to other users (mode ${(st.mode & 0o777).toString(8)}); refusing`);
    if (st.size > CREDENTIAL_PROCESS_LIMITS.maxSessionFileBytes) return refuse(`${file} is larger than ${CREDENTIAL_PROCESS_LIMITS.maxSessionFileBytes} bytes`);
    raw = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return refuse(code === 'ENOENT' ? `the phase session is over (${file} no longer exists)` : `cannot read ${file}: ${(err as Error).message}`);
  }
  let parsedJson: unknown;
  try {
    parsedJson = JSON.parse(raw);
  } catch {
    return refuse(`${file} is not valid JSON`);
  }
  const parsed = sessionFileSchema.safeParse(parsedJson);
  if (!parsed.success) return refuse(`${file} is not a phase session file`);
  const s = parsed.data;
  if (s.state === 'ended') return refuse(`${s.code}: the ${s.phase} session ended at ${s.endedAt}: ${s.reason}`);

  const t = now();
  const expiration = parseIsoInstant(s.expiration);
  const notAfter = parseIsoInstant(s.notAfter);
  if (expiration === undefined) return refuse(`${file} has no valid expiration`);
  if (notAfter !== undefined && t >= notAfter) {
    return refuse(`UPLINK_ERR_WINDOW_EXPIRED: the ${s.phase} approval window for ${s.roleArn} closed at ${new Date(notAfter).toISOString()}; no more credentials are handed out`);
  }
  if (t >= expiration) {
    return refuse(`UPLINK_ERR_PHASE_SESSION_ENDED: the ${s.phase} credentials expired at ${s.expiration} and were not refreshed (is the agent running?)`);
  }
  const handedExpiration = notAfter !== undefined ? Math.min(expiration, notAfter) : expiration;
  io.stdout.write(
    `${JSON.stringify({
      Version: 1,
      AccessKeyId: s.accessKeyId,
      SecretAccessKey: s.secretAccessKey,
      SessionToken: s.sessionToken,
      Expiration: new Date(handedExpiration).toISOString(),
    })}\n`,
  );
  return CREDENTIAL_PROCESS_EXIT.ok;
}
