/**
 * Telemetry throughput end to end on loopback: one agent process, one relay process (TLS,
 * self-signed certificate made with `openssl`) with a file sink, as deployed. Records per
 * second from the agent's spool to the sink, and CPU seconds per 100k records of the agent
 * and of the relay (utime + stime from /proc over the measured window).
 *
 * Two producers, both "one agent":
 * - spool drain: the agent's spool is filled before the agent starts (by this process,
 *   with the agent's own Spool class, records shaped as the CloudWatch Logs collector makes
 *   them); the window runs from the first delivered record to the last. This is exactly
 *   "agent spool → relay → sink", with nothing else running on the agent.
 * - OTLP in: an application posts OTLP/HTTP protobuf log batches to the agent's receiver
 *   as fast as the agent accepts them (4 requests in flight); the window runs from the first
 *   POST to the last record at the sink, so the agent also decodes, converts and spools
 *   every record while it serves the relay's pulls. The poster runs in this process on
 *   pre-encoded bodies.
 *
 * Completion is read from the relay's own counter (`uplink_telemetry_records_total`,
 * direction out = accepted by every sink) on /metrics, polled every 20-500 ms (densely near
 * the end, so the window's end is exact to about 20 ms).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { Agent as UndiciAgent, request, type Dispatcher } from 'undici';
import { ApiClient } from '../../relay/cli/api-client.js';
import { Spool } from '../../agent/telemetry/spool.js';
import { spoolDir } from '../../agent/telemetry/telemetry-service.js';
import { encodeExportRequest } from '../../shared/telemetry/otlp-proto.js';
import type { TelemetryRecord } from '../../shared/telemetry/record.js';
import type { CaseResult } from './agents-cases.js';
import { profileNotes } from './cpu-profile.js';
import { cpuSeconds, stopChild } from './proc.js';
import { startRelayProcess, type RelayProc } from './relay-process.js';
import { selfSignedCert } from '../helpers/tls.js';
import { freePort } from '../helpers/net.js';
import { figure } from './stats.js';
import { envNumber, profileArgs, profileDirFor } from './env.js';
import { setTimeout as sleep } from 'node:timers/promises';

export interface TelemetryOpts {
  runs: number;
  /** Records per run of the spool-drain case. */
  spoolRecords: number;
  /** Records per run of the OTLP case. */
  otlpRecords: number;
  /** Log records per OTLP request. */
  otlpBatch: number;
  /** When set, relay and agent run under --cpu-prof and the hot frames go into the notes. */
  profileDir?: string | undefined;
}


/**
 * BENCH_TELEMETRY_RUNS (5), BENCH_TELEMETRY_RECORDS (200000, spool drain),
 * BENCH_TELEMETRY_OTLP_RECORDS (200000), BENCH_TELEMETRY_OTLP_BATCH (1000 per request),
 * BENCH_CPU_PROF (a directory: profile relay and agent there).
 */
export function telemetryOptsFromEnv(): TelemetryOpts {
  return {
    runs: envNumber('BENCH_TELEMETRY_RUNS', 5),
    spoolRecords: envNumber('BENCH_TELEMETRY_RECORDS', 200_000),
    otlpRecords: envNumber('BENCH_TELEMETRY_OTLP_RECORDS', 200_000),
    otlpBatch: envNumber('BENCH_TELEMETRY_OTLP_BATCH', 1000),
    profileDir: profileDirFor('telemetry'),
  };
}

const ROOT = new URL('../../', import.meta.url).pathname;
const AGENT = join(ROOT, 'dist/agent/main.js');
const TOKEN = 'bench-admin-token-0123456789abcdef';
const APPLIANCE = 'bench-tel';
const TARGET = 50_000;
/** Polls of the relay's /metrics: at least this often near the end, at most this often otherwise. */
const MIN_POLL_MS = 20;
const MAX_POLL_MS = 500;



