/**
 * Telemetry through the whole stack, in process: an application posts OTLP/JSON to the
 * agent's receiver; the agent spools; the relay's pull loop delivers to a real OTLP/HTTP
 * server and a file sink, then acknowledges. Exact ids and resource attributes.
 */
import t from 'tap';
import { request } from 'undici';
import { ADMIN_TOKEN, adminClient, createAppliance, startAgent, startRelay, waitFor } from '../../helpers/cluster.js';
import { agentTelemetry, fileRequests, flattenLogs, logsRequest, postLogs, startTelemetryRelay } from './otlp-logs.js';
import { freePort } from '../../helpers/net.js';
import { recordsFromExportRequest } from '../../../shared/telemetry/otlp-convert.js';
import type { Agent } from '../../../agent/agent.js';

function agentSpoolRecords(agent: Agent): number {
  return agentTelemetry(agent).spool.stats().records;
}

// One relay for every subtest (starting a relay migrates a fresh store, the slow part).
const { otlp, filePath, relay, cap } = await startTelemetryRelay(t);
const client = adminClient(t, relay);

const appLogs = (name: string) => flattenLogs(otlp.received.filter((r) => r.signal === 'logs').map((r) => r.request)).filter((l) => l.resource['uplink.appliance.name'] === name);

const AGENT_TELEMETRY = (port: number) => ({ telemetry: { otlpReceiver: { enabled: true, port }, health: { intervalSeconds: 86_400 } } });

t.test('OTLP in at the agent → spool → pull → OTLP/HTTP and file sinks, then ack', async (t) => {
  const enrolled = await createAppliance(client, 'tel-1');
  const port = await freePort();
  const agent = await startAgent(t, relay, enrolled, AGENT_TELEMETRY(port));

  const req = logsRequest(['one', 'two', 'three']);
  const expected = recordsFromExportRequest('logs', req).map((r) => r.id);
  t.equal(new Set(expected).size, 3, 'three distinct stable ids');
  t.equal(await postLogs(port, req), 200, 'the receiver accepted the export after spooling it');

  await waitFor(() => appLogs('tel-1').length >= 3, 20_000, 'three records at the OTLP server');
  const viaOtlp = appLogs('tel-1');
  t.same(viaOtlp.map((l) => l.id), expected, 'exact ids, in order, at the OTLP server');
  t.same(viaOtlp.map((l) => l.body), ['one', 'two', 'three']);
  t.same(
    viaOtlp[0]!.resource,
    {
      'service.name': 'billing',
      'instance-id': 'i-tel-1',
      'uplink.appliance.name': 'tel-1',
      'uplink.customer': 'acme',
      'cloud.provider': 'aws',
      'cloud.region': '',
      'cloud.account.id': '',
    },
    'the relay adds the appliance resource attributes (local-mode agent: no region/account)',
  );
  const viaFile = flattenLogs(fileRequests(filePath)).filter((l) => l.resource['uplink.appliance.name'] === 'tel-1');
  t.same(viaFile.map((l) => l.id), expected, 'the file sink got the same records with the same ids');

  await waitFor(() => (cap.loops.get(enrolled.applianceId)?.acked ?? 0) >= 1, 10_000, 'batch acknowledged');
  await waitFor(() => agentSpoolRecords(agent) === 0, 10_000, 'agent spool drained');
  const metrics = await (await request(`${relay.url}/metrics`)).body.text();
  t.match(metrics, /uplink_telemetry_records_total\{appliance="tel-1",signal="logs",direction="out"\} 3\n/, 'records out counted');
  // The gauge drops to 0 at the next (empty) pull after the ack.
  await waitFor(async () => /uplink_telemetry_spool_age_seconds\{appliance="tel-1"\} 0\n/.test(await (await request(`${relay.url}/metrics`)).body.text()), 10_000, 'lag back to 0 once the spool is empty');
  t.pass('lag gauge back to 0 once the spool is empty');
});

t.test('a failing sink is retried and nothing is acknowledged until it accepts', async (t) => {
  const enrolled = await createAppliance(client, 'tel-2');
  const port = await freePort();
  const agent = await startAgent(t, relay, enrolled, AGENT_TELEMETRY(port));
  const before = otlp.arrived;
  otlp.fallback = () => ({ status: 503 });
  t.teardown(() => void (otlp.fallback = () => ({ status: 200 })));

  const req = logsRequest(['a', 'b']);
  const expected = recordsFromExportRequest('logs', req).map((r) => r.id);
  t.equal(await postLogs(port, req), 200);
  await waitFor(() => otlp.arrived >= before + 3, 20_000, 'failed attempts');
  t.equal(appLogs('tel-2').length, 0, 'nothing accepted yet');
  t.equal(cap.loops.get(enrolled.applianceId)?.acked ?? 0, 0, 'nothing acknowledged while the sink fails');
  t.equal(agentSpoolRecords(agent), 2, 'both records still in the agent spool');

  otlp.fallback = () => ({ status: 200 });
  await waitFor(() => appLogs('tel-2').length >= 2, 30_000, 'delivered once the sink recovers');
  await waitFor(() => (cap.loops.get(enrolled.applianceId)?.acked ?? 0) >= 1, 10_000, 'acknowledged after delivery');
  t.same([...new Set(appLogs('tel-2').map((l) => l.id))], expected, 'the same ids, no record lost');
});

