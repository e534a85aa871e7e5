/**
 * CloudWatch Logs collector: reads the log groups that belong to this appliance (tagged
 * `<tagKey>=<instance-id>`, or matching configured name patterns) under the SteadyState
 * role and emits each event as an OTLP LogRecord.
 *
 * Reading model (why it neither skips nor repeats across restarts): each group is read in
 * closed, half-open time windows [from, to). A window is opened with `to = now - settle`,
 * read to the end with FilterLogEvents (paginated by nextToken), then `from = to`. After
 * every page is emitted the checkpoint stores {from, to, nextToken}, so a restart resumes
 * the open window at the page after the last one emitted. Windows never overlap, so no
 * event is read twice; the settle delay covers CloudWatch accepting events whose
 * timestamp is earlier than their arrival. If a saved nextToken is too old to trust
 * (AWS expires them), the window is re-read from its start: that may repeat events, which
 * carry stable ids (sha256 of `cwlogs:<group>:<eventId>`) so sinks drop them.
 *
 * Why FilterLogEvents per group and not GetLogEvents per stream: Lambda and ECS create a
 * stream per container instance, so per-stream cursors would grow without bound and cost
 * one call per stream per poll, mostly for streams that will never be written again.
 *
 * Groups present on the very first run start at `startFrom`; groups that appear later
 * (newly created or newly tagged) start at their creation time, so nothing is missed.
 */
import {
  CloudWatchLogsClient,
  DescribeLogGroupsCommand,
  FilterLogEventsCommand,
  ListTagsForResourceCommand,
  type FilteredLogEvent,
  type LogGroup,
} from '@aws-sdk/client-cloudwatch-logs';
import { ResourceGroupsTaggingAPIClient } from '@aws-sdk/client-resource-groups-tagging-api';
import { z } from 'zod';
import { UplinkError, isUplinkError, toUplinkError } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import type { TelemetryRecord } from '../../shared/telemetry/record.js';
import type { CheckpointStore } from './checkpoint-store.js';
import { callAws, listTaggedArns, msToUnixNano, recordId, type AwsAccess, type AwsRetryOptions, type CollectResult, type Collector, type Emit } from './collector.js';
import type { CloudWatchLogsConfig } from './config.js';

/** Limits on what AWS returns, beyond those in the config. */
export const CLOUDWATCH_LOGS_LIMITS = {
  /** DescribeLogGroups results scanned per discovery (pattern matching, ListTagsForResource). */
  maxScannedGroups: 50_000,
  /** FilterLogEvents returns at most 10,000 events per page. */
  maxPageEvents: 10_000,
  /** Pages (including empty ones AWS returns while searching) read per group per poll. */
  maxPagesPerGroupPoll: 100,
  /** A saved nextToken older than this is not trusted; the window restarts (AWS expires tokens after a day). */
  maxTokenAgeMs: 3_600_000,
} as const;

export type CloudWatchLogsLimits = { -readonly [K in keyof typeof CLOUDWATCH_LOGS_LIMITS]: number };

export const CLOUDWATCH_LOGS_COLLECTOR = 'cloudwatch-logs';

const groupCheckpoint = z.strictObject({
  name: z.string().min(1),
  arn: z.string(),
  from: z.number().int().min(0),
  to: z.number().int().min(0).nullable(),
  nextToken: z.string().nullable(),
  tokenAt: z.number().int().nullable(),
});
const checkpointSchema = z.strictObject({
  version: z.literal(1),
  initialized: z.boolean(),
  groups: z.array(groupCheckpoint),
});
type GroupCheckpoint = z.infer<typeof groupCheckpoint>;
/** In memory the groups are a Map: group names are arbitrary strings (even `__proto__`). */
interface Checkpoint {
  initialized: boolean;
  groups: Map<string, GroupCheckpoint>;
}

