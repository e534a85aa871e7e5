/**
 * The agent's telemetry capability: opens the durable spool in `<stateDir>/spool`, starts
 * the optional OTLP receiver and the collectors (the agent's own health always; CloudWatch
 * logs and metrics only in AWS mode with SteadyState enabled and `telemetry.instanceId` set,
 * under the SteadyState role, for resources tagged with that instance id), and serves the
 * relay's pulls and acks (shared/telemetry/pull-protocol.ts), including read-ahead pulls.
 *
 * Contracts:
 * - A pull answers with the spool's stored JSON array as the body, untouched: the agent
 *   never parses a batch it sends (the throughput target is ≥ 50,000 records/s).
 * - Records lost by the spool (full: oldest segment deleted; corrupt or torn bytes) are
 *   never silent: counted in the health metrics, logged by the spool, written into the
 *   spool as an `agent` log event, and reported to the relay in `x-uplink-spool-dropped`.
 *   The count reported with a batch is forgotten only when that batch is acknowledged,
 *   so a relay crash between pull and ack reports it again rather than losing it.
 */
import { join } from 'node:path';
import type { ServerHttp2Stream } from 'node:http2';
import { UplinkError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { AGENT_PATHS } from '../../shared/protocol.js';
import type { TelemetryRecord } from '../../shared/telemetry/record.js';
import { PULL_LIMITS, TELEMETRY_HEADERS, type AckSpec, type PullSpec } from '../../shared/telemetry/pull-protocol.js';
import type { Agent } from '../agent.js';
import type { AgentCapability } from '../capabilities.js';
import { Spool, SPOOL_DEFAULTS, type SpoolDropEvent } from './spool.js';
import { FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES } from './spool-segment.js';
import { startOtlpReceiver, type OtlpReceiver } from './otlp-receiver.js';
import { CollectorScheduler, msToUnixNano, recordId, type Collector, type Emit } from './collector.js';
import { HealthCollector, HealthMetrics } from './health-metrics.js';
import { CheckpointStore, checkpointDir } from './checkpoint-store.js';
import { CloudWatchLogsCollector } from './cloudwatch-logs.js';
import { CloudWatchMetricsCollector } from './cloudwatch-metrics.js';

/** Where the spool lives inside the agent's state directory. */
export function spoolDir(stateDir: string): string {
  return join(stateDir, 'spool');
}

/** Validate a pull spec: two positive integers within PULL_LIMITS, and an optional batch id to read after. */
function parsePullSpec(spec: unknown): PullSpec {
  const s = (spec ?? {}) as Record<string, unknown>;
  const int = (key: keyof PullSpec, max: number): number => {
    const v = s[key];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) {
      throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `telemetry pull: ${key} must be an integer in [1, ${max}]`);
    }
    return v;
  };
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'telemetry pull needs a spec {maxRecords, maxBytes}');
  const pull: PullSpec = { maxRecords: int('maxRecords', PULL_LIMITS.maxRecords), maxBytes: int('maxBytes', PULL_LIMITS.maxBytes) };
  if (s.after !== undefined) {
    if (typeof s.after !== 'string' || s.after.length === 0 || s.after.length > PULL_LIMITS.maxBatchIdLength) {
      throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `telemetry pull: after must be a batch id of 1-${PULL_LIMITS.maxBatchIdLength} characters`);
    }
    pull.after = s.after;
  }
  return pull;
}

function parseAckSpec(spec: unknown): AckSpec {
  const id = (spec as Record<string, unknown> | undefined)?.batchId;
  if (typeof id !== 'string' || id.length === 0 || id.length > PULL_LIMITS.maxBatchIdLength) {
    throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `telemetry ack needs {batchId} of 1-${PULL_LIMITS.maxBatchIdLength} characters`);
  }
  return { batchId: id };
}

/** One running telemetry pipeline of one agent. */
export class TelemetryService {
  private receiver: OtlpReceiver | undefined;
  private scheduler: CollectorScheduler | undefined;
  /** Dropped records not yet reported to the relay in an acknowledged exchange. */
  private unreportedDrops = 0;
  /** Drops reported with each outstanding batch id (at most two: one read ahead), forgotten on ack. */
  private readonly reportedWith = new Map<string, number>();
  private dropEvents = 0;
  private stopped = false;
  /** Collectors holding AWS SDK clients, released on stop. */
  private readonly awsClients: Array<{ close(): void }> = [];

