/**
 * Load generator: holds many real agent connections in one process. Each agent has its own
 * Ed25519 identity, its own WebSocket and its own HTTP/2 server session, and serves the real
 * exec handler and the phase-state long poll; they share one phase-access object (local mode,
 * Operate enabled) and one audit file, which is what lets ten thousand of them fit in one process.
 *
 * Usage: node --import tsx test/bench/load-agents.ts RELAY_URL TOKENS_JSON STATE_ROOT
 * Prints one JSON line per second: {"connected": n, "total": N}.
 */
import { readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { silentLogger } from '../../shared/logger.js';
import { loadAgentConfig } from '../../agent/config.js';
import { RelayConnection } from '../../agent/connection.js';
import { TunnelServer } from '../../agent/tunnel-server.js';
import { createIdentity, loadIdentity, saveIdentity } from '../../agent/identity-store.js';
import { parseEnrollmentToken } from '../../shared/enrollment-token.js';
import { AGENT_PATHS } from '../../shared/protocol.js';
import { handleExec, inheritedEnv } from '../../agent/ops/exec.js';
import { PhaseAccess } from '../../agent/phases/credentials.js';
import { AgentAuditLog } from '../../agent/audit-log.js';
import { PhasesHandler } from '../../agent/phases/handler.js';

const [relayUrl, tokensFile, stateRoot] = process.argv.slice(2);
if (!relayUrl || !tokensFile || !stateRoot) {
  process.stderr.write('usage: load-agents.ts RELAY_URL TOKENS_JSON STATE_ROOT\n');
  process.exit(2);
}
const tokens = JSON.parse(readFileSync(tokensFile, 'utf8')) as string[];
mkdirSync(stateRoot, { recursive: true });
const shared = join(stateRoot, 'shared');
const cfgShared = loadAgentConfig({ UPLINK_RELAY_URL: relayUrl, UPLINK_STATE_DIR: shared });
const phases = new PhaseAccess({ config: { local: { operate: 'enabled', deploy: 'disabled' } }, stateDir: shared, credentialProcessCommand: ['true'], autoRecheck: false });
const audit = await AgentAuditLog.open(shared);
// The relay holds a long poll on every agent's phase state, as it does with real agents.
const phasesHandler = new PhasesHandler(() => phases);

const connections: RelayConnection[] = [];
const host = new URL(relayUrl).host.toLowerCase();
for (const [i, token] of tokens.entries()) {
  const stateDir = join(stateRoot, `a${i}`);
  const cfg = loadAgentConfig({ UPLINK_RELAY_URL: relayUrl, UPLINK_STATE_DIR: stateDir, UPLINK_ENROLLMENT_TOKEN: token });
  let identity = loadIdentity(stateDir);
  if (!identity) {
    identity = createIdentity(parseEnrollmentToken(token)!.applianceId, host);
    saveIdentity(stateDir, identity);
  }
  const tunnel = new TunnelServer({ maxConcurrentStreams: 128, maxSpecBytes: 65536, h2SessionMemoryMiB: 8 }, silentLogger);
  const applianceId = identity.applianceId;
  tunnel.handle(AGENT_PATHS.phases, phasesHandler.handle);
  tunnel.handle(AGENT_PATHS.exec, (stream, ctx) =>
    handleExec(stream, ctx, {
      cfg: cfgShared,
      maxFrameBytes: 1 << 20,
      inheritEnv: () => inheritedEnv(cfgShared.operations.exec.inheritEnv),
      phases: () => phases,
      audit: () => audit,
      applianceId: () => applianceId,
    }),
  );
  const conn = new RelayConnection(cfg, identity, tunnel, silentLogger);
  connections.push(conn);
  conn.start();
  // Pace the initial dial so the generator, not the relay, is the limit it measures against.
  if (i % 200 === 199) await new Promise((r) => setTimeout(r, 50));
}

setInterval(() => {
  const connected = connections.filter((c) => c.status.connected).length;
  process.stdout.write(`${JSON.stringify({ connected, total: connections.length, rss: process.memoryUsage().rss })}\n`);
}, 1000);

process.on('SIGTERM', () => {
  for (const c of connections) c.stop();
  process.exit(0);
});
