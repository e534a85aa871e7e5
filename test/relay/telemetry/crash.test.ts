/**
 * Crash safety of the telemetry path, with real processes from dist/ (build first:
 * `npx tsc -p tsconfig.json`): relay, agent and an OTLP sink each get kill -9 in the middle
 * of a steady stream of OTLP log exports into the agent's receiver, and come back. At the
 * end every record whose export the receiver acknowledged (HTTP 200) is at the sink, and
 * duplicates (same record id seen twice) are bounded by one batch per fault.
 */
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { ApiClient } from '../../../relay/cli/api-client.js';
import { recordsFromExportRequest } from '../../../shared/telemetry/otlp-convert.js';
import type { OtlpObject } from '../../../shared/telemetry/otlp-proto.js';
import { ADMIN_TOKEN, createAppliance, tempDir, waitFor } from '../../helpers/cluster.js';
import { freshDatabase } from '../../helpers/pg.js';
import { freePort } from '../../helpers/net.js';

const ROOT = new URL('../../../', import.meta.url).pathname;
const BIN = { relay: join(ROOT, 'dist/relay/main.js'), agent: join(ROOT, 'dist/agent/main.js') };
const BATCH_RECORDS = 200;
const FAULTS = 3;

/**
 * The sink as its own process: an OTLP/HTTP JSON server that appends the `uplink.record.id`
 * of every log record to a file, fsyncs, and only then answers 200 (a durable sink).
 */
const SINK_SOURCE = `
import { createServer } from 'node:http';
import { gunzipSync } from 'node:zlib';
import { openSync, writeSync, fsyncSync } from 'node:fs';
const [port, file] = process.argv.slice(-2);
const fd = openSync(file, 'a');
createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let raw = Buffer.concat(chunks);
    if (req.headers['content-encoding'] === 'gzip') raw = gunzipSync(raw);
    const body = JSON.parse(raw.toString('utf8'));
    const ids = [];
    for (const rl of body.resourceLogs ?? []) for (const sl of rl.scopeLogs ?? []) for (const lr of sl.logRecords ?? []) {
      const a = (lr.attributes ?? []).find((x) => x.key === 'uplink.record.id');
      if (a) ids.push(a.value.stringValue);
    }
    if (ids.length) { writeSync(fd, ids.join('\\n') + '\\n'); fsyncSync(fd); }
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
}).listen(Number(port), '127.0.0.1', () => process.stdout.write('listening\\n'));
`;

function startProcess(t: Test, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.resume();
  child.stderr!.resume();
  t.teardown(() => void child.kill('SIGKILL'));
  return child;
}

async function kill9(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGKILL');
  await exited;
}

async function reachable(url: string): Promise<boolean> {
  try {
    const res = await request(url);
    await res.body.text();
    return res.statusCode < 500;
  } catch {
    return false;
  }
}