/** A log record as the CloudWatch Logs collector makes it (about 900 bytes of JSON). */
function cloudWatchRecord(i: number, baseMs: number): TelemetryRecord {
  const ms = baseMs + i;
  const time = `${ms}000000`;
  const group = '/aws/lambda/orders-api';
  const eventId = `${ms}${String(i).padStart(20, '0')}`;
  return {
    id: createHash('sha256').update(`cwlogs:${group}:${eventId}`).digest('hex'),
    signal: 'logs',
    timeUnixNano: time,
    source: 'cloudwatch-logs',
    resource: { 'cloud.provider': 'aws', 'aws.log.group.names': group, 'aws.log.group.arns': `arn:aws:logs:eu-west-1:123456789012:log-group:${group}` },
    payload: {
      timeUnixNano: time,
      observedTimeUnixNano: `${ms + 350}000000`,
      body: { stringValue: `${new Date(ms).toISOString()}\t6f1c2a7e-${String(i).padStart(8, '0')}\tINFO\tPOST /orders 201 in 42 ms (customer=c-${i % 977}, items=${i % 7})` },
      attributes: [
        { key: 'aws.log.group.names', value: { arrayValue: { values: [{ stringValue: group }] } } },
        { key: 'aws.log.stream.names', value: { arrayValue: { values: [{ stringValue: `2025/01/01/[$LATEST]${(i % 16).toString(16).repeat(32)}` }] } } },
        { key: 'aws.log.event.id', value: { stringValue: eventId } },
      ],
    },
  };
}

/** An OTLP/HTTP protobuf logs request of `n` application log records. */
function otlpBody(n: number, seed: number): Buffer {
  const now = Date.now();
  const logRecords = Array.from({ length: n }, (_, j) => {
    const i = seed * n + j;
    return {
      timeUnixNano: `${now + i}000000`,
      severityNumber: 9,
      severityText: 'INFO',
      body: { stringValue: `GET /api/v1/orders/${100000 + i} 200 in ${i % 250} ms user=u-${i % 4099}` },
      attributes: [
        { key: 'http.method', value: { stringValue: 'GET' } },
        { key: 'http.status_code', value: { intValue: '200' } },
        { key: 'http.route', value: { stringValue: '/api/v1/orders/:id' } },
      ],
      traceId: createHash('md5').update(`t${i}`).digest('hex'),
      spanId: createHash('md5').update(`s${i}`).digest('hex').slice(0, 16),
    };
  });
  return encodeExportRequest('logs', 'protobuf', {
    resourceLogs: [
      {
        resource: { attributes: [{ key: 'service.name', value: { stringValue: 'orders-api' } }, { key: 'service.version', value: { stringValue: '1.42.0' } }, { key: 'host.name', value: { stringValue: 'ip-10-0-1-23' } }] },
        scopeLogs: [{ scope: { name: 'orders-api.http', version: '1.0.0' }, logRecords }],
      },
    ],
  });
}

function post(agent: HttpAgent, port: number, body: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/v1/logs', method: 'POST', agent, headers: { 'content-type': 'application/x-protobuf', 'content-length': String(body.length) } }, (res) => {
      res.resume();
      res.once('error', reject);
      res.once('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`OTLP receiver answered ${res.statusCode}`))));
    });
    req.once('error', reject);
    req.end(body);
  });
}

/** Log records of the bench appliance accepted by every sink, per the relay's own counter on /metrics. */
async function deliveredOut(relay: RelayProc, dispatcher: Dispatcher): Promise<number> {
  const res = await request(`${relay.url}/metrics`, { dispatcher });
  const text = await res.body.text();
  let n = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('uplink_telemetry_records_total{') && line.includes('direction="out"') && line.includes('signal="logs"') && line.includes(`appliance="${APPLIANCE}"`)) {
      n += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return n;
}

interface Window {
  records: number;
  ms: number;
  agentCpu: number;
  relayCpu: number;
}

/**
 * Poll until `until` records are out. The window starts at `start`, or else at the first
 * poll that sees more than `from` records out (so agent start-up is not counted). Rendering
 * /metrics costs the relay CPU, so polls are sparse while the end is far and dense near it.
 */
