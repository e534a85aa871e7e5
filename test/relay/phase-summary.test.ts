/**
 * relay/phase-summary.ts with a real in-process relay (PGlite) and agent (local mode):
 * the phase state reaches `GET /v1/appliances` on connect, after a grant on the agent host
 * (long poll woken; the periodic refresh is set to 300 s so it cannot explain it), and
 * right after an operation refused with a phase code; the agent's /v1/phases refuses bad
 * long-poll requests with exact codes.
 */
import t from 'tap';
import { writeLocalGrant } from '../../agent/phases/local-grants.js';
import { runAccessCommand } from '../../agent/cli/access.js';
import { encodeSpec, AGENT_PATHS, OP_HEADERS } from '../../shared/protocol.js';
import { readSmallBody } from '../../relay/ops-bridge.js';
import { retryDelay } from '../../relay/phase-summary.js';
import { join } from 'node:path';
import { adminClient, createAppliance, startAgent, startRelay, tempDir, waitFor } from '../helpers/cluster.js';
import type { ApiClient } from '../../relay/cli/api-client.js';
import type { Relay } from '../../relay/server.js';

interface Listed {
  name: string;
  phases: { summary: string; mode: string; at: string; phases: Record<string, { state: string; code?: string }> } | null;
}

async function phasesOf(client: ApiClient, name: string): Promise<Listed['phases']> {
  const { appliances } = await client.call<{ appliances: Listed[] }>('GET', '/v1/appliances');
  return appliances.find((a) => a.name === name)?.phases ?? null;
}

const CLOSED_SUMMARY = 'install: open; steadyState: open; deploy: closed (not approved); operate: closed (not approved) [local mode]';

async function agentRequest(relay: Relay, applianceId: string, spec: unknown): Promise<{ status: number; body: string }> {
  const session = relay.gateway.get(applianceId)!;
  const stream = session.request({ ':path': AGENT_PATHS.phases, [OP_HEADERS.spec]: encodeSpec(spec), [OP_HEADERS.requestId]: 'test' }, 'phases', { endStream: true });
  const status = await new Promise<number>((resolve) => stream.once('response', (h) => resolve(Number(h[':status']))));
  return { status, body: await readSmallBody(stream, 65536) };
}

/** Counts setPhaseSummary calls on this relay (the real write still happens). */
function countStores(relay: Relay): () => number {
  let stores = 0;
  const original = relay.store.appliances.setPhaseSummary.bind(relay.store.appliances);
  relay.store.appliances.setPhaseSummary = async (...args: Parameters<typeof original>) => {
    stores++;
    return original(...args);
  };
  return () => stores;
}

t.test('phase state on connect, after a grant, and after a refused operation', async (t) => {
  const relay = await startRelay(t, { config: { phases: { refreshIntervalSeconds: 300 } } });
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'phases-a');
  const agent = await startAgent(t, relay, enrolled);

  await waitFor(async () => (await phasesOf(client, 'phases-a')) !== null, 10_000, 'phase state stored on connect');
  const first = (await phasesOf(client, 'phases-a'))!;
  t.equal(first.summary, CLOSED_SUMMARY);
  t.equal(first.mode, 'local');
  t.equal(first.phases.operate!.state, 'closed');
  t.equal(first.phases.operate!.code, 'UPLINK_ERR_PHASE_NOT_APPROVED');

  // The customer grants Operate with the agent's CLI; the held poll is answered at once.
  const out: string[] = [];
  const io = { stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => out.push(s) } };
  const rc = await runAccessCommand('grant', ['operate', '--for', '2h'], { stateDir: agent.cfg.stateDir, config: { local: agent.cfg.local }, io: io as never });
  t.equal(rc, 0, out.join(''));
  await waitFor(async () => (await phasesOf(client, 'phases-a'))!.summary.includes('operate: open until'), 10_000, 'grant reflected');
  const granted = (await phasesOf(client, 'phases-a'))!;
  t.match(granted.summary, /^install: open; steadyState: open; deploy: closed \(not approved\); operate: open until (\d{4}-\d{2}-\d{2} )?\d{2}:\d{2}Z \[local mode\]$/);
  t.equal(granted.phases.operate!.state, 'open');

  // The approval changes without the change marker (as an expiry would): the held poll is
  // not woken, but the refused exec makes the relay read again at once.
  await writeLocalGrant(agent.cfg.stateDir, 'operate', { access: 'disabled', actor: 'test', at: new Date().toISOString() });
  await t.rejects(client.openOp('phases-a', 'exec', { command: 'true', args: [], env: {} }), { code: 'UPLINK_ERR_PHASE_NOT_APPROVED' });
  await waitFor(async () => (await phasesOf(client, 'phases-a'))!.phases.operate!.state === 'closed', 10_000, 'refusal refreshed the state');
  t.equal((await phasesOf(client, 'phases-a'))!.summary, CLOSED_SUMMARY);
});

