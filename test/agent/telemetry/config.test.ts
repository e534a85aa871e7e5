import t from 'tap';
import { DEFAULT_METRICS, TELEMETRY_DEFAULTS, parseTelemetryConfig, telemetryConfigSchema } from '../../../agent/telemetry/config.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadAgentConfig } from '../../../agent/config.js';

t.test('an absent or empty section yields every default', async (t) => {
  const cfg = parseTelemetryConfig(undefined);
  t.same(cfg, parseTelemetryConfig({}));
  t.same(cfg.cloudwatchLogs, { ...TELEMETRY_DEFAULTS.cloudwatchLogs, logGroupPatterns: [] });
  t.same(cfg.cloudwatchMetrics, { ...TELEMETRY_DEFAULTS.cloudwatchMetrics, metrics: DEFAULT_METRICS });
  t.same(cfg.health, TELEMETRY_DEFAULTS.health);
  t.same(cfg.otlpReceiver, { enabled: false, host: '127.0.0.1', port: 4318, maxBodyBytes: 4 * 1024 * 1024 });
  t.same(cfg.spool, TELEMETRY_DEFAULTS.spool);
  t.equal(cfg.cloudwatchLogs.tagKey, 'instance-id');
  t.equal(cfg.cloudwatchLogs.startFrom, 'now');
  t.ok(Object.isFrozen(cfg) && Object.isFrozen(cfg.cloudwatchLogs) && Object.isFrozen(cfg.cloudwatchMetrics.metrics[0]), 'deep-frozen');
  t.ok(telemetryConfigSchema.safeParse({}).success, 'schema exported for the agent config');
});

t.test('default metrics cover RDS, Lambda, EKS (Container Insights) and ALB', async (t) => {
  const namespaces = new Set(DEFAULT_METRICS.map((m) => m.namespace));
  t.same([...namespaces].sort(), ['AWS/ApplicationELB', 'AWS/Lambda', 'AWS/RDS', 'ContainerInsights']);
  t.same(new Set(DEFAULT_METRICS.map((m) => m.resource)), new Set(['rds-db', 'lambda-function', 'eks-cluster', 'alb']));
});

t.test('partial sections keep the other defaults; overrides replace the metric list', async (t) => {
  const cfg = parseTelemetryConfig({
    cloudwatchLogs: { logGroupPatterns: ['/aws/lambda/app-*'], startFrom: 'beginning', maxEventsPerPoll: 500 },
    cloudwatchMetrics: { periodSeconds: 300, metrics: [{ resource: 'rds-db', namespace: 'AWS/RDS', metricName: 'CPUUtilization', statistics: ['p99', 'Average'] }] },
    otlpReceiver: { enabled: true, port: 0 },
  });
  t.same(cfg.cloudwatchLogs.logGroupPatterns, ['/aws/lambda/app-*']);
  t.equal(cfg.cloudwatchLogs.pollSeconds, 30);
  t.equal(cfg.cloudwatchMetrics.periodSeconds, 300);
  t.equal(cfg.cloudwatchMetrics.metrics.length, 1);
  t.equal(cfg.otlpReceiver.enabled, true);
  t.equal(cfg.otlpReceiver.host, '127.0.0.1');
  t.equal(cfg.health.intervalSeconds, 60);
});

