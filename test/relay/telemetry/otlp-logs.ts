/**
 * OTLP/JSON logs for the telemetry tests: build and post an export request to the agent's
 * receiver, read what the sinks wrote back as (record id, body, resource attributes), reach
 * the agent's running telemetry service, and start a relay with both kinds of sink.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import { request } from 'undici';
import { startRelay, tempDir } from '../../helpers/cluster.js';
import { startTestOtlpServer } from './otlp-test-server.js';
import type { TelemetryCapability } from '../../../relay/telemetry/telemetry-capability.js';
import type { OtlpObject } from '../../../shared/telemetry/otlp-proto.js';
import { RECORD_ID_ATTRIBUTE } from '../../../relay/telemetry/pull-loop.js';
import type { Agent } from '../../../agent/agent.js';
import type { TelemetryService } from '../../../agent/telemetry/telemetry-service.js';

/** One log record per message, service `billing`, scope `app`, consecutive timestamps from `baseNs`. */
export function logsRequest(messages: string[], baseNs = 1_700_000_000_000_000_000n): OtlpObject {
  return {
    resourceLogs: [
      {
        resource: { attributes: [{ key: 'service.name', value: { stringValue: 'billing' } }] },
        scopeLogs: [{ scope: { name: 'app' }, logRecords: messages.map((m, i) => ({ timeUnixNano: String(baseNs + BigInt(i)), severityText: 'INFO', body: { stringValue: m } })) }],
      },
    ],
  };
}

/** POST an export request to the receiver on `port`; the HTTP status. */
export async function postLogs(port: number, req: OtlpObject): Promise<number> {
  const res = await request(`http://127.0.0.1:${port}/v1/logs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(req) });
  await res.body.text();
  return res.statusCode;
}

type Attr = { key: string; value: Record<string, unknown> };

export interface FlatLog {
  id: string;
  body: string;
  resource: Record<string, unknown>;
}

/** Every log record of the requests, in order, with its id attribute and its resource attributes. */
export function flattenLogs(requests: OtlpObject[]): FlatLog[] {
  const out: FlatLog[] = [];
  for (const req of requests) {
    for (const rl of (req.resourceLogs ?? []) as OtlpObject[]) {
      const resource = Object.fromEntries((((rl.resource as OtlpObject)?.attributes ?? []) as Attr[]).map((a) => [a.key, Object.values(a.value)[0]]));
      for (const sl of (rl.scopeLogs ?? []) as OtlpObject[]) {
        for (const lr of (sl.logRecords ?? []) as OtlpObject[]) {
          const id = ((lr.attributes ?? []) as Attr[]).find((a) => a.key === RECORD_ID_ATTRIBUTE)?.value.stringValue as string;
          out.push({ id, body: (lr.body as { stringValue: string }).stringValue, resource });
        }
      }
    }
  }
  return out;
}

/** The export requests a file sink wrote (one JSON line each); none when the file is not there yet. */
export function fileRequests(path: string): OtlpObject[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as OtlpObject);
}

/** The agent's running telemetry service (found through its capabilities). */
export function agentTelemetry(agent: Agent): TelemetryService {
  const cap = (agent as unknown as { capabilities: Array<{ name: string; service?: TelemetryService }> }).capabilities.find((c) => c.name === 'telemetry');
  if (!cap?.service) throw new Error('the agent runs no telemetry service');
  return cap.service;
}

/**
 * A relay exporting to a real OTLP/HTTP server (JSON) and a file sink, pulling every 20 ms
 * and backing off at most 50 ms; `telemetry` adds to or overrides that config.
 */
export async function startTelemetryRelay(t: Test, telemetry: Record<string, unknown> = {}) {
  const otlp = await startTestOtlpServer(t);
  const filePath = join(tempDir(t, 'uplink-sink-'), 'telemetry.jsonl');
  const relay = await startRelay(t, {
    config: {
      telemetry: {
        sinks: [
          { type: 'otlp-http', name: 'collector', endpoint: otlp.url, encoding: 'json' },
          { type: 'file', name: 'local', path: filePath },
        ],
        pullIntervalMs: 20,
        maxBackoffMs: 50,
        ...telemetry,
      },
    },
  });
  const cap = (relay as unknown as { capabilities: TelemetryCapability[] }).capabilities.find((c) => c.name === 'telemetry')!;
  return { otlp, filePath, relay, cap };
}