async function main(t: Test, databaseUrl: string): Promise<void> {
  const dir = tempDir(t, 'uplink-telcrash-');
  const [relayPort, sinkPort, receiverPort] = [await freePort(), await freePort(), await freePort()];
  const relayUrl = `http://127.0.0.1:${relayPort}`;
  const sinkFile = join(dir, 'sink-ids.txt');
  writeFileSync(sinkFile, '');
  const relayConfig = join(dir, 'relay.json');
  writeFileSync(
    relayConfig,
    JSON.stringify({ telemetry: { sinks: [{ type: 'otlp-http', name: 'crashy', endpoint: `http://127.0.0.1:${sinkPort}`, encoding: 'json' }], pullIntervalMs: 20, maxBatchRecords: BATCH_RECORDS, maxBackoffMs: 200 } }),
  );
  const agentConfig = join(dir, 'agent.json');
  writeFileSync(
    agentConfig,
    JSON.stringify({ reconnect: { initialDelayMs: 50, maxDelayMs: 300 }, telemetry: { otlpReceiver: { enabled: true, port: receiverPort }, health: { intervalSeconds: 86_400 } } }),
  );

  const startSink = () => startProcess(t, ['--input-type=module', '-e', SINK_SOURCE, String(sinkPort), sinkFile], {});
  const startRelay = async () => {
    const p = startProcess(t, [BIN.relay, 'serve', '--listen', `127.0.0.1:${relayPort}`, '--database-url', databaseUrl, '--insecure-http', '--config', relayConfig], { UPLINK_BOOTSTRAP_TOKEN: ADMIN_TOKEN });
    await waitFor(() => reachable(`${relayUrl}/readyz`), 30_000, 'relay ready');
    return p;
  };
  let sink = startSink();
  let relay = await startRelay();
  const client = new ApiClient({ url: relayUrl, token: ADMIN_TOKEN });
  t.teardown(() => client.close());
  const enrolled = await createAppliance(client, 'crashy');
  const agentEnv = { UPLINK_RELAY_URL: relayUrl, UPLINK_STATE_DIR: join(dir, 'agent-state'), UPLINK_ENROLLMENT_TOKEN: enrolled.enrollmentToken, UPLINK_CONFIG: agentConfig };
  const startAgent = async () => {
    const p = startProcess(t, [BIN.agent, 'run'], agentEnv);
    await waitFor(() => reachable(`http://127.0.0.1:${receiverPort}/`), 30_000, 'agent receiver up');
    return p;
  };
  let agent = await startAgent();

  // The steady stream: 20 records per export, each export retried until a 200.
  const acknowledged: string[] = [];
  let producing = true;
  let seq = 0;
  const producer = (async () => {
    while (producing) {
      const n = seq++;
      const req: OtlpObject = {
        resourceLogs: [{ resource: { attributes: [{ key: 'service.name', value: { stringValue: 'steady' } }] }, scopeLogs: [{ logRecords: Array.from({ length: 20 }, (_, i) => ({ timeUnixNano: String(BigInt(Date.now()) * 1_000_000n), body: { stringValue: `export ${n} record ${i}` } })) }] }],
      };
      const ids = recordsFromExportRequest('logs', req).map((r) => r.id);
      try {
        const res = await request(`http://127.0.0.1:${receiverPort}/v1/logs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(req) });
        await res.body.text();
        if (res.statusCode === 200) acknowledged.push(...ids);
      } catch {
        await new Promise((r) => setTimeout(r, 50)); // the agent is down: its clients retry
      }
    }
  })();
  const steady = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const sinkIds = () => readFileSync(sinkFile, 'utf8').split('\n').filter((l) => l.length > 0);

  await waitFor(() => sinkIds().length > 0, 30_000, 'first delivery');
  await steady(500);
  await kill9(relay);
  await steady(500);
  relay = await startRelay();
  await steady(500);
  await kill9(agent);
  agent = await startAgent();
  await steady(500);
  await kill9(sink);
  await steady(500);
  sink = startSink();
  await steady(500);
  producing = false;
  await producer;

  t.ok(acknowledged.length > 0, `${acknowledged.length} records acknowledged by the receiver`);
  await waitFor(() => {
    const have = new Set(sinkIds());
    return acknowledged.every((id) => have.has(id));
  }, 45_000, 'every acknowledged record at the sink');
  const ids = sinkIds();
  const unique = new Set(ids);
  t.ok(acknowledged.every((id) => unique.has(id)), 'every acknowledged record arrived');
  const duplicates = ids.length - unique.size;
  t.ok(duplicates <= FAULTS * BATCH_RECORDS, `duplicates (${duplicates}) bounded by one batch per fault (${FAULTS} x ${BATCH_RECORDS})`);
  await Promise.all([kill9(agent), kill9(relay), kill9(sink)]);
}

// Last: the consts above (SINK_SOURCE…) must be initialised before the test runs.
t.test('kill -9 of relay, agent and sink in a steady stream: every acknowledged record arrives', async (t) => {
  if (!existsSync(BIN.relay) || !existsSync(BIN.agent)) {
    t.fail('dist/ is missing: run `npx tsc -p tsconfig.json` before this test');
    return;
  }
  const databaseUrl = await freshDatabase(t, 'uplink_telcrash');
  if (databaseUrl) await main(t, databaseUrl);
});
