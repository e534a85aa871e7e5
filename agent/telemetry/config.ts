/**
 * The `telemetry` section of the agent configuration: CloudWatch collectors, the agent's
 * own health metrics, the optional OTLP receiver and the disk spool.
 *
 * One defaults object (`TELEMETRY_DEFAULTS`), one strict schema (`telemetryConfigSchema`)
 * that rejects unknown keys, and one entry point (`parseTelemetryConfig`) that names the
 * bad field in a UPLINK_ERR_CONFIG_INVALID error and returns a frozen value.
 */
import { z } from 'zod';
import { UplinkError } from '../../shared/errors.js';

/** Kinds of AWS resource the metrics collector maps from a tagged ARN to a metric dimension. */
export const METRIC_RESOURCE_KINDS = ['rds-db', 'lambda-function', 'eks-cluster', 'alb'] as const;
export type MetricResourceKind = (typeof METRIC_RESOURCE_KINDS)[number];

/** One CloudWatch metric to poll for every tagged resource of `resource` kind. */
export interface MetricSpec {
  resource: MetricResourceKind;
  namespace: string;
  metricName: string;
  /** CloudWatch statistics: Average, Sum, Minimum, Maximum, SampleCount or a percentile such as p99. */
  statistics: string[];
}

/**
 * Metrics polled when the config names none. EKS uses Container Insights (the `AWS/EKS`
 * namespace only carries control-plane metrics and needs them enabled separately).
 */
export const DEFAULT_METRICS: readonly MetricSpec[] = deepFreeze([
  { resource: 'rds-db', namespace: 'AWS/RDS', metricName: 'CPUUtilization', statistics: ['Average', 'Maximum'] },
  { resource: 'rds-db', namespace: 'AWS/RDS', metricName: 'FreeableMemory', statistics: ['Average'] },
  { resource: 'rds-db', namespace: 'AWS/RDS', metricName: 'DatabaseConnections', statistics: ['Average'] },
  { resource: 'rds-db', namespace: 'AWS/RDS', metricName: 'FreeStorageSpace', statistics: ['Minimum'] },
  { resource: 'rds-db', namespace: 'AWS/RDS', metricName: 'ReadLatency', statistics: ['Average'] },
  { resource: 'rds-db', namespace: 'AWS/RDS', metricName: 'WriteLatency', statistics: ['Average'] },
  { resource: 'lambda-function', namespace: 'AWS/Lambda', metricName: 'Invocations', statistics: ['Sum'] },
  { resource: 'lambda-function', namespace: 'AWS/Lambda', metricName: 'Errors', statistics: ['Sum'] },
  { resource: 'lambda-function', namespace: 'AWS/Lambda', metricName: 'Throttles', statistics: ['Sum'] },
  { resource: 'lambda-function', namespace: 'AWS/Lambda', metricName: 'Duration', statistics: ['Average', 'Maximum'] },
  { resource: 'lambda-function', namespace: 'AWS/Lambda', metricName: 'ConcurrentExecutions', statistics: ['Maximum'] },
  { resource: 'eks-cluster', namespace: 'ContainerInsights', metricName: 'node_cpu_utilization', statistics: ['Average'] },
  { resource: 'eks-cluster', namespace: 'ContainerInsights', metricName: 'node_memory_utilization', statistics: ['Average'] },
  { resource: 'eks-cluster', namespace: 'ContainerInsights', metricName: 'cluster_node_count', statistics: ['Average'] },
  { resource: 'eks-cluster', namespace: 'ContainerInsights', metricName: 'cluster_failed_node_count', statistics: ['Maximum'] },
  { resource: 'alb', namespace: 'AWS/ApplicationELB', metricName: 'RequestCount', statistics: ['Sum'] },
  { resource: 'alb', namespace: 'AWS/ApplicationELB', metricName: 'HTTPCode_ELB_5XX_Count', statistics: ['Sum'] },
  { resource: 'alb', namespace: 'AWS/ApplicationELB', metricName: 'HTTPCode_Target_5XX_Count', statistics: ['Sum'] },
  { resource: 'alb', namespace: 'AWS/ApplicationELB', metricName: 'TargetResponseTime', statistics: ['Average', 'p99'] },
  { resource: 'alb', namespace: 'AWS/ApplicationELB', metricName: 'ActiveConnectionCount', statistics: ['Sum'] },
]);

/** GetMetricData accepts at most this many queries per request (AWS service limit). */
export const GET_METRIC_DATA_MAX_QUERIES = 500;