  private constructor(
    private readonly agent: Agent,
    readonly spool: Spool,
    readonly health: HealthMetrics,
    private readonly log: Logger,
  ) {}

  /** Open the spool, start receiver and collectors, register the pull and ack handlers. */
  static async start(agent: Agent): Promise<TelemetryService> {
    const cfg = agent.cfg.telemetry;
    const log = agent.log.child({ component: 'telemetry' });
    const health = new HealthMetrics();
    let service: TelemetryService | undefined;
    const onDrop = (e: SpoolDropEvent): void => service?.onDrop(e);
    const spool = await Spool.open({
      dir: spoolDir(agent.cfg.stateDir),
      maxBytes: cfg.spool.maxBytes,
      segmentBytes: cfg.spool.segmentBytes,
      fsync: cfg.spool.fsync,
      // A record must fit in one segment; small test spools get a matching record cap.
      maxRecordBytes: Math.min(SPOOL_DEFAULTS.maxRecordBytes, cfg.spool.segmentBytes - FRAME_HEADER_BYTES - SEGMENT_HEADER_BYTES),
      logger: log,
      onDrop,
    });
    service = new TelemetryService(agent, spool, health, log);
    // Drops found while recovering at open happened before `service` existed: report them too.
    const recovered = spool.stats();
    service.unreportedDrops += recovered.droppedRecords;
    try {
      await service.startSources();
    } catch (err) {
      await service.stop();
      throw err;
    }
    agent.tunnel.handle(AGENT_PATHS.telemetryPull, (stream, ctx) => service.pull(stream, ctx.spec));
    agent.tunnel.handle(AGENT_PATHS.telemetryAck, (stream, ctx) => service.ack(stream, ctx.spec));
    return service;
  }

  private async startSources(): Promise<void> {
    const cfg = this.agent.cfg.telemetry;
    const emit: Emit = async (records) => {
      await this.spool.append(records);
      this.health.setSpoolBytes(this.spool.stats().bytes);
    };
    if (cfg.otlpReceiver.enabled) {
      this.receiver = await startOtlpReceiver({ host: cfg.otlpReceiver.host, port: cfg.otlpReceiver.port, maxBodyBytes: cfg.otlpReceiver.maxBodyBytes, spool: this.spool, logger: this.log });
      this.log.info({ url: this.receiver.url }, 'OTLP receiver listening');
    }
    const collectors: Collector[] = [new HealthCollector({ metrics: this.health, emit, intervalSeconds: cfg.health.intervalSeconds })];
    const aws = this.agent.cfg.aws;
    const wantsCloudWatch = cfg.cloudwatchLogs.enabled || cfg.cloudwatchMetrics.enabled;
    if (this.agent.phases.mode === 'aws' && aws && aws.steadyState.enabled && wantsCloudWatch) {
      const instanceId = cfg.instanceId;
      if (instanceId === undefined) {
        // Guessing would be worse: the appliance id (apl_…) is on no customer resource, and a
        // wrong tag value would read nothing while looking healthy.
        this.log.error('telemetry.instanceId (UPLINK_INSTANCE_ID) is not set: the CloudWatch collectors cannot tell which resources belong to this appliance and stay off');
      } else {
        // Collectors act only under the SteadyState role; the provider re-checks approval on every assume.
        const access = { credentials: this.agent.phases.internalCredentials('steadyState'), region: aws.region, ...(aws.endpoint ? { endpoint: aws.endpoint } : {}) };
        const checkpoints = new CheckpointStore(checkpointDir(this.agent.cfg.stateDir));
        const cloud: Array<CloudWatchLogsCollector | CloudWatchMetricsCollector> = [];
        if (cfg.cloudwatchLogs.enabled) cloud.push(new CloudWatchLogsCollector({ aws: access, instanceId, config: cfg.cloudwatchLogs, checkpoints, emit, logger: this.log }));
        if (cfg.cloudwatchMetrics.enabled) cloud.push(new CloudWatchMetricsCollector({ aws: access, instanceId, config: cfg.cloudwatchMetrics, checkpoints, emit, logger: this.log }));
        collectors.push(...cloud);
        this.awsClients.push(...cloud);
      }
    }
    this.scheduler = new CollectorScheduler(collectors, { logger: this.log, onError: (name) => this.health.collectorError(name) });
    this.scheduler.start();
  }

