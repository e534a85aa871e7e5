/**
 * Flow control end to end: 200 MB of command output through agent → relay → CLI (three real
 * processes from dist/) into a slow-ish counting consumer. If any hop buffered instead of
 * pushing back, its RSS would grow by the backlog; the bound asserted here is far below the
 * 200 MB that passes through. A correctness bound, not a timing one.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ApiClient } from '../../../relay/cli/api-client.js';
import { ADMIN_TOKEN, waitFor } from '../../helpers/cluster.js';
import { DIST, rssBytes, startAgentProcess, startRelayProcess } from '../../helpers/processes.js';

const TOTAL = 200 * 1024 * 1024;
const MAX_GROWTH = 150 * 1024 * 1024;

t.test('200 MB through exec with bounded memory on relay and agent', async (t) => {
  const relay = await startRelayProcess(t, { config: { heartbeat: { intervalMs: 1000 } } });
  const client = new ApiClient({ url: relay.url, token: ADMIN_TOKEN });
  t.teardown(() => client.close());
  const created = await client.call<{ enrollmentToken: string }>('POST', '/v1/appliances', { name: 'bulk', customer: 'acme', instanceId: 'i-bulk' });
  const agent = startAgentProcess(t, relay.url, created.enrollmentToken, { local: { operate: 'enabled' } });
  await waitFor(async () => (await client.call<{ connected: boolean }>('GET', '/v1/appliances/bulk')).connected, 60_000, 'agent connected');

  const base = { relay: rssBytes(relay.pid), agent: rssBytes(agent.pid) };
  const peak = { ...base };
  const sampler = setInterval(() => {
    try {
      peak.relay = Math.max(peak.relay, rssBytes(relay.pid));
      peak.agent = Math.max(peak.agent, rssBytes(agent.pid));
    } catch {
      // a process ended; the assertions below report it
    }
  }, 50);
  t.teardown(() => clearInterval(sampler));

  // The consumer reads 64 KiB at a time with a pause every 4 MiB: slower than the producer.
  const consumer = [
    'let n = 0, next = 4 << 20;',
    "process.stdin.on('readable', function read() {",
    '  let c; while ((c = process.stdin.read(65536)) !== null) { n += c.length;',
    '    if (n >= next) { next += 4 << 20; process.stdin.pause(); setTimeout(() => { process.stdin.resume(); read(); }, 5); return; } }',
    '});',
    "process.stdin.on('end', () => console.log(n));",
  ].join('\n');
  const cli = spawn(process.execPath, [join(DIST, 'relay/cli/main.js'), 'exec', 'bulk', '--no-stdin', '--', 'head', '-c', String(TOTAL), '/dev/zero'], {
    env: { ...process.env, UPLINK_URL: relay.url, UPLINK_TOKEN: ADMIN_TOKEN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const counter = spawn(process.execPath, ['-e', consumer], { stdio: ['pipe', 'pipe', 'inherit'] });
  cli.stdout.pipe(counter.stdin);
  let cliErr = '';
  cli.stderr.on('data', (c: Buffer) => (cliErr += c.toString()));
  let counted = '';
  counter.stdout.on('data', (c: Buffer) => (counted += c.toString()));
  const [cliCode, counterCode] = await Promise.all([
    new Promise<number | null>((r) => cli.once('close', (c) => r(c))),
    new Promise<number | null>((r) => counter.once('close', (c) => r(c))),
  ]);
  clearInterval(sampler);
  t.equal(cliCode, 0, `CLI exit status (stderr: ${cliErr.slice(0, 300)})`);
  t.equal(counterCode, 0);
  t.equal(counted.trim(), String(TOTAL), 'every byte arrived, in order of size');
  t.comment(`RSS growth: relay ${((peak.relay - base.relay) / 1048576).toFixed(1)} MiB, agent ${((peak.agent - base.agent) / 1048576).toFixed(1)} MiB`);
  t.ok(peak.relay - base.relay < MAX_GROWTH, 'relay RSS growth bounded');
  t.ok(peak.agent - base.agent < MAX_GROWTH, 'agent RSS growth bounded');
});
