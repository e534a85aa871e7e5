/**
 * Telemetry end to end in AWS mode against moto: the agent as a process from dist/ with the
 * CloudWatch Logs and metrics collectors, an in-process relay with a file sink.
 *
 * What it proves: log events of groups tagged `instance-id=<this appliance>` and metric
 * data of a tagged RDS instance reach the relay's file sink as OTLP, carrying the relay's
 * resource attributes (instance-id, appliance, customer, region, account) beside the
 * collector's own; a group tagged for another appliance is never read; every CloudWatch,
 * CloudWatch Logs and tagging call is signed with credentials of the SteadyState role's
 * session `uplink-agent+internal-steadyState` (a recording proxy in front of moto maps each
 * access key to the AssumeRole that issued it); after a restart (with events, a new group and
 * metric data added while the agent was down) every record arrives exactly once.
 *
 * Needs `npx tsc -p tsconfig.json` first (it runs dist/).
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CloudWatchLogsClient, CreateLogGroupCommand, CreateLogStreamCommand, PutLogEventsCommand } from '@aws-sdk/client-cloudwatch-logs';
import { CloudWatchClient, PutMetricDataCommand } from '@aws-sdk/client-cloudwatch';
import { startE2eMoto, type Moto } from '../helpers/moto.js';
import { adminClient, createAppliance, startRelay, tempDir, waitFor } from '../helpers/cluster.js';
import { ACCOUNT, BASE_CREDENTIALS, REGION, createPhaseRoles } from '../agent/phases/aws-fixture.js';
import type { TelemetryCapability } from '../../relay/telemetry/telemetry-capability.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const AGENT_MAIN = join(ROOT, 'dist/agent/main.js');
const INSTANCE = 'i-acme-tel';
const APPLIANCE = 'acme-tel';
const PERIOD_S = 5;
const STEADY_SESSION = 'uplink-agent+internal-steadyState';

type Attr = { key: string; value: Record<string, unknown> };
interface SinkLog {
  resource: Record<string, unknown>;
  body: string;
  attrs: Record<string, unknown>;
}
interface SinkPoint {
  resource: Record<string, unknown>;
  name: string;
  value: number;
  time: string;
  attrs: Record<string, unknown>;
}

function flat(attrs: Attr[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const a of attrs ?? []) {
    const v = a.value;
    out[a.key] = 'stringValue' in v ? v.stringValue : 'intValue' in v ? v.intValue : 'boolValue' in v ? v.boolValue : 'doubleValue' in v ? v.doubleValue : v;
  }
  return out;
}

/** Parse the file sink: OTLP/JSON export requests, one per line. */
function readSink(path: string): { logs: SinkLog[]; points: SinkPoint[]; lines: number } {
  const logs: SinkLog[] = [];
  const points: SinkPoint[] = [];
  const text = existsSync(path) ? readFileSync(path, 'utf8') : '';
  const lines = text.split('\n').filter((l) => l.length > 0);
  for (const line of lines) {
    const req = JSON.parse(line) as Record<string, Array<Record<string, unknown>>>;
    for (const rl of req.resourceLogs ?? []) {
      const resource = flat((rl.resource as { attributes: Attr[] }).attributes);
      for (const sl of rl.scopeLogs as Array<{ logRecords: Array<Record<string, unknown>> }>) {
        for (const r of sl.logRecords) logs.push({ resource, body: (r.body as { stringValue: string }).stringValue, attrs: flat(r.attributes as Attr[]) });
      }
    }
    for (const rm of req.resourceMetrics ?? []) {
      const resource = flat((rm.resource as { attributes: Attr[] }).attributes);
      for (const sm of rm.scopeMetrics as Array<{ metrics: Array<{ name: string; gauge?: { dataPoints: Array<Record<string, unknown>> } }> }>) {
        for (const m of sm.metrics) {
          for (const p of m.gauge?.dataPoints ?? []) points.push({ resource, name: m.name, value: p.asDouble as number, time: p.timeUnixNano as string, attrs: flat(p.attributes as Attr[]) });
        }
      }
    }
  }
  return { logs, points, lines: lines.length };
}

interface AwsCall {
  service: string;
  operation: string;
  accessKeyId: string;
}

/**
 * An HTTP proxy in front of moto that records, per request, the signing service, the
 * operation and the access key, and learns from each AssumeRole which role and session
 * name a temporary access key belongs to.
 */
