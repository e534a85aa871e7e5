/**
 * The agent pins its appliance name at enrollment and checks release bindings against it,
 * not against the name a relay puts in a request. Requests are crafted and sent through the
 * real relay session, as a relay that lies about the name would send them.
 */
import t, { type Test } from 'tap';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Agent } from '../../agent/agent.js';
import { PinnedApplianceName } from '../../agent/appliance-name.js';
import { createIdentity, loadIdentity, saveIdentity, type AgentIdentity } from '../../agent/identity-store.js';
import { createLogger, type Logger } from '../../shared/logger.js';
import { AGENT_PATHS, OP_HEADERS } from '../../shared/protocol.js';
import { createRelease } from '../../shared/release/create-release.js';
import type { Relay } from '../../relay/server.js';
import { adminClient, agentConfig, createAppliance, startRelay, tempDir, waitFor, type Enrolled } from '../helpers/cluster.js';
import { deploy, deployAgentExtras, newKey, STACKS, uploadRelease, waitEnded, type TestKey } from '../helpers/deployments.js';
import { requireTools } from '../helpers/tools.js';

function capture(): { log: Logger; lines: () => Array<Record<string, unknown>> } {
  const raw: string[] = [];
  const log = createLogger('test', { level: 'info', destination: new Writable({ write(chunk, _enc, cb) { raw.push(String(chunk)); cb(); } }) as never });
  return { log, lines: () => raw.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) };
}

async function startAgentOn(t: Test, relay: Relay, app: Enrolled, stateDir: string, key: TestKey, log: Logger): Promise<Agent> {
  const agent = new Agent(agentConfig(relay, stateDir, app.enrollmentToken, deployAgentExtras([key])), log);
  await agent.start();
  t.teardown(() => agent.stop());
  await waitFor(() => relay.gateway.get(app.applianceId) !== undefined, 10_000, 'agent connected');
  return agent;
}

/** Send one request to the agent through the relay's session; the answer's status and JSON body. */
async function call(relay: Relay, app: Enrolled, path: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const stream = relay.gateway.get(app.applianceId)!.request({ ':path': path, 'content-type': 'application/json', [OP_HEADERS.requestId]: 'crafted', [OP_HEADERS.actor]: 'lying-relay' }, 'deploy');
  const chunks: Buffer[] = [];
  let status = 0;
  stream.once('response', (h) => (status = Number(h[':status'])));
  stream.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise<void>((resolve, reject) => {
    stream.once('end', resolve);
    stream.once('error', reject);
  });
  stream.end(JSON.stringify(body));
  await ended;
  return { status, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> };
}

async function runRequest(key: TestKey, id: string, claimed: string, boundTo: string): Promise<Record<string, unknown>> {
  const rel = await createRelease(`${STACKS}basic`, { version: '9.0.0', appliance: boundTo, key: key.loaded });
  return { id, action: 'apply', allowDowngrade: false, appliance: claimed, instanceId: 'i-acme-prod', release: { manifest: rel.manifest, signature: rel.signature, archive: rel.archive.toString('base64') } };
}

const pinnedName = (stateDir: string): string | undefined => loadIdentity(stateDir)?.applianceName;

