/**
 * Recordings end to end: exec and shell sessions through an in-process relay and agent
 * are stored as asciicast v2 in chunks; replaying gives back exactly the bytes the client
 * received; resize and (only when asked) input are recorded; a session that ends without
 * an exit status or is cut by a relay shutdown is stored as incomplete with its reason,
 * and `uplink replay` says so and exits 3.
 */
import t from 'tap';
import { fileURLToPath } from 'node:url';
import { Readable, type Duplex } from 'node:stream';
import { ADMIN_TOKEN, adminClient, createAppliance, startAgent, startRelay, waitFor } from '../../helpers/cluster.js';
import { freshDatabase } from '../../helpers/pg.js';
import type { ApiClient } from '../../../relay/cli/api-client.js';
import { readFrames } from '../../helpers/exec-client.js';
import { CHANNEL, encodeControl, encodeFrame, parseControl, type Frame } from '../../../shared/frames.js';
import { AsciicastReader, replay } from '../../../relay/recordings/asciicast-replay.js';
import { NO_EXIT_REASON, RELAY_SHUTDOWN_REASON } from '../../../relay/recordings/recorder.js';
import { SessionsRepo } from '../../../relay/store/sessions-repo.js';
import type { SessionView } from '../../../relay/cli/commands/sessions.js';
import { runNode } from '../../helpers/processes.js';

const CLI = fileURLToPath(new URL('../../../dist/relay/cli/main.js', import.meta.url));

const OPERATE = { local: { operate: 'enabled' }, operations: { shell: { shell: '/bin/sh' }, exec: { killGraceMs: 200 } } };

/** Everything the client receives on stdout/stderr, in arrival order, until the stream closes; `text()` shows what arrived so far. */
function received(duplex: Duplex): Promise<{ bytes: Buffer; exit: boolean }> & { text(): string } {
  const parts: Buffer[] = [];
  const p = new Promise<{ bytes: Buffer; exit: boolean }>((resolve, reject) => {
    let exit = false;
    const decoder = readFrames(duplex, (f: Frame) => {
      if (f.channel === CHANNEL.stdout || f.channel === CHANNEL.stderr) parts.push(f.payload);
      else if (f.channel === CHANNEL.control && parseControl(f.payload).type === 'exit') exit = true;
    });
    decoder.on('error', reject);
    decoder.on('end', () => resolve({ bytes: Buffer.concat(parts), exit }));
  });
  return Object.assign(p, { text: () => Buffer.concat(parts).toString() });
}

async function sessions(client: ApiClient, appliance: string): Promise<SessionView[]> {
  return (await client.call<{ sessions: SessionView[] }>('GET', `/v1/sessions?appliance=${appliance}`)).sessions;
}

async function finished(client: ApiClient, appliance: string, count: number): Promise<SessionView[]> {
  let list: SessionView[] = [];
  await waitFor(async () => {
    list = await sessions(client, appliance);
    return list.length === count && list.every((s) => s.endedAt !== null);
  }, 10_000, `${count} finished sessions on ${appliance}`);
  return list;
}

async function replayed(client: ApiClient, id: string): Promise<{ bytes: Buffer; types: string[]; complete: boolean; reason?: string | undefined }> {
  const types: string[] = [];
  const { body } = await client.stream(`/v1/sessions/${id}/recording`);
  const lines: Buffer[] = [];
  for await (const c of body) lines.push(c);
  const text = Buffer.concat(lines);
  for (const line of text.toString('utf8').trimEnd().split('\n').slice(1)) types.push((JSON.parse(line) as [number, string])[1]);
  const reader = await AsciicastReader.open(Readable.from([text]));
  const out: Buffer[] = [];
  const r = await replay(reader, { speed: 1e6, write: (b) => void out.push(b) });
  return { bytes: Buffer.concat(out), types, complete: r.complete, reason: r.reason };
}

