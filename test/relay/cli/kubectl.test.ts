/**
 * `uplink kubectl` and `uplink kubeconfig` end to end: the real kubectl → the CLI's local
 * kube server → op WebSocket → relay → tunnel → agent (kube handlers, Operate session) →
 * the test API server. Relay and agent run in this process. `kubectl exec` is recorded by
 * the relay like shell and exec (asciicast, exit code from the Status); `kubectl
 * port-forward` carries bytes both ways and is not recorded.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo } from 'node:net';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { KubeApiServer } from '../../helpers/kube-api-server.js';
import { needTools } from '../../helpers/tools.js';
import { adminClient, createAppliance, startAgent, startRelay, tempDir, waitFor } from '../../helpers/cluster.js';
import { freePort } from '../../helpers/net.js';
import type { SessionView } from '../../../relay/cli/commands/sessions.js';
import type { ApiClient } from '../../../relay/cli/api-client.js';
import type { CliContext } from '../../../relay/cli/context.js';
import { kubectlRun } from '../../../relay/cli/commands/kubectl.js';
import { serveKubeconfig, type KubeTargetArgs } from '../../../relay/cli/commands/kubeconfig.js';

const WAIT_MS = 15_000;

interface Captured { ctx: CliContext; stdin: PassThrough; out: () => string; err: () => string }

function cliContext(client: ApiClient, home: string): Captured {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d: Buffer) => { out += d.toString(); });
  stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const ctx: CliContext = { argv: [], io: { stdin, stdout, stderr }, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home }, client: () => client };
  return { ctx, stdin, out: () => out, err: () => err };
}

async function kubeSessions(client: ApiClient): Promise<SessionView[]> {
  return (await client.call<{ sessions: SessionView[] }>('GET', '/v1/sessions?appliance=acme')).sessions.filter((s) => s.kind === 'kube-exec');
}

/** The asciicast events of a recording: [type, data] after the header line. */
async function recordingEvents(client: ApiClient, id: string): Promise<Array<[string, string]>> {
  const { body } = await client.stream(`/v1/sessions/${id}/recording`);
  const parts: Buffer[] = [];
  for await (const c of body) parts.push(c);
  return Buffer.concat(parts).toString('utf8').trimEnd().split('\n').slice(1).map((l) => {
    const [, type, data] = JSON.parse(l) as [number, string, string];
    return [type, data];
  });
}

/** Send `data`, half-close, collect everything until the peer closes. */
function exchange(port: number, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', reject);
    sock.on('close', () => resolve(Buffer.concat(chunks)));
    sock.end(data);
  });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