t.test('the agent refuses malformed phase requests and answers a stale fingerprint at once', async (t) => {
  const relay = await startRelay(t, { config: { phases: { refreshIntervalSeconds: 300 } } });
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'phases-b');
  await startAgent(t, relay, enrolled);

  for (const [spec, what] of [
    [{ waitSeconds: 301 }, 'waitSeconds'],
    [{ waitSeconds: -1 }, 'waitSeconds'],
    [{ waitSeconds: 1.5 }, 'waitSeconds'],
    [{ waitSeconds: 1, since: 'x'.repeat(65) }, 'since'],
    [{ waitSeconds: 1, extra: true }, 'unknown phases request field "extra"'],
    [[1, 2], 'JSON object'],
  ] as const) {
    const r = await agentRequest(relay, enrolled.applianceId, spec);
    t.equal(r.status, 400, JSON.stringify(spec));
    const body = JSON.parse(r.body) as { code: string; message: string };
    t.equal(body.code, 'UPLINK_ERR_BAD_REQUEST');
    t.ok(body.message.includes(what), body.message);
  }

  // A fingerprint that is not the current one is answered without waiting (the wait is the
  // maximum, so a hold would time the test out).
  const r = await agentRequest(relay, enrolled.applianceId, { waitSeconds: 300, since: 'not-the-current-state' });
  t.equal(r.status, 200);
  const report = JSON.parse(r.body) as { summary: string; mode: string; fingerprint: string };
  t.equal(report.summary, CLOSED_SUMMARY);
  t.equal(report.mode, 'local');
  t.match(report.fingerprint, /^[0-9a-f]{32}$/);
});

t.test('a held poll stays held: the state is read and stored once, not in a loop', async (t) => {
  // Closed phases quote the time of the check in their reason; the fingerprint must not
  // change with it, or the agent answers every held poll at once and the relay spins.
  const relay = await startRelay(t, { config: { phases: { refreshIntervalSeconds: 300 } } });
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'phases-c');
  const stores = countStores(relay);
  await startAgent(t, relay, enrolled);
  await waitFor(async () => (await phasesOf(client, 'phases-c')) !== null, 10_000, 'phase state stored on connect');
  const before = (await phasesOf(client, 'phases-c'))!;
  await new Promise((r) => setTimeout(r, 3000));
  t.equal(stores(), 1, 'one read on connect, then the poll is held');
  t.equal((await phasesOf(client, 'phases-c'))!.at, before.at, 'the stored state was not rewritten');

  const read = async () => JSON.parse((await agentRequest(relay, enrolled.applianceId, { waitSeconds: 0 })).body) as { fingerprint: string; phases: { deploy: { reason: string } } };
  const a = await read();
  await new Promise((r) => setTimeout(r, 20));
  const b = await read();
  t.match(a.phases.deploy.reason, /\(checked \d{4}-/, 'the reason quotes the time of the check');
  t.not(a.phases.deploy.reason, b.phases.deploy.reason, 'so it differs between reads');
  t.equal(a.fingerprint, b.fingerprint, 'but the fingerprint does not');
});

