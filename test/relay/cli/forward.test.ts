/**
 * `uplink forward` end to end: the CLI command (in process) → relay op WebSocket → tunnel →
 * agent dial, against real servers: PostgreSQL through psql, a 50 MB echo checked with
 * sha256, half-close, the allowlist refusal and --ttl expiry.
 */
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { adminClient, createAppliance, startAgent, startRelay } from '../../helpers/cluster.js';
import { needTools } from '../../helpers/tools.js';
import { cliContext } from '../../helpers/cli-context.js';
import { forwardCommand, parseForwardTarget, startForward } from '../../../relay/cli/commands/forward.js';


async function listen(t: Test, onConn: (s: Socket) => void): Promise<number> {
  const server: Server = createServer({ allowHalfOpen: true }, onConn);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as AddressInfo).port;
}

/** Send `data`, half-close, collect everything until the peer closes. */
function exchange(port: number, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    sock.on('data', (c: Buffer) => chunks.push(c));
    // A refused forward resets the local connection: that ends the exchange too.
    sock.on('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' ? undefined : reject(e)));
    sock.on('close', () => resolve(Buffer.concat(chunks)));
    sock.end(data);
  });
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('parseForwardTarget', async (t) => {
  t.same(parseForwardTarget('5432:db.internal:5432'), { bind: '127.0.0.1', localPort: 5432, host: 'db.internal', port: 5432 });
  t.same(parseForwardTarget('0.0.0.0:0:10.0.0.5:6379'), { bind: '0.0.0.0', localPort: 0, host: '10.0.0.5', port: 6379 });
  t.same(parseForwardTarget('[::1]:8080:[fd00::5]:80'), { bind: '::1', localPort: 8080, host: 'fd00::5', port: 80 });
  for (const bad of ['5432', '5432:db', '70000:db:5432', 'x:db:5432', '1:db:0', '1:2:3:4:5']) {
    t.throws(() => parseForwardTarget(bad), { code: 'UPLINK_ERR_USAGE' }, bad);
  }
});

t.test('forward through the full stack', async (t) => {
  // Echo: every byte back, FIN after the client's FIN (exercises half-close both ways).
  const echoPort = await listen(t, (s) => s.pipe(s));
  // Sink: hash what arrives, answer the digest only after the client half-closed.
  const sinkPort = await listen(t, (s) => {
    const h = createHash('sha256');
    s.on('data', (c: Buffer) => h.update(c));
    s.on('end', () => s.end(h.digest('hex')));
  });
  const relay = await startRelay(t);
  const client = adminClient(t, relay);
  const enrolled = await createAppliance(client, 'fwd');
  await startAgent(t, relay, enrolled, {
    local: { operate: 'enabled' },
    operations: { forward: { allow: [{ name: 'loopback-test', cidrs: ['127.0.0.1/32'], ports: [5432, echoPort, sinkPort] }] } },
  });

  t.test('psql runs real queries through the forward', async (t) => {
    if (!needTools(t, ['psql'])) return;
    const ctx = cliContext(client, []);
    const fwd = await startForward(ctx, 'fwd', parseForwardTarget('0:127.0.0.1:5432'));
    t.teardown(() => void fwd.close());
    // Async spawn: the forward runs in this process, so the event loop must stay free.
    const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn('psql', ['-h', '127.0.0.1', '-p', String(fwd.address.port), '-U', 'postgres', '-d', 'test', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
        '-c', 'SELECT sum(x) FROM generate_series(1, 1000) x', '-c', 'SELECT current_database()', '-c', "SELECT count(*) FROM (SELECT md5(i::text) FROM generate_series(1, 20000) i) s"], { env: { ...process.env, PGCONNECT_TIMEOUT: '10' } });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (status) => resolve({ status, stdout, stderr }));
    });
    t.equal(r.stderr, '');
    t.equal(r.stdout, '500500\ntest\n20000\n');
    t.equal(r.status, 0);
  });

  t.test('concurrent connections through an echo server, 5 MB each way, sha256 on both ends', async (t) => {
    const ctx = cliContext(client, []);
    const fwd = await startForward(ctx, 'fwd', parseForwardTarget(`0:127.0.0.1:${echoPort}`));
    t.teardown(() => void fwd.close());
    const data = randomBytes(5 * 1024 * 1024);
    const [a, b] = await Promise.all([exchange(fwd.address.port, data), exchange(fwd.address.port, Buffer.from('second connection at the same time'))]);
    t.equal(a.length, data.length);
    t.equal(sha(a), sha(data));
    t.equal(b.toString(), 'second connection at the same time');
    t.equal(ctx.err(), '');
  });

  t.test('half-close: 50 MB to a sink, whose sha256 answer is sent after our FIN, still arrives', async (t) => {
    const ctx = cliContext(client, []);
    const fwd = await startForward(ctx, 'fwd', parseForwardTarget(`0:127.0.0.1:${sinkPort}`));
    t.teardown(() => void fwd.close());
    const payload = randomBytes(50 * 1024 * 1024 + 7);
    const answer = await exchange(fwd.address.port, payload);
    t.equal(answer.toString(), sha(payload));
  });

  t.test('a destination outside the allowlist is refused, naming the rule and why', async (t) => {
    const ctx = cliContext(client, []);
    const fwd = await startForward(ctx, 'fwd', parseForwardTarget('0:127.0.0.1:1'));
    t.teardown(() => void fwd.close());
    const got = await exchange(fwd.address.port, Buffer.from('x'));
    t.equal(got.length, 0);
    t.equal(
      ctx.err(),
      `error UPLINK_ERR_FORWARD_DENIED: forward to 127.0.0.1:1 refused by operations.forward.allow: rule 1 "loopback-test": port 1 is not in [5432, ${echoPort}, ${sinkPort}]\n`,
    );
    const ctx2 = cliContext(client, []);
    const fwd2 = await startForward(ctx2, 'fwd', parseForwardTarget(`0:localhost.invalid:${echoPort}`));
    t.teardown(() => void fwd2.close());
    await exchange(fwd2.address.port, Buffer.from('x'));
    t.match(ctx2.err(), /^error UPLINK_ERR_FORWARD_CONNECT: cannot resolve "localhost\.invalid" on the agent: /);
  });

  t.test('--ttl closes the listener and the live connection, says so, exits 0', async (t) => {
    const ctx = cliContext(client, ['fwd', `0:127.0.0.1:${echoPort}`, '--ttl', '3s', '--json']);
    const running = forwardCommand.run(ctx);
    const first = await new Promise<string>((resolve) => ctx.stdout.once('data', (d: Buffer) => resolve(d.toString())));
    const info = JSON.parse(first) as { port: number; host: string; targetPort: number; expiresAt: string };
    t.equal(info.host, '127.0.0.1');
    t.equal(info.targetPort, echoPort);
    t.match(info.expiresAt, /^\d{4}-\d\d-\d\dT/);
    const sock = connect({ host: '127.0.0.1', port: info.port });
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    sock.on('error', () => {});
    sock.write('ping');
    const echoed = await new Promise<string>((r) => sock.once('data', (d: Buffer) => r(d.toString())));
    t.equal(echoed, 'ping');
    t.equal(await running, 0);
    await closed;
    t.equal(ctx.err(), 'uplink: forward expired (--ttl 3s): listener closed, 1 live connection closed\n');
    const refused = await new Promise<string>((r) => {
      const s = connect({ host: '127.0.0.1', port: info.port });
      s.on('connect', () => r('connected'));
      s.on('error', (e: NodeJS.ErrnoException) => r(e.code ?? 'error'));
    });
    t.equal(refused, 'ECONNREFUSED');
  });
});
