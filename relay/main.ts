#!/usr/bin/env node
/**
 * uplink-relay: the vendor-side server.
 *
 *   uplink-relay serve --listen HOST:PORT [--data-dir DIR | --database-url URL]
 *                      [--tls-cert F --tls-key F | --insecure-http [--insecure-http-any]]
 */
import { UplinkError } from '../shared/errors.js';
import { parseCommand, runProgram, str, EXIT } from '../shared/cli-args.js';
import { parseHostPort, readJsonFile } from '../shared/config-validate.js';
import { VERSION } from '../shared/version.js';
import { loadRelayConfig } from './config.js';
import { Relay } from './server.js';

const HELP = `uplink-relay ${VERSION}: the vendor-side server agents dial into.

Usage:
  uplink-relay serve [options]     run the relay
  uplink-relay --version | --help

Options for serve:
  --listen HOST:PORT       address to listen on (default 127.0.0.1:7443; port 0 = any free port)
  --data-dir DIR           embedded store (PGlite) in DIR (the default: ./uplink-data)
  --database-url URL       PostgreSQL store (also DATABASE_URL); for several replicas
  --tls-cert FILE          PEM certificate chain (with --tls-key)
  --tls-key FILE           PEM private key
  --insecure-http          plain HTTP, loopback only (local development, the demo)
  --insecure-http-any      allow --insecure-http on a non-loopback address (behind a TLS proxy)
  --public-url URL         URL agents and the CLI use to reach this relay (behind a proxy/LB)
  --config FILE            JSON config file (every key in docs/configuration.md)
  --json                   errors as JSON

Environment:
  DATABASE_URL             PostgreSQL URL (as --database-url)
  UPLINK_BOOTSTRAP_TOKEN   admin token to create when the store has none (else random, printed once)
  UPLINK_LOG_LEVEL         fatal|error|warn|info|debug|trace (default info); logs are JSON on stderr

Signals: SIGTERM/SIGINT drain (GOAWAY to every agent, in-flight work finishes within
shutdown.drainTimeoutMs) and exit 0.
`;

async function serve(argv: string[]): Promise<number> {
  const { values } = parseCommand(
    argv,
    {
      listen: { type: 'string' },
      'data-dir': { type: 'string' },
      'database-url': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'insecure-http': { type: 'boolean' },
      'insecure-http-any': { type: 'boolean' },
      'public-url': { type: 'string' },
      config: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    { allowPositionals: false },
  );
  if (values.help) {
    process.stdout.write(HELP);
    return EXIT.ok;
  }
  const file = str(values.config) ? (readJsonFile(str(values.config)!) as Record<string, unknown>) : {};
  const merged: Record<string, unknown> = { ...file };
  if (str(values.listen)) merged.listen = parseHostPort(str(values.listen)!, '--listen');
  merged.listen ??= { host: '127.0.0.1', port: 7443 };
  const dbUrl = str(values['database-url']) ?? process.env.DATABASE_URL;
  if (str(values['data-dir'])) merged.dataDir = str(values['data-dir']);
  if (dbUrl && !merged.dataDir) merged.databaseUrl = dbUrl;
  if (!merged.dataDir && !merged.databaseUrl) merged.dataDir = 'uplink-data';
  if (str(values['tls-cert']) || str(values['tls-key'])) {
    if (!str(values['tls-cert']) || !str(values['tls-key'])) throw new UplinkError('UPLINK_ERR_USAGE', '--tls-cert and --tls-key go together');
    merged.tls = { certFile: str(values['tls-cert']), keyFile: str(values['tls-key']) };
  }
  if (values['insecure-http']) merged.insecureHttp = true;
  if (values['insecure-http-any']) merged.insecureHttpAny = true;
  if (str(values['public-url'])) merged.publicUrl = str(values['public-url']);
  const cfg = loadRelayConfig(merged);

  const relay = new Relay(cfg);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      relay.log.warn({ signal }, 'second signal: exiting now');
      process.exit(EXIT.failure);
    }
    stopping = true;
    relay.log.info({ signal }, 'shutdown requested');
    relay.close().then(
      () => process.exit(EXIT.ok),
      (err) => {
        relay.log.error({ err: String(err) }, 'shutdown failed');
        process.exit(EXIT.failure);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    await relay.start();
  } catch (err) {
    await relay.close().catch(() => {});
    throw err;
  }
  return -1; // keep running
}

export function main(argv: string[]): Promise<number> {
  return runProgram(argv, { version: VERSION, help: HELP, commands: { serve: (rest) => serve(rest) } });
}

main(process.argv.slice(2)).then((code) => {
  if (code >= 0) process.stdout.write('', () => process.exit(code));
});