t.test('spool full: the oldest records are dropped, counted, reported to the relay and logged as an event', async (t) => {
  const enrolled = await createAppliance(client, 'tel-5');
  const port = await freePort();
  // Tiny spool: two 4 KiB segments hold about 25 of these records.
  const agent = await startAgent(t, relay, enrolled, { telemetry: { otlpReceiver: { enabled: true, port }, health: { intervalSeconds: 86_400 }, spool: { segmentBytes: 4096, maxBytes: 8192 } } });
  otlp.fallback = () => ({ status: 503 });
  t.teardown(() => void (otlp.fallback = () => ({ status: 200 })));
  for (let i = 0; i < 10; i++) t.equal(await postLogs(port, logsRequest(Array.from({ length: 10 }, (_, j) => `burst ${i}.${j}`), BigInt(i) * 1000n + 1n)), 200);
  const service = agentTelemetry(agent);
  const dropped = service.spool.stats().droppedRecords;
  t.ok(dropped > 0, `the spool dropped ${dropped} records to stay within maxBytes`);
  t.ok(service.spool.stats().diskBytes <= 8192, 'the spool stayed within its bound');

  otlp.fallback = () => ({ status: 200 });
  await waitFor(() => agentSpoolRecords(agent) === 0, 30_000, 'spool drained');
  const events = appLogs('tel-5').filter((l) => /^telemetry spool lost data \(full\)/.test(l.body));
  t.ok(events.length > 0, 'the drop is delivered as an agent log event');
  const total = service.spool.stats().droppedRecords;
  await waitFor(async () => {
    const m = await (await request(`${relay.url}/metrics`)).body.text();
    return new RegExp(`uplink_telemetry_dropped_total\\{reason="agent_spool"\\} ${total}\\n`).test(m);
  }, 10_000, `relay drop metric = ${total}`);
  const delivered = new Set(appLogs('tel-5').filter((l) => l.body.startsWith('burst')).map((l) => l.id));
  t.ok(delivered.size > 0 && delivered.size < 100, `newest records kept (${delivered.size} of 100 delivered)`);
  t.ok(appLogs('tel-5').some((l) => l.body === 'burst 9.9'), 'the newest record survived');
});

t.test('tail: NDJSON of delivered records; refused without sinks; scope and input checks', async (t) => {
  const enrolled = await createAppliance(client, 'tel-3');
  const port = await freePort();
  await startAgent(t, relay, enrolled, AGENT_TELEMETRY(port));

  const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
  const bad = await request(`${relay.url}/v1/appliances/tel-3/telemetry/tail?signal=events`, { headers: auth });
  t.equal(bad.statusCode, 400);
  t.equal(((await bad.body.json()) as { code: string }).code, 'UPLINK_ERR_BAD_REQUEST');
  const missing = await request(`${relay.url}/v1/appliances/nope/telemetry/tail`, { headers: auth });
  t.equal(missing.statusCode, 404);
  await missing.body.text();
  const anon = await request(`${relay.url}/v1/appliances/tel-3/telemetry/tail`);
  t.equal(anon.statusCode, 401);
  await anon.body.text();

  const ac = new AbortController();
  const res = await request(`${relay.url}/v1/appliances/tel-3/telemetry/tail?signal=logs`, { headers: auth, signal: ac.signal });
  t.equal(res.statusCode, 200);
  t.equal(res.headers['content-type'], 'application/x-ndjson');
  const lines: Array<Record<string, unknown>> = [];
  let buf = '';
  const reading = (async () => {
    try {
      for await (const chunk of res.body) {
        buf += chunk.toString();
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          lines.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
          buf = buf.slice(i + 1);
        }
      }
    } catch {
      // aborted below
    }
  })();
  const req = logsRequest(['tailed']);
  const id = recordsFromExportRequest('logs', req)[0]!.id;
  t.equal(await postLogs(port, req), 200);
  await waitFor(() => lines.some((l) => l.id === id), 20_000, 'tailed record');
  const line = lines.find((l) => l.id === id)!;
  t.equal(line.signal, 'logs');
  t.equal(line.source, 'otlp');
  t.match(line.resource, { 'instance-id': 'i-tel-3', 'uplink.appliance.name': 'tel-3', 'service.name': 'billing' });
  ac.abort();
  await reading;

  const noSinks = await startRelay(t);
  const c2 = adminClient(t, noSinks);
  await createAppliance(c2, 'tel-4');
  const off = await request(`${noSinks.url}/v1/appliances/tel-4/telemetry/tail`, { headers: auth });
  t.equal(off.statusCode, 409);
  t.equal(((await off.body.json()) as { code: string }).code, 'UPLINK_ERR_TELEMETRY_DISABLED');
});

t.test('relay config: sinks are strict and uniquely named', async (t) => {
  const { loadRelayConfig } = await import('../../../relay/config.js');
  const base = { listen: { host: '127.0.0.1', port: 0 }, insecureHttp: true };
  t.throws(() => loadRelayConfig({ ...base, telemetry: { sinks: [{ type: 'file', name: 'a', path: '/x' }, { type: 'file', name: 'a', path: '/y' }] } }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  t.throws(() => loadRelayConfig({ ...base, telemetry: { sinks: [{ type: 'kafka', name: 'k' }] } }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  t.throws(() => loadRelayConfig({ ...base, telemetry: { sinks: [{ type: 'file', name: 'a', path: '/x', fsync: false }] } }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  t.throws(() => loadRelayConfig({ ...base, telemetry: { maxBatchBytes: 64 * 1024 * 1024 } }), { code: 'UPLINK_ERR_CONFIG_INVALID' });
  t.equal(loadRelayConfig(base).telemetry.sinks.length, 0, 'no sinks by default: telemetry off');
});
