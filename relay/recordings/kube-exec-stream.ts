/**
 * Reading a `kubectl exec` or `kubectl attach` session for its recording.
 *
 * Such a session crosses the relay as the `kube-upgrade` op: the agent's `response` control
 * frame carries the API server's 101 and its headers, stdout frames carry the raw bytes the
 * API server sent on the upgraded connection, stdin frames the raw bytes kubectl sent. For
 * the WebSocket remote-command protocols kubectl speaks (v5.channel.k8s.io since 1.30, and
 * v4.channel.k8s.io), those bytes are WebSocket frames whose binary messages start with a
 * channel number: 0 stdin, 1 stdout, 2 stderr, 3 error (a Status object that also carries
 * the exit code), 4 resize (`{"Width":W,"Height":H}`), 255 close (v5's half-close).
 *
 * This module turns both byte streams into terminal events (output, input, resize, exit).
 * Anything it cannot read is reported as `broken` with the reason, and the recording is
 * then stored as incomplete with that reason, never silently partial: SPDY (kubectl before
 * 1.30, or with the WebSocket executor switched off), the older channel protocols, a
 * refused upgrade, a malformed or oversized frame. Port-forward is not a terminal session
 * and is not recorded at all (see {@link isKubeTerminalPath}).
 */

/** Subprotocols whose messages are decoded: binary messages with a channel byte and a Status on channel 3. */
const DECODED_PROTOCOLS = new Set(['v5.channel.k8s.io', 'v4.channel.k8s.io']);

const KUBE_CHANNEL = { stdin: 0, stdout: 1, stderr: 2, error: 3, resize: 4, close: 255 } as const;

const OPCODE = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

/** `.../pods/NAME/exec?...` and `.../pods/NAME/attach?...`: the upgrades that are terminal sessions. */
export function isKubeTerminalPath(path: string): boolean {
  return /^\/api\/v1\/namespaces\/[^/?]+\/pods\/[^/?]+\/(exec|attach)(\?|$)/.test(path);
}

export interface KubeExecEvents {
  output(data: Buffer): void;
  input(data: Buffer): void;
  resize(cols: number, rows: number): void;
  /** The Status on the error channel arrived: the exit code, or null when the Status gives none. */
  exit(code: number | null): void;
  /** The session cannot be read (further); the recording becomes incomplete with `reason`. */
  broken(reason: string): void;
}

/**
 * Incremental RFC 6455 frame reader for one direction. Delivers whole messages (fragments
 * joined), skips control frames, and reports malformed input once.
 */
class WebSocketReader {
  /** Bytes joined for the frame being read; `pending` holds later chunks until it can be read. */
  private buf: Buffer = Buffer.alloc(0);
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes `buf` must hold before the next frame can be read (its header, then all of it). */
  private need = 2;
  private fragments: Buffer[] = [];
  private fragmentsBytes = 0;
  private fragmentOpcode = 0;
  private failed = false;

  constructor(
    private readonly maxMessageBytes: number,
    private readonly onMessage: (opcode: number, payload: Buffer) => void,
    private readonly onError: (reason: string) => void,
  ) {}

  /**
   * Chunks are joined only once the frame they belong to is complete (or its header can be
   * read), so a large frame arriving in many chunks is copied once, not once per chunk.
   */
  write(chunk: Buffer): void {
    if (this.failed) return;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.buf.length + this.pendingBytes < this.need) return;
    this.buf = this.buf.length === 0 && this.pending.length === 1 ? chunk : Buffer.concat([this.buf, ...this.pending]);
    this.pending = [];
    this.pendingBytes = 0;
    this.need = 2;
    while (!this.failed && this.readFrame());
  }

  /** Not enough bytes yet: remember how many the frame needs. */
  private short(bytes: number): false {
    this.need = bytes;
    return false;
  }

  private fail(reason: string): false {
    this.failed = true;
    this.buf = Buffer.alloc(0);
    this.pending = [];
    this.fragments = [];
    this.onError(reason);
    return false;
  }

  /** Consume one complete frame from `buf`; false when more bytes are needed. */
  private readFrame(): boolean {
    const b = this.buf;
    if (b.length < 2) return this.short(2);
    const fin = (b[0]! & 0x80) !== 0;
    const opcode = b[0]! & 0x0f;
    const masked = (b[1]! & 0x80) !== 0;
    let len = b[1]! & 0x7f;
    let at = 2;
    if (len === 126) {
      if (b.length < 4) return this.short(4);
      len = b.readUInt16BE(2);
      at = 4;
    } else if (len === 127) {
      if (b.length < 10) return this.short(10);
      const big = b.readBigUInt64BE(2);
      if (big > BigInt(this.maxMessageBytes)) return this.fail(`a WebSocket frame of ${big} bytes exceeds ${this.maxMessageBytes}`);
      len = Number(big);
      at = 10;
    }
    if (len > this.maxMessageBytes) return this.fail(`a WebSocket frame of ${len} bytes exceeds ${this.maxMessageBytes}`);
    const maskAt = at;
    if (masked) at += 4;
    if (b.length < at + len) return this.short(at + len);
    const payload = Buffer.from(b.subarray(at, at + len));
    if (masked) for (let i = 0; i < payload.length; i++) payload[i]! ^= b[maskAt + (i & 3)]!;
    this.buf = b.subarray(at + len);

    if (opcode >= OPCODE.close) return true; // close, ping, pong: not part of the session's data
    if (opcode === OPCODE.continuation) {
      if (this.fragments.length === 0) return this.fail('a WebSocket continuation frame without a first fragment');
    } else if (this.fragments.length > 0) {
      return this.fail('a new WebSocket message began inside a fragmented one');
    } else {
      this.fragmentOpcode = opcode;
    }
    this.fragments.push(payload);
    this.fragmentsBytes += payload.length;
    if (this.fragmentsBytes > this.maxMessageBytes) return this.fail(`a WebSocket message exceeds ${this.maxMessageBytes} bytes`);
    if (!fin) return true;
    const message = this.fragments.length === 1 ? this.fragments[0]! : Buffer.concat(this.fragments);
    this.fragments = [];
    this.fragmentsBytes = 0;
    this.onMessage(this.fragmentOpcode, message);
    return true;
  }
}