t.test('uplink kubectl through relay and agent', async (t) => {
  if (!needTools(t, ['kubectl', 'openssl'])) return;
  const home = tempDir(t, 'uplink-kubectl-home-');
  const api = await KubeApiServer.start();
  t.teardown(() => api.close());
  api.addPod('web-1');
  api.addPod('web-2');
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'acme');
  await startAgent(t, relay, enrolled, {
    local: { operate: 'enabled' },
    kube: { targets: { test: { kind: 'static', server: api.url, caData: api.caPem!.toString('base64'), token: api.token } } },
  });
  const target: KubeTargetArgs = { appliance: 'acme' };

  const run = async (args: string[], stdin?: string): Promise<{ code: number; stdout: string; stderr: string }> => {
    const c = cliContext(client, home);
    c.stdin.end(stdin ?? '');
    const code = await kubectlRun(c.ctx, target, args);
    return { code, stdout: c.out(), stderr: c.err() };
  };

  t.test('get pods', async (t) => {
    const before = api.requests.length;
    const r = await run(['get', 'pods']);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\nweb-1\s+1\/1\s+Running\s+0\s+\d+s\nweb-2\s+1\/1\s+Running\s+0\s+\d+s\n$/);
    const seen = api.requests.slice(before);
    t.ok(seen.length >= 2, 'discovery and the list reached the API server');
    t.ok(seen.every((s) => s.headers.authorization === `Bearer ${api.token}`), "every request carried the target's token, never the local one");
    const missing = await run(['get', 'pod', 'nope']);
    t.equal(missing.code, 1);
    t.match(missing.stderr, /pods "nope" not found/, "the API server's Status comes back intact");
  });

  t.test('an unknown --cluster is refused with its code before kubectl starts', async (t) => {
    const c = cliContext(client, home);
    c.stdin.end();
    const before = api.requests.length;
    await t.rejects(kubectlRun(c.ctx, { appliance: 'acme', cluster: 'nope' }, ['get', 'pods']), {
      code: 'UPLINK_ERR_KUBE_TARGET_UNKNOWN', message: 'no Kubernetes target "nope" on this agent (known: test)',
    });
    await t.rejects(kubectlRun(c.ctx, { appliance: 'ghost' }, ['get', 'pods']), { code: 'UPLINK_ERR_NOT_FOUND' });
    t.equal(api.requests.length, before, 'nothing reached the API server');
    t.equal(c.out() + c.err(), '', 'kubectl never ran');
  });

  t.test('logs -f: lines arrive live', async (t) => {
    api.addPod('logger');
    api.appendLog('logger', 'first line');
    const c = cliContext(client, home);
    c.stdin.end();
    const done = kubectlRun(c.ctx, target, ['logs', '-f', 'logger']);
    await waitFor(() => c.out() === 'first line\n', WAIT_MS, 'the first line');
    await waitFor(() => api.followers('logger') === 1, WAIT_MS, 'the follower');
    api.appendLog('logger', 'second line');
    await waitFor(() => c.out() === 'first line\nsecond line\n', WAIT_MS, 'the second line while following');
    api.endLog('logger');
    t.equal(await done, 0, 'kubectl ends when the log ends');
    t.equal(c.out(), 'first line\nsecond line\n');
  });

  t.test('exec: echo, stdin, exit codes', async (t) => {
    const echo = await run(['exec', 'web-1', '--', 'echo', 'hi']);
    t.same([echo.code, echo.stdout, echo.stderr], [0, 'hi\n', '']);
    const upgrade = api.requests.filter((r) => r.url.includes('/exec?')).at(-1);
    t.equal(upgrade?.headers.authorization, `Bearer ${api.token}`);
    t.equal(upgrade?.headers['sec-websocket-protocol']?.split(',').map((s) => s.trim())[0], 'v5.channel.k8s.io', 'the subprotocol offer crossed the tunnel');

    const input = 'hello\nworld, with bytes: \u00e9\u00e8\n';
    const cat = await run(['exec', '-i', 'web-1', '--', 'cat'], input);
    t.same([cat.code, cat.stdout], [0, input], 'stdin in, the same bytes out, ended by stdin EOF');

    const exit = await run(['exec', 'web-1', '--', 'sh', '-c', 'exit 3']);
    t.equal(exit.code, 3, "the remote exit code is uplink kubectl's exit code");
    t.match(exit.stderr, /command terminated with exit code 3/);

    const nope = await run(['exec', 'nope', '--', 'echo', 'hi']);
    t.equal(nope.code, 1);
    t.match(nope.stderr, /pods "nope" not found/);
  });

  t.test('kubectl exec is recorded like shell and exec', async (t) => {
    let list: SessionView[] = [];
    await waitFor(async () => {
      list = await kubeSessions(client);
      return list.length === 3 && list.every((s) => s.endedAt !== null);
    }, WAIT_MS, 'three finished kube-exec recordings');
    // Newest first: exit 3, cat, echo. (`exec nope` never upgraded: kubectl's GET of the pod failed first.)
    const [exit3, cat, echo] = list;
    t.match(echo, { kind: 'kube-exec', actor: 'bootstrap-admin', exitCode: 0, complete: true, incompleteReason: null });
    t.same(await recordingEvents(client, echo!.id), [['o', 'hi\n'], ['m', 'uplink-end:{"complete":true}']], 'the output kubectl printed, then the end marker');
    t.match(cat, { exitCode: 0, complete: true });
    const catEvents = await recordingEvents(client, cat!.id);
    t.equal(catEvents.filter(([type]) => type === 'o').map(([, d]) => d).join(''), 'hello\nworld, with bytes: \u00e9\u00e8\n', 'the echoed input, as output');
    t.notOk(catEvents.some(([type]) => type === 'i'), 'keystrokes are not recorded unless the relay config asks');
    t.match(exit3, { exitCode: 3, complete: true }, 'the exit code comes from the Status on the error channel');
  });

  t.test('port-forward carries bytes both ways and is not recorded', async (t) => {
    // The pod's port 80 is an echo server on this machine; 81 has nothing behind it.
    const echo = createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    t.teardown(() => new Promise<void>((r) => echo.close(() => r())));
    // Its own namespace: the watch test below lists the default namespace.
    api.addPod('web-pf', { namespace: 'pf', ports: { 80: (echo.address() as AddressInfo).port } });
    const recordings = (await kubeSessions(client)).length;

    const local = await freePort();
    const c = cliContext(client, home);
    c.stdin.end();
    const done = kubectlRun(c.ctx, target, ['-n', 'pf', 'port-forward', 'pod/web-pf', `${local}:80`]);
    await waitFor(() => c.out().includes(`Forwarding from 127.0.0.1:${local} -> 80\n`), WAIT_MS, 'kubectl listening');
    const one = randomBytes(1024 * 1024);
    const two = randomBytes(64 * 1024);
    const [backOne, backTwo] = await Promise.all([exchange(local, one), exchange(local, two)]);
    t.equal(sha(backOne), sha(one), '1 MiB there and back through one forwarded connection');
    t.equal(sha(backTwo), sha(two), 'and 64 KiB through a second one at the same time');
    const upgrade = api.requests.filter((r) => r.url.endsWith('/namespaces/pf/pods/web-pf/portforward')).at(-1);
    t.equal(upgrade?.headers['sec-websocket-protocol'], 'SPDY/3.1+portforward.k8s.io', 'the WebSocket tunnel, not the SPDY fallback');
    t.equal(upgrade?.headers.authorization, `Bearer ${api.token}`);

    // The pod goes away: the API server ends the tunnel, and kubectl says so.
    api.endPortForwards();
    t.equal(await done, 1);
    t.match(c.err(), /lost connection to pod/);

    const refused = cliContext(client, home);
    refused.stdin.end();
    const local2 = await freePort();
    const ended = kubectlRun(refused.ctx, target, ['-n', 'pf', 'port-forward', 'pod/web-pf', `${local2}:81`]);
    await waitFor(() => refused.out().includes(`Forwarding from 127.0.0.1:${local2} -> 81\n`), WAIT_MS, 'kubectl listening');
    t.same(await exchange(local2, Buffer.from('x')), Buffer.alloc(0), 'nothing comes back from a port nobody listens on');
    t.equal(await ended, 1);
    t.match(refused.err(), /an error occurred forwarding \d+ -> 81: error forwarding port 81 to pod: nothing listens on port 81 in this test pod/, "the pod side's error crossed back");
    t.equal((await kubeSessions(client)).length, recordings, 'port-forward makes no recording');
  });

  t.test('uplink kubeconfig: get pods -w sees a live add; leaving ends the upstream watch', async (t) => {
    const c = cliContext(client, home);
    const path = join(tempDir(t, 'uplink-kubeconfig-'), 'kube', 'acme.json');
    let stop!: () => void;
    const serving = serveKubeconfig(c.ctx, target, path, new Promise<void>((r) => { stop = r; }));
    await waitFor(() => existsSync(path), WAIT_MS, 'the kubeconfig');
    const kc = JSON.parse(readFileSync(path, 'utf8')) as { clusters: Array<{ cluster: { server: string } }>; users: Array<{ user: Record<string, unknown> }>; 'current-context': string };
    t.equal(kc['current-context'], 'uplink-acme');
    const server = kc.clusters[0]!.cluster.server;
    t.match(server, /^http:\/\/127\.0\.0\.1:\d+\/[0-9a-f]{64}$/);
    t.same(kc.users[0]!.user, {}, 'no credential in the file besides the secret URL');
    t.equal(statSync(path).mode & 0o777, 0o600);

    // Someone else on this machine without the secret path gets nothing through.
    const before = api.requests.length;
    const origin = new URL(server).origin;
    for (const url of [`${origin}/api/v1/namespaces/default/pods`, `${origin}/${'0'.repeat(64)}/api/v1/namespaces/default/pods`, `${server}x/api`]) {
      const stranger = await fetch(url);
      t.equal(stranger.status, 401, url);
      t.match(await stranger.json(), { kind: 'Status', code: 401, reason: 'UPLINK_ERR_UNAUTHENTICATED' });
    }
    t.equal(api.requests.length, before, 'nothing reached the API server');

    const child = spawn('kubectl', ['--kubeconfig', path, 'get', 'pods', '-w'], { env: { PATH: process.env.PATH ?? '', HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = new Promise<void>((r) => child.once('close', () => r()));
    await waitFor(() => out.split('\n').length === 5, WAIT_MS, 'the initial list (header and three pods)');
    await waitFor(() => api.watchCount === 1, WAIT_MS, 'the watch to reach the API server');
    api.addPod('web-3');
    await waitFor(() => /web-3\s+1\/1\s+Running/.test(out), WAIT_MS, 'the live ADDED event');
    child.kill('SIGTERM');
    await exited;
    const names = out.trim().split('\n').map((l) => l.split(/\s+/)[0]);
    t.same([names[0], names.slice(1, 4).sort(), names.slice(4)], ['NAME', ['logger', 'web-1', 'web-2'], ['web-3']], 'the list, then ADDED web-3');
    await waitFor(() => api.watchCount === 0, WAIT_MS, 'the upstream watch to close');
    t.equal(api.watchCount, 0, 'no watch left open on the API server');
    stop();
    t.equal(await serving, 0);
    t.equal(existsSync(path), false, 'the kubeconfig is removed with the server');
  });
});