/** Every default of the telemetry section, in one place. */
export const TELEMETRY_DEFAULTS = deepFreeze({
  cloudwatchLogs: {
    enabled: true,
    /** Glob patterns (`*`, `?`) on log group names, collected in addition to tagged groups. */
    logGroupPatterns: [] as string[],
    tagKey: 'instance-id',
    /** How tagged groups are found: the tagging API, per-group ListTagsForResource, or the first that works. */
    tagLookup: 'auto' as 'auto' | 'tagging-api' | 'list-tags',
    pollSeconds: 30,
    /** How often the set of log groups is re-discovered (a group found late starts at its creation). */
    discoverySeconds: 300,
    /** Where a group seen on the very first run starts; groups that appear later start at their creation. */
    startFrom: 'now' as 'now' | 'beginning',
    maxEventsPerPoll: 10_000,
    /**
     * Only events at least this old are read: CloudWatch accepts events whose timestamp is
     * earlier than their arrival, and a closed time window is never re-read.
     */
    settleSeconds: 30,
    maxLogGroups: 1_000,
    /** Longer messages are cut and flagged `uplink.truncated`. */
    maxMessageBytes: 256 * 1024,
  },
  cloudwatchMetrics: {
    enabled: true,
    tagKey: 'instance-id',
    periodSeconds: 60,
    /** CloudWatch metrics arrive late; a period is read only after it ended this long ago. */
    settleSeconds: 120,
    /** After a long outage, catch up at most this far back (bounded work, bounded spool). */
    maxLookbackSeconds: 3 * 3600,
    /** Replaces DEFAULT_METRICS entirely when given. */
    metrics: DEFAULT_METRICS as readonly MetricSpec[],
    maxResources: 500,
    maxQueriesPerRequest: GET_METRIC_DATA_MAX_QUERIES,
    /**
     * Data points handed to one emit() call: a catch-up is split into windows of
     * max(1, floor(maxRecordsPerEmit / queries)) periods (one period is never split).
     */
    maxRecordsPerEmit: 20_000,
  },
  health: {
    intervalSeconds: 60,
  },
  otlpReceiver: {
    enabled: false,
    host: '127.0.0.1',
    port: 4318,
    maxBodyBytes: 4 * 1024 * 1024,
  },
  spool: {
    maxBytes: 1024 * 1024 * 1024,
    segmentBytes: 16 * 1024 * 1024,
    /** The spool's own policy names (agent/telemetry/spool.ts): one fdatasync per append call. */
    fsync: 'batch' as 'always' | 'batch' | 'interval' | 'never',
  },
} as const);

const D = TELEMETRY_DEFAULTS;
const positiveInt = z.int().min(1);
/** CloudWatch statistic names and percentiles (p0..p100 with up to two decimals). */
const statistic = z.string().regex(/^(Average|Sum|Minimum|Maximum|SampleCount|p(100|\d{1,2})(\.\d{1,2})?)$/, 'not a CloudWatch statistic');

const metricSpecSchema = z.strictObject({
  resource: z.enum(METRIC_RESOURCE_KINDS),
  namespace: z.string().min(1).max(255),
  metricName: z.string().min(1).max(255),
  statistics: z.array(statistic).min(1).max(10),
});

const cloudwatchLogsSchema = z.strictObject({
  enabled: z.boolean().default(D.cloudwatchLogs.enabled),
  logGroupPatterns: z.array(z.string().min(1).max(512)).max(100).default(() => [...D.cloudwatchLogs.logGroupPatterns]),
  tagKey: z.string().min(1).max(128).default(D.cloudwatchLogs.tagKey),
  tagLookup: z.enum(['auto', 'tagging-api', 'list-tags']).default(D.cloudwatchLogs.tagLookup),
  pollSeconds: positiveInt.max(86_400).default(D.cloudwatchLogs.pollSeconds),
  discoverySeconds: z.int().min(0).max(86_400).default(D.cloudwatchLogs.discoverySeconds),
  startFrom: z.enum(['now', 'beginning']).default(D.cloudwatchLogs.startFrom),
  // FilterLogEvents returns at most 10,000 events per page; a poll may span several pages.
  maxEventsPerPoll: positiveInt.max(1_000_000).default(D.cloudwatchLogs.maxEventsPerPoll),
  settleSeconds: z.int().min(0).max(86_400).default(D.cloudwatchLogs.settleSeconds),
  maxLogGroups: positiveInt.max(100_000).default(D.cloudwatchLogs.maxLogGroups),
  maxMessageBytes: positiveInt.max(16 * 1024 * 1024).default(D.cloudwatchLogs.maxMessageBytes),
});

