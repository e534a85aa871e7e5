/**
 * One telemetry pull loop per connected agent: pull a batch over the tunnel, hand it to
 * the fanout (which resolves only when every sink accepted it), then acknowledge it to the
 * agent. Protocol: shared/telemetry/pull-protocol.ts.
 *
 * Contracts:
 * - End-to-end at-least-once: a batch is acknowledged only after `fanout.send` resolved. A
 *   crash or failure anywhere before the ack means the agent serves the same batch (same
 *   id, same records) to the next pull, so sinks may see it twice; record ids mark repeats.
 * - Backpressure: one batch delivered at a time per agent, and one read ahead: while batch
 *   N goes to the sinks, the pull of N+1 (`after: N`) is already on its way and parsed, so
 *   the agent's read, the transfer and the parse overlap the sinks' writes and the ack
 *   instead of following them. A slow sink delays `send`, which delays the next pull; a
 *   failing one makes the loop back off and throw the read-ahead batch away (it is pulled
 *   again after N, in order). Acks are sent in spool order. Relay memory per agent is
 *   bounded by two batches (`maxBatchBytes` plus one record of slack, each).
 * - An agent that ignores `after` (an older version) answers the same batch again; the
 *   loop notices the repeated id and stops reading ahead for that connection.
 * - The loop stops when the agent disconnects or the relay closes; the unacknowledged
 *   batches stay in the agent's spool.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http2';
import { Gauge, type Registry } from 'prom-client';
import { UplinkError, errorFromBody, toUplinkError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { AGENT_PATHS, OP_HEADERS, encodeSpec } from '../../shared/protocol.js';
import type { TelemetryRecord } from '../../shared/telemetry/record.js';
import { TELEMETRY_HEADERS, type PullSpec } from '../../shared/telemetry/pull-protocol.js';
import type { AgentSession } from '../agent-session.js';
import type { TelemetryFanout, TelemetryMetrics } from './fanout.js';
import type { ApplianceInfo } from './sink.js';
import type { TailHub } from './tail-hub.js';
import type { RelayTelemetryConfig } from './telemetry-config.js';

/** A pull body may exceed `maxBytes` by one record (the spool always returns at least one). */
export const PULL_BODY_SLACK_BYTES = 1024 * 1024 + 64 * 1024;

/** Who the relay says it is on pull and ack streams (the agent logs it). */
const PULL_ACTOR = 'uplink-relay/telemetry';

/** The loop's own gauge, beside the fanout's metrics. */
export class PullLoopMetrics {
  /** now − append time of the oldest record still in the agent's spool; 0 when it is empty. */
  readonly backlogAge: Gauge<'appliance'>;

  constructor(registry: Registry) {
    this.backlogAge = new Gauge({
      name: 'uplink_telemetry_spool_age_seconds',
      help: "Age of the oldest record not yet delivered from the agent's spool (telemetry lag), per appliance.",
      labelNames: ['appliance'],
      registers: [registry],
    });
  }
}

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** One pull's answer, checked and parsed. */
type Pulled =
  | { kind: 'empty' }
  | { kind: 'batch'; batchId: string; records: TelemetryRecord[]; bytes: number; dropped: number; oldestMs: number | undefined };

/** Everything one loop needs. */
export interface PullLoopDeps {
  session: AgentSession;
  /** Resolved once per connection (the store row and the agent's /v1/info). */
  appliance: () => Promise<ApplianceInfo>;
  fanout: TelemetryFanout;
  metrics: TelemetryMetrics;
  loopMetrics: PullLoopMetrics;
  tail: TailHub;
  cfg: RelayTelemetryConfig;
  log: Logger;
}

/** Pulls from one agent until stopped. */
export class PullLoop {
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  private failures = 0;
  /** Batches acknowledged by this loop (tests and logs). */
  acked = 0;
  /** Pulls from the start the agent answered with an empty spool: everything before them was acknowledged. */
  emptyPulls = 0;
  /** The pull of the batch after the one being delivered, when one is on its way. */
  private ahead: Promise<Pulled> | undefined;
  /** False once the agent showed it does not support `after` (it answered the same batch). */
  private readAhead = true;

  constructor(private readonly deps: PullLoopDeps) {}

  start(): void {
    this.running ??= this.loop();
  }