t.test('exec and shell are recorded byte for byte, in chunks', async (t) => {
  const relay = await startRelay(t, { config: { recordings: { chunkBytes: 1024 } } });
  const client = adminClient(t, relay);
  await startAgent(t, relay, await createAppliance(client, 'rec-a'), OPERATE);

  // Not valid UTF-8, a character split by the writer's 32 KiB events is not needed: the
  // invalid bytes and multi-byte characters are enough to break a naive decoder.
  const exec = await client.openOp('rec-a', 'exec', { command: 'sh', args: ['-c', "printf 'h\\303\\251llo \\377\\376 '; echo err >&2; seq 1 2000; exit 3"] });
  exec.write(encodeControl({ type: 'eof' }));
  const got = await received(exec);
  t.ok(got.exit);
  t.ok(got.bytes.includes(Buffer.from([0xff, 0xfe])), 'the raw bytes came through');

  const [s] = await finished(client, 'rec-a', 1);
  t.equal(s!.kind, 'exec');
  t.equal(s!.actor, 'bootstrap-admin');
  t.equal(s!.exitCode, 3);
  t.equal(s!.complete, true);
  t.equal(s!.incompleteReason, null);
  const chunks = await relay.store.db.query<{ n: string | number }>('SELECT count(*) AS n FROM session_chunks WHERE session_id = $1', [s!.id]);
  t.ok(Number(chunks.rows[0]!.n) > 1, 'stored as several chunks');
  let text = 0;
  for await (const c of new SessionsRepo(relay.store.db).chunks(s!.id)) text += c.length;
  t.equal(text, s!.bytes, 'bytes counts the asciicast text as written');
  const rep = await replayed(client, s!.id);
  t.equal(rep.complete, true);
  t.equal(Buffer.compare(rep.bytes, got.bytes), 0, 'replay is byte-identical to what the client received');

  const shell = await client.openOp('rec-a', 'shell', { cols: 90, rows: 20, term: 'xterm' });
  const shellGot = received(shell);
  shell.write(encodeControl({ type: 'resize', cols: 100, rows: 30 }));
  shell.write(encodeFrame(CHANNEL.stdin, 'stty size; exit 0\n'));
  const sh = await shellGot;
  const list = await finished(client, 'rec-a', 2);
  const rec = list.find((x) => x.kind === 'shell')!;
  t.equal(rec.exitCode, 0);
  t.equal(rec.complete, true);
  t.equal(rec.width, 90);
  t.equal(rec.height, 20);
  const shellRep = await replayed(client, rec.id);
  t.equal(Buffer.compare(shellRep.bytes, sh.bytes), 0, 'shell replay is byte-identical');
  t.ok(shellRep.types.includes('r'), 'the resize is recorded');
  t.notOk(shellRep.types.includes('i'), 'input is not recorded unless the relay config asks');
  t.match(shellRep.bytes.toString('utf8'), /30 100\r\n/);

  // A recording holds what the terminal showed (secrets too): reading it needs operate.
  const created = await client.call<{ token: string }>('POST', '/v1/tokens', { name: 'deployer', scopes: ['deploy'] });
  const deployer = adminClient(t, relay, created.token);
  t.equal((await deployer.call<SessionView>('GET', `/v1/sessions/${rec.id}`)).id, rec.id, 'metadata needs read only');
  await t.rejects(deployer.stream(`/v1/sessions/${rec.id}/recording`), { code: 'UPLINK_ERR_FORBIDDEN' });
  await t.rejects(client.stream('/v1/sessions/ses_missing/recording'), { code: 'UPLINK_ERR_NOT_FOUND' });
});