export interface CloudWatchLogsCollectorOptions {
  aws: AwsAccess;
  /** This appliance's instance id: the value of the `tagKey` tag on its log groups. */
  instanceId: string;
  /** The parsed `telemetry.cloudwatchLogs` section. */
  config: CloudWatchLogsConfig;
  checkpoints: CheckpointStore;
  emit: Emit;
  logger?: Logger;
  retry?: AwsRetryOptions;
  limits?: Partial<CloudWatchLogsLimits>;
  /** Clock in ms; windows are computed from it. */
  now?: () => number;
}

interface GroupInfo {
  name: string;
  arn: string;
  creationTime: number | undefined;
}

/** Reads this appliance's CloudWatch log groups with durable, exactly-positioned checkpoints. */
export class CloudWatchLogsCollector implements Collector {
  readonly name = CLOUDWATCH_LOGS_COLLECTOR;
  readonly periodMs: number;
  readonly #o: CloudWatchLogsCollectorOptions;
  readonly #limits: CloudWatchLogsLimits;
  readonly #logs: CloudWatchLogsClient;
  readonly #tagging: ResourceGroupsTaggingAPIClient;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #patterns: RegExp[];
  #groups: GroupInfo[] | undefined;
  #discoveredAt = 0;
  /** Resolved tag lookup; 'auto' becomes 'list-tags' once the tagging API is denied. */
  #tagLookup: 'auto' | 'tagging-api' | 'list-tags';
  #rotate = 0;

  constructor(opts: CloudWatchLogsCollectorOptions) {
    if (!opts.instanceId) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', 'cloudwatch-logs collector needs an instance id');
    this.#o = opts;
    this.#limits = { ...CLOUDWATCH_LOGS_LIMITS, ...opts.limits };
    this.periodMs = opts.config.pollSeconds * 1000;
    const client = { region: opts.aws.region, credentials: opts.aws.credentials, maxAttempts: 1, ...(opts.aws.endpoint ? { endpoint: opts.aws.endpoint } : {}) };
    this.#logs = new CloudWatchLogsClient(client);
    this.#tagging = new ResourceGroupsTaggingAPIClient(client);
    this.#log = (opts.logger ?? silentLogger).child({ collector: CLOUDWATCH_LOGS_COLLECTOR });
    this.#now = opts.now ?? Date.now;
    this.#patterns = opts.config.logGroupPatterns.map(globToRegExp);
    this.#tagLookup = opts.config.tagLookup;
  }

  /** Release the SDK clients' sockets. */
  close(): void {
    this.#logs.destroy();
    this.#tagging.destroy();
  }