t.test('enrollment pins the name; a relay claiming another one is refused', requireTools(['terraform']), async (t) => {
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const key = newKey();
  const app = await createAppliance(client, 'acme-prod');
  const stateDir = join(tempDir(t, 'uplink-agent-'), 'state');
  const { log, lines } = capture();
  await startAgentOn(t, relay, app, stateDir, key, log);
  await waitFor(() => pinnedName(stateDir) === 'acme-prod', 10_000, 'name pinned');
  const identity = loadIdentity(stateDir)!;
  t.ok(identity.enrolledAt, 'the enrollment was recorded too: the pin did not overwrite it');
  t.ok(lines().some((l) => l.msg === 'pinned appliance name "acme-prod" at enrollment' && l.source === 'announcement'), 'logged');

  const announced = await call(relay, app, AGENT_PATHS.applianceName, { applianceId: app.applianceId, name: 'other-app' });
  t.equal(announced.status, 403);
  t.equal(announced.body.code, 'UPLINK_ERR_APPLIANCE_NAME_MISMATCH');
  t.equal(pinnedName(stateDir), 'acme-prod', 'the pin did not move');
  const again = await call(relay, app, AGENT_PATHS.applianceName, { applianceId: app.applianceId, name: 'acme-prod' });
  t.same(again, { status: 200, body: { name: 'acme-prod' } }, 'the true name is accepted');
  const foreignId = await call(relay, app, AGENT_PATHS.applianceName, { applianceId: 'apl_0000000000000000', name: 'acme-prod' });
  t.equal(foreignId.body.code, 'UPLINK_ERR_AGENT_STATE_MISMATCH', 'an announcement for another appliance id is refused');

  // The relay claims the name a release was signed for: refused before anything is verified or written.
  const claimed = await call(relay, app, AGENT_PATHS.deployRun, await runRequest(key, 'dep-claims-other', 'other-app', 'other-app'));
  t.equal(claimed.status, 403);
  t.equal(claimed.body.code, 'UPLINK_ERR_APPLIANCE_NAME_MISMATCH');
  t.same((claimed.body.details as Record<string, unknown>) ?? null, { pinned: 'acme-prod', claimed: 'other-app' });
  // The relay states the true name but sends a release bound to another appliance.
  const bound = await call(relay, app, AGENT_PATHS.deployRun, await runRequest(key, 'dep-bound-other', 'acme-prod', 'other-app'));
  t.equal(bound.status, 403);
  t.equal(bound.body.code, 'UPLINK_ERR_RELEASE_WRONG_APPLIANCE');
  t.same((bound.body.details as Record<string, unknown>) ?? null, { bound: 'other-app', appliance: 'acme-prod' });
  for (const id of ['dep-claims-other', 'dep-bound-other']) {
    t.throws(() => readFileSync(join(stateDir, 'deploy', id, 'log')), { code: 'ENOENT' }, `${id}: nothing was written`);
  }
  const audit = readFileSync(join(stateDir, 'audit', 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { requestId: string; outcome: string; detail: { code?: string } });
  t.same(audit.map((e) => [e.requestId, e.outcome, e.detail.code]), [['dep-claims-other', 'denied', 'UPLINK_ERR_APPLIANCE_NAME_MISMATCH'], ['dep-bound-other', 'denied', 'UPLINK_ERR_RELEASE_WRONG_APPLIANCE']], 'both refusals are in the customer audit log');

  // The normal path still works: a release bound to the pinned name, through the relay's API.
  await uploadRelease(client, key, 'basic', '1.0.0', 'acme-prod');
  const ok = await waitEnded(client, (await deploy(client, 'acme-prod', '1.0.0')).id);
  t.equal(ok.status, 'succeeded');
});

t.test('an identity enrolled before names were pinned learns it once, at the next handshake', async (t) => {
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const key = newKey();
  const app = await createAppliance(client, 'acme-prod');
  const stateDir = join(tempDir(t, 'uplink-agent-'), 'state');
  const first = await startAgentOn(t, relay, app, stateDir, key, capture().log);
  await waitFor(() => pinnedName(stateDir) === 'acme-prod', 10_000, 'name pinned');
  await first.stop();
  await waitFor(() => relay.gateway.get(app.applianceId) === undefined, 10_000, 'agent gone');
  // What an older agent left: the same identity without the name.
  const { applianceName: _dropped, ...old } = loadIdentity(stateDir)!;
  writeFileSync(join(stateDir, 'identity.json'), JSON.stringify(old));

  const second = capture();
  const agent = await startAgentOn(t, relay, app, stateDir, key, second.log);
  await waitFor(() => pinnedName(stateDir) === 'acme-prod', 10_000, 'name learned');
  t.same({ ...loadIdentity(stateDir)!, applianceName: undefined }, { ...old, applianceName: undefined }, 'key and enrollment kept');
  const learned = second.lines().filter((l) => typeof l.msg === 'string' && (l.msg as string).startsWith('this identity was enrolled before the agent kept its appliance name'));
  t.equal(learned.length, 1, 'said once, as a warning');
  t.equal(learned[0]?.level, 40);
  t.match(learned[0]?.msg, /learned "acme-prod" once from the relay's announcement and pinned it in identity\.json; releases must be bound to "acme-prod" or "\*" from now on/);
  await agent.stop();
  await waitFor(() => relay.gateway.get(app.applianceId) === undefined, 10_000, 'agent gone');

  const third = capture();
  await startAgentOn(t, relay, app, stateDir, key, third.log);
  await waitFor(async () => (await call(relay, app, AGENT_PATHS.applianceName, { applianceId: app.applianceId, name: 'acme-prod' })).status === 200, 10_000, 'answered');
  t.notOk(third.lines().some((l) => /appliance name/.test(String(l.msg))), 'an identity with a name is not re-pinned');
});

t.test('PinnedApplianceName: pins once, refuses another name, keeps the rest of the identity', async (t) => {
  const stateDir = join(tempDir(t), 'state');
  mkdirSync(stateDir, { recursive: true });
  const id: AgentIdentity = { ...createIdentity('apl_0123456789abcdef', 'relay.example:443'), enrolledAt: '2025-01-01T00:00:00.000Z' };
  saveIdentity(stateDir, id);
  const { log, lines } = capture();
  const pin = new PinnedApplianceName(stateDir, id, true, log);
  t.equal(pin.get(), null);
  t.throws(() => pin.resolve('../etc', 'deploy request'), { code: 'UPLINK_ERR_BAD_REQUEST' });
  t.equal(pin.get(), null, 'a malformed name pins nothing');
  // An older relay never announces: the first deploy request pins the name.
  t.equal(pin.resolve('acme-prod', 'deploy request'), 'acme-prod');
  t.same(loadIdentity(stateDir), { ...id, applianceName: 'acme-prod' });
  t.match(lines().find((l) => l.level === 40)?.msg, /learned "acme-prod" once from the relay's deploy request/);
  t.throws(() => pin.resolve('acme-staging', 'deploy request'), { code: 'UPLINK_ERR_APPLIANCE_NAME_MISMATCH', details: { pinned: 'acme-prod', claimed: 'acme-staging' } });
  t.equal(pin.resolve('acme-prod', 'announcement'), 'acme-prod');
  t.same(new PinnedApplianceName(stateDir, loadIdentity(stateDir)!, true, log).get(), 'acme-prod', 'read back from identity.json');

  // The identity on disk was replaced (another key): refuse to write a name into it.
  const other = createIdentity('apl_0123456789abcdef', 'relay.example:443');
  const stale = new PinnedApplianceName(stateDir, other, false, log);
  t.throws(() => stale.resolve('acme-prod', 'announcement'), { code: 'UPLINK_ERR_AGENT_STATE_MISMATCH' });
  t.equal(loadIdentity(stateDir)?.keyId, id.keyId);
});
