/**
 * The relay's telemetry capability: builds the configured sinks and the fanout, runs one
 * PullLoop per connected agent (started on the gateway's connect event, stopped on
 * disconnect), and serves the live tail:
 *
 *   GET /v1/appliances/{name}/telemetry/tail[?signal=logs|metrics|traces]   scope: read
 *   → 200, application/x-ndjson, one delivered record per line, until the client leaves.
 *
 * With no sinks configured nothing is pulled (agents keep their data) and the tail answers
 * UPLINK_ERR_TELEMETRY_DISABLED; see telemetry-config.ts for why.
 */
import { UplinkError } from '../../shared/errors.js';
import { AGENT_PATHS } from '../../shared/protocol.js';
import type { SignalKind } from '../../shared/telemetry/record.js';
import { ApiAuthenticator } from '../api-auth.js';
import type { AgentSession } from '../agent-session.js';
import type { ApiContext } from '../api-routes.js';
import type { Route } from '../http-util.js';
import type { Relay } from '../server.js';
import type { RelayCapability } from '../capabilities.js';
import { TelemetryFanout, TelemetryMetrics } from './fanout.js';
import { FileSink } from './file-sink.js';
import { OtlpHttpSink } from './otlp-http-sink.js';
import { PullLoop, PullLoopMetrics } from './pull-loop.js';
import type { ApplianceInfo, Sink } from './sink.js';
import { TailHub } from './tail-hub.js';

const TAIL_PATH = /^\/v1\/appliances\/([a-z0-9][a-z0-9-]{0,62})\/telemetry\/tail$/;
const SIGNALS: readonly SignalKind[] = ['logs', 'metrics', 'traces'];
/** The agent's /v1/info answer is small; more is refused. */
const MAX_INFO_BYTES = 64 * 1024;

/** Region and account the agent reports in /v1/info (AWS mode only). */
async function agentCloud(session: AgentSession, timeoutMs: number): Promise<{ region: string; accountId: string }> {
  const stream = session.request({ ':path': AGENT_PATHS.info, ':method': 'GET' }, 'info', { endStream: true });
  const body = await new Promise<string>((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => {
      stream.close();
      reject(new UplinkError('UPLINK_ERR_TELEMETRY_PULL_FAILED', `agent /v1/info took longer than ${timeoutMs} ms`));
    }, timeoutMs);
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => {
      text += c;
      if (text.length > MAX_INFO_BYTES) stream.close();
    });
    stream.on('error', (err) => (clearTimeout(timer), reject(err)));
    stream.on('end', () => (clearTimeout(timer), resolve(text)));
  });
  let info: Record<string, unknown> = {};
  try {
    info = JSON.parse(body) as Record<string, unknown>;
  } catch {
    // An older agent or a truncated answer: the attributes stay empty rather than wrong.
  }
  return { region: typeof info.region === 'string' ? info.region : '', accountId: typeof info.accountId === 'string' ? info.accountId : '' };
}

/** The running capability; `loops` is visible to tests. */
export class TelemetryCapability implements RelayCapability {
  readonly name = 'telemetry';
  readonly loops = new Map<string, PullLoop>();
  tail!: TailHub;
  private fanout: TelemetryFanout | undefined;
  private relay!: Relay;
  private metrics!: TelemetryMetrics;
  private loopMetrics!: PullLoopMetrics;
  private readonly onConnected = (s: AgentSession): void => this.startLoop(s);
  private readonly onDisconnected = (s: AgentSession): void => void this.stopLoop(s);

