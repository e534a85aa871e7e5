/**
 * The seam between telemetry sources and the spool: a `Collector` produces records and
 * hands them to an `Emit` function; a `CollectorScheduler` runs collectors on their periods.
 *
 * Contract for collectors: records are emitted first and the collector's checkpoint is
 * advanced only after `emit()` resolved. `emit()` may be slow (it is the spool's append);
 * awaiting it is the backpressure. A crash between emit and checkpoint therefore repeats at
 * most the last batch, and because record ids are stable the repeat is droppable by id.
 *
 * Also here: the AWS call wrapper every CloudWatch collector uses (`callAws`), so that
 * throttling, backoff and error codes follow one policy.
 */
import { createHash } from 'node:crypto';
import type { CloudWatchLogsClientConfig } from '@aws-sdk/client-cloudwatch-logs';
import { GetResourcesCommand, type ResourceGroupsTaggingAPIClient } from '@aws-sdk/client-resource-groups-tagging-api';
import type { TelemetryRecord } from '../../shared/telemetry/record.js';
import { UplinkError, toUplinkError, type ErrorCode } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';

/** Where collectors put records: the spool's append. Awaiting it is backpressure. */
export type Emit = (records: TelemetryRecord[]) => Promise<void>;

export interface CollectResult {
  /** True when a backlog remains (a poll limit was hit): run again soon, not after a period. */
  more: boolean;
}

/** One telemetry source, run periodically by a CollectorScheduler. */
export interface Collector {
  /** Stable name, also used for the checkpoint file and logs: 'cloudwatch-logs'. */
  readonly name: string;
  /** Nominal time between two runs, in milliseconds. */
  readonly periodMs: number;
  /**
   * Collect once: read, emit, then checkpoint. Never called concurrently with itself.
   * Must stop promptly (rejecting is fine) when `signal` aborts.
   */
  collect(signal: AbortSignal): Promise<CollectResult>;
}

/** Credentials as the AWS SDK v3 clients take them (the phases module's SteadyState provider). */
export type AwsCredentials = NonNullable<CloudWatchLogsClientConfig['credentials']>;

/** How a collector reaches AWS: SteadyState credentials, region, optional endpoint (tests, VPC endpoints). */
export interface AwsAccess {
  credentials: AwsCredentials;
  region: string;
  endpoint?: string;
}

/** Retry policy for AWS calls made by collectors. */
export const AWS_RETRY_DEFAULTS = {
  /** Attempts per call, including the first. */
  maxAttempts: 6,
  baseDelayMs: 250,
  maxDelayMs: 20_000,
} as const;

export type AwsRetryOptions = { maxAttempts?: number; baseDelayMs?: number; maxDelayMs?: number };

