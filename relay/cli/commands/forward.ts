/**
 * `uplink forward APPLIANCE [BIND:]LOCALPORT:HOST:PORT [--ttl D] [--json]`
 *
 * A local TCP listener (127.0.0.1 unless BIND says otherwise) whose every accepted
 * connection becomes one `forward` operation: the agent dials HOST:PORT (if the customer's
 * allowlist permits it) and bytes flow both ways, so psql, curl, redis-cli or anything TCP
 * works unchanged. Half-close is carried as a control `eof` frame each way (the WebSocket
 * itself cannot half-close). --ttl closes the listener and every live connection when it
 * expires and says so; the command then exits 0, as it does on Ctrl-C.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { UplinkError, toUplinkError } from '../../../shared/errors.js';
import { EXIT, parseCommand, str } from '../../../shared/cli-args.js';
import { parseDuration } from '../../../shared/duration.js';
import { CHANNEL, FrameDecoder, encodeControl, parseControl, writeFrame, type Frame } from '../../../shared/frames.js';
import type { Command, CliContext } from '../context.js';

/** Largest frame accepted from the relay; the agent sends socket-sized chunks. */
const FORWARD_MAX_FRAME_BYTES = 16 * 1024 * 1024;

export interface ForwardTarget {
  bind: string;
  localPort: number;
  host: string;
  port: number;
}

function portOf(text: string, what: string, min: number): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) < min || Number(text) > 65_535) throw new UplinkError('UPLINK_ERR_USAGE', `${what} must be a port number from ${min} to 65535, got "${text}"`);
  return Number(text);
}

/** Parse [BIND:]LOCALPORT:HOST:PORT; BIND and HOST may be [IPv6] in brackets. */
export function parseForwardTarget(text: string): ForwardTarget {
  const parts = text.match(/\[[^\]]*\]|[^:]+/g) ?? [];
  if (parts.join(':') !== text.replace(/:+$/, '') || (parts.length !== 3 && parts.length !== 4)) {
    throw new UplinkError('UPLINK_ERR_USAGE', `expected [BIND:]LOCALPORT:HOST:PORT, got "${text}"`);
  }
  const [bind, local, host, port] = parts.length === 4 ? parts : ['127.0.0.1', ...parts];
  return { bind: bind!.replace(/^\[(.*)\]$/, '$1'), localPort: portOf(local!, 'LOCALPORT', 0), host: host!.replace(/^\[(.*)\]$/, '$1'), port: portOf(port!, 'PORT', 1) };
}

/** Join one accepted local connection to one forward stream. */
function bridge(conn: Socket, duplex: Duplex, onError: (e: UplinkError) => void): void {
  // A forwarded connection is a byte stream: frames pass on in pieces as they arrive, uncopied.
  const decoder = new FrameDecoder({ maxFrameBytes: FORWARD_MAX_FRAME_BYTES, streamData: true });
  duplex.pipe(decoder);
  decoder.on('data', (frame: Frame) => {
    if (frame.channel === CHANNEL.stdout) {
      if (!conn.destroyed && !conn.write(frame.payload)) {
        decoder.pause();
        conn.once('drain', () => decoder.resume());
      }
    } else if (frame.channel === CHANNEL.control) {
      const msg = parseControl(frame.payload);
      if (msg.type === 'eof') conn.end();
      else if (msg.type === 'exit' && msg.reason) onError(new UplinkError('UPLINK_ERR_TUNNEL_CLOSED', `the agent closed the connection (${msg.reason})`));
      else if (msg.type === 'error') onError(new UplinkError('UPLINK_ERR_REMOTE', `${msg.code}: ${msg.message}`));
    }
  });
  decoder.on('error', (err) => {
    onError(toUplinkError(err));
    duplex.destroy();
  });
  conn.on('data', (chunk: Buffer) => {
    if (!writeFrame(duplex, CHANNEL.stdin, chunk)) {
      conn.pause();
      duplex.once('drain', () => conn.resume());
    }
  });
  conn.on('end', () => {
    if (!duplex.destroyed) duplex.write(encodeControl({ type: 'eof' }));
  });
  conn.on('error', () => {});
  duplex.on('error', () => {});
  // The agent ended the stream once the destination socket closed both ways.
  duplex.on('close', () => conn.destroy());
  conn.on('close', () => duplex.destroy());
  conn.resume();
}