async function startRecordingProxy(moto: Moto): Promise<{ url: string; calls: AwsCall[]; sessions: Map<string, { roleArn: string; sessionName: string }>; close(): Promise<void> }> {
  const upstream = new URL(moto.endpoint);
  const calls: AwsCall[] = [];
  const sessions = new Map<string, { roleArn: string; sessionName: string }>();
  const body = (s: IncomingMessage): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => chunks.push(c));
      s.once('end', () => resolve(Buffer.concat(chunks)));
      s.once('error', reject);
    });
  const server: Server = createServer((req, res) => {
    void (async () => {
      const input = await body(req);
      const scope = /Credential=([^/]+)\/[^/]+\/[^/]+\/([^/]+)\//.exec(req.headers.authorization ?? '');
      const form = new URLSearchParams(req.headers['content-type']?.includes('x-www-form-urlencoded') ? input.toString('utf8') : '');
      const amzTarget = req.headers['x-amz-target'];
      const operation =
        (typeof amzTarget === 'string' ? amzTarget.split('.').pop() : undefined) ?? /\/operation\/([A-Za-z]+)/.exec(req.url ?? '')?.[1] ?? form.get('Action') ?? new URL(req.url ?? '/', 'http://x').searchParams.get('Action') ?? '?';
      calls.push({ service: scope?.[2] ?? '?', operation, accessKeyId: scope?.[1] ?? '' });
      const up = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } }, (ur) => {
        void body(ur).then((out) => {
          if (operation === 'AssumeRole' && ur.statusCode === 200) {
            const key = /<AccessKeyId>([^<]+)<\/AccessKeyId>/.exec(out.toString('utf8'))?.[1];
            if (key) sessions.set(key, { roleArn: form.get('RoleArn') ?? '', sessionName: form.get('RoleSessionName') ?? '' });
          }
          const headers = { ...ur.headers };
          delete headers['transfer-encoding'];
          res.writeHead(ur.statusCode ?? 502, { ...headers, 'content-length': String(out.length) });
          res.end(out);
        });
      });
      up.once('error', (err) => {
        res.writeHead(502);
        res.end(String(err));
      });
      up.end(input);
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    calls,
    sessions,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

function aws(moto: Moto, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('aws', ['--endpoint-url', moto.endpoint, '--region', REGION, '--output', 'text', ...args], { env: { ...process.env, ...moto.env } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`aws ${args.join(' ')}: ${err}`))));
  });
}

function runAgent(env: Record<string, string>): { child: ChildProcess; done: Promise<{ code: number | null; stderr: string }> } {
  const child = spawn(process.execPath, [AGENT_MAIN, 'run'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.length > 1 << 20) stderr = stderr.slice(-65536);
  });
  return { child, done: new Promise((resolve) => child.once('close', (code) => resolve({ code, stderr }))) };
}

