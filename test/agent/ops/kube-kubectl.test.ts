/**
 * The real kubectl against the test API server: directly (the server is honest) and through
 * kube-proxy, wrapped in a small local HTTP server that plays the part the tunnel will play
 * (relay-side listener -> agent -> forwardKubeRequest / forwardKubeUpgrade -> cluster).
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeApiServer } from '../../helpers/kube-api-server.js';
import { needTools } from '../../helpers/tools.js';
import { forwardKubeRequest, forwardKubeUpgrade, parseKubeProxyOptions } from '../../../agent/ops/kube-proxy.js';
import { resolveKubeTarget, type ResolvedKubeTarget } from '../../../agent/ops/kube-target.js';
import { toUplinkError } from '../../../shared/errors.js';

const KUBECTL_TIMEOUT_MS = 20_000;

interface Run { code: number | null; stdout: string; stderr: string }
interface Running { done: Promise<Run>; stdout: () => string; kill: () => void; waitFor: (re: RegExp) => Promise<void> }

function kubectl(dir: string, kubeconfig: string, args: string[], stdin?: string): Running {
  const child = spawn('kubectl', ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const waiters: Array<{ re: RegExp; resolve: () => void }> = [];
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    for (const w of [...waiters]) if (w.re.test(stdout)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(); }
  });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  if (stdin === undefined) child.stdin.end();
  else child.stdin.end(stdin);
  const timer = setTimeout(() => child.kill('SIGKILL'), KUBECTL_TIMEOUT_MS);
  const done = new Promise<Run>((resolve) => child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); }));
  return {
    done,
    stdout: () => stdout,
    kill: () => child.kill('SIGTERM'),
    waitFor: (re) => (re.test(stdout) ? Promise.resolve() : new Promise<void>((resolve, reject) => {
      waiters.push({ re, resolve });
      void done.then(() => reject(new Error(`kubectl ended before ${re}: stdout=${stdout} stderr=${stderr}`)));
    })),
  };
}

function writeKubeconfig(dir: string, name: string, server: string, token: string, caFile?: string): string {
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': name,
    clusters: [{ name, cluster: { server, ...(caFile ? { 'certificate-authority': caFile } : {}) } }],
    users: [{ name, user: { token } }],
    contexts: [{ name, context: { cluster: name, user: name, namespace: 'default' } }],
  }));
  return path;
}

function errorResponse(res: ServerResponse, err: unknown): void {
  const e = toUplinkError(err);
  if (!res.headersSent) res.writeHead(e.status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(e.toJSON()));
}

/** The stand-in for the tunnel: every request and upgrade goes through kube-proxy. */
async function startTunnel(t: Test, resolved: ResolvedKubeTarget): Promise<{ url: string; server: Server }> {
  const opts = parseKubeProxyOptions({ connectTimeoutMs: 5_000, headersTimeoutMs: 10_000 });
  const sockets = new Set<Duplex>();
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const abort = new AbortController();
    res.on('close', () => abort.abort(new Error('client went away')));
    const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    forwardKubeRequest(resolved, { method: req.method!, path: req.url!, headers: req.headers, ...(hasBody ? { body: req } : {}), signal: abort.signal }, opts)
      .then(async (up) => {
        res.writeHead(up.status, up.headers);
        res.flushHeaders();
        await pipeline(up.body, res);
      })
      .catch((err: unknown) => { if (!res.writableEnded && !res.destroyed) errorResponse(res, err); });
  });
  server.on('connection', (s: Duplex) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  server.on('upgrade', (req: IncomingMessage, client: Duplex, clientHead: Buffer) => {
    forwardKubeUpgrade(resolved, { method: req.method!, path: req.url!, headers: req.headers }, opts)
      .then((up) => {
        if (!up.upgraded) {
          const chunks: Buffer[] = [];
          up.body.on('data', (c: Buffer) => chunks.push(c));
          up.body.on('end', () => {
            const body = Buffer.concat(chunks);
            client.end(`HTTP/1.1 ${up.status} x\r\ncontent-type: ${String(up.headers['content-type'] ?? 'text/plain')}\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body.toString()}`);
          });
          return;
        }
        const lines = ['HTTP/1.1 101 Switching Protocols'];
        for (const [k, v] of Object.entries(up.headers)) for (const one of Array.isArray(v) ? v : [v]) lines.push(`${k}: ${one}`);
        client.write(`${lines.join('\r\n')}\r\n\r\n`);
        if (up.head.length) client.write(up.head);
        if (clientHead.length) up.socket.write(clientHead);
        up.socket.pipe(client).pipe(up.socket);
        const end = (): void => { up.socket.destroy(); client.destroy(); };
        up.socket.on('error', end).on('close', end);
        client.on('error', end).on('close', end);
      })
      .catch((err: unknown) => {
        const e = toUplinkError(err);
        client.end(`HTTP/1.1 ${e.status} x\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n${JSON.stringify(e.toJSON())}`);
      });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  const close = (): Promise<void> => { for (const s of sockets) s.destroy(); return new Promise((r) => server.close(() => r())); };
  t.teardown(close);
  return { url: `http://127.0.0.1:${port}`, server };
}

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('kubectl', async (t) => {
  if (!needTools(t, ['kubectl', 'openssl'])) return;
  const dir = mkdtempSync(join(tmpdir(), 'uplink-kubectl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const api = await KubeApiServer.start();
  t.teardown(() => api.close());
  api.addPod('web-1');
  api.addPod('web-2');
  const caFile = join(dir, 'ca.crt');
  writeFileSync(caFile, api.caPem!);

  t.test('directly against the test API server', async (t) => {
    const kc = writeKubeconfig(dir, 'direct', api.url, api.token, caFile);
    const run = await kubectl(dir, kc, ['get', 'pods']).done;
    t.equal(run.code, 0, run.stderr);
    t.match(run.stdout, /^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\n/);
    t.match(run.stdout, /\nweb-1\s+1\/1\s+Running\s+0\s+\d+s\nweb-2\s+1\/1\s+Running\s+0\s+\d+s\n$/);
    const wide = await kubectl(dir, kc, ['get', 'pods', '-o', 'wide']).done;
    t.match(wide.stdout, /web-1\s+1\/1\s+Running\s+0\s+\d+s\s+10\.0\.0\.10\s+node-1/, 'priority-1 columns with -o wide');
    const echo = await kubectl(dir, kc, ['exec', 'web-1', '--', 'echo', 'direct']).done;
    t.same([echo.code, echo.stdout], [0, 'direct\n']);

    const bad = await kubectl(dir, writeKubeconfig(dir, 'bad', api.url, 'wrong-token', caFile), ['get', 'pods']).done;
    t.equal(bad.code, 1, 'a wrong token is refused');
    t.match(bad.stderr, /Unauthorized/);
  });

  const resolved = await resolveKubeTarget({ kind: 'static', server: api.url, caData: api.caPem!.toString('base64'), token: api.token }, undefined);
  const tunnel = await startTunnel(t, resolved);
  // kubectl talks to the tunnel with some other credential; the agent must never pass it on.
  const kc = writeKubeconfig(dir, 'tunnel', tunnel.url, 'vendor-side-token');

  t.test('get pods through the proxy', async (t) => {
    const before = api.requests.length;
    const run = await kubectl(dir, kc, ['get', 'pods']).done;
    t.equal(run.code, 0, run.stderr);
    t.match(run.stdout, /^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\nweb-1\s+1\/1\s+Running\s+0\s+\d+s\nweb-2\s+1\/1\s+Running\s+0\s+\d+s\n$/);
    const seen = api.requests.slice(before);
    t.ok(seen.some((r) => r.url.split('?')[0] === '/api/v1'), 'discovery went through');
    t.ok(seen.some((r) => r.url.startsWith('/api/v1/namespaces/default/pods?') && /as=Table/.test(String(r.headers.accept))), 'server-side printing asked for');
    t.ok(seen.every((r) => r.headers.authorization === `Bearer ${api.token}`), "every request carried the target's token, none the caller's");
    const missing = await kubectl(dir, kc, ['get', 'pod', 'nope']).done;
    t.equal(missing.code, 1);
    t.match(missing.stderr, /pods "nope" not found/, "the API server's Status comes back intact");
  });

  t.test('get pods -w: events arrive live, and leaving ends the upstream watch', async (t) => {
    const w = kubectl(dir, kc, ['get', 'pods', '-w']);
    await w.waitFor(/web-2.*\n/);
    await until(() => api.watchCount === 1, 'the watch to reach the server');
    api.addPod('web-3');
    await w.waitFor(/web-3\s+1\/1\s+Running/);
    api.deletePod('web-2');
    await w.waitFor(/web-2[^\n]*\n[\s\S]*web-2/);
    w.kill();
    await w.done;
    const lines = w.stdout().trim().split('\n').map((l) => l.split(/\s+/)[0]);
    t.same(lines, ['NAME', 'web-1', 'web-2', 'web-3', 'web-2'], 'list, then ADDED web-3, then DELETED web-2');
    await until(() => api.watchCount === 0, 'the upstream watch to close');
    t.equal(api.watchCount, 0, 'no watch left open on the API server');
  });

  t.test('logs -f: lines arrive as they are written', async (t) => {
    api.addPod('logger');
    api.appendLog('logger', 'first line');
    const f = kubectl(dir, kc, ['logs', '-f', 'logger']);
    await f.waitFor(/first line\n/);
    await until(() => api.followers('logger') === 1, 'the follower');
    api.appendLog('logger', 'second line');
    await f.waitFor(/second line\n/);
    t.equal(f.stdout(), 'first line\nsecond line\n', 'the second line arrived while kubectl was still following');
    api.endLog('logger');
    const run = await f.done;
    t.equal(run.code, 0, 'kubectl ends when the container log ends');
    t.equal(run.stdout, 'first line\nsecond line\n');
  });

  t.test('exec over WebSocket through the proxy', async (t) => {
    const echo = await kubectl(dir, kc, ['exec', 'web-1', '--', 'echo', 'hi']).done;
    t.same([echo.code, echo.stdout, echo.stderr], [0, 'hi\n', '']);
    const upgrades = api.requests.filter((r) => r.url.includes('/exec?'));
    t.equal(upgrades.at(-1)?.headers['sec-websocket-protocol']?.split(',').map((s) => s.trim())[0], 'v5.channel.k8s.io', 'kubectl offered v5 through the proxy');
    t.equal(upgrades.at(-1)?.headers.authorization, `Bearer ${api.token}`);

    const input = 'hello\nworld, with bytes: \u00e9\u00e8\n';
    const cat = await kubectl(dir, kc, ['exec', '-i', 'web-1', '--', 'cat'], input).done;
    t.same([cat.code, cat.stdout], [0, input], 'stdin in, same bytes out, ends on stdin EOF');

    const exit = await kubectl(dir, kc, ['exec', 'web-1', '--', 'sh', '-c', 'exit 3']).done;
    t.equal(exit.code, 3, "the remote exit code is kubectl's exit code");
    t.match(exit.stderr, /command terminated with exit code 3/);

    const notFound = await kubectl(dir, kc, ['exec', 'nope', '--', 'echo', 'hi']).done;
    t.equal(notFound.code, 1);
    t.match(notFound.stderr, /pods "nope" not found/);

    const noCmd = await kubectl(dir, kc, ['exec', 'web-1', '--', 'no-such-binary']).done;
    t.equal(noCmd.code, 1);
    t.match(noCmd.stderr, /executable file not found/);
  });
});