  /** Called by the spool (inside its queue): count, and leave a trace in the stream itself. */
  private onDrop(e: SpoolDropEvent): void {
    this.health.addSpoolDrops(e.records);
    this.unreportedDrops += e.records;
    const now = Date.now();
    const event: TelemetryRecord = {
      id: recordId(`spool-drop:${this.health.bootId}:${++this.dropEvents}`),
      signal: 'logs',
      timeUnixNano: msToUnixNano(now),
      source: 'agent',
      resource: {},
      scope: 'uplink-agent',
      payload: {
        timeUnixNano: msToUnixNano(now),
        severityNumber: 13,
        severityText: 'WARN',
        body: { stringValue: `telemetry spool lost data (${e.reason}): ${e.records} records, ${e.bytes} bytes` },
        attributes: [
          { key: 'uplink.event', value: { stringValue: 'spool.dropped' } },
          { key: 'uplink.spool.drop.reason', value: { stringValue: e.reason } },
          { key: 'uplink.spool.drop.records', value: { intValue: String(e.records) } },
        ],
      },
    };
    // Not awaited: this runs inside the spool's queue, and the append queues behind it.
    void this.spool.append([event]).catch((err) => this.log.warn({ err: String(err) }, 'cannot spool the drop event'));
  }

  private async pull(stream: ServerHttp2Stream, rawSpec: unknown): Promise<void> {
    const spec = parsePullSpec(rawSpec);
    this.health.setConnected(true);
    const batch = await this.spool.read(spec.maxRecords, spec.maxBytes, spec.after);
    // The relay gave up meanwhile (timeout, disconnect, shutdown): it pulls this batch again.
    if (stream.destroyed) return;
    let dropped: number;
    if (spec.after === undefined) {
      // A pull from the start: whatever was reported with batches handed out before is
      // reported again with this one (those batches will be pulled again).
      this.reportedWith.clear();
      dropped = this.unreportedDrops;
    } else {
      // Read ahead: only drops not already reported with an outstanding batch.
      let attached = 0;
      for (const [id, n] of this.reportedWith) if (id !== batch.batchId) attached += n;
      dropped = Math.max(0, this.unreportedDrops - attached);
    }
    if (batch.count === 0) {
      // Nothing to acknowledge: the relay counts these at once, so they are handed over now.
      this.unreportedDrops -= dropped;
      stream.respond({ ':status': 204, [TELEMETRY_HEADERS.spoolDropped]: String(dropped) }, { endStream: true });
      return;
    }
    this.reportedWith.set(batch.batchId, dropped);
    stream.respond({
      ':status': 200,
      'content-type': 'application/json',
      'content-length': String(batch.encoded.length),
      [TELEMETRY_HEADERS.batchId]: batch.batchId,
      [TELEMETRY_HEADERS.recordCount]: String(batch.count),
      [TELEMETRY_HEADERS.spoolDropped]: String(dropped),
      [TELEMETRY_HEADERS.oldestMs]: String(batch.oldestAppendedAtMs ?? Date.now()),
    });
    stream.end(batch.encoded);
  }

  private async ack(stream: ServerHttp2Stream, rawSpec: unknown): Promise<void> {
    const { batchId } = parseAckSpec(rawSpec);
    await this.spool.ack(batchId);
    this.health.setSpoolBytes(this.spool.stats().bytes);
    // Acknowledged durably even if the relay stopped waiting (its next ack of this id is a
    // no-op); it then never saw this answer, so the drops reported with the batch are kept
    // and reported again with the next pull from the start.
    if (stream.destroyed) return;
    const reported = this.reportedWith.get(batchId) ?? 0;
    this.reportedWith.delete(batchId);
    this.unreportedDrops = Math.max(0, this.unreportedDrops - reported);
    stream.respond({ ':status': 204 }, { endStream: true });
  }

  /** Stop collectors and the receiver, then close the spool. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.receiver?.close().catch((err) => this.log.warn({ err: String(err) }, 'OTLP receiver close failed'));
    await this.scheduler?.stop().catch((err) => this.log.warn({ err: String(err) }, 'collector stop failed'));
    for (const c of this.awsClients) c.close();
    await this.spool.close();
    this.health.close();
  }
}

/** The agent capability registered in agent/capabilities.ts. */
export function telemetryCapability(): AgentCapability & { service?: TelemetryService } {
  const cap: AgentCapability & { service?: TelemetryService } = {
    name: 'telemetry',
    async start(agent) {
      cap.service = await TelemetryService.start(agent);
    },
    async stop() {
      await cap.service?.stop();
    },
  };
  return cap;
}