  /** Stop after the current step; the in-flight batch stays unacknowledged. Idempotent. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.running;
  }

  private async loop(): Promise<void> {
    const { cfg, log } = this.deps;
    while (!this.abort.signal.aborted && this.deps.session.isOpen) {
      let delay = 0;
      try {
        const more = await this.step();
        this.failures = 0;
        if (!more) delay = cfg.pullIntervalMs;
      } catch (err) {
        if (this.abort.signal.aborted) break;
        const e = toUplinkError(err);
        this.failures++;
        delay = Math.min(cfg.maxBackoffMs, cfg.pullIntervalMs * 2 ** Math.min(this.failures, 20));
        log.warn({ code: e.code, err: e.message, failures: this.failures, retryInMs: delay }, 'telemetry pull round failed; retrying');
      }
      if (delay > 0) await this.sleep(delay);
    }
  }

  /** One pull → send → ack round. Resolves true when a batch was delivered (pull again at once). */
  private async step(): Promise<boolean> {
    const { metrics, loopMetrics } = this.deps;
    const appliance = await this.deps.appliance();
    let batch = await this.takeAhead();
    if (!batch) {
      const fresh = await this.pull(undefined);
      if (fresh.kind === 'empty') {
        loopMetrics.backlogAge.set({ appliance: appliance.name }, 0);
        this.emptyPulls++;
        return false;
      }
      batch = fresh;
    }
    if (batch.oldestMs !== undefined) loopMetrics.backlogAge.set({ appliance: appliance.name }, Math.max(0, (Date.now() - batch.oldestMs) / 1000));
    if (this.readAhead) {
      const ahead = this.pull(batch.batchId);
      // Settled here so a failure is never unhandled; takeAhead() looks at the outcome.
      ahead.catch(() => undefined);
      this.ahead = ahead;
    }
    try {
      await this.deps.fanout.send({ appliance, records: batch.records, encodedBytes: batch.bytes });
      this.deps.tail.publish(appliance, batch.records);
      const ack = await this.request(AGENT_PATHS.telemetryAck, { batchId: batch.batchId }, 64 * 1024);
      if (ack.status !== 204 && ack.status !== 200) throw agentError(ack);
    } catch (err) {
      // Nothing after an undelivered batch may be delivered before it: drop the read-ahead.
      this.ahead = undefined;
      throw err;
    }
    // Counted only now: an unacknowledged pull reports the same drops again.
    metrics.agentDropped('agent_spool', batch.dropped);
    this.acked++;
    return true;
  }

  /**
   * The read-ahead batch, when it arrived intact; undefined means "pull from the start"
   * (it failed, found nothing yet, or the agent ignored `after`).
   */
  private async takeAhead(): Promise<Extract<Pulled, { kind: 'batch' }> | undefined> {
    const ahead = this.ahead;
    this.ahead = undefined;
    if (!ahead) return undefined;
    let pulled: Pulled;
    try {
      pulled = await ahead;
    } catch (err) {
      if (this.abort.signal.aborted) throw err;
      const e = toUplinkError(err);
      this.deps.log.debug({ code: e.code, err: e.message }, 'telemetry read-ahead failed; pulling from the start');
      return undefined;
    }
    return pulled.kind === 'batch' ? pulled : undefined;
  }

  /** Pull one batch (`after`: the one following that outstanding batch) and parse it. */
  private async pull(after: string | undefined): Promise<Pulled> {
    const { cfg, metrics } = this.deps;
    const spec: PullSpec = { maxRecords: cfg.maxBatchRecords, maxBytes: cfg.maxBatchBytes, ...(after !== undefined ? { after } : {}) };
    const reply = await this.request(AGENT_PATHS.telemetryPull, spec, cfg.maxBatchBytes + PULL_BODY_SLACK_BYTES);
    const dropped = headerInt(reply.headers, TELEMETRY_HEADERS.spoolDropped) ?? 0;
    if (reply.status === 204) {
      // The agent hands these over with an empty answer: count them now.
      metrics.agentDropped('agent_spool', dropped);
      return { kind: 'empty' };
    }
    if (reply.status !== 200) throw agentError(reply);
    const batchId = reply.headers[TELEMETRY_HEADERS.batchId];
    const count = headerInt(reply.headers, TELEMETRY_HEADERS.recordCount);
    if (typeof batchId !== 'string' || batchId.length === 0 || count === undefined) {
      throw new UplinkError('UPLINK_ERR_TELEMETRY_PULL_FAILED', 'agent answered a pull without batch id or record count');
    }
    if (after !== undefined && batchId === after) {
      // An agent without read-ahead answers the batch at its cursor: the one being delivered.
      this.readAhead = false;
      this.deps.log.info('the agent does not read ahead; pulling one batch at a time');
      throw new UplinkError('UPLINK_ERR_TELEMETRY_PULL_FAILED', 'agent answered a read-ahead pull with the same batch');
    }
    const oldestMs = headerInt(reply.headers, TELEMETRY_HEADERS.oldestMs);
    const records = markIds(parseRecords(reply.body, count, cfg.maxBatchRecords));
    return { kind: 'batch', batchId, records, bytes: reply.body.length, dropped, oldestMs };
  }

