import t from 'tap';
import { loadRelayConfig } from '../../relay/config.js';

const base = { listen: { host: '127.0.0.1', port: 0 }, insecureHttp: true, dataDir: '/tmp/x' };

t.test('defaults fill in and the result is frozen', async (t) => {
  const cfg = loadRelayConfig(base);
  t.equal(cfg.heartbeat.intervalMs, 15_000);
  t.equal(cfg.heartbeat.missedIntervals, 3);
  t.equal(cfg.limits.maxStreamsPerAgent, 1024);
  t.equal(cfg.shutdown.drainTimeoutMs, 10_000);
  t.ok(Object.isFrozen(cfg.limits));
});

t.test('unknown and misspelled keys are rejected naming the field', async (t) => {
  t.throws(() => loadRelayConfig({ ...base, heartbeat: { intervalMS: 200 } }), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /unknown key\(s\) "intervalMS" at heartbeat/ });
  t.throws(() => loadRelayConfig({ ...base, limitz: {} }), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /unknown key\(s\) "limitz" at \(root\)/ });
  t.throws(() => loadRelayConfig({ ...base, heartbeat: { intervalMs: 10 } }), { message: /heartbeat\.intervalMs: / });
  t.throws(() => loadRelayConfig({ ...base, listen: { host: '127.0.0.1', port: 70000 } }), { message: /listen\.port: / });
});

t.test('cross-field rules', async (t) => {
  t.throws(() => loadRelayConfig({ ...base, databaseUrl: 'postgres://x/y' }), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /either dataDir .* or databaseUrl/ });
  t.throws(() => loadRelayConfig({ listen: base.listen, dataDir: '/tmp/x' }), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /TLS is required/ });
  t.throws(() => loadRelayConfig({ ...base, tls: { certFile: 'c', keyFile: 'k' } }), { message: /mutually exclusive/ });
  t.throws(() => loadRelayConfig({ ...base, presence: { relayHeartbeatMs: 1000, staleAfterMs: 1000 } }), { message: /staleAfterMs must exceed/ });
});

t.test('--insecure-http only on loopback unless --insecure-http-any', async (t) => {
  for (const host of ['0.0.0.0', '10.1.2.3', '::']) {
    t.throws(() => loadRelayConfig({ ...base, listen: { host, port: 0 } }), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /needs --insecure-http-any/ }, host);
    t.equal(loadRelayConfig({ ...base, listen: { host, port: 0 }, insecureHttpAny: true }).listen.host, host);
  }
  for (const host of ['127.0.0.1', '::1', 'localhost']) t.equal(loadRelayConfig({ ...base, listen: { host, port: 0 } }).listen.host, host);
});