  /** The groups found by the last discovery (names), for diagnostics. */
  get groups(): string[] {
    return (this.#groups ?? []).map((g) => g.name);
  }

  async collect(signal: AbortSignal): Promise<CollectResult> {
    const cp = await this.#loadCheckpoint();
    const groups = await this.#discoverIfDue(cp, signal);
    if (groups.length === 0) return { more: false };

    let budget = this.#o.config.maxEventsPerPoll;
    let more = false;
    const errors: UplinkError[] = [];
    // Rotate the starting group so a busy group cannot starve the others of the poll budget.
    const start = this.#rotate++ % groups.length;
    for (let i = 0; i < groups.length; i++) {
      const group = groups[(start + i) % groups.length]!;
      if (budget <= 0) {
        more = true;
        break;
      }
      try {
        const r = await this.#readGroup(group, cp, budget, signal);
        budget -= r.events;
        more ||= r.more;
      } catch (err) {
        if (signal.aborted) throw err;
        const e = toUplinkError(err);
        errors.push(e);
        this.#log.warn({ logGroup: group.name, code: e.code, details: e.details }, `reading log group failed: ${e.message}`);
      }
    }
    // One unreadable group must not stop the others; the run fails only when none could be read.
    if (errors.length > 0 && errors.length === groups.length) throw errors[0]!;
    return { more };
  }

  /** Read one group from its checkpoint, emitting and checkpointing page by page. */
  async #readGroup(group: GroupInfo, cp: Checkpoint, budget: number, signal: AbortSignal): Promise<{ events: number; more: boolean }> {
    const state = cp.groups.get(group.name);
    if (!state) return { events: 0, more: false };
    const now = this.#now();
    if (state.nextToken !== null && state.tokenAt !== null && now - state.tokenAt > this.#limits.maxTokenAgeMs) {
      this.#log.info({ logGroup: group.name, from: state.from, to: state.to }, 'saved nextToken is too old; re-reading the window (repeats are dropped by id)');
      state.nextToken = null;
      state.tokenAt = null;
    }
    if (state.to === null) {
      const to = now - this.#o.config.settleSeconds * 1000;
      if (to <= state.from) return { events: 0, more: false };
      state.to = to;
    }
    let events = 0;
    for (let page = 0; page < this.#limits.maxPagesPerGroupPoll; page++) {
      const limit = Math.min(this.#limits.maxPageEvents, budget - events);
      const res = await callAws(
        'logs:FilterLogEvents',
        () =>
          this.#logs.send(
            new FilterLogEventsCommand({
              logGroupName: group.name,
              startTime: state.from,
              // Both bounds are inclusive in the API; the window is [from, to).
              endTime: state.to! - 1,
              limit,
              ...(state.nextToken ? { nextToken: state.nextToken } : {}),
            }),
            { abortSignal: signal },
          ),
        signal,
        this.#o.retry,
      ).catch((err: unknown) => {
        if (isUplinkError(err) && err.details?.awsCode === 'ResourceNotFoundException') return undefined;
        throw err;
      });
      if (res === undefined) {
        // The group was deleted: forget it so its checkpoint does not linger.
        cp.groups.delete(group.name);
        this.#groups = this.#groups?.filter((g) => g.name !== group.name);
        await this.#saveCheckpoint(cp);
        this.#log.info({ logGroup: group.name }, 'log group no longer exists');
        return { events, more: false };
      }
      // Never drop part of a page: the token already points past all of it.
      const batch = (res.events ?? []).map((e) => this.#toRecord(group, e, now));
      if (batch.length > 0) await this.#o.emit(batch);
      events += batch.length;
      advance(state, res.nextToken, this.#now());
      await this.#saveCheckpoint(cp);
      if (state.to === null) return { events, more: false };
      if (events >= budget) return { events, more: true };
    }
    // Many empty pages: AWS is still searching a large window; continue next run.
    return { events, more: true };
  }

  #toRecord(group: GroupInfo, e: FilteredLogEvent, observedMs: number): TelemetryRecord {
    const timeUnixNano = msToUnixNano(e.timestamp ?? 0);
    const max = this.#o.config.maxMessageBytes;
    let message = e.message ?? '';
    let truncated = false;
    if (Buffer.byteLength(message) > max) {
      message = Buffer.from(message).subarray(0, max).toString('utf8');
      truncated = true;
    }
    const attributes: Array<{ key: string; value: Record<string, unknown> }> = [
      { key: 'aws.log.group.names', value: { arrayValue: { values: [{ stringValue: group.name }] } } },
      { key: 'aws.log.stream.names', value: { arrayValue: { values: [{ stringValue: e.logStreamName ?? '' }] } } },
      { key: 'aws.log.event.id', value: { stringValue: e.eventId ?? '' } },
    ];
    if (truncated) attributes.push({ key: 'uplink.truncated', value: { boolValue: true } });
    return {
      id: recordId(`cwlogs:${group.name}:${e.eventId ?? `${e.logStreamName}:${e.timestamp}:${e.message}`}`),
      signal: 'logs',
      timeUnixNano,
      source: CLOUDWATCH_LOGS_COLLECTOR,
      resource: { 'cloud.provider': 'aws', 'aws.log.group.names': group.name, 'aws.log.group.arns': group.arn },
      payload: {
        timeUnixNano,
        // When CloudWatch received the event; the timestamp above is when it happened.
        observedTimeUnixNano: msToUnixNano(e.ingestionTime ?? observedMs),
        body: { stringValue: message },
        attributes,
      },
    };
  }

  async #loadCheckpoint(): Promise<Checkpoint> {
    const saved = await this.#o.checkpoints.load(CLOUDWATCH_LOGS_COLLECTOR, checkpointSchema);
    if (!saved) return { initialized: false, groups: new Map() };
    return { initialized: saved.initialized, groups: new Map(saved.groups.map((g) => [g.name, g])) };
  }

