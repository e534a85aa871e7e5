/**
 * The recording capability: every exec, shell and `kubectl exec`/`attach` session that
 * passes through the ops bridge is written to the store as asciicast v2 (sessions +
 * session_chunks rows). kubectl's sessions are read by kube-exec-stream.ts.
 *
 * How: an OpsBridge tap decodes the agent→CLI channel frames (stdout and stderr become "o"
 * events, the exit control frame ends the session) and the CLI→agent frames (resize
 * becomes "r", stdin becomes "i" when `recordings.recordInput` is on). The asciicast text
 * goes through a Writable that cuts it into `chunkBytes` rows as it arrives, so a session
 * of any length costs one chunk of memory.
 *
 * A recording is never silently missing or silently partial: the row is created as
 * incomplete at start; it becomes complete only when the agent's exit frame was seen and
 * every chunk was stored. A stream that ends without an exit frame, a relay shutting down
 * mid-session and a store failure each leave complete=false with the reason, and the
 * asciicast end marker says the same.
 */
import { Writable } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { CHANNEL, FrameDecoder, parseControl, type Frame } from '../../shared/frames.js';
import type { Logger } from '../../shared/logger.js';
import type { RelayConfig } from '../config.js';
import type { OpStartInfo, OpTap } from '../ops-bridge.js';
import type { RelayCapability } from '../capabilities.js';
import { SessionsRepo, type SessionKind } from '../store/sessions-repo.js';
import { AsciicastWriter } from './asciicast.js';
import { KubeExecStream, isKubeTerminalPath } from './kube-exec-stream.js';
import { sessionRoutes } from './session-routes.js';

/** Ops whose streams are channel frames and therefore recordable, by op name. */
const RECORDED_OPS: Record<string, SessionKind> = { exec: 'exec', shell: 'shell' };

/** What kind of recording an op gets: exec, shell, or kube-exec for kubectl exec/attach (not port-forward). */
function recordedKind(info: OpStartInfo): SessionKind | undefined {
  if (info.op.name === 'kube-upgrade') {
    const path = (info.spec as { path?: unknown } | null)?.path;
    return typeof path === 'string' && isKubeTerminalPath(path) ? 'kube-exec' : undefined;
  }
  return RECORDED_OPS[info.op.name];
}

/** Window size recorded for exec, which has no terminal. */
const EXEC_WINDOW = { cols: 80, rows: 24 };
/** Most window dimension the writer accepts; larger sizes from a spec are clamped. */
const MAX_DIMENSION = 1000;

export const RELAY_SHUTDOWN_REASON = 'the relay shut down mid-session';
export const NO_EXIT_REASON = 'the stream ended without an exit status';

type RecordingsConfig = RelayConfig['recordings'];

/** Cuts the asciicast text into rows of about `chunkBytes`, inserted in order. */
class ChunkSink extends Writable {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private seq = 0;

  constructor(
    private readonly repo: SessionsRepo,
    private readonly id: string,
    private readonly created: Promise<void>,
    private readonly chunkBytes: number,
  ) {
    super();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes < this.chunkBytes) return done();
    this.flush().then(() => done(), done);
  }

  override _final(done: (err?: Error | null) => void): void {
    this.flush().then(() => done(), done);
  }

  private async flush(): Promise<void> {
    await this.created;
    if (this.pendingBytes === 0) return;
    const data = Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    await this.repo.appendChunk(this.id, this.seq++, data);
  }
}

function dimension(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 ? Math.min(v, MAX_DIMENSION) : fallback;
}

/** One session being recorded. */
class Recording implements OpTap {
  readonly id = `ses_${randomUUID()}`;
  private readonly writer: AsciicastWriter;
  private readonly created: Promise<void>;
  private readonly fromAgent: FrameDecoder;
  private readonly fromClient: FrameDecoder;
  private readonly sink: ChunkSink;
  /** For kube-exec: the WebSocket remote-command reader between the frames and the writer. */
  private readonly kube: KubeExecStream | undefined;
  private exitCode: number | null = null;
  private exitSeen = false;
  private broken: string | undefined;
  private ended: Promise<void> | undefined;

  constructor(
    info: OpStartInfo,
    kind: SessionKind,
    private readonly repo: SessionsRepo,
    cfg: RecordingsConfig,
    maxFrameBytes: number,
    private readonly log: Logger,
    private readonly onDone: (r: Recording) => void,
  ) {
    const spec = (info.spec ?? {}) as Record<string, unknown>;
    const cols = kind === 'shell' ? dimension(spec.cols, EXEC_WINDOW.cols) : EXEC_WINDOW.cols;
    const rows = kind === 'shell' ? dimension(spec.rows, EXEC_WINDOW.rows) : EXEC_WINDOW.rows;
    this.created = repo.create({ id: this.id, applianceId: info.applianceId, kind, actor: info.token.name, requestId: info.requestId, width: cols, height: rows, startedAt: new Date() });
    this.created.catch(() => {}); // observed through the sink
    const sink = new ChunkSink(repo, this.id, this.created, cfg.chunkBytes);
    this.sink = sink;
    this.writer = new AsciicastWriter(sink, {
      width: cols,
      height: rows,
      title: `${kind} on ${info.applianceName} by ${info.token.name}`,
      ...(typeof spec.term === 'string' ? { env: { TERM: spec.term } } : {}),
    }, { recordInput: cfg.recordInput });
    this.kube =
      kind === 'kube-exec'
        ? new KubeExecStream(
            {
              output: (b) => void this.writer.output(b),
              input: (b) => void this.writer.input(b),
              resize: (c, r) => this.resize(c, r),
              exit: (code) => {
                this.exitSeen = true;
                this.exitCode = code;
              },
              broken: (reason) => void (this.broken ??= reason),
            },
            maxFrameBytes,
          )
        : undefined;
    this.fromAgent = new FrameDecoder({ maxFrameBytes });
    this.fromClient = new FrameDecoder({ maxFrameBytes });
    this.fromAgent.on('data', (f: Frame) => this.agentFrame(f));
    this.fromClient.on('data', (f: Frame) => this.clientFrame(f));
    this.fromAgent.on('error', (err) => (this.broken ??= `unreadable agent frames: ${err.message}`));
    this.fromClient.on('error', (err) => (this.broken ??= `unreadable client frames: ${err.message}`));
  }

