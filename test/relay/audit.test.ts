/**
 * The relay's audit capability end to end: one event per operation (with outcome and
 * bytes) and per appliance/token change, the list and verify routes, and verification
 * catching an edited line on both sides: a row edited in SQL makes `uplink audit --verify`
 * exit 1 naming the seq; a line edited in the agent's file makes `uplink-agent audit
 * --verify` exit 1.
 */
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ADMIN_TOKEN, adminClient, createAppliance, startAgent, startRelay, waitFor } from '../helpers/cluster.js';
import { runExec } from '../helpers/exec-client.js';
import { auditLogPath } from '../../agent/audit-log.js';
import type { AuditRecord } from '../../shared/audit/event.js';
import { targetOf } from '../../relay/audit.js';
import { runNode } from '../helpers/processes.js';

const CLI = fileURLToPath(new URL('../../dist/relay/cli/main.js', import.meta.url));
const AGENT_CLI = fileURLToPath(new URL('../../dist/agent/main.js', import.meta.url));


t.test('targetOf names what an operation acted on', async (t) => {
  t.equal(targetOf('exec', { command: 'ls', args: ['-l', '/tmp'] }), 'ls -l /tmp');
  t.equal(targetOf('shell', {}), '(interactive)');
  t.equal(targetOf('shell', { command: 'echo hi' }), 'echo hi');
  t.equal(targetOf('sql', { target: 'main-db' }), 'main-db');
  t.equal(targetOf('forward', { port: 5432 }), null);
  t.equal(targetOf('exec', { command: 'x'.repeat(2000) })?.length, 512);
});

t.test('relay audit log', async (t) => {
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'aud-a');
  const other = await createAppliance(client, 'aud-b');
  const agent = await startAgent(t, relay, enrolled, { local: { operate: 'enabled' } });
  const created = await client.call<{ id: string; token: string }>('POST', '/v1/tokens', { name: 'ops-bot', scopes: ['operate'] });
  await client.call('DELETE', `/v1/tokens/${created.id}`);

  const r = await runExec(client, 'aud-a', { command: 'sh', args: ['-c', 'echo hello'] });
  t.equal(r.stdout, 'hello\n');
  const shell = await client.openOp('aud-a', 'shell', { command: 'exit 0', cols: 80, rows: 24 });

  shell.on('error', () => {});
  shell.resume();
  await new Promise((resolve) => shell.on('end', resolve));
  shell.destroy();

  await client.call('POST', '/v1/appliances/aud-b/revoke').catch(() => undefined); // aud-b never enrolled: 409, no event

  let events: AuditRecord[] = [];
  await waitFor(async () => {
    events = (await client.call<{ events: AuditRecord[] }>('GET', '/v1/audit')).events;
    return events.length === 6;
  }, 10_000, 'six audit events');
  t.same(
    events.map((e) => [e.seq, e.operation, e.appliance, e.actor]),
    [
      [1, 'appliance.create', enrolled.applianceId, 'bootstrap-admin'],
      [2, 'appliance.create', other.applianceId, 'bootstrap-admin'],
      [3, 'token.create', 'relay', 'bootstrap-admin'],
      [4, 'token.revoke', 'relay', 'bootstrap-admin'],
      [5, 'exec', enrolled.applianceId, 'bootstrap-admin'],
      [6, 'shell', enrolled.applianceId, 'bootstrap-admin'],
    ],
  );
  const exec = events[4]!;
  t.equal(exec.phase, 'operate');
  t.equal(exec.outcome, 'ok');
  t.equal(exec.target, 'sh -c echo hello');
  t.type(exec.requestId, 'string');
  t.ok(exec.start! <= exec.end!);
  t.equal(exec.bytesIn, 5 + '{"type":"eof"}'.length, 'in: the eof control frame the client sent');
  t.ok(exec.bytesOut >= 5 + 'hello\n'.length, 'out: frames from the agent');
  t.equal(events[5]!.target, 'exit 0');

  // The same request id is in the agent's own copy.
  const agentLines = readFileSync(auditLogPath(agent.cfg.stateDir), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as AuditRecord);
  t.ok(agentLines.some((e) => e.requestId === exec.requestId && e.operation === 'exec' && e.outcome === 'ok'));

  const onlyB = (await client.call<{ events: AuditRecord[] }>('GET', '/v1/audit?appliance=aud-b')).events;
  t.same(onlyB.map((e) => e.seq), [2]);
  t.same((await client.call<{ events: AuditRecord[] }>('GET', '/v1/audit?limit=2')).events.map((e) => e.seq), [1, 2]);
  await t.rejects(client.call('GET', '/v1/audit?limit=0'), { code: 'UPLINK_ERR_BAD_REQUEST' });
  await t.rejects(client.call('GET', '/v1/audit?limit=abc'), { code: 'UPLINK_ERR_BAD_REQUEST' });


  const env = { ...process.env, UPLINK_URL: relay.url, UPLINK_TOKEN: ADMIN_TOKEN };
  const ok = await runNode([CLI, 'audit', '--verify'], env);
  t.equal(ok.status, 0);
  t.match(ok.stdout, /^relay audit log: 6 events, chain intact \(last seq 6, hash [0-9a-f]{16}…\)\n$/);
  const listed = await runNode([CLI, 'audit', '--appliance', 'aud-a'], env);
  t.equal(listed.status, 0);
  t.equal(listed.stdout.trim().split('\n').length, 1 + 3, 'header and the three events of aud-a');

  // Edit one row in SQL: verification names its seq.
  await relay.store.db.query("UPDATE audit_events SET target = 'sh -c true' WHERE seq = 5");
  const bad = await runNode([CLI, 'audit', '--verify'], env);
  t.equal(bad.status, 1);
  t.match(bad.stdout, /^relay audit log: chain BROKEN at seq 5: .*; 4 events before it verified\n$/);
  const json = await runNode([CLI, 'audit', '--verify', '--json'], env);
  t.equal(json.status, 1);
  t.match(JSON.parse(json.stdout), { ok: false, firstBadSeq: 5, reason: 'hash-mismatch', count: 4 });

  // Delete the last row: the head catches it.
  await relay.store.db.query("UPDATE audit_events SET target = 'sh -c echo hello' WHERE seq = 5");
  t.equal((await runNode([CLI, 'audit', '--verify'], env)).status, 0, 'restored row verifies again');
  await relay.store.db.query('DELETE FROM audit_events WHERE seq = 6');
  const cut = await runNode([CLI, 'audit', '--verify', '--json'], env);
  t.equal(cut.status, 1);
  t.match(JSON.parse(cut.stdout), { ok: false, reason: 'head-mismatch' });

  // The agent's file: intact, then one line edited.
  await agent.stop();
  const agentEnv = { ...process.env, UPLINK_STATE_DIR: agent.cfg.stateDir };
  const agentOk = await runNode([AGENT_CLI, 'audit', '--verify'], agentEnv);
  t.equal(agentOk.status, 0, agentOk.stdout + agentOk.stderr);
  t.match(agentOk.stdout, /chain intact/);
  const file = auditLogPath(agent.cfg.stateDir);
  const text = readFileSync(file, 'utf8');
  t.ok(text.includes('"target":"sh -c echo hello"'));
  writeFileSync(file, text.replace('"target":"sh -c echo hello"', '"target":"sh -c echo bye!!"'));
  const agentBad = await runNode([AGENT_CLI, 'audit', '--verify'], agentEnv);
  t.equal(agentBad.status, 1);
  t.match(agentBad.stdout, /chain BROKEN at line \d+ \(seq \d+\)/);
});
