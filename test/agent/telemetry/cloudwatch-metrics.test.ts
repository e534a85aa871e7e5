import t from 'tap';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CloudWatchClient, PutMetricDataCommand, type MetricDatum } from '@aws-sdk/client-cloudwatch';
import { CreateSubnetCommand, CreateVpcCommand, EC2Client } from '@aws-sdk/client-ec2';
import { CreateRoleCommand, IAMClient } from '@aws-sdk/client-iam';
import { startMoto, type Moto } from '../../helpers/moto.js';
import { needTools } from '../../helpers/tools.js';
import { CheckpointStore } from '../../../agent/telemetry/checkpoint-store.js';
import { CloudWatchMetricsCollector, resourceForArn, type CloudWatchMetricsCollectorOptions } from '../../../agent/telemetry/cloudwatch-metrics.js';
import { parseTelemetryConfig, type CloudWatchMetricsConfig } from '../../../agent/telemetry/config.js';
import type { TelemetryRecord } from '../../../shared/telemetry/record.js';

const credentials = { accessKeyId: 'testing', secretAccessKey: 'testing' };
const region = 'us-east-1';
const signal = new AbortController().signal;
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const MIN = 60_000;

t.test('ARNs map to CloudWatch dimensions', async (t) => {
  t.same(resourceForArn('arn:aws:rds:us-east-1:123456789012:db:orders-db'), {
    arn: 'arn:aws:rds:us-east-1:123456789012:db:orders-db',
    kind: 'rds-db',
    dimension: { Name: 'DBInstanceIdentifier', Value: 'orders-db' },
  });
  t.same(resourceForArn('arn:aws:lambda:eu-west-1:123456789012:function:api')?.dimension, { Name: 'FunctionName', Value: 'api' });
  t.same(resourceForArn('arn:aws:lambda:eu-west-1:123456789012:function:api:live')?.dimension, { Name: 'FunctionName', Value: 'api' }, 'qualified ARN');
  t.same(resourceForArn('arn:aws:eks:us-east-1:123456789012:cluster/prod')?.dimension, { Name: 'ClusterName', Value: 'prod' });
  t.same(resourceForArn('arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/web/50dc6c495c0c9188')?.dimension, {
    Name: 'LoadBalancer',
    Value: 'app/web/50dc6c495c0c9188',
  });
  t.equal(resourceForArn('arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/nlb/50dc6c495c0c9188'), undefined, 'NLB is not an ALB');
  t.equal(resourceForArn('arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/tg/50dc6c495c0c9188'), undefined);
  t.equal(resourceForArn('arn:aws:rds:us-east-1:123456789012:snapshot:snap'), undefined);
  t.equal(resourceForArn('arn:aws:s3:::bucket'), undefined);
});