t.test('bad values are refused with the field named', async (t) => {
  const bad: Array<[unknown, string]> = [
    [{ cloudwatchLogs: { pollSecond: 5 } }, 'telemetry.cloudwatchLogs'],
    [{ unknownSection: {} }, 'telemetry'],
    [{ cloudwatchLogs: { pollSeconds: 0 } }, 'telemetry.cloudwatchLogs.pollSeconds'],
    [{ cloudwatchLogs: { startFrom: 'yesterday' } }, 'telemetry.cloudwatchLogs.startFrom'],
    [{ cloudwatchLogs: { maxEventsPerPoll: 1.5 } }, 'telemetry.cloudwatchLogs.maxEventsPerPoll'],
    [{ cloudwatchMetrics: { periodSeconds: 90 } }, 'telemetry.cloudwatchMetrics.periodSeconds'],
    [{ cloudwatchMetrics: { maxQueriesPerRequest: 501 } }, 'telemetry.cloudwatchMetrics.maxQueriesPerRequest'],
    [{ cloudwatchMetrics: { metrics: [{ resource: 's3', namespace: 'AWS/S3', metricName: 'x', statistics: ['Sum'] }] } }, 'telemetry.cloudwatchMetrics.metrics.0.resource'],
    [{ cloudwatchMetrics: { metrics: [{ resource: 'alb', namespace: 'AWS/ApplicationELB', metricName: 'x', statistics: ['Median'] }] } }, 'telemetry.cloudwatchMetrics.metrics.0.statistics.0'],
    [{ cloudwatchMetrics: { metrics: [{ resource: 'alb', namespace: 'AWS/ApplicationELB', metricName: 'x', statistics: [] }] } }, 'telemetry.cloudwatchMetrics.metrics.0.statistics'],
    [{ otlpReceiver: { port: 70000 } }, 'telemetry.otlpReceiver.port'],
    [{ spool: { maxBytes: 1000, segmentBytes: 2000 } }, 'telemetry.spool.maxBytes'],
    [{ health: 'often' }, 'telemetry.health'],
    [{ instanceId: '' }, 'telemetry.instanceId'],
    [{ instanceId: 'acme prod' }, 'telemetry.instanceId'],
    [{ instanceId: 'x'.repeat(129) }, 'telemetry.instanceId'],
    ['yes', 'telemetry'],
  ];
  for (const [input, field] of bad) {
    t.throws(() => parseTelemetryConfig(input), { code: 'UPLINK_ERR_CONFIG_INVALID', details: { field } }, `${JSON.stringify(input)} → ${field}`);
  }
  t.throws(() => parseTelemetryConfig({ cloudwatchLogs: { pollSecond: 5 } }), { message: /Unrecognized key.*\(pollSecond\)/ }, 'the unknown key is named');
});

t.test('the defaults object is not shared with parsed configs', async (t) => {
  const a = parseTelemetryConfig({});
  t.not(a.cloudwatchLogs.logGroupPatterns, TELEMETRY_DEFAULTS.cloudwatchLogs.logGroupPatterns);
  t.not(a.cloudwatchMetrics.metrics, DEFAULT_METRICS);
  t.ok(Object.isFrozen(DEFAULT_METRICS[0]) && Object.isFrozen(TELEMETRY_DEFAULTS.cloudwatchLogs.logGroupPatterns), 'shared defaults are immutable');
  t.notOk(Object.isFrozen(telemetryConfigSchema.parse({}).cloudwatchLogs.logGroupPatterns), 'the raw schema output is a fresh copy');
});

t.test('the instance id: absent by default, from the file or UPLINK_INSTANCE_ID (which wins)', async (t) => {
  t.equal(parseTelemetryConfig({}).instanceId, undefined, 'no default: the appliance id is never used in its place');
  t.equal(parseTelemetryConfig({ instanceId: 'acme-prod' }).instanceId, 'acme-prod');
  t.equal(parseTelemetryConfig({ instanceId: 'i-0abc:eu.1_x' }).instanceId, 'i-0abc:eu.1_x', 'the characters the relay accepts for an instance id');
  const base = { UPLINK_RELAY_URL: 'http://127.0.0.1:1', UPLINK_STATE_DIR: '/nonexistent-state' };
  t.equal(loadAgentConfig(base).telemetry.instanceId, undefined);
  const env = loadAgentConfig({ ...base, UPLINK_INSTANCE_ID: 'acme-prod' }).telemetry;
  t.equal(env.instanceId, 'acme-prod');
  t.equal(env.cloudwatchLogs.tagKey, 'instance-id', 'the rest of the section keeps its defaults');
  t.throws(() => loadAgentConfig({ ...base, UPLINK_INSTANCE_ID: 'has space' }), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /telemetry\.instanceId/ });
  const dir = mkdtempSync(join(tmpdir(), 'uplink-telcfg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'agent.json');
  writeFileSync(file, JSON.stringify({ telemetry: { instanceId: 'from-file', cloudwatchLogs: { pollSeconds: 5 } } }));
  t.equal(loadAgentConfig({ ...base, UPLINK_CONFIG: file }).telemetry.instanceId, 'from-file');
  const merged = loadAgentConfig({ ...base, UPLINK_CONFIG: file, UPLINK_INSTANCE_ID: 'from-env' }).telemetry;
  t.equal(merged.instanceId, 'from-env', 'the environment wins');
  t.equal(merged.cloudwatchLogs.pollSeconds, 5, 'and the file\'s other telemetry keys stay');
});