// AWS error names meaning "slow down" across CloudWatch, CloudWatch Logs and the tagging API.
const THROTTLE_NAMES = new Set(['ThrottlingException', 'Throttling', 'TooManyRequestsException', 'RequestLimitExceeded', 'RequestThrottled', 'SlowDown']);
const DENIED_NAMES = new Set(['AccessDenied', 'AccessDeniedException', 'UnauthorizedOperation', 'UnauthorizedException']);
const TRANSIENT_NAMES = new Set(['ServiceUnavailable', 'ServiceUnavailableException', 'InternalFailure', 'InternalServiceError', 'TimeoutError', 'RequestTimeout']);
const TRANSIENT_SYSCALL = new Set(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN']);

type AwsErrorShape = { name?: string; code?: string; $metadata?: { httpStatusCode?: number } };

/** How the retry wrapper sees an AWS SDK error. */
export function classifyAwsError(err: unknown): 'throttled' | 'denied' | 'transient' | 'fatal' {
  const e = (err ?? {}) as AwsErrorShape;
  const name = e.name ?? '';
  const status = e.$metadata?.httpStatusCode;
  if (THROTTLE_NAMES.has(name) || status === 429) return 'throttled';
  if (DENIED_NAMES.has(name)) return 'denied';
  if (TRANSIENT_NAMES.has(name) || (e.code !== undefined && TRANSIENT_SYSCALL.has(e.code)) || (status !== undefined && status >= 500)) return 'transient';
  return 'fatal';
}

/**
 * Call AWS with this package's retry policy: throttling and transient failures back off
 * exponentially with full jitter (AWS's recommended scheme), access denials fail at once.
 * The SDK clients are built with `maxAttempts: 1` so this is the only retry layer.
 * @throws UplinkError UPLINK_ERR_TELEMETRY_AWS_THROTTLED | _ACCESS_DENIED | _FAILED, with
 *   `details.operation` and `details.awsCode`; or the abort reason when `signal` aborts.
 */
export async function callAws<T>(operation: string, fn: () => Promise<T>, signal: AbortSignal, opts: AwsRetryOptions = {}): Promise<T> {
  const maxAttempts = opts.maxAttempts ?? AWS_RETRY_DEFAULTS.maxAttempts;
  const base = opts.baseDelayMs ?? AWS_RETRY_DEFAULTS.baseDelayMs;
  const cap = opts.maxDelayMs ?? AWS_RETRY_DEFAULTS.maxDelayMs;
  for (let attempt = 1; ; attempt++) {
    signal.throwIfAborted();
    try {
      return await fn();
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      const kind = classifyAwsError(err);
      const retryable = kind === 'throttled' || kind === 'transient';
      if (!retryable || attempt >= maxAttempts) throw awsError(operation, kind, err, attempt);
      await sleep(Math.random() * Math.min(cap, base * 2 ** (attempt - 1)), signal);
    }
  }
}

function awsError(operation: string, kind: ReturnType<typeof classifyAwsError>, err: unknown, attempts: number): UplinkError {
  const awsCode = (err as AwsErrorShape | undefined)?.name ?? 'Error';
  const code: ErrorCode =
    kind === 'throttled' ? 'UPLINK_ERR_TELEMETRY_AWS_THROTTLED' : kind === 'denied' ? 'UPLINK_ERR_TELEMETRY_AWS_ACCESS_DENIED' : 'UPLINK_ERR_TELEMETRY_AWS_FAILED';
  const message = err instanceof Error ? err.message : String(err);
  return new UplinkError(code, `${operation}: ${message}`, { details: { operation, awsCode, attempts }, cause: err });
}

/** Resolve after `ms`, or reject with the abort reason as soon as `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Defaults for CollectorScheduler options. */
export const SCHEDULER_DEFAULTS = {
  /** Each delay is the period scaled by a random factor in [1 - jitter, 1 + jitter]. */
  jitterRatio: 0.1,
  /** Delay before the next run when a collector reported a backlog. */
  backlogDelayMs: 250,
  /** After consecutive failures the delay doubles from the period up to this cap. */
  maxErrorBackoffMs: 5 * 60_000,
  /** stop() waits this long for in-flight collections to wind down after aborting them. */
  stopTimeoutMs: 10_000,
} as const;

export interface SchedulerOptions {
  logger?: Logger;
  jitterRatio?: number;
  backlogDelayMs?: number;
  maxErrorBackoffMs?: number;
  stopTimeoutMs?: number;
  /** Told about every failed run (for the agent's collector-error counter). */
  onError?: (collector: string, err: UplinkError) => void;
}

interface Slot {
  collector: Collector;
  timer: NodeJS.Timeout | undefined;
  running: Promise<void> | undefined;
  failures: number;
}

/**
 * Runs each collector on its own period. A collector's runs never overlap; the next run is
 * scheduled when the previous one ended (fixed delay, so a slow spool slows collection
 * rather than piling runs up). Jitter spreads the AWS calls of many agents and collectors.
 */
export class CollectorScheduler {
  readonly #slots: Slot[];
  readonly #log: Logger;
  readonly #opts: Required<Omit<SchedulerOptions, 'logger' | 'onError'>>;
  readonly #onError: SchedulerOptions['onError'];
  readonly #abort = new AbortController();
  #state: 'new' | 'running' | 'stopped' = 'new';
  #stopping: Promise<void> | undefined;

  constructor(collectors: Collector[], opts: SchedulerOptions = {}) {
    const names = new Set<string>();
    for (const c of collectors) {
      if (names.has(c.name)) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `two collectors are named "${c.name}"`);
      if (!(c.periodMs > 0)) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `collector "${c.name}" has period ${c.periodMs} ms`);
      names.add(c.name);
    }
    const jitterRatio = opts.jitterRatio ?? SCHEDULER_DEFAULTS.jitterRatio;
    if (!(jitterRatio >= 0 && jitterRatio < 1)) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `jitterRatio must be in [0, 1), got ${jitterRatio}`);
    this.#slots = collectors.map((collector) => ({ collector, timer: undefined, running: undefined, failures: 0 }));
    this.#log = (opts.logger ?? silentLogger).child({ component: 'telemetry-scheduler' });
    this.#opts = {
      jitterRatio,
      backlogDelayMs: opts.backlogDelayMs ?? SCHEDULER_DEFAULTS.backlogDelayMs,
      maxErrorBackoffMs: opts.maxErrorBackoffMs ?? SCHEDULER_DEFAULTS.maxErrorBackoffMs,
      stopTimeoutMs: opts.stopTimeoutMs ?? SCHEDULER_DEFAULTS.stopTimeoutMs,
    };
    this.#onError = opts.onError;
  }

  /** Start every collector; the first run of each comes after a random part of its jitter window. */
  start(): void {
    if (this.#state !== 'new') throw new UplinkError('UPLINK_ERR_INTERNAL', `scheduler already ${this.#state}`);
    this.#state = 'running';
    for (const slot of this.#slots) this.#schedule(slot, Math.random() * slot.collector.periodMs * this.#opts.jitterRatio);
  }

  /**
   * Stop scheduling, abort in-flight collections and wait for them (up to stopTimeoutMs).
   * Idempotent. Checkpoints are only written after a successful emit, so an aborted run
   * loses nothing: the next start resumes from the last checkpoint.
   */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    this.#state = 'stopped';
    for (const slot of this.#slots) clearTimeout(slot.timer);
    this.#abort.abort(new UplinkError('UPLINK_ERR_INTERNAL', 'telemetry scheduler stopped'));
    const inflight = this.#slots.map((s) => s.running).filter((p): p is Promise<void> => p !== undefined);
    if (inflight.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.#opts.stopTimeoutMs);
    });
    const outcome = await Promise.race([Promise.allSettled(inflight), timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout') this.#log.warn({ timeoutMs: this.#opts.stopTimeoutMs }, 'collectors did not stop in time');
  }

  #schedule(slot: Slot, delayMs: number): void {
    if (this.#state !== 'running') return;
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      slot.running = this.#run(slot).finally(() => {
        slot.running = undefined;
      });
    }, delayMs);
  }

  async #run(slot: Slot): Promise<void> {
    const { collector } = slot;
    let next: number;
    try {
      const result = await collector.collect(this.#abort.signal);
      slot.failures = 0;
      next = result.more ? this.#opts.backlogDelayMs : this.#jittered(collector.periodMs);
    } catch (err) {
      if (this.#abort.signal.aborted) return;
      const error = toUplinkError(err);
      slot.failures++;
      next = this.#jittered(Math.min(collector.periodMs * 2 ** (slot.failures - 1), Math.max(collector.periodMs, this.#opts.maxErrorBackoffMs)));
      this.#log.error({ collector: collector.name, code: error.code, details: error.details, failures: slot.failures, retryInMs: Math.round(next) }, error.message);
      try {
        this.#onError?.(collector.name, error);
      } catch (hookErr) {
        this.#log.error({ err: hookErr }, 'onError hook threw');
      }
    }
    this.#schedule(slot, next);
  }

  #jittered(ms: number): number {
    const j = this.#opts.jitterRatio;
    return ms * (1 - j + Math.random() * 2 * j);
  }
}