/** The exit code in a remote-command Status: 0 for Success, the ExitCode cause for NonZeroExitCode. */
export function exitCodeFromStatus(text: string): number | null {
  let status: { status?: unknown; reason?: unknown; details?: { causes?: Array<{ reason?: unknown; message?: unknown }> } };
  try {
    status = JSON.parse(text) as typeof status;
  } catch {
    return null;
  }
  if (status.status === 'Success') return 0;
  if (status.reason !== 'NonZeroExitCode') return null;
  const cause = status.details?.causes?.find((c) => c.reason === 'ExitCode');
  const code = typeof cause?.message === 'string' && /^\d{1,3}$/.test(cause.message) ? Number(cause.message) : NaN;
  return Number.isInteger(code) && code <= 255 ? code : null;
}

/** A response header by name, in any letter case (the agent relays Node's lower-case names). */
function header(headers: Record<string, string | string[]>, name: string): string {
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  const v = key === undefined ? undefined : headers[key];
  return (Array.isArray(v) ? v[0] : v) ?? '';
}

/** One exec/attach session: feed it the agent's response and both byte streams. */
export class KubeExecStream {
  private protocol: string | undefined;
  private stopped = false;
  private exited = false;
  private readonly fromServer: WebSocketReader;
  private readonly fromClient: WebSocketReader;

  constructor(
    private readonly events: KubeExecEvents,
    maxMessageBytes: number,
  ) {
    this.fromServer = new WebSocketReader(maxMessageBytes, (op, m) => this.serverMessage(op, m), (r) => this.stop(`unreadable frames from the API server: ${r}`));
    this.fromClient = new WebSocketReader(maxMessageBytes, (op, m) => this.clientMessage(op, m), (r) => this.stop(`unreadable frames from kubectl: ${r}`));
  }

  private stop(reason: string): void {
    if (this.stopped) return;
    this.stopped = true;
    this.events.broken(reason);
  }

  /** The API server's answer to the upgrade, as the agent relayed it. */
  response(status: number, headers: Record<string, string | string[]>): void {
    if (this.stopped || this.protocol !== undefined) return;
    if (status !== 101) return this.stop(`the API server refused the session (HTTP ${status})`);
    const upgrade = header(headers, 'upgrade').toLowerCase();
    if (upgrade !== 'websocket') return this.stop(`the session uses ${upgrade || 'an unnamed protocol'}, which recordings do not decode (kubectl 1.30+ uses WebSocket)`);
    const protocol = header(headers, 'sec-websocket-protocol');
    if (!DECODED_PROTOCOLS.has(protocol)) return this.stop(`the session uses the subprotocol "${protocol}", which recordings do not decode (v4/v5.channel.k8s.io only)`);
    this.protocol = protocol;
  }

  /** Bytes from the API server (stdout frames of the op). */
  server(chunk: Buffer): void {
    if (this.stopped) return;
    if (this.protocol === undefined) return this.stop('upgraded bytes arrived before the API server answered');
    this.fromServer.write(chunk);
  }

  /** Bytes from kubectl (stdin frames of the op). */
  client(chunk: Buffer): void {
    // kubectl's first bytes may precede the 101 in the relay's view; they are its own frames.
    if (!this.stopped) this.fromClient.write(chunk);
  }

  private serverMessage(opcode: number, m: Buffer): void {
    if (this.stopped || opcode !== OPCODE.binary || m.length === 0) return;
    const channel = m[0];
    const data = m.subarray(1);
    if (channel === KUBE_CHANNEL.stdout || channel === KUBE_CHANNEL.stderr) {
      if (data.length) this.events.output(data);
    } else if (channel === KUBE_CHANNEL.error && data.length && !this.exited) {
      this.exited = true;
      this.events.exit(exitCodeFromStatus(data.toString('utf8')));
    }
  }

  private clientMessage(opcode: number, m: Buffer): void {
    if (this.stopped || opcode !== OPCODE.binary || m.length === 0) return;
    const channel = m[0];
    const data = m.subarray(1);
    if (channel === KUBE_CHANNEL.stdin) {
      if (data.length) this.events.input(data);
    } else if (channel === KUBE_CHANNEL.resize) {
      try {
        const size = JSON.parse(data.toString('utf8')) as { Width?: unknown; Height?: unknown };
        if (Number.isInteger(size.Width) && Number.isInteger(size.Height)) this.events.resize(size.Width as number, size.Height as number);
      } catch {
        // kubectl sends well-formed sizes; a bad one changes nothing in the recording.
      }
    }
  }
}
