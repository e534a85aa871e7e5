/**
 * CloudWatch metrics collector: finds the resources tagged `<tagKey>=<instance-id>` (RDS
 * instances, Lambda functions, EKS clusters, Application Load Balancers) through the
 * tagging API, maps each ARN to its CloudWatch dimension, and polls the configured metrics
 * with GetMetricData under the SteadyState role. Each data point becomes one OTLP gauge
 * Metric record.
 *
 * Progress is one number: the end of the last period collected (`lastEnd`, aligned to the
 * period). A run reads [lastEnd, alignedNow - settle) in windows small enough that one
 * window's records fit one emit(), and advances `lastEnd` only after that emit resolved.
 * A crash repeats at most one window; record ids are stable (sha256 over namespace,
 * metric, dimension, statistic, period and timestamp), so the repeat is droppable.
 * After an outage longer than `maxLookbackSeconds` the older periods are skipped (logged):
 * bounded catch-up work is worth more than completeness of hours-old gauges.
 */
import { CloudWatchClient, GetMetricDataCommand, type MetricDataQuery } from '@aws-sdk/client-cloudwatch';
import { ResourceGroupsTaggingAPIClient } from '@aws-sdk/client-resource-groups-tagging-api';
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import type { TelemetryRecord } from '../../shared/telemetry/record.js';
import type { CheckpointStore } from './checkpoint-store.js';
import { callAws, listTaggedArns, msToUnixNano, recordId, type AwsAccess, type AwsRetryOptions, type CollectResult, type Collector, type Emit } from './collector.js';
import type { CloudWatchMetricsConfig, MetricResourceKind, MetricSpec } from './config.js';

export const CLOUDWATCH_METRICS_COLLECTOR = 'cloudwatch-metrics';

/** Limits on what AWS returns, beyond those in the config. */
export const CLOUDWATCH_METRICS_LIMITS = {
  /** Pages of one GetMetricData request followed per window (each holds up to 100,800 points). */
  maxPagesPerRequest: 20,
} as const;

export type CloudWatchMetricsLimits = { -readonly [K in keyof typeof CLOUDWATCH_METRICS_LIMITS]: number };

/** Tagging API resource type and CloudWatch dimension for each resource kind. */
const KINDS: Record<MetricResourceKind, { resourceType: string; dimension: string; arn: RegExp }> = {
  'rds-db': { resourceType: 'rds:db', dimension: 'DBInstanceIdentifier', arn: /^arn:[^:]+:rds:[^:]*:[^:]*:db:([^:]+)$/ },
  // A qualified ARN (version or alias suffix) still reports under FunctionName.
  'lambda-function': { resourceType: 'lambda:function', dimension: 'FunctionName', arn: /^arn:[^:]+:lambda:[^:]*:[^:]*:function:([^:]+)(?::[^:]+)?$/ },
  'eks-cluster': { resourceType: 'eks:cluster', dimension: 'ClusterName', arn: /^arn:[^:]+:eks:[^:]*:[^:]*:cluster\/([^/]+)$/ },
  // Only Application Load Balancers (`app/`); their dimension is the ARN suffix `app/<name>/<id>`.
  alb: { resourceType: 'elasticloadbalancing:loadbalancer', dimension: 'LoadBalancer', arn: /^arn:[^:]+:elasticloadbalancing:[^:]*:[^:]*:loadbalancer\/(app\/[^/]+\/[^/]+)$/ },
};

/** A tagged resource as CloudWatch knows it. */
export interface MetricResource {
  arn: string;
  kind: MetricResourceKind;
  dimension: { Name: string; Value: string };
}

/** Map a tagged resource's ARN to its metric dimension; undefined for kinds not collected. */
export function resourceForArn(arn: string): MetricResource | undefined {
  for (const [kind, k] of Object.entries(KINDS) as Array<[MetricResourceKind, (typeof KINDS)[MetricResourceKind]]>) {
    const m = k.arn.exec(arn);
    if (m) return { arn, kind, dimension: { Name: k.dimension, Value: m[1]! } };
  }
  return undefined;
}

const checkpointSchema = z.strictObject({ version: z.literal(1), lastEnd: z.number().int().min(0) });