t.test('CloudWatch metrics collection against moto', async (t) => {
  if (!needTools(t, ['aws'])) return;
  const moto = await startMoto(t);
  if (!moto) return;
  const cw = new CloudWatchClient({ region, credentials, endpoint: moto.endpoint });
  t.teardown(() => cw.destroy());

  const albDimension = await createResources(moto);

  // Periods well in the past (moto keeps any timestamp), aligned to the minute.
  const base = Math.floor((Date.now() - 2 * 3600_000) / MIN) * MIN;
  const put = async (namespace: string, data: MetricDatum[]): Promise<void> => {
    await cw.send(new PutMetricDataCommand({ Namespace: namespace, MetricData: data }));
  };
  const rds = (id: string, at: number, v: number): MetricDatum => ({
    MetricName: 'CPUUtilization',
    Dimensions: [{ Name: 'DBInstanceIdentifier', Value: id }],
    Timestamp: new Date(at),
    Value: v,
  });
  const inv = (at: number, v: number): MetricDatum => ({
    MetricName: 'Invocations',
    Dimensions: [{ Name: 'FunctionName', Value: 'fn-mine' }],
    Timestamp: new Date(at),
    Value: v,
  });
  await put('AWS/RDS', [rds('db-mine', base + 10_000, 99), rds('db-mine', base + MIN + 5_000, 10), rds('db-mine', base + MIN + 40_000, 30), rds('db-other', base + MIN + 5_000, 77)]);
  await put('AWS/Lambda', [inv(base + MIN + 1_000, 3), inv(base + MIN + 2_000, 4)]);
  // moto computes no percentiles (GetMetricData fails on p99), so collection tests name their metrics.
  await put('AWS/ApplicationELB', [
    { MetricName: 'RequestCount', Dimensions: [{ Name: 'LoadBalancer', Value: albDimension }], Timestamp: new Date(base + MIN + 3_000), Value: 12 },
    { MetricName: 'TargetResponseTime', Dimensions: [{ Name: 'LoadBalancer', Value: albDimension }], Timestamp: new Date(base + MIN + 3_000), Value: 0.25 },
  ]);

  const METRICS = [
    { resource: 'rds-db', namespace: 'AWS/RDS', metricName: 'CPUUtilization', statistics: ['Average', 'Maximum'] },
    { resource: 'lambda-function', namespace: 'AWS/Lambda', metricName: 'Invocations', statistics: ['Sum'] },
    { resource: 'alb', namespace: 'AWS/ApplicationELB', metricName: 'RequestCount', statistics: ['Sum'] },
    { resource: 'alb', namespace: 'AWS/ApplicationELB', metricName: 'TargetResponseTime', statistics: ['Average'] },
  ] as const;

  function harness(cfg: Partial<CloudWatchMetricsConfig>, dir = mkdtempSync(join(tmpdir(), 'cwmetrics-'))) {
    const config = parseTelemetryConfig({ cloudwatchMetrics: { settleSeconds: 0, metrics: METRICS, ...cfg } }).cloudwatchMetrics;
    const emitted: TelemetryRecord[][] = [];
    const clock = { now: 0 };
    const make = (extra: Partial<CloudWatchMetricsCollectorOptions> = {}): CloudWatchMetricsCollector => {
      const c = new CloudWatchMetricsCollector({
        aws: { credentials, region, endpoint: moto!.endpoint },
        instanceId: 'i-met',
        config,
        checkpoints: new CheckpointStore(dir),
        emit: async (records) => {
          emitted.push(records);
        },
        now: () => clock.now,
        retry: { maxAttempts: 2, baseDelayMs: 1 },
        ...extra,
      });
      t.teardown(() => c.close());
      return c;
    };
    const points = (batches = emitted): string[] =>
      batches
        .flat()
        .map((r) => {
          const dp = (r.payload.gauge as { dataPoints: Array<{ timeUnixNano: string; asDouble: number; attributes: Array<{ key: string; value: { stringValue?: string } }> }> }).dataPoints[0]!;
          const stat = dp.attributes.find((a) => a.key === 'aws.cloudwatch.statistic')!.value.stringValue;
          const minute = (Number(BigInt(dp.timeUnixNano) / 1_000_000n) - base) / MIN;
          return `${r.payload.name} ${stat} @${minute} = ${dp.asDouble}`;
        })
        .sort();
    return { dir, clock, make, emitted, points };
  }

  await t.test('discovers only resources tagged with this instance id (default metric kinds)', async (t) => {
    const h = harness({ metrics: undefined as never });
    const found = await h.make().resources(signal);
    t.same(found.map((r) => r.dimension.Value).sort(), [albDimension, 'db-mine', 'fn-mine']);
    t.match(albDimension, /^app\/web\/[0-9a-f]+$/);
  });

  await t.test('collects the last complete period, then resumes from the checkpoint without repeats', async (t) => {
    const h = harness({});
    h.clock.now = base + 2 * MIN + 5_000;
    t.same(await h.make().collect(signal), { more: false });
    t.same(h.points(), [
      'AWS/ApplicationELB/RequestCount Sum @1 = 12',
      'AWS/ApplicationELB/TargetResponseTime Average @1 = 0.25',
      'AWS/Lambda/Invocations Sum @1 = 7',
      'AWS/RDS/CPUUtilization Average @1 = 20',
      'AWS/RDS/CPUUtilization Maximum @1 = 30',
    ]);

    const rec = h.emitted.flat().find((r) => r.payload.name === 'AWS/RDS/CPUUtilization' && JSON.stringify(r.payload).includes('"Maximum"'))!;
    const at = base + MIN;
    t.equal(rec.id, sha(`cwmetrics:AWS/RDS:CPUUtilization:DBInstanceIdentifier=db-mine:Maximum:60:${at}`));
    t.equal(rec.signal, 'metrics');
    t.equal(rec.source, 'cloudwatch-metrics');
    t.equal(rec.timeUnixNano, `${at}000000`);
    t.same(rec.resource, { 'cloud.provider': 'aws', 'cloud.resource_id': 'arn:aws:rds:us-east-1:123456789012:db:db-mine' });
    t.same(rec.payload, {
      name: 'AWS/RDS/CPUUtilization',
      gauge: {
        dataPoints: [
          {
            timeUnixNano: `${at}000000`,
            asDouble: 30,
            attributes: [
              { key: 'aws.cloudwatch.namespace', value: { stringValue: 'AWS/RDS' } },
              { key: 'aws.cloudwatch.metric_name', value: { stringValue: 'CPUUtilization' } },
              { key: 'aws.cloudwatch.statistic', value: { stringValue: 'Maximum' } },
              { key: 'aws.cloudwatch.period', value: { intValue: '60' } },
              { key: 'aws.cloudwatch.dimension.DBInstanceIdentifier', value: { stringValue: 'db-mine' } },
            ],
          },
        ],
      },
    });

    // Restart at the same time: nothing new.
    const first = h.emitted.length;
    await h.make().collect(signal);
    t.equal(h.emitted.length, first);

    await put('AWS/RDS', [rds('db-mine', base + 2 * MIN + 30_000, 50), rds('db-mine', base + 3 * MIN + 1_000, 60)]);
    h.clock.now = base + 3 * MIN + 10_000;
    await h.make().collect(signal);
    t.same(h.points(h.emitted.slice(first)), ['AWS/RDS/CPUUtilization Average @2 = 50', 'AWS/RDS/CPUUtilization Maximum @2 = 50'], 'only the new period');
    h.clock.now = base + 4 * MIN;
    await h.make().collect(signal);
    const ids = h.emitted.flat().map((r) => r.id);
    t.equal(new Set(ids).size, ids.length, 'no data point emitted twice');
    t.same(h.points(), [
      'AWS/ApplicationELB/RequestCount Sum @1 = 12',
      'AWS/ApplicationELB/TargetResponseTime Average @1 = 0.25',
      'AWS/Lambda/Invocations Sum @1 = 7',
      'AWS/RDS/CPUUtilization Average @1 = 20',
      'AWS/RDS/CPUUtilization Average @2 = 50',
      'AWS/RDS/CPUUtilization Average @3 = 60',
      'AWS/RDS/CPUUtilization Maximum @1 = 30',
      'AWS/RDS/CPUUtilization Maximum @2 = 50',
      'AWS/RDS/CPUUtilization Maximum @3 = 60',
    ], 'none skipped');
  });

  await t.test('a catch-up is split into windows; a failed emit repeats only its own window', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'cwmetrics-'));
    writeFileSync(join(dir, 'cloudwatch-metrics.json'), JSON.stringify({ version: 1, lastEnd: base }));
    // 3 queries (CPU avg+max, invocations sum) and at most 3 records per emit: one period per window.
    const h = harness({ maxRecordsPerEmit: 3, metrics: [
      { resource: 'rds-db', namespace: 'AWS/RDS', metricName: 'CPUUtilization', statistics: ['Average', 'Maximum'] },
      { resource: 'lambda-function', namespace: 'AWS/Lambda', metricName: 'Invocations', statistics: ['Sum'] },
    ] }, dir);
    h.clock.now = base + 3 * MIN;
    let calls = 0;
    const failing = h.make({
      emit: async (records) => {
        if (++calls === 2) throw new Error('spool unavailable');
        h.emitted.push(records);
      },
    });
    await t.rejects(failing.collect(signal), { message: 'spool unavailable' });
    t.same(h.points(), ['AWS/RDS/CPUUtilization Average @0 = 99', 'AWS/RDS/CPUUtilization Maximum @0 = 99'], 'window 0 delivered');
    await h.make().collect(signal);
    t.ok(h.emitted.every((b) => b.length <= 3), 'no emit above maxRecordsPerEmit');
    t.same(h.points(), [
      'AWS/Lambda/Invocations Sum @1 = 7',
      'AWS/RDS/CPUUtilization Average @0 = 99',
      'AWS/RDS/CPUUtilization Average @1 = 20',
      'AWS/RDS/CPUUtilization Average @2 = 50',
      'AWS/RDS/CPUUtilization Maximum @0 = 99',
      'AWS/RDS/CPUUtilization Maximum @1 = 30',
      'AWS/RDS/CPUUtilization Maximum @2 = 50',
    ], 'window 1 retried, window 0 not repeated');
  });

  await t.test('batches of maxQueriesPerRequest give the same points as one request', async (t) => {
    const one = harness({});
    const many = harness({ maxQueriesPerRequest: 1 });
    one.clock.now = many.clock.now = base + 2 * MIN;
    await one.make().collect(signal);
    await many.make().collect(signal);
    t.same(many.points(), one.points());
    t.equal(one.points().length, 5);
  });

  await t.test('an outage longer than maxLookbackSeconds resumes at the lookback limit', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'cwmetrics-'));
    writeFileSync(join(dir, 'cloudwatch-metrics.json'), JSON.stringify({ version: 1, lastEnd: base - 600 * MIN }));
    const h = harness({ maxLookbackSeconds: 120 }, dir);
    h.clock.now = base + 3 * MIN;
    await h.make().collect(signal);
    const h2 = h.points().filter((p) => !p.startsWith('AWS/ApplicationELB'));
    t.same(h2, ['AWS/Lambda/Invocations Sum @1 = 7', 'AWS/RDS/CPUUtilization Average @1 = 20', 'AWS/RDS/CPUUtilization Average @2 = 50', 'AWS/RDS/CPUUtilization Maximum @1 = 30', 'AWS/RDS/CPUUtilization Maximum @2 = 50']);
    t.notOk(h.points().some((p) => / @-?0 /.test(p) || p.includes('@-')), 'nothing before the lookback limit');
    const cp = await new CheckpointStore(dir).load('cloudwatch-metrics', z.object({ lastEnd: z.number() }));
    t.equal(cp?.lastEnd, base + 3 * MIN);
  });

  await t.test('no tagged resources: the checkpoint still advances', async (t) => {
    const h = harness({ tagKey: 'no-such-tag' });
    h.clock.now = base + 5 * MIN;
    await h.make().collect(signal);
    t.same(h.emitted, []);
    t.match(JSON.parse(readFileSync(join(h.dir, 'cloudwatch-metrics.json'), 'utf8')), { lastEnd: base + 5 * MIN });
  });
});