t.test('recordInput records keystrokes; enabled: false records nothing', async (t) => {
  const relay = await startRelay(t, { config: { recordings: { recordInput: true } } });
  const client = adminClient(t, relay);
  await startAgent(t, relay, await createAppliance(client, 'rec-in'), OPERATE);
  const shell = await client.openOp('rec-in', 'shell', { cols: 80, rows: 24 });
  const done = received(shell);
  shell.write(encodeFrame(CHANNEL.stdin, 'exit 2\n'));
  await done;
  const [s] = await finished(client, 'rec-in', 1);
  t.equal(s!.exitCode, 2);
  t.ok((await replayed(client, s!.id)).types.includes('i'));

  const off = await startRelay(t, { config: { recordings: { enabled: false } } });
  const offClient = adminClient(t, off);
  await startAgent(t, off, await createAppliance(offClient, 'rec-off'), OPERATE);
  const r = await offClient.openOp('rec-off', 'shell', { command: 'exit 0', cols: 80, rows: 24 });
  await received(r);
  t.same(await sessions(offClient, 'rec-off'), []);
});

t.test('no exit status: the agent went away mid-session', async (t) => {
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const agent = await startAgent(t, relay, await createAppliance(client, 'rec-cut'), OPERATE);
  const shell = await client.openOp('rec-cut', 'shell', { cols: 80, rows: 24 });
  const done = received(shell);
  shell.write(encodeFrame(CHANNEL.stdin, 'echo started; sleep 30\n'));
  await waitFor(async () => (await sessions(client, 'rec-cut')).length === 1, 10_000, 'session row');
  await agent.stop();
  const got = await done;
  t.equal(got.exit, false);
  const [s] = await finished(client, 'rec-cut', 1);
  t.equal(s!.complete, false);
  t.ok(s!.incompleteReason === NO_EXIT_REASON || /^agent stream/.test(s!.incompleteReason ?? ''), `reason: ${s!.incompleteReason}`);
  const rep = await replayed(client, s!.id);
  t.equal(rep.complete, false, 'the end marker says incomplete too');
});

t.test('relay shutdown mid-session: incomplete, and `uplink replay` says so and exits 3', async (t) => {
  const databaseUrl = await freshDatabase(t, 'uplink_rec');
  if (!databaseUrl) return;
  const first = await startRelay(t, { databaseUrl });
  const client1 = adminClient(t, first);
  await startAgent(t, first, await createAppliance(client1, 'rec-down'), OPERATE);
  const shell = await client1.openOp('rec-down', 'shell', { cols: 80, rows: 24 });
  const done = received(shell);
  shell.write(encodeFrame(CHANNEL.stdin, 'echo before-shutdown; sleep 30\n'));
  await waitFor(async () => (await sessions(client1, 'rec-down')).length === 1, 10_000, 'session row');
  // The shutdown must come after the output it should keep: the echoed command line alone
  // would match, so wait for the line the shell printed.
  await waitFor(async () => /before-shutdown\r?\n/.test(done.text()), 10_000, 'shell output');
  await first.close();
  await done;

  const second = await startRelay(t, { databaseUrl });
  const client2 = adminClient(t, second);
  const [s] = await sessions(client2, 'rec-down');
  t.equal(s!.complete, false);
  t.equal(s!.incompleteReason, RELAY_SHUTDOWN_REASON);

  const env = { ...process.env, UPLINK_URL: second.url, UPLINK_TOKEN: ADMIN_TOKEN };
  const r = await runNode([CLI, 'replay', s!.id, '--speed', '1000'], env);
  t.equal(r.status, 3);
  t.equal(r.stderr, `recording incomplete: ${RELAY_SHUTDOWN_REASON}\n`);
  t.match(r.stdout, /before-shutdown/);
  const list = await runNode([CLI, 'sessions'], env);
  t.equal(list.status, 0);
  t.match(list.stdout, new RegExp(`${s!.id}\\s+rec-down\\s+shell\\s+bootstrap-admin.*INCOMPLETE: ${RELAY_SHUTDOWN_REASON}`));
  const missing = await runNode([CLI, 'replay', 'ses_nope'], env);
  t.equal(missing.status, 1);
  t.match(missing.stderr, /UPLINK_ERR_NOT_FOUND/);
});