export interface CloudWatchMetricsCollectorOptions {
  aws: AwsAccess;
  instanceId: string;
  /** The parsed `telemetry.cloudwatchMetrics` section. */
  config: CloudWatchMetricsConfig;
  checkpoints: CheckpointStore;
  emit: Emit;
  logger?: Logger;
  retry?: AwsRetryOptions;
  limits?: Partial<CloudWatchMetricsLimits>;
  now?: () => number;
}

interface Query {
  resource: MetricResource;
  spec: MetricSpec;
  stat: string;
}

/** Polls CloudWatch metrics of this appliance's tagged resources, one period at a time. */
export class CloudWatchMetricsCollector implements Collector {
  readonly name = CLOUDWATCH_METRICS_COLLECTOR;
  readonly periodMs: number;
  readonly #o: CloudWatchMetricsCollectorOptions;
  readonly #limits: CloudWatchMetricsLimits;
  readonly #cw: CloudWatchClient;
  readonly #tagging: ResourceGroupsTaggingAPIClient;
  readonly #log: Logger;
  readonly #now: () => number;

  constructor(opts: CloudWatchMetricsCollectorOptions) {
    if (!opts.instanceId) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'cloudwatch-metrics collector needs an instance id');
    this.#o = opts;
    this.#limits = { ...CLOUDWATCH_METRICS_LIMITS, ...opts.limits };
    this.periodMs = opts.config.periodSeconds * 1000;
    const client = { region: opts.aws.region, credentials: opts.aws.credentials, maxAttempts: 1, ...(opts.aws.endpoint ? { endpoint: opts.aws.endpoint } : {}) };
    this.#cw = new CloudWatchClient(client);
    this.#tagging = new ResourceGroupsTaggingAPIClient(client);
    this.#log = (opts.logger ?? silentLogger).child({ collector: CLOUDWATCH_METRICS_COLLECTOR });
    this.#now = opts.now ?? Date.now;
  }

  /** Release the SDK clients' sockets. */
  close(): void {
    this.#cw.destroy();
    this.#tagging.destroy();
  }

  async collect(signal: AbortSignal): Promise<CollectResult> {
    const cfg = this.#o.config;
    const P = this.periodMs;
    const end = Math.floor((this.#now() - cfg.settleSeconds * 1000) / P) * P;
    const saved = await this.#o.checkpoints.load(CLOUDWATCH_METRICS_COLLECTOR, checkpointSchema);
    // First run: start with the last complete period rather than backfilling history.
    let start = saved?.lastEnd ?? end - P;
    const floor = end - Math.ceil((cfg.maxLookbackSeconds * 1000) / P) * P;
    if (start < floor) {
      this.#log.warn({ lastEnd: start, resumeAt: floor }, 'outage longer than maxLookbackSeconds; older periods are not collected');
      start = floor;
    }
    if (start >= end) return { more: false };

    const queries = await this.#queries(signal);
    if (queries.length === 0) {
      await this.#save(end);
      return { more: false };
    }
    // Each window's points (queries x periods) must fit one emit().
    const periodsPerWindow = Math.max(1, Math.floor(cfg.maxRecordsPerEmit / queries.length));
    while (start < end) {
      signal.throwIfAborted();
      const windowEnd = Math.min(end, start + periodsPerWindow * P);
      const records: TelemetryRecord[] = [];
      for (let i = 0; i < queries.length; i += cfg.maxQueriesPerRequest) {
        records.push(...(await this.#fetch(queries.slice(i, i + cfg.maxQueriesPerRequest), start, windowEnd, signal)));
      }
      if (records.length > 0) await this.#o.emit(records);
      await this.#save(windowEnd);
      start = windowEnd;
    }
    return { more: false };
  }

  /** The tagged resources this collector would poll, for diagnostics and the run itself. */
  async resources(signal: AbortSignal): Promise<MetricResource[]> {
    const cfg = this.#o.config;
    const kinds = new Set(cfg.metrics.map((m) => m.resource));
    if (kinds.size === 0) return [];
    const { arns, truncated } = await listTaggedArns(
      this.#tagging,
      { key: cfg.tagKey, value: this.#o.instanceId, resourceTypes: [...kinds].map((k) => KINDS[k].resourceType), max: cfg.maxResources },
      signal,
      this.#o.retry,
    );
    if (truncated) this.#log.warn({ max: cfg.maxResources }, 'more tagged resources than maxResources; the rest are not polled');
    const out: MetricResource[] = [];
    for (const arn of arns) {
      const r = resourceForArn(arn);
      if (r && kinds.has(r.kind)) out.push(r);
    }
    return out;
  }

  async #queries(signal: AbortSignal): Promise<Query[]> {
    const out: Query[] = [];
    for (const resource of await this.resources(signal)) {
      for (const spec of this.#o.config.metrics) {
        if (spec.resource !== resource.kind) continue;
        for (const stat of spec.statistics) out.push({ resource, spec, stat });
      }
    }
    return out;
  }

  /** One GetMetricData request (all pages) for up to maxQueriesPerRequest queries. */
  async #fetch(batch: Query[], start: number, end: number, signal: AbortSignal): Promise<TelemetryRecord[]> {
    const period = this.#o.config.periodSeconds;
    const metricQueries: MetricDataQuery[] = batch.map((q, i) => ({
      Id: `q${i}`,
      ReturnData: true,
      MetricStat: {
        Metric: { Namespace: q.spec.namespace, MetricName: q.spec.metricName, Dimensions: [q.resource.dimension] },
        Period: period,
        Stat: q.stat,
      },
    }));
    const records: TelemetryRecord[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      if (++pages > this.#limits.maxPagesPerRequest) {
        throw new UplinkError('UPLINK_ERR_TELEMETRY_AWS_FAILED', `cloudwatch:GetMetricData returned more than ${this.#limits.maxPagesPerRequest} pages`, {
          details: { operation: 'cloudwatch:GetMetricData', awsCode: 'TooManyPages' },
        });
      }
      const res = await callAws(
        'cloudwatch:GetMetricData',
        () =>
          this.#cw.send(
            new GetMetricDataCommand({
              MetricDataQueries: metricQueries,
              StartTime: new Date(start),
              EndTime: new Date(end),
              ScanBy: 'TimestampAscending',
              ...(token ? { NextToken: token } : {}),
            }),
            { abortSignal: signal },
          ),
        signal,
        this.#o.retry,
      );
      for (const r of res.MetricDataResults ?? []) {
        const q = r.Id?.startsWith('q') ? batch[Number(r.Id.slice(1))] : undefined;
        if (!q) continue;
        const ts = r.Timestamps ?? [];
        const vs = r.Values ?? [];
        for (let i = 0; i < Math.min(ts.length, vs.length); i++) {
          const at = ts[i]!.getTime();
          // Only points inside the window: some implementations also return the bucket at `end`.
          if (at < start || at >= end || !Number.isFinite(vs[i])) continue;
          records.push(this.#toRecord(q, at, vs[i]!));
        }
      }
      token = res.NextToken || undefined;
    } while (token);
    return records;
  }

  #toRecord(q: Query, atMs: number, value: number): TelemetryRecord {
    const period = this.#o.config.periodSeconds;
    const { Name, Value } = q.resource.dimension;
    const time = msToUnixNano(atMs);
    return {
      id: recordId(`cwmetrics:${q.spec.namespace}:${q.spec.metricName}:${Name}=${Value}:${q.stat}:${period}:${atMs}`),
      signal: 'metrics',
      timeUnixNano: time,
      source: CLOUDWATCH_METRICS_COLLECTOR,
      resource: { 'cloud.provider': 'aws', 'cloud.resource_id': q.resource.arn },
      scope: 'uplink.cloudwatch',
      payload: {
        name: `${q.spec.namespace}/${q.spec.metricName}`,
        gauge: {
          dataPoints: [
            {
              // CloudWatch stamps a data point with the start of its period.
              timeUnixNano: time,
              asDouble: value,
              attributes: [
                { key: 'aws.cloudwatch.namespace', value: { stringValue: q.spec.namespace } },
                { key: 'aws.cloudwatch.metric_name', value: { stringValue: q.spec.metricName } },
                { key: 'aws.cloudwatch.statistic', value: { stringValue: q.stat } },
                { key: 'aws.cloudwatch.period', value: { intValue: String(period) } },
                { key: `aws.cloudwatch.dimension.${Name}`, value: { stringValue: Value } },
              ],
            },
          ],
        },
      },
    };
  }

  #save(lastEnd: number): Promise<void> {
    return this.#o.checkpoints.save(CLOUDWATCH_METRICS_COLLECTOR, { version: 1, lastEnd });
  }
}