t.test('CloudWatch logs and metrics through the SteadyState role to the relay file sink, across an agent restart', async (t) => {
  const moto = await startE2eMoto(t, [AGENT_MAIN]);
  if (!moto) return;
  const proxy = await startRecordingProxy(moto);
  t.teardown(() => proxy.close());

  const clientCfg = { region: REGION, credentials: BASE_CREDENTIALS, endpoint: moto.endpoint };
  const logs = new CloudWatchLogsClient(clientCfg);
  const cw = new CloudWatchClient(clientCfg);
  t.teardown(() => {
    logs.destroy();
    cw.destroy();
  });
  const group = async (name: string, instance: string): Promise<void> => {
    await logs.send(new CreateLogGroupCommand({ logGroupName: name, tags: { 'instance-id': instance } }));
    await logs.send(new CreateLogStreamCommand({ logGroupName: name, logStreamName: 'main' }));
  };
  // Event timestamps are "now": the collector reads a window only once settleSeconds passed.
  const put = (name: string, messages: string[]): Promise<unknown> =>
    logs.send(new PutLogEventsCommand({ logGroupName: name, logStreamName: 'main', logEvents: messages.map((message) => ({ timestamp: Date.now(), message })) }));
  const putMetric = (value: number): Promise<unknown> =>
    cw.send(new PutMetricDataCommand({ Namespace: 'AWS/RDS', MetricData: [{ MetricName: 'CPUUtilization', Dimensions: [{ Name: 'DBInstanceIdentifier', Value: 'orders-db' }], Timestamp: new Date(), Value: value }] }));

  const roles = await createPhaseRoles(t, moto);
  const dbArn = await aws(moto, ['rds', 'create-db-instance', '--db-instance-identifier', 'orders-db', '--engine', 'postgres', '--db-instance-class', 'db.t3.micro',
    '--allocated-storage', '20', '--master-username', 'u', '--master-user-password', 'password123', '--tags', `Key=instance-id,Value=${INSTANCE}`, '--query', 'DBInstance.DBInstanceArn']);
  await group('/app/orders', INSTANCE);
  await group('/app/other-appliance', 'i-someone-else');
  await put('/app/orders', ['before-start-1', 'before-start-2']);
  await put('/app/other-appliance', ['never-collected']);

  const dir = tempDir(t, 'uplink-e2e-tel-');
  const sinkPath = join(dir, 'sink', 'telemetry.jsonl');
  const relay = await startRelay(t, { config: { telemetry: { sinks: [{ type: 'file', name: 'file', path: sinkPath }], pullIntervalMs: 100 } } });
  const admin = adminClient(t, relay);
  const enrolled = await createAppliance(admin, APPLIANCE, { instanceId: INSTANCE });
  const cap = (relay as unknown as { capabilities: TelemetryCapability[] }).capabilities.find((c) => c.name === 'telemetry')!;

  const stateDir = join(dir, 'state');
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const configFile = join(dir, 'agent.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      // Every AWS call of the agent goes through the recording proxy.
      aws: { ...roles.config.aws, endpoint: proxy.url },
      telemetry: {
        cloudwatchLogs: { pollSeconds: 1, discoverySeconds: 1, startFrom: 'beginning', settleSeconds: 2 },
        cloudwatchMetrics: { periodSeconds: PERIOD_S, settleSeconds: 0, metrics: [{ resource: 'rds-db', namespace: 'AWS/RDS', metricName: 'CPUUtilization', statistics: ['Average', 'Maximum'] }] },
        health: { intervalSeconds: 86_400 },
      },
    }),
  );
  // Base credentials only in the environment; no AWS_ENDPOINT_URL, so a call bypassing the proxy fails.
  const agentEnv = {
    PATH: process.env.PATH ?? '',
    HOME: dir,
    UPLINK_STATE_DIR: stateDir,
    UPLINK_CONFIG: configFile,
    UPLINK_LOG_LEVEL: 'warn',
    UPLINK_RELAY_URL: relay.url,
    UPLINK_ENROLLMENT_TOKEN: enrolled.enrollmentToken,
    UPLINK_INSTANCE_ID: INSTANCE,
    AWS_ACCESS_KEY_ID: BASE_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: BASE_CREDENTIALS.secretAccessKey,
    AWS_REGION: REGION,
  };
  let agent = runAgent(agentEnv);
  t.teardown(async () => {
    if (agent.child.exitCode === null) {
      agent.child.kill('SIGTERM');
      await agent.done;
    }
  });
  const metricsCheckpoint = join(stateDir, 'telemetry', 'checkpoints', 'cloudwatch-metrics.json');
  const cloudLogs = () => readSink(sinkPath).logs.filter((l) => l.resource['aws.log.group.names'] !== undefined);
  const rdsPoints = () => readSink(sinkPath).points.filter((p) => p.name === 'AWS/RDS/CPUUtilization');
  /** Wait until `cond`, then until a later pull found the spool empty (all of it acknowledged). */
  const delivered = async (cond: () => boolean, what: string): Promise<void> => {
    await waitFor(() => cond() || agent.child.exitCode !== null, 90_000, what);
    t.equal(agent.child.exitCode, null, `the agent is running (${what})`);
    const empty = cap.loops.get(enrolled.applianceId)?.emptyPulls ?? 0;
    await waitFor(() => (cap.loops.get(enrolled.applianceId)?.emptyPulls ?? 0) > empty, 30_000, `${what}: spool drained`);
  };

  // ---- first run: history from the beginning, then metric data once the collector has a checkpoint.
  await waitFor(() => existsSync(metricsCheckpoint) || agent.child.exitCode !== null, 60_000, 'first metrics run');
  await putMetric(11);
  await delivered(() => cloudLogs().length >= 2 && rdsPoints().length >= 2, 'first logs and metrics');

  const first = readSink(sinkPath);
  const orders = first.logs.find((l) => l.body === 'before-start-1')!;
  t.ok(orders, 'a log event collected from before the agent started (startFrom beginning)');
  t.match(orders.resource, {
    'instance-id': INSTANCE,
    'uplink.appliance.name': APPLIANCE,
    'uplink.customer': 'acme',
    'cloud.provider': 'aws',
    'cloud.region': REGION,
    'cloud.account.id': ACCOUNT,
    'aws.log.group.names': '/app/orders',
    'aws.log.group.arns': `arn:aws:logs:${REGION}:${ACCOUNT}:log-group:/app/orders`,
  });
  t.match(orders.attrs, { 'aws.log.event.id': /.+/, 'uplink.record.id': /^[0-9a-f]{64}$/ });
  const point = rdsPoints().find((p) => p.attrs['aws.cloudwatch.statistic'] === 'Maximum')!;
  t.equal(point.value, 11);
  t.match(point.resource, { 'instance-id': INSTANCE, 'uplink.appliance.name': APPLIANCE, 'cloud.region': REGION, 'cloud.account.id': ACCOUNT, 'cloud.resource_id': dbArn });
  t.match(point.attrs, { 'aws.cloudwatch.namespace': 'AWS/RDS', 'aws.cloudwatch.metric_name': 'CPUUtilization', 'aws.cloudwatch.period': String(PERIOD_S), 'aws.cloudwatch.dimension.DBInstanceIdentifier': 'orders-db' });
  t.equal(BigInt(point.time) % BigInt(PERIOD_S * 1e9), 0n, 'the point is stamped with the start of its period');

  // ---- restart: data added while the agent is down arrives once, nothing collected before repeats.
  agent.child.kill('SIGTERM');
  const stopped = await agent.done;
  t.equal(stopped.code, 0, `the agent stopped cleanly${stopped.code === 0 ? '' : `: ${stopped.stderr.slice(-2000)}`}`);
  await put('/app/orders', ['while-down-1', 'while-down-2', 'while-down-3']);
  await group('/app/payments', INSTANCE);
  await put('/app/payments', ['new-group-while-down']);
  await putMetric(22);
  agent = runAgent(agentEnv);
  await delivered(() => cloudLogs().length >= 6 && rdsPoints().length >= 4, 'logs and metrics after the restart');

  const logsAfter = cloudLogs();
  t.same(logsAfter.map((l) => l.body).sort(), ['before-start-1', 'before-start-2', 'new-group-while-down', 'while-down-1', 'while-down-2', 'while-down-3'], 'every event exactly once; the other appliance\'s group never');
  t.equal(new Set(logsAfter.map((l) => l.attrs['uplink.record.id'])).size, logsAfter.length, 'record ids are unique');
  t.same(
    rdsPoints().map((p) => `${p.attrs['aws.cloudwatch.statistic']}=${p.value}`).sort(),
    ['Average=11', 'Average=22', 'Maximum=11', 'Maximum=22'],
    'one point per statistic and period, none repeated or skipped',
  );

  // ---- who read it: only the SteadyState role's session, never the base credentials.
  const cloudCalls = proxy.calls.filter((c) => ['logs', 'monitoring', 'tagging'].includes(c.service));
  t.ok(cloudCalls.some((c) => c.operation === 'FilterLogEvents'), 'logs were read');
  t.ok(cloudCalls.some((c) => c.operation === 'GetMetricData'), 'metrics were read');
  t.ok(cloudCalls.some((c) => c.operation === 'GetResources'), 'resources were found by tag');
  const principals = new Set(cloudCalls.map((c) => {
    const s = proxy.sessions.get(c.accessKeyId);
    return s ? `${s.roleArn} ${s.sessionName}` : `unknown key ${c.accessKeyId}`;
  }));
  const steadyStateArn = (roles.config.aws.roles as Record<string, string>).steadyState;
  t.same([...principals], [`${steadyStateArn} ${STEADY_SESSION}`], 'every CloudWatch and tagging call used the SteadyState session');
  t.notOk(cloudCalls.some((c) => c.accessKeyId === BASE_CREDENTIALS.accessKeyId), 'the base credentials never read telemetry');
});
