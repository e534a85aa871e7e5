/** The relay's Prometheus metrics, on one registry served at /metrics. */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

export class RelayMetrics {
  readonly registry = new Registry();
  readonly agentsConnected = new Gauge({ name: 'uplink_agents_connected', help: 'Agents connected to this relay process.', registers: [this.registry] });
  readonly streamsOpen = new Gauge({ name: 'uplink_streams_open', help: 'Tunnel streams open to agents.', labelNames: ['op'], registers: [this.registry] });
  readonly bytes = new Counter({
    name: 'uplink_tunnel_bytes_total',
    help: 'Bytes carried through tunnels, by direction (to_agent, from_agent).',
    labelNames: ['direction'],
    registers: [this.registry],
  });
  readonly authFailures = new Counter({
    name: 'uplink_auth_failures_total',
    help: 'Rejected agent handshakes and API requests, by error code.',
    labelNames: ['code'],
    registers: [this.registry],
  });
  readonly connections = new Counter({
    name: 'uplink_agent_connections_total',
    help: 'Accepted agent connections (enroll or connect).',
    labelNames: ['mode'],
    registers: [this.registry],
  });
  readonly disconnections = new Counter({
    name: 'uplink_agent_disconnections_total',
    help: 'Agent disconnections, by reason.',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly apiRequests = new Counter({
    name: 'uplink_api_requests_total',
    help: 'Vendor API requests, by route and status.',
    labelNames: ['route', 'status'],
    registers: [this.registry],
  });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: 'uplink_relay_' });
  }
}