  /** Mirror the agent's output; while the store is behind, hold the session until it caught up. */
  onAgentData(chunk: Buffer): Promise<void> | void {
    if (this.ended || this.fromAgent.destroyed) return undefined;
    this.fromAgent.write(chunk);
    return this.sink.writableNeedDrain ? this.sinkDrained() : undefined;
  }

  /** Resolves on 'drain', or when the sink can no longer drain (ended, failed, destroyed). */
  private sinkDrained(): Promise<void> {
    const sink = this.sink;
    return new Promise((resolve) => {
      const done = (): void => {
        sink.off('drain', done).off('close', done).off('error', done).off('finish', done);
        resolve();
      };
      sink.on('drain', done).on('close', done).on('error', done).on('finish', done);
    });
  }

  onClientData(chunk: Buffer): void {
    if (!this.ended && !this.fromClient.destroyed) this.fromClient.write(chunk);
  }

  onEnd(outcome: { error?: { message: string } }): void {
    void this.end(this.exitSeen && !this.broken ? undefined : (this.broken ?? outcome.error?.message ?? NO_EXIT_REASON));
  }

  private agentFrame(f: Frame): void {
    if (this.ended) return;
    if (this.kube) return this.kubeAgentFrame(this.kube, f);
    if (f.channel === CHANNEL.stdout || f.channel === CHANNEL.stderr) {
      this.writer.output(f.payload);
    } else if (f.channel === CHANNEL.control) {
      try {
        const msg = parseControl(f.payload);
        if (msg.type === 'exit') {
          this.exitSeen = true;
          this.exitCode = msg.code;
        }
      } catch {
        this.broken ??= 'unreadable control frame from the agent';
      }
    }
  }

  /** kube-upgrade: `response` (the 101), then the API server's bytes; `error` when the agent's side failed. */
  private kubeAgentFrame(kube: KubeExecStream, f: Frame): void {
    if (f.channel === CHANNEL.stdout) return kube.server(f.payload);
    if (f.channel !== CHANNEL.control) return;
    try {
      const msg = parseControl(f.payload);
      if (msg.type === 'response') kube.response(msg.status, msg.headers);
      else if (msg.type === 'error') this.broken ??= `the agent reported ${msg.code}: ${msg.message}`;
    } catch {
      this.broken ??= 'unreadable control frame from the agent';
    }
  }

  private clientFrame(f: Frame): void {
    if (this.ended) return;
    if (this.kube) {
      if (f.channel === CHANNEL.stdin) this.kube.client(f.payload);
      return;
    }
    if (f.channel === CHANNEL.stdin) {
      this.writer.input(f.payload);
    } else if (f.channel === CHANNEL.control) {
      try {
        const msg = parseControl(f.payload);
        if (msg.type === 'resize') this.resize(msg.cols, msg.rows);
      } catch {
        // The agent refuses malformed input itself; the recording only mirrors it.
      }
    }
  }

  /** A resize within 1..MAX_DIMENSION both ways is recorded; others are ignored. */
  private resize(cols: number, rows: number): void {
    if (cols >= 1 && rows >= 1 && cols <= MAX_DIMENSION && rows <= MAX_DIMENSION) this.writer.resize(cols, rows);
  }

  /** Finish once: `reason` undefined means complete. Idempotent. */
  end(reason: string | undefined): Promise<void> {
    this.ended ??= this.doEnd(reason);
    return this.ended;
  }

  private async doEnd(reason: string | undefined): Promise<void> {
    let status = reason === undefined ? { complete: true } : { complete: false, reason };
    try {
      await this.writer.end(status);
      await this.created;
    } catch (err) {
      status = { complete: false, reason: `recording could not be stored: ${(err as Error).message}` };
      this.log.error({ session: this.id, err: (err as Error).message }, 'recording write failed');
    }
    try {
      await this.repo.finish(this.id, { endedAt: new Date(), exitCode: this.exitCode, ...status });
    } catch (err) {
      this.log.error({ session: this.id, err: (err as Error).message }, 'cannot finish recording row');
    }
    this.onDone(this);
  }
}

/** The relay capability: a tap on the ops bridge, and the shutdown rule. */
export function recordingsCapability(): RelayCapability {
  const active = new Set<Recording>();
  return {
    name: 'recordings',
    start(relay) {
      const cfg = relay.cfg.recordings;
      const repo = new SessionsRepo(relay.store.db);
      // Past recordings stay readable when recording new ones is switched off.
      relay.extensions.routes.push(...sessionRoutes(relay.store, repo));
      if (!cfg.enabled) return;
      relay.ops.addTap((info) => {
        const kind = recordedKind(info);
        if (!kind) return undefined;
        const rec = new Recording(info, kind, repo, cfg, relay.cfg.limits.maxFrameBytes, relay.log.child({ request: info.requestId }), (r) => active.delete(r));
        active.add(rec);
        return rec;
      });
    },
    // Runs before the gateway drains: sessions still open are marked incomplete while the
    // store is still there; what they send afterwards is not recorded.
    async stop() {
      await Promise.all([...active].map((r) => r.end(RELAY_SHUTDOWN_REASON)));
    },
  };
}
