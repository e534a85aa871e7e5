/**
 * The pull loop's read-ahead (relay/telemetry/pull-loop.ts), in process with a real agent:
 * small batches so one burst spans many, the agent's pull handler wrapped to record what the
 * relay asked for. What it proves: the relay asks for the batch after the one it is
 * delivering, every record arrives once and in order, acks follow spool order; a failing
 * sink throws the read-ahead batch away and order survives; an agent that ignores `after`
 * (an older version) still gets every record once, and the relay stops reading ahead.
 */
import t from 'tap';
import type { ServerHttp2Stream } from 'node:http2';
import { adminClient, createAppliance, startAgent, waitFor } from '../../helpers/cluster.js';
import { agentTelemetry, fileRequests, flattenLogs, logsRequest, postLogs, startTelemetryRelay } from './otlp-logs.js';
import { freePort } from '../../helpers/net.js';
import { AGENT_PATHS } from '../../../shared/protocol.js';
import type { OtlpObject } from '../../../shared/telemetry/otlp-proto.js';
import type { PullSpec } from '../../../shared/telemetry/pull-protocol.js';
import type { Agent } from '../../../agent/agent.js';

const BATCH = 4;

async function postMessages(port: number, messages: string[]): Promise<number> {
  return postLogs(port, logsRequest(messages));
}

/** (id, body) of the log records delivered for `appliance`, in order. */
function bodiesOf(requests: OtlpObject[], appliance: string): Array<{ id: string; body: string }> {
  return flattenLogs(requests)
    .filter((l) => l.resource['uplink.appliance.name'] === appliance)
    .map(({ id, body }) => ({ id, body }));
}

/** Record every pull spec the relay sends; `strip` makes the agent ignore `after`, as an older agent does. */
function spyPulls(agent: Agent, strip = false): PullSpec[] {
  const specs: PullSpec[] = [];
  const svc = agentTelemetry(agent) as unknown as { pull(stream: ServerHttp2Stream, spec: unknown): Promise<void> };
  agent.tunnel.handle(AGENT_PATHS.telemetryPull, (stream, ctx) => {
    const spec = ctx.spec as PullSpec;
    specs.push(spec);
    const { after: _after, ...rest } = spec;
    return svc.pull(stream, strip ? rest : spec);
  });
  return specs;
}

const { otlp, filePath, relay, cap } = await startTelemetryRelay(t, { maxBatchRecords: BATCH });
const client = adminClient(t, relay);
const telemetryConfig = (port: number) => ({ telemetry: { otlpReceiver: { enabled: true, port }, health: { intervalSeconds: 86_400 } } });
const messages = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(3, '0')}`);

t.test('the relay reads the next batch ahead; every record once, in order', async (t) => {
  const enrolled = await createAppliance(client, 'ahead-1');
  const port = await freePort();
  const agent = await startAgent(t, relay, enrolled, telemetryConfig(port));
  const specs = spyPulls(agent);
  const sent = messages('m', 40);
  t.equal(await postMessages(port, sent), 200);

  await waitFor(() => (cap.loops.get(enrolled.applianceId)?.acked ?? 0) >= 40 / BATCH && agentTelemetry(agent).spool.stats().records === 0, 30_000, 'all delivered and acknowledged');
  const viaFile = bodiesOf(fileRequests(filePath), 'ahead-1');
  t.same(viaFile.map((r) => r.body), sent, 'file sink: every record once, in order');
  t.same(bodiesOf(otlp.received.map((r) => r.request), 'ahead-1').map((r) => r.body), sent, 'OTLP sink: likewise');
  t.equal(new Set(viaFile.map((r) => r.id)).size, 40);
  t.equal(cap.loops.get(enrolled.applianceId)!.acked, 40 / BATCH, 'one ack per batch of four');
  const ahead = specs.filter((s) => s.after !== undefined);
  t.ok(ahead.length >= 40 / BATCH - 1, `the relay read ahead (${ahead.length} of ${specs.length} pulls name a batch)`);
  t.ok(ahead.every((s) => /^\d+\.\d+-\d+\.\d+$/.test(s.after!)), 'after is a spool batch id');
});

t.test('a failing sink drops the read-ahead batch; after recovery order and completeness hold', async (t) => {
  const enrolled = await createAppliance(client, 'ahead-2');
  const port = await freePort();
  const agent = await startAgent(t, relay, enrolled, telemetryConfig(port));
  const specs = spyPulls(agent);
  const before = otlp.arrived;
  otlp.fallback = () => ({ status: 503 });
  t.teardown(() => void (otlp.fallback = () => ({ status: 200 })));
  const sent = messages('f', 24);
  t.equal(await postMessages(port, sent), 200);
  await waitFor(() => otlp.arrived >= before + 3, 20_000, 'failed attempts');
  t.equal(cap.loops.get(enrolled.applianceId)?.acked ?? 0, 0, 'nothing acknowledged while a sink fails');
  t.ok(specs.some((s) => s.after !== undefined), 'a batch was read ahead meanwhile');

  otlp.fallback = () => ({ status: 200 });
  await waitFor(() => (cap.loops.get(enrolled.applianceId)?.acked ?? 0) >= 24 / BATCH && agentTelemetry(agent).spool.stats().records === 0, 30_000, 'drained after recovery');
  const viaOtlp = bodiesOf(otlp.received.map((r) => r.request), 'ahead-2').map((r) => r.body);
  t.same([...new Set(viaOtlp)], sent, 'every record, first seen in order');
  const viaFile = bodiesOf(fileRequests(filePath), 'ahead-2').map((r) => r.body);
  t.same([...new Set(viaFile)], sent, 'the file sink (which accepted the first batch each time) also in order');
  t.equal(cap.loops.get(enrolled.applianceId)!.acked, 24 / BATCH);
});

t.test('an agent that ignores after: every record once, and the relay stops reading ahead', async (t) => {
  const enrolled = await createAppliance(client, 'ahead-3');
  const port = await freePort();
  const agent = await startAgent(t, relay, enrolled, telemetryConfig(port));
  const specs = spyPulls(agent, true);
  const sent = messages('o', 20);
  t.equal(await postMessages(port, sent), 200);
  await waitFor(() => (cap.loops.get(enrolled.applianceId)?.acked ?? 0) >= 20 / BATCH && agentTelemetry(agent).spool.stats().records === 0, 30_000, 'drained');
  const viaFile = bodiesOf(fileRequests(filePath), 'ahead-3');
  t.same(viaFile.map((r) => r.body), sent, 'no batch delivered twice');
  const loop = cap.loops.get(enrolled.applianceId)! as unknown as { readAhead: boolean; acked: number };
  t.equal(loop.readAhead, false, 'read-ahead turned off for this connection');
  t.equal(specs.filter((s) => s.after !== undefined).length, 1, 'after one attempt');
  t.equal(loop.acked, 20 / BATCH);
});