const execFileP = promisify(execFile);

async function aws(moto: Moto, args: string[]): Promise<string> {
  const { stdout } = await execFileP('aws', ['--endpoint-url', moto.endpoint, '--region', region, '--output', 'text', ...args], { env: { ...process.env, ...moto.env } });
  return stdout.trim();
}

/**
 * Tagged and untagged resources in moto: VPC, subnets and the role through the SDK,
 * RDS, Lambda and ELBv2 (no SDK client in this repository) through the aws CLI, in parallel.
 * @returns the ALB's LoadBalancer dimension value.
 */
async function createResources(moto: Moto): Promise<string> {
  const cfg = { region, credentials, endpoint: moto.endpoint };
  const ec2 = new EC2Client(cfg);
  const iam = new IAMClient(cfg);
  try {
    const vpc = (await ec2.send(new CreateVpcCommand({ CidrBlock: '10.1.0.0/16' }))).Vpc!.VpcId!;
    const subnets = await Promise.all(
      ['a', 'b'].map(async (az, i) => (await ec2.send(new CreateSubnetCommand({ VpcId: vpc, CidrBlock: `10.1.${i}.0/24`, AvailabilityZone: `${region}${az}` }))).Subnet!.SubnetId!),
    );
    const role = (await iam.send(new CreateRoleCommand({ RoleName: 'fn-role', AssumeRolePolicyDocument: '{"Version":"2012-10-17","Statement":[]}' }))).Role!.Arn!;
    const zip = join(mkdtempSync(join(tmpdir(), 'cwmetrics-fn-')), 'fn.zip');
    writeFileSync(zip, EMPTY_ZIP);
    const rds = (id: string, tag: string): Promise<string> =>
      aws(moto, ['rds', 'create-db-instance', '--db-instance-identifier', id, '--engine', 'postgres', '--db-instance-class', 'db.t3.micro',
        '--allocated-storage', '20', '--master-username', 'u', '--master-user-password', 'password123', '--tags', `Key=instance-id,Value=${tag}`]);
    const [albArn] = await Promise.all([
      aws(moto, ['elbv2', 'create-load-balancer', '--name', 'web', '--subnets', ...subnets, '--tags', 'Key=instance-id,Value=i-met', '--query', 'LoadBalancers[0].LoadBalancerArn']),
      rds('db-mine', 'i-met'),
      rds('db-other', 'i-other'),
      aws(moto, ['lambda', 'create-function', '--function-name', 'fn-mine', '--runtime', 'python3.11', '--handler', 'index.handler',
        '--role', role, '--zip-file', `fileb://${zip}`, '--tags', 'instance-id=i-met']),
    ]);
    return albArn.slice(albArn.indexOf(':loadbalancer/') + ':loadbalancer/'.length);
  } finally {
    ec2.destroy();
    iam.destroy();
  }
}

/** The smallest valid zip archive (an end-of-central-directory record only). */
const EMPTY_ZIP = Buffer.from([0x50, 0x4b, 0x05, 0x06, ...new Array<number>(18).fill(0)]);