async function measure(relay: RelayProc, dispatcher: Dispatcher, agentPid: number, from: number, until: number, start?: { t: number; agentCpu: number; relayCpu: number; out: number }, timeoutMs = 600_000): Promise<Window> {
  let s = start;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const out = await deliveredOut(relay, dispatcher);
    const t = performance.now();
    if (!s && out > from) s = { t, agentCpu: cpuSeconds(agentPid), relayCpu: cpuSeconds(relay.pid), out };
    if (s && out >= until) {
      return { records: out - s.out, ms: t - s.t, agentCpu: cpuSeconds(agentPid) - s.agentCpu, relayCpu: cpuSeconds(relay.pid) - s.relayCpu };
    }
    if (Date.now() > deadline) throw new Error(`only ${out - from}/${until - from} records delivered in ${timeoutMs} ms`);
    const rate = s && t > s.t && out > s.out ? (out - s.out) / (t - s.t) : 0; // records per ms
    await sleep(rate > 0 ? Math.min(MAX_POLL_MS, Math.max(MIN_POLL_MS, (until - out) / rate / 4)) : MIN_POLL_MS);
  }
}

export async function runTelemetryCases(dir: string, opts: TelemetryOpts): Promise<CaseResult[]> {
  const tls = selfSignedCert(dir);
  const prof = (who: string) => profileArgs(opts.profileDir, who);
  const sinkPath = join(dir, 'sink', 'telemetry.jsonl');
  const relay = await startRelayProcess({
    dir: join(dir, 'relay'),
    token: TOKEN,
    tls,
    nodeArgs: prof('relay'),
    config: { shutdown: { drainTimeoutMs: 1000 }, telemetry: { sinks: [{ type: 'file', name: 'file', path: sinkPath }] } },
  });
  const client = new ApiClient({ url: relay.url, token: TOKEN, caFile: tls.certFile });
  const metrics = new UndiciAgent({ connect: { ca: readFileSync(tls.certFile) } });
  const load0 = loadavg()[0]!;
  const drain: Window[] = [];
  const otlp: Window[] = [];
  const ingestMs: number[] = [];
  let agent: ChildProcess | undefined;
  try {
    const { enrollmentToken } = await client.call<{ enrollmentToken: string }>('POST', '/v1/appliances', { name: APPLIANCE, customer: 'bench', instanceId: 'i-bench-tel' });
    const stateDir = join(dir, 'agent-state');
    mkdirSync(stateDir, { recursive: true });
    const otlpPort = await freePort();
    const cfgFile = join(dir, 'agent.json');
    writeFileSync(cfgFile, JSON.stringify({ telemetry: { health: { intervalSeconds: 86_400 }, otlpReceiver: { enabled: true, port: otlpPort } } }));
    const env = { PATH: process.env.PATH, HOME: process.env.HOME, UPLINK_RELAY_URL: relay.url, UPLINK_RELAY_CA: tls.certFile, UPLINK_ENROLLMENT_TOKEN: enrollmentToken, UPLINK_STATE_DIR: stateDir, UPLINK_CONFIG: cfgFile, UPLINK_LOG_LEVEL: 'warn' };
    const startAgent = () => spawn(process.execPath, [...prof('agent'), AGENT, 'run'], { env, stdio: ['ignore', 'ignore', 'inherit'] });

    // ---- spool drain: fill, start the agent, time spool → sink.
    let delivered = 0;
    for (let r = 0; r <= opts.runs; r++) {
      // Run 0 is a warm-up (enrollment, JIT, first file and socket setup), not counted.
      const n = r === 0 ? Math.min(20_000, opts.spoolRecords) : opts.spoolRecords;
      const spool = await Spool.open({ dir: spoolDir(stateDir), fsync: 'never' });
      const base = Date.now();
      for (let i = 0; i < n; i += 5000) await spool.append(Array.from({ length: Math.min(5000, n - i) }, (_, j) => cloudWatchRecord(i + j, base)));
      await spool.close();
      agent = startAgent();
      const w = await measure(relay, metrics, agent.pid!, delivered, delivered + n);
      delivered += n;
      if (r > 0) drain.push(w);
      await stopChild(agent, 30_000);
    }

    // ---- OTLP in: one agent running, an application posting as fast as it is accepted.
    agent = startAgent();
    await waitReceiver(otlpPort, agent);
    delivered += 1; // the probe record
    const bodies = Array.from({ length: 16 }, (_, i) => otlpBody(opts.otlpBatch, i));
    const http = new HttpAgent({ keepAlive: true, maxSockets: 4 });
    try {
      for (let r = 0; r <= opts.runs; r++) {
        const n = r === 0 ? Math.min(20_000, opts.otlpRecords) : opts.otlpRecords;
        const requests = Math.ceil(n / opts.otlpBatch);
        const start = { t: performance.now(), agentCpu: cpuSeconds(agent.pid!), relayCpu: cpuSeconds(relay.pid), out: delivered };
        let next = 0;
        await Promise.all(
          Array.from({ length: 4 }, async () => {
            while (next < requests) await post(http, otlpPort, bodies[next++ % bodies.length]!);
          }),
        );
        const ingested = performance.now() - start.t;
        const w = await measure(relay, metrics, agent.pid!, delivered, delivered + requests * opts.otlpBatch, start);
        delivered += requests * opts.otlpBatch;
        if (r > 0) {
          otlp.push(w);
          ingestMs.push(ingested);
        }
      }
    } finally {
      http.destroy();
    }
  } finally {
    if (agent) await stopChild(agent, 30_000);
    await relay.stop();
    await client.close();
    await metrics.close();
  }
  const load1 = loadavg()[0]!;
  const f = (xs: number[], unit: string) => ({ ...figure(xs), unit });
  const rate = (ws: Window[]) => ws.map((w) => w.records / (w.ms / 1000));
  const per100k = (ws: Window[], k: 'agentCpu' | 'relayCpu') => ws.map((w) => (w[k] / w.records) * 100_000);
  const machine = `1-minute load average ${load0.toFixed(2)} before, ${load1.toFixed(2)} after (other work shares this machine); relay and agent over TLS on loopback; file sink with one fsync per batch; relay pull defaults (10,000 records / 4 MiB per batch)`;
  const profiles = profileNotes(opts.profileDir);
  return [
    {
      name: 'telemetry: agent spool → relay → file sink (spool drain)',
      figures: {
        'records/s': f(rate(drain), 'records/s'),
        'agent CPU per 100k records': f(per100k(drain, 'agentCpu'), 's'),
        'relay CPU per 100k records': f(per100k(drain, 'relayCpu'), 's'),
      },
      target: `≥ ${TARGET.toLocaleString('en')} log records/s`,
      met: figure(rate(drain)).median >= TARGET,
      notes: [`${opts.spoolRecords} CloudWatch-shaped log records (~900 B of JSON each) in the spool before the agent starts, ${opts.runs} runs; window from the first record at the sink to the last`, machine, ...profiles],
    },
    {
      name: 'telemetry: OTLP/HTTP in → agent spool → relay → file sink',
      figures: {
        'records/s': f(rate(otlp), 'records/s'),
        'agent CPU per 100k records': f(per100k(otlp, 'agentCpu'), 's'),
        'relay CPU per 100k records': f(per100k(otlp, 'relayCpu'), 's'),
        'receiver accepted records/s': f(ingestMs.map((ms) => (Math.ceil(opts.otlpRecords / opts.otlpBatch) * opts.otlpBatch) / (ms / 1000)), 'records/s'),
      },
      target: `≥ ${TARGET.toLocaleString('en')} log records/s`,
      met: figure(rate(otlp)).median >= TARGET,
      notes: [`${opts.otlpRecords} records per run as protobuf requests of ${opts.otlpBatch}, 4 in flight, ${opts.runs} runs; window from the first POST to the last record at the sink; agent CPU includes decoding, record ids and spooling`, machine],
    },
  ];
}

async function waitReceiver(port: number, agent: ChildProcess): Promise<void> {
  const deadline = Date.now() + 60_000;
  const http = new HttpAgent();
  try {
    for (;;) {
      try {
        await post(http, port, otlpBody(1, 999_999));
        return;
      } catch {
        if (agent.exitCode !== null) throw new Error(`agent exited ${agent.exitCode}`);
        if (Date.now() > deadline) throw new Error('the agent OTLP receiver did not come up in 60 s');
        await sleep(100);
      }
    }
  } finally {
    http.destroy();
  }
}