  #saveCheckpoint(cp: Checkpoint): Promise<void> {
    return this.#o.checkpoints.save(CLOUDWATCH_LOGS_COLLECTOR, { version: 1, initialized: cp.initialized, groups: [...cp.groups.values()] });
  }

  // ---- discovery ---------------------------------------------------------------------

  async #discoverIfDue(cp: Checkpoint, signal: AbortSignal): Promise<GroupInfo[]> {
    const now = this.#now();
    const due = this.#groups === undefined || now - this.#discoveredAt >= this.#o.config.discoverySeconds * 1000;
    if (due) {
      try {
        this.#groups = await this.#discover(signal);
        this.#discoveredAt = now;
      } catch (err) {
        if (this.#groups === undefined || signal.aborted) throw err;
        const e = toUplinkError(err);
        this.#log.warn({ code: e.code }, `log group discovery failed, keeping the previous list: ${e.message}`);
      }
    }
    const groups = this.#groups ?? [];
    if (await this.#reconcile(cp, groups, signal)) await this.#saveCheckpoint(cp);
    return groups.filter((g) => cp.groups.has(g.name));
  }

  /** Give new groups a starting point and drop checkpoints of groups no longer collected. */
  async #reconcile(cp: Checkpoint, groups: GroupInfo[], signal: AbortSignal): Promise<boolean> {
    let changed = false;
    const wanted = new Set(groups.map((g) => g.name));
    for (const name of [...cp.groups.keys()]) {
      if (!wanted.has(name)) {
        cp.groups.delete(name);
        changed = true;
      }
    }
    const now = this.#now();
    for (const g of groups) {
      if (cp.groups.has(g.name)) continue;
      let from: number;
      if (!cp.initialized) from = this.#o.config.startFrom === 'beginning' ? 0 : now;
      else from = g.creationTime ?? (await this.#creationTime(g.name, signal)) ?? 0;
      cp.groups.set(g.name, { name: g.name, arn: g.arn, from, to: null, nextToken: null, tokenAt: null });
      changed = true;
    }
    if (!cp.initialized) {
      cp.initialized = true;
      changed = true;
    }
    return changed;
  }

  async #discover(signal: AbortSignal): Promise<GroupInfo[]> {
    const cfg = this.#o.config;
    const found = new Map<string, GroupInfo>();
    let tagged: Set<string> | undefined;
    if (this.#tagLookup !== 'list-tags') {
      try {
        const { arns, truncated } = await listTaggedArns(
          this.#tagging,
          { key: cfg.tagKey, value: this.#o.instanceId, resourceTypes: ['logs'], max: this.#limits.maxScannedGroups },
          signal,
          this.#o.retry,
        );
        if (truncated) this.#log.warn({ max: this.#limits.maxScannedGroups }, 'more tagged log groups than the scan limit');
        tagged = new Set();
        for (const arn of arns) {
          const name = groupNameFromArn(arn);
          if (name === undefined) continue;
          tagged.add(name);
          found.set(name, { name, arn: normaliseGroupArn(arn), creationTime: undefined });
        }
      } catch (err) {
        if (this.#tagLookup !== 'auto' || toUplinkError(err).code !== 'UPLINK_ERR_TELEMETRY_AWS_ACCESS_DENIED') throw err;
        this.#log.info('tag:GetResources is denied; falling back to logs:ListTagsForResource per group');
        this.#tagLookup = 'list-tags';
      }
    }
    if (this.#patterns.length > 0 || tagged === undefined) {
      for (const g of await this.#scanGroups(signal)) {
        const name = g.logGroupName!;
        const info: GroupInfo = { name, arn: normaliseGroupArn(g.logGroupArn ?? g.arn ?? name), creationTime: g.creationTime };
        if (found.has(name)) found.set(name, { ...found.get(name)!, creationTime: info.creationTime });
        else if (this.#patterns.some((p) => p.test(name))) found.set(name, info);
        else if (tagged === undefined && (await this.#hasTag(info.arn, signal))) found.set(name, info);
      }
    }
    const all = [...found.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (all.length > cfg.maxLogGroups) {
      this.#log.warn({ found: all.length, max: cfg.maxLogGroups }, 'more log groups match than maxLogGroups; collecting the first by name');
    }
    return all.slice(0, cfg.maxLogGroups);
  }

  async #scanGroups(signal: AbortSignal): Promise<LogGroup[]> {
    const out: LogGroup[] = [];
    let token: string | undefined;
    do {
      const page = await callAws(
        'logs:DescribeLogGroups',
        () => this.#logs.send(new DescribeLogGroupsCommand({ limit: 50, ...(token ? { nextToken: token } : {}) }), { abortSignal: signal }),
        signal,
        this.#o.retry,
      );
      for (const g of page.logGroups ?? []) {
        if (!g.logGroupName) continue;
        if (out.length >= this.#limits.maxScannedGroups) {
          this.#log.warn({ max: this.#limits.maxScannedGroups }, 'account has more log groups than the scan limit');
          return out;
        }
        out.push(g);
      }
      token = page.nextToken || undefined;
    } while (token);
    return out;
  }

  async #hasTag(arn: string, signal: AbortSignal): Promise<boolean> {
    const res = await callAws(
      'logs:ListTagsForResource',
      () => this.#logs.send(new ListTagsForResourceCommand({ resourceArn: arn }), { abortSignal: signal }),
      signal,
      this.#o.retry,
    );
    return res.tags?.[this.#o.config.tagKey] === this.#o.instanceId;
  }

  async #creationTime(name: string, signal: AbortSignal): Promise<number | undefined> {
    let token: string | undefined;
    do {
      const page = await callAws(
        'logs:DescribeLogGroups',
        () => this.#logs.send(new DescribeLogGroupsCommand({ logGroupNamePrefix: name, limit: 50, ...(token ? { nextToken: token } : {}) }), { abortSignal: signal }),
        signal,
        this.#o.retry,
      );
      const hit = page.logGroups?.find((g) => g.logGroupName === name);
      if (hit) return hit.creationTime;
      token = page.nextToken || undefined;
    } while (token);
    return undefined;
  }
}

/** Move a window forward after a page: keep the token, or close the window. */
function advance(state: GroupCheckpoint, nextToken: string | undefined, now: number): void {
  if (nextToken) {
    state.nextToken = nextToken;
    // Age of this token (each token expires on its own, so a long window never times out).
    state.tokenAt = now;
    return;
  }
  state.from = state.to!;
  state.to = null;
  state.nextToken = null;
  state.tokenAt = null;
}

/** `arn:aws:logs:r:a:log-group:NAME[:*]` → NAME. */
export function groupNameFromArn(arn: string): string | undefined {
  const m = /^arn:[^:]+:logs:[^:]*:[^:]*:log-group:(.+?)(?::\*)?$/.exec(arn);
  return m?.[1];
}

function normaliseGroupArn(arn: string): string {
  return arn.endsWith(':*') ? arn.slice(0, -2) : arn;
}

/** Glob (`*` any run of characters, `?` one character) → anchored RegExp. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (const ch of glob) {
    if (ch === '*') re += '.*';
    else if (ch === '?') re += '.';
    else re += ch.replace(/[\\^$.|+()[\]{}]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}
