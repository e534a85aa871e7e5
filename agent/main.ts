#!/usr/bin/env node
/**
 * uplink-agent: runs in the customer's account, dials out to the relay, never listens.
 */
import { UplinkError } from '../shared/errors.js';
import { EXIT, parseCommand, runProgram, str } from '../shared/cli-args.js';
import { createLogger } from '../shared/logger.js';
import { VERSION } from '../shared/version.js';
import { loadAgentConfig } from './config.js';
import { Agent } from './agent.js';
import { isHealthy, readStatus } from './status-file.js';
import { runAccessCommand } from './cli/access.js';
import { runCredentialProcess } from './phases/credential-process.js';
import { AUDIT_HELP, auditLogSink, runAuditCommand } from './cli/audit.js';
import { AgentAuditLog } from './audit-log.js';
import { loadIdentity } from './identity-store.js';
import { phaseConfigFromEnv } from './phases/config.js';
import { readJsonFile } from '../shared/config-validate.js';

const HELP = `uplink-agent ${VERSION}: the customer-side agent. It dials out to the vendor's relay and
keeps one connection open; it opens no listening socket.

Usage:
  uplink-agent run                 run the agent (foreground; SIGTERM stops it)
  uplink-agent health [--json]     exit 0 when the running agent is connected (for HEALTHCHECK)

Customer controls (run on the agent host, with the customer's own AWS credentials):
  uplink-agent access [--json]                          what the vendor may do right now, per phase
  uplink-agent grant deploy|operate --for 2h [--reason TEXT]
  uplink-agent revoke deploy|operate                    takes effect at once; ends open sessions
  uplink-agent audit [--verify] [--json]                the customer's hash-chained audit log
  uplink-agent --version | --help

Environment:
  UPLINK_RELAY_URL          the relay, e.g. https://relay.vendor.example (required)
  UPLINK_STATE_DIR          writable directory kept across restarts: identity, audit, spool (required)
  UPLINK_ENROLLMENT_TOKEN   one-time token from the vendor, needed for the first start only
  UPLINK_CONFIG             JSON file with everything else (docs/configuration.md); unknown keys are errors
  UPLINK_RELAY_CA           PEM file of the CA for the relay's certificate
  UPLINK_RELAY_PIN          sha256/<base64> pin of the relay certificate's public key
  UPLINK_LOG_LEVEL          fatal|error|warn|info|debug|trace (default info); JSON logs on stderr

Exit status: 0 stopped by signal; 1 fatal error (revoked key, used/expired token, bad config;
the last log line says which code); 2 usage.
`;

async function run(argv: string[]): Promise<number> {
  const { values } = parseCommand(argv, { help: { type: 'boolean', short: 'h' } }, { allowPositionals: false });
  if (values.help) {
    process.stdout.write(HELP);
    return EXIT.ok;
  }
  const log = createLogger('uplink-agent');
  const cfg = loadAgentConfig(process.env);
  const agent = new Agent(cfg, log);
  await agent.start();
  log.info({ version: VERSION, appliance: agent.identity.applianceId, stateDir: cfg.stateDir }, 'agent started');
  return new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'agent stopping');
      void agent.stop().finally(() => resolve(EXIT.ok));
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    void agent.fatal.then(async (err) => {
      await agent.stop();
      process.stderr.write(`error ${err.code}: ${err.message}\n`);
      resolve(EXIT.failure);
    });
  });
}

function health(argv: string[]): number {
  const { values } = parseCommand(argv, { json: { type: 'boolean' }, 'max-age': { type: 'string' }, help: { type: 'boolean', short: 'h' } }, { allowPositionals: false });
  if (values.help) {
    process.stdout.write('Usage: uplink-agent health [--json] [--max-age SECONDS]\nExit 0 when the running agent wrote a fresh status and is connected.\n');
    return EXIT.ok;
  }
  const stateDir = process.env.UPLINK_STATE_DIR;
  if (!stateDir) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'UPLINK_STATE_DIR is required');
  const maxAge = Number(str(values['max-age']) ?? 30) * 1000;
  const status = readStatus(stateDir);
  const verdict = isHealthy(status, Date.now(), maxAge);
  if (values.json) process.stdout.write(`${JSON.stringify({ ...verdict, status: status ?? null })}\n`);
  else process.stdout.write(`${verdict.ok ? 'healthy' : 'unhealthy'}: ${verdict.reason}\n`);
  return verdict.ok ? EXIT.ok : EXIT.failure;
}

const io = { stdout: process.stdout, stderr: process.stderr };

function requireStateDir(): string {
  const dir = process.env.UPLINK_STATE_DIR;
  if (!dir) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'UPLINK_STATE_DIR is required');
  return dir;
}

/** grant/revoke/access: phase config from UPLINK_CONFIG + env, audit into the agent's chain. */
async function customerAccess(cmd: 'access' | 'grant' | 'revoke', argv: string[]): Promise<number> {
  const stateDir = requireStateDir();
  const file = process.env.UPLINK_CONFIG ? (readJsonFile(process.env.UPLINK_CONFIG) as Record<string, unknown>) : {};
  const config = phaseConfigFromEnv(process.env, { ...(file.aws !== undefined ? { aws: file.aws } : {}), ...(file.local !== undefined ? { local: file.local } : {}) });
  if (cmd === 'access' || argv.includes('--help') || argv.includes('-h')) return runAccessCommand(cmd, argv, { stateDir, config, io });
  const log = await AgentAuditLog.open(stateDir);
  try {
    const applianceId = loadIdentity(stateDir)?.applianceId ?? 'unenrolled';
    return await runAccessCommand(cmd, argv, { stateDir, config, io, audit: auditLogSink(log, applianceId) });
  } finally {
    await log.close();
  }
}

export function main(argv: string[]): Promise<number> {
  return runProgram(argv, {
    version: VERSION,
    help: HELP,
    commands: {
      run: (rest) => run(rest),
      health: (rest) => health(rest),
      access: (rest) => customerAccess('access', rest),
      grant: (rest) => customerAccess('grant', rest),
      revoke: (rest) => customerAccess('revoke', rest),
      audit: (rest) => {
        if (rest.includes('--help') || rest.includes('-h')) {
          process.stdout.write(AUDIT_HELP);
          return EXIT.ok;
        }
        return runAuditCommand(rest, requireStateDir(), io);
      },
      // credential_process for child processes; see agent/phases/credential-process.ts
      credentials: (rest) => runCredentialProcess(rest, { stdout: process.stdout, stderr: process.stderr }),
    },
  });
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
  // Timers are unref'd; in-flight children were killed by stop(). Leave promptly.
  if (code !== EXIT.ok || process.argv[2] !== 'run') return;
  setTimeout(() => process.exit(code), 2000).unref();
});
