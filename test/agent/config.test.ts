import t, { type Test } from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { agentConnectUrl, loadAgentConfig } from '../../agent/config.js';
import { tempDir } from '../helpers/cluster.js';

function withFile(t: Test, value: unknown): string {
  const p = join(tempDir(t), 'agent.json');
  writeFileSync(p, JSON.stringify(value));
  return p;
}
const env = { UPLINK_RELAY_URL: 'https://relay.example', UPLINK_STATE_DIR: '/var/lib/uplink' };

t.test('env essentials and defaults', async (t) => {
  const cfg = loadAgentConfig({ ...env, UPLINK_ENROLLMENT_TOKEN: 'tok' });
  t.equal(cfg.relayUrl, 'https://relay.example');
  t.equal(cfg.enrollmentToken, 'tok');
  t.equal(cfg.operations.exec.enabled, true);
  t.equal(cfg.limits.maxConcurrentStreams, 1024);
  t.ok(Object.isFrozen(cfg.operations.exec));
  t.throws(() => loadAgentConfig({ UPLINK_STATE_DIR: '/x' }), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /UPLINK_RELAY_URL is required/ });
  t.throws(() => loadAgentConfig({ UPLINK_RELAY_URL: 'https://r' }), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /UPLINK_STATE_DIR is required/ });
});

t.test('an unknown key in the file is rejected naming the field', async (t) => {
  const file = withFile(t, { operations: { exec: { enabled: true, killGrace: 5 } } });
  t.throws(() => loadAgentConfig({ ...env, UPLINK_CONFIG: file }), {
    code: 'UPLINK_ERR_CONFIG_INVALID',
    message: /unknown key\(s\) "killGrace" at operations\.exec/,
  });
  const top = withFile(t, { relayURL: 'https://x' });
  t.throws(() => loadAgentConfig({ ...env, UPLINK_CONFIG: top }), { message: /unknown key\(s\) "relayURL" at \(root\)/ });
  const badType = withFile(t, { limits: { maxFrameBytes: 'big' } });
  t.throws(() => loadAgentConfig({ ...env, UPLINK_CONFIG: badType }), { message: /limits\.maxFrameBytes: / });
  const arr = withFile(t, [1, 2]);
  t.throws(() => loadAgentConfig({ ...env, UPLINK_CONFIG: arr }), { message: /must hold a JSON object/ });
});

t.test('env wins over the file', async (t) => {
  const file = withFile(t, { relayUrl: 'https://from-file.example', heartbeat: { intervalMs: 200 } });
  const cfg = loadAgentConfig({ ...env, UPLINK_CONFIG: file });
  t.equal(cfg.relayUrl, 'https://relay.example');
  t.equal(cfg.heartbeat.intervalMs, 200);
});

t.test('plain http only to loopback unless allowInsecureRelay', async (t) => {
  t.equal(loadAgentConfig({ ...env, UPLINK_RELAY_URL: 'http://127.0.0.1:8080' }).relayUrl, 'http://127.0.0.1:8080');
  t.equal(loadAgentConfig({ ...env, UPLINK_RELAY_URL: 'http://[::1]:8080' }).relayUrl, 'http://[::1]:8080');
  t.throws(() => loadAgentConfig({ ...env, UPLINK_RELAY_URL: 'http://relay.example' }), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /plain http:\/\/ to relay\.example is refused/ });
  t.equal(loadAgentConfig({ ...env, UPLINK_RELAY_URL: 'http://relay.example', UPLINK_CONFIG: withFile(t, { allowInsecureRelay: true }) }).allowInsecureRelay, true);
  t.throws(() => loadAgentConfig({ ...env, UPLINK_RELAY_URL: 'ftp://relay.example' }), { message: /unsupported scheme ftp:/ });
});

t.test('agentConnectUrl maps schemes and keeps a base path', async (t) => {
  t.equal(agentConnectUrl('https://r.example/base/?q=1', '/v1/agent/connect').toString(), 'wss://r.example/base/v1/agent/connect');
  t.equal(agentConnectUrl('http://127.0.0.1:9', '/v1/agent/connect').toString(), 'ws://127.0.0.1:9/v1/agent/connect');
});