t.test('a refresh that finds the same state stores nothing', async (t) => {
  const relay = await startRelay(t, { config: { phases: { refreshIntervalSeconds: 1 } } });
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'phases-d');
  const stores = countStores(relay);
  const agent = await startAgent(t, relay, enrolled);
  await waitFor(async () => (await phasesOf(client, 'phases-d')) !== null, 10_000, 'phase state stored on connect');
  await new Promise((r) => setTimeout(r, 3500));
  t.equal(stores(), 1, 'three refreshes of an unchanged state, one write');
  const out: string[] = [];
  const io = { stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => out.push(s) } };
  t.equal(await runAccessCommand('grant', ['operate', '--for', '2h'], { stateDir: agent.cfg.stateDir, config: { local: agent.cfg.local }, io: io as never }), 0, out.join(''));
  await waitFor(async () => (await phasesOf(client, 'phases-d'))!.phases.operate!.state === 'open', 10_000, 'a change is stored');
  t.equal(stores(), 2);
});

t.test('a restarted relay resumes from the stored state: no write if it did not change, one if it did', async (t) => {
  const dataDir = join(tempDir(t, 'uplink-phases-'), 'data');
  const config = { phases: { refreshIntervalSeconds: 300 } };
  const first = await startRelay(t, { dataDir, config });
  const listen = { host: '127.0.0.1', port: Number(new URL(first.url).port) };
  const enrolled = await createAppliance(adminClient(t, first), 'phases-r');
  const agent = await startAgent(t, first, enrolled);
  await waitFor(async () => (await phasesOf(adminClient(t, first), 'phases-r')) !== null, 10_000, 'phase state stored on connect');
  const before = (await phasesOf(adminClient(t, first), 'phases-r'))!;
  t.notOk('fingerprint' in before, 'the API does not show the fingerprint the relay keeps');
  await first.close();

  const second = await startRelay(t, { dataDir, config: { ...config, listen } });
  const stores = countStores(second);
  const client = adminClient(t, second);
  await waitFor(() => second.gateway.get(enrolled.applianceId) !== undefined, 15_000, 'agent back');
  await new Promise((r) => setTimeout(r, 2500));
  t.equal(stores(), 0, 'unchanged: the first poll is held, nothing is written');
  t.equal((await phasesOf(client, 'phases-r'))!.at, before.at);
  const io = { stdout: { write: () => true }, stderr: { write: () => true } };
  t.equal(await runAccessCommand('grant', ['operate', '--for', '2h'], { stateDir: agent.cfg.stateDir, config: { local: agent.cfg.local }, io: io as never }), 0);
  await waitFor(async () => (await phasesOf(client, 'phases-r'))!.phases.operate!.state === 'open', 10_000, 'a change after the restart is stored');
  t.equal(stores(), 1);
  await second.close();

  // Changed while no relay was there: the new relay's first poll is answered at once.
  t.equal(await runAccessCommand('revoke', ['operate'], { stateDir: agent.cfg.stateDir, config: { local: agent.cfg.local }, io: io as never }), 0);
  const third = await startRelay(t, { dataDir, config: { ...config, listen } });
  const thirdStores = countStores(third);
  await waitFor(async () => (await phasesOf(adminClient(t, third), 'phases-r'))!.phases.operate!.state === 'closed', 15_000, 'the change made while away is stored on reconnect');
  t.equal(thirdStores(), 1);
});

t.test('failed reads back off: 5 s doubling up to the refresh interval, never under 5 s', async (t) => {
  t.same([1, 2, 3, 4, 5, 6].map((n) => retryDelay(n, 60)), [5_000, 10_000, 20_000, 40_000, 60_000, 60_000]);
  t.same([1, 2, 50].map((n) => retryDelay(n, 1)), [5_000, 5_000, 5_000], 'a refresh interval under 5 s does not shorten the pause');
  t.equal(retryDelay(1_000, 300), 300_000, 'no overflow after many failures');
});
