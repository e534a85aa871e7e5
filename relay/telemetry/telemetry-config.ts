/**
 * The relay's `telemetry` config section: where pulled telemetry goes and how the pulls are
 * sized. An empty `sinks` list turns telemetry off on this relay: nothing is pulled, agents
 * keep their data in their spools, and `uplink telemetry tail` answers
 * UPLINK_ERR_TELEMETRY_DISABLED (a tail is a view of records on their way to the sinks,
 * never a delivery path of its own, so it cannot acknowledge batches).
 */
import { z } from 'zod';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Every default of the section, in one place. */
export const RELAY_TELEMETRY_DEFAULTS = {
  /** Wait after an empty pull; a non-empty pull is followed at once by the next. */
  pullIntervalMs: 1000,
  maxBatchRecords: 10_000,
  maxBatchBytes: 4 * MiB,
  /** Backoff after a failed pull, send or ack doubles from pullIntervalMs up to this. */
  maxBackoffMs: 30_000,
  /** One pull or ack round trip to the agent may take this long. */
  requestTimeoutMs: 30_000,
  /** Concurrent `telemetry tail` readers per relay. */
  maxTailSubscribers: 64,
  /** A tail reader further behind than this loses records (it is a live view). */
  maxTailBufferBytes: 4 * MiB,
} as const;

const D = RELAY_TELEMETRY_DEFAULTS;
const sinkName = z.string().regex(/^[a-zA-Z0-9_.-]{1,100}$/, 'must be 1-100 of [A-Za-z0-9_.-]');

const otlpHttpSinkSchema = z.strictObject({
  type: z.literal('otlp-http'),
  name: sinkName,
  endpoint: z.url({ protocol: /^https?$/ }),
  headers: z.record(z.string(), z.string()).optional(),
  encoding: z.enum(['protobuf', 'json']).optional(),
});

const fileSinkSchema = z.strictObject({
  type: z.literal('file'),
  name: sinkName,
  path: z.string().min(1),
});

export const relayTelemetrySchema = z
  .strictObject({
    sinks: z
      .array(z.discriminatedUnion('type', [otlpHttpSinkSchema, fileSinkSchema]))
      .max(16)
      .default([])
      .refine((sinks) => new Set(sinks.map((s) => s.name)).size === sinks.length, 'sink names must be unique'),
    pullIntervalMs: z.int().min(10).max(600_000).default(D.pullIntervalMs),
    maxBatchRecords: z.int().min(1).max(100_000).default(D.maxBatchRecords),
    maxBatchBytes: z.int().min(KiB).max(16 * MiB).default(D.maxBatchBytes),
    maxBackoffMs: z.int().min(10).max(3_600_000).default(D.maxBackoffMs),
    requestTimeoutMs: z.int().min(100).max(600_000).default(D.requestTimeoutMs),
    maxTailSubscribers: z.int().min(0).max(10_000).default(D.maxTailSubscribers),
    maxTailBufferBytes: z.int().min(KiB).max(256 * MiB).default(D.maxTailBufferBytes),
  })
  .prefault({});

export type RelayTelemetryConfig = z.output<typeof relayTelemetrySchema>;
export type SinkConfig = RelayTelemetryConfig['sinks'][number];