const cloudwatchMetricsSchema = z.strictObject({
  enabled: z.boolean().default(D.cloudwatchMetrics.enabled),
  tagKey: z.string().min(1).max(128).default(D.cloudwatchMetrics.tagKey),
  // CloudWatch periods are 1, 5, 10, 30 or a multiple of 60 seconds.
  periodSeconds: positiveInt
    .max(86_400)
    .refine((p) => [1, 5, 10, 30].includes(p) || p % 60 === 0, 'must be 1, 5, 10, 30 or a multiple of 60')
    .default(D.cloudwatchMetrics.periodSeconds),
  settleSeconds: z.int().min(0).max(86_400).default(D.cloudwatchMetrics.settleSeconds),
  maxLookbackSeconds: positiveInt.max(15 * 86_400).default(D.cloudwatchMetrics.maxLookbackSeconds),
  metrics: z.array(metricSpecSchema).max(200).default(() => D.cloudwatchMetrics.metrics.map((m) => ({ ...m, statistics: [...m.statistics] }))),
  maxResources: positiveInt.max(10_000).default(D.cloudwatchMetrics.maxResources),
  maxQueriesPerRequest: positiveInt.max(GET_METRIC_DATA_MAX_QUERIES).default(D.cloudwatchMetrics.maxQueriesPerRequest),
  maxRecordsPerEmit: positiveInt.max(1_000_000).default(D.cloudwatchMetrics.maxRecordsPerEmit),
});

const healthSchema = z.strictObject({
  intervalSeconds: positiveInt.max(86_400).default(D.health.intervalSeconds),
});

const otlpReceiverSchema = z.strictObject({
  enabled: z.boolean().default(D.otlpReceiver.enabled),
  host: z.string().min(1).max(255).default(D.otlpReceiver.host),
  port: z.int().min(0).max(65_535).default(D.otlpReceiver.port),
  maxBodyBytes: positiveInt.max(256 * 1024 * 1024).default(D.otlpReceiver.maxBodyBytes),
});

const spoolSchema = z
  .strictObject({
    maxBytes: positiveInt.default(D.spool.maxBytes),
    segmentBytes: positiveInt.default(D.spool.segmentBytes),
    fsync: z.enum(['always', 'batch', 'interval', 'never']).default(D.spool.fsync),
  })
  // The spool bounds its size by deleting whole old segments beside the active one, so it needs two.
  .refine((s) => s.maxBytes >= 2 * s.segmentBytes, { message: 'maxBytes must be at least 2 x segmentBytes', path: ['maxBytes'] });

/**
 * The appliance's instance id, as the vendor registered it on the relay and as the customer
 * tags resources (`instance-id=<id>`, the CloudFormation `InstanceId`). The CloudWatch
 * collectors look for that tag value; the agent's own appliance id (`apl_…`) is a different
 * thing and never appears on customer resources. Also UPLINK_INSTANCE_ID.
 */
export const instanceIdSchema = z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/, 'must be 1-128 of [A-Za-z0-9._:-] (the appliance instance id)');

/** Strict schema of the `telemetry` section; every field is optional and defaulted. */
export const telemetryConfigSchema = z.strictObject({
  instanceId: instanceIdSchema.optional(),
  cloudwatchLogs: cloudwatchLogsSchema.prefault({}),
  cloudwatchMetrics: cloudwatchMetricsSchema.prefault({}),
  health: healthSchema.prefault({}),
  otlpReceiver: otlpReceiverSchema.prefault({}),
  spool: spoolSchema.prefault({}),
});

export type TelemetryConfig = z.infer<typeof telemetryConfigSchema>;
export type CloudWatchLogsConfig = TelemetryConfig['cloudwatchLogs'];
export type CloudWatchMetricsConfig = TelemetryConfig['cloudwatchMetrics'];
export type HealthConfig = TelemetryConfig['health'];

/**
 * Validate the `telemetry` section (undefined means "all defaults") and freeze the result.
 * @throws UplinkError UPLINK_ERR_CONFIG_INVALID naming the first bad field, e.g.
 *   `telemetry.cloudwatchLogs.pollSeconds: Too small: expected number to be >=1`.
 */
export function parseTelemetryConfig(input: unknown, field = 'telemetry'): TelemetryConfig {
  const result = telemetryConfigSchema.safeParse(input ?? {});
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const path = [field, ...issue.path.map(String)].join('.');
    const keys = issue.code === 'unrecognized_keys' ? ` (${issue.keys.join(', ')})` : '';
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `${path}: ${issue.message}${keys}`, {
      details: { field: path, issues: result.error.issues.map((i) => ({ path: [field, ...i.path.map(String)].join('.'), message: i.message })) },
    });
  }
  return deepFreeze(result.data);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as Record<string, unknown>)) deepFreeze(v);
  }
  return value;
}