/** Stable record id: sha256 (hex) of a collector-scoped key such as `cwlogs:<group>:<eventId>`. */
export function recordId(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** Milliseconds since the epoch as OTLP JSON's decimal nanosecond string. */
export function msToUnixNano(ms: number): string {
  return (BigInt(Math.trunc(ms)) * 1_000_000n).toString();
}

/**
 * ARNs of resources carrying tag `key=value` (tag:GetResources, paginated).
 * `resourceTypes` are tagging-API filters such as 'logs' or 'rds:db'.
 * @returns at most `max` ARNs, and whether more existed.
 */
export async function listTaggedArns(
  client: ResourceGroupsTaggingAPIClient,
  q: { key: string; value: string; resourceTypes: string[]; max: number },
  signal: AbortSignal,
  retry?: AwsRetryOptions,
): Promise<{ arns: string[]; truncated: boolean }> {
  const arns: string[] = [];
  let token: string | undefined;
  do {
    const page = await callAws(
      'tag:GetResources',
      () =>
        client.send(
          new GetResourcesCommand({
            TagFilters: [{ Key: q.key, Values: [q.value] }],
            ResourceTypeFilters: q.resourceTypes,
            ResourcesPerPage: 100,
            ...(token ? { PaginationToken: token } : {}),
          }),
          { abortSignal: signal },
        ),
      signal,
      retry,
    );
    for (const r of page.ResourceTagMappingList ?? []) {
      if (!r.ResourceARN) continue;
      if (arns.length >= q.max) return { arns, truncated: true };
      arns.push(r.ResourceARN);
    }
    token = page.PaginationToken || undefined;
  } while (token);
  return { arns, truncated: false };
}