  async start(relay: Relay): Promise<void> {
    this.relay = relay;
    const cfg = relay.cfg.telemetry;
    this.tail = new TailHub({ maxSubscribers: cfg.maxTailSubscribers, maxBufferBytes: cfg.maxTailBufferBytes });
    relay.extensions.routes.push(this.tailRoute());
    if (cfg.sinks.length === 0) {
      relay.log.info('telemetry: no sinks configured; agents are not pulled');
      return;
    }
    this.metrics = new TelemetryMetrics(relay.metrics.registry);
    this.loopMetrics = new PullLoopMetrics(relay.metrics.registry);
    const sinks: Sink[] = [];
    try {
      for (const s of cfg.sinks) {
        if (s.type === 'file') sinks.push(await FileSink.open({ name: s.name, path: s.path, observer: this.metrics, logger: relay.log }));
        else sinks.push(new OtlpHttpSink({ name: s.name, endpoint: s.endpoint, ...(s.headers ? { headers: s.headers } : {}), ...(s.encoding ? { encoding: s.encoding } : {}), observer: this.metrics, logger: relay.log }));
      }
    } catch (err) {
      await Promise.allSettled(sinks.map((s) => s.close()));
      throw err;
    }
    this.fanout = new TelemetryFanout({ sinks, metrics: this.metrics, logger: relay.log });
    relay.agentEvents.on('connected', this.onConnected);
    relay.agentEvents.on('disconnected', this.onDisconnected);
  }

  private startLoop(session: AgentSession): void {
    if (!this.fanout) return;
    const id = session.info.applianceId;
    const previous = this.loops.get(id);
    if (previous) void previous.stop();
    const cfg = this.relay.cfg.telemetry;
    const log = this.relay.log.child({ appliance: session.info.applianceName, component: 'telemetry-pull' });
    let info: Promise<ApplianceInfo> | undefined;
    const appliance = (): Promise<ApplianceInfo> => {
      info ??= (async () => {
        const row = await this.relay.store.appliances.byId(id);
        if (!row) throw new UplinkError('UPLINK_ERR_NOT_FOUND', `appliance ${id} no longer exists`);
        const cloud = await agentCloud(session, cfg.requestTimeoutMs);
        return { instanceId: row.instanceId, name: row.name, customer: row.customer, ...cloud };
      })();
      // A failed lookup is retried on the next round rather than cached.
      info.catch(() => (info = undefined));
      return info;
    };
    const loop = new PullLoop({ session, appliance, fanout: this.fanout, metrics: this.metrics, loopMetrics: this.loopMetrics, tail: this.tail, cfg, log });
    this.loops.set(id, loop);
    loop.start();
  }

  private async stopLoop(session: AgentSession): Promise<void> {
    const id = session.info.applianceId;
    const loop = this.loops.get(id);
    // A replaced connection's disconnect must not stop the new connection's loop.
    if (!loop || this.relay.gateway.get(id)) return;
    this.loops.delete(id);
    await loop.stop();
  }

  private tailRoute(): Route<ApiContext> {
    return {
      method: 'GET',
      pattern: TAIL_PATH,
      name: 'telemetry-tail',
      handler: async (ctx, [name]) => {
        ApiAuthenticator.require(ctx.token, 'read');
        const query = new URL(ctx.req.url ?? '/', 'http://relay').searchParams;
        const signalParam = query.get('signal');
        if (signalParam !== null && !SIGNALS.includes(signalParam as SignalKind)) {
          throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `signal must be one of ${SIGNALS.join(', ')}`);
        }
        const appliance = await this.relay.store.appliances.byName(name!);
        if (!appliance) throw new UplinkError('UPLINK_ERR_NOT_FOUND', `no appliance named ${name}`);
        if (!this.fanout) throw new UplinkError('UPLINK_ERR_TELEMETRY_DISABLED', 'this relay has no telemetry sinks configured, so it pulls no telemetry (set telemetry.sinks)');
        const { res, req } = ctx;
        const unsubscribe = this.tail.subscribe(name!, {
          signal: (signalParam ?? undefined) as SignalKind | undefined,
          buffered: () => res.writableLength,
          write: (line) => void res.write(line),
        });
        res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
        res.flushHeaders();
        await new Promise<void>((resolve) => {
          req.socket.once('close', resolve);
          res.once('close', resolve);
        });
        unsubscribe();
      },
    };
  }

  async stop(): Promise<void> {
    this.relay?.agentEvents.off('connected', this.onConnected);
    this.relay?.agentEvents.off('disconnected', this.onDisconnected);
    await Promise.all([...this.loops.values()].map((l) => l.stop()));
    this.loops.clear();
    await this.fanout?.close();
  }
}

/** Registered in relay/capabilities.ts. */
export function telemetryCapability(): RelayCapability {
  return new TelemetryCapability();
}