  /** One request/response on the agent's tunnel, body bounded by `maxBody`. */
  private request(path: string, spec: unknown, maxBody: number): Promise<Reply> {
    const { session, cfg } = this.deps;
    const stream = session.request(
      { ':path': path, [OP_HEADERS.spec]: encodeSpec(spec), [OP_HEADERS.actor]: PULL_ACTOR, [OP_HEADERS.requestId]: randomUUID() },
      'telemetry',
      { endStream: true },
    );
    return new Promise<Reply>((resolve, reject) => {
      let headers: IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      let size = 0;
      const fail = (err: UplinkError): void => {
        clearTimeout(timer);
        this.abort.signal.removeEventListener('abort', onAbort);
        stream.close();
        reject(err);
      };
      const onAbort = (): void => fail(new UplinkError('UPLINK_ERR_TELEMETRY_PULL_FAILED', 'pull loop stopped'));
      const timer = setTimeout(() => fail(new UplinkError('UPLINK_ERR_TELEMETRY_PULL_FAILED', `${path} took longer than ${cfg.requestTimeoutMs} ms`)), cfg.requestTimeoutMs);
      this.abort.signal.addEventListener('abort', onAbort, { once: true });
      stream.on('response', (h) => (headers = h));
      stream.on('data', (c: Buffer) => {
        size += c.length;
        if (size > maxBody) return fail(new UplinkError('UPLINK_ERR_TELEMETRY_PULL_FAILED', `${path} answer exceeds ${maxBody} bytes`));
        chunks.push(c);
      });
      stream.on('error', (err) => fail(new UplinkError('UPLINK_ERR_TELEMETRY_PULL_FAILED', `${path}: ${err.message}`, { cause: err })));
      stream.on('end', () => {
        clearTimeout(timer);
        this.abort.signal.removeEventListener('abort', onAbort);
        resolve({ status: Number(headers[':status'] ?? 0), headers, body: Buffer.concat(chunks) });
      });
    });
  }

  private sleep(ms: number): Promise<void> {
    const signal = this.abort.signal;
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done(): void {
        clearTimeout(t);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done, { once: true });
    });
  }
}

/** The attribute that carries a record's stable id to the sinks, so readers can drop repeats. */
export const RECORD_ID_ATTRIBUTE = 'uplink.record.id';

/**
 * Stamp each log record and span with its id. Metric points are left alone: a per-point
 * attribute would split every point into its own time series, and a point is already
 * unique by (stream, timestamp).
 */
function markIds(records: TelemetryRecord[]): TelemetryRecord[] {
  for (const r of records) {
    if (r.signal === 'metrics') continue;
    // The records were just parsed from the pull body: this loop owns them, so the
    // attribute list is extended in place rather than copied.
    const attrs = r.payload.attributes;
    if (!Array.isArray(attrs)) {
      r.payload.attributes = [{ key: RECORD_ID_ATTRIBUTE, value: { stringValue: r.id } }];
      continue;
    }
    if (!(attrs as Array<{ key?: unknown } | null>).some((a) => a?.key === RECORD_ID_ATTRIBUTE)) attrs.push({ key: RECORD_ID_ATTRIBUTE, value: { stringValue: r.id } });
  }
  return records;
}

function headerInt(headers: IncomingHttpHeaders, name: string): number | undefined {
  const v = headers[name];
  if (typeof v !== 'string' || !/^\d{1,15}$/.test(v)) return undefined;
  return Number(v);
}

function agentError(reply: Reply): UplinkError {
  let body: unknown;
  try {
    body = JSON.parse(reply.body.toString('utf8'));
  } catch {
    body = undefined;
  }
  return errorFromBody(body, reply.status);
}

/** The body must be a JSON array of exactly `count` records, `count` within our own limit. */
function parseRecords(body: Buffer, count: number, maxRecords: number): TelemetryRecord[] {
  if (count < 1 || count > maxRecords) throw new UplinkError('UPLINK_ERR_TELEMETRY_PULL_FAILED', `agent sent ${count} records; the pull asked for at most ${maxRecords}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    throw new UplinkError('UPLINK_ERR_TELEMETRY_PULL_FAILED', 'pull body is not JSON');
  }
  if (!Array.isArray(parsed) || parsed.length !== count) throw new UplinkError('UPLINK_ERR_TELEMETRY_PULL_FAILED', `pull body is not an array of ${count} records`);
  for (const r of parsed as Array<Partial<TelemetryRecord>>) {
    if (!r || typeof r.id !== 'string' || typeof r.signal !== 'string' || typeof r.timeUnixNano !== 'string' || typeof r.payload !== 'object') {
      throw new UplinkError('UPLINK_ERR_TELEMETRY_PULL_FAILED', 'pull body holds a malformed record');
    }
  }
  return parsed as TelemetryRecord[];
}