/** A running forward: the listener and its live connections. */
export interface ForwardHandle {
  address: AddressInfo;
  /** Close the listener and every live connection; returns how many connections were open. */
  close(): number;
}

/** Listen and bridge each accepted connection to a `forward` operation; errors go to stderr. */
export async function startForward(ctx: CliContext, appliance: string, target: ForwardTarget): Promise<ForwardHandle> {
  const client = ctx.client();
  const live = new Set<Socket>();
  // pauseOnConnect: nothing is read from the local client until the agent has connected.
  const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (conn) => {
    live.add(conn);
    conn.once('close', () => live.delete(conn));
    client.openOp(appliance, 'forward', { host: target.host, port: target.port }).then(
      (duplex) => (conn.destroyed ? duplex.destroy() : bridge(conn, duplex, (e) => ctx.io.stderr.write(`error ${e.code}: ${e.message}\n`))),
      (err: unknown) => {
        const e = toUplinkError(err);
        ctx.io.stderr.write(`error ${e.code}: ${e.message}\n`);
        conn.destroy();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new UplinkError('UPLINK_ERR_USAGE', `cannot listen on ${target.bind}:${target.localPort}: ${err.code ?? err.message}`)));
    server.listen(target.localPort, target.bind, () => resolve());
  });
  return {
    address: server.address() as AddressInfo,
    close() {
      const n = live.size;
      server.close();
      for (const c of live) c.destroy();
      return n;
    },
  };
}

export const forwardCommand: Command = {
  words: ['forward'],
  summary: 'forward a local TCP port to HOST:PORT reached from the appliance (psql, curl, …)',
  usage: `Usage: uplink forward APPLIANCE [BIND:]LOCALPORT:HOST:PORT [--ttl D] [--json]
  LOCALPORT 0   pick any free port (the chosen one is printed)
  BIND          local address to listen on (default 127.0.0.1)
  --ttl D       close the listener and every connection after D (e.g. 30m); default none
  --json        print the listening address as one JSON line
The agent dials HOST:PORT only if the customer's operations.forward.allow permits it.`,
  async run(ctx: CliContext) {
    const { values, positionals } = parseCommand(ctx.argv, { ttl: { type: 'string' }, json: { type: 'boolean' } });
    const [appliance, spec, ...rest] = positionals;
    if (!appliance || !spec || rest.length) throw new UplinkError('UPLINK_ERR_USAGE', 'forward needs APPLIANCE and [BIND:]LOCALPORT:HOST:PORT');
    const target = parseForwardTarget(spec);
    const ttlText = str(values.ttl);
    const ttlMs = ttlText ? parseDuration(ttlText, '--ttl') : undefined;
    const handle = await startForward(ctx, appliance, target);
    const addr = handle.address;
    const local = `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
    const expiresAt = ttlMs !== undefined ? new Date(Date.now() + ttlMs) : undefined;
    if (values.json) {
      ctx.io.stdout.write(`${JSON.stringify({ listen: local, address: addr.address, port: addr.port, host: target.host, targetPort: target.port, appliance, expiresAt: expiresAt?.toISOString() ?? null })}\n`);
    } else {
      ctx.io.stdout.write(`Forwarding ${local} -> ${target.host}:${target.port} via ${appliance} (${expiresAt ? `expires at ${expiresAt.toISOString()}` : 'no expiry; Ctrl-C to stop'})\n`);
    }

    return new Promise<number>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const shutdown = (message: string): void => {
        if (timer) clearTimeout(timer);
        process.off('SIGINT', onSigint);
        process.off('SIGTERM', onSigint);
        const n = handle.close();
        ctx.io.stderr.write(`${message}: listener closed, ${n} live connection${n === 1 ? '' : 's'} closed\n`);
        resolve(EXIT.ok);
      };
      const onSigint = (): void => shutdown('uplink: forward stopped');
      process.on('SIGINT', onSigint);
      process.on('SIGTERM', onSigint);
      if (ttlMs !== undefined) timer = setTimeout(() => shutdown(`uplink: forward expired (--ttl ${ttlText})`), ttlMs);
    });
  },
};
