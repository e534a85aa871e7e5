/**
 * Phase state per appliance: the relay keeps, for every connected agent, one long poll on
 * the agent's `/v1/phases` and stores each answer with `store.appliances.setPhaseSummary`,
 * so `uplink appliances` shows "deploy: open until 14:00Z; operate: closed" and `--json`
 * carries the mode (aws | local) and the four views.
 *
 * When the state is read:
 * - as soon as an agent connects (a new connection id is seen on the next tick), unless the
 *   store already holds the agent's current state: the relay remembers the fingerprint it
 *   stored for each appliance (loaded once at start) and opens the first poll held on it, so
 *   the agent answers at once only if its state moved. A restarted relay taking back ten
 *   thousand agents therefore writes only the states that changed while it was away;
 * - whenever it changes on the agent host (grant/revoke wake the held poll);
 * - at least every `phases.refreshIntervalSeconds` (the poll's wait; stored only if changed; tags changed from
 *   another machine show up then);
 * - right after an operation was refused with a phase code (the vendor just learned the
 *   state is not what the list said).
 *
 * The agent never pushes; this is the relay pulling, with one HTTP/2 stream per agent.
 */
import { randomUUID } from 'node:crypto';
import type { ClientHttp2Stream } from 'node:http2';
import { z } from 'zod';
import { UplinkError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { AGENT_PATHS, OP_HEADERS, encodeSpec } from '../shared/protocol.js';
import type { AgentSession } from './agent-session.js';
import type { RelayCapability } from './capabilities.js';
import { readSmallBody } from './ops-bridge.js';
import type { Relay } from './server.js';

export const PHASE_SUMMARY_LIMITS = {
  /** Largest /v1/phases answer accepted (four views with reasons fit in a few KiB). */
  maxReportBytes: 64 * 1024,
  /** How often the connected-agent list is scanned for new connections. */
  scanIntervalMs: 1_000,
  /**
   * Pause after a failed read before the next one, doubled after each further failure up to
   * the refresh interval, so a broken agent (or one too old to serve /v1/phases) costs a
   * request per refresh interval rather than one every few seconds.
   */
  retryDelayMs: 5_000,
  /**
   * Least time between two held polls: an agent that answers a held poll at once every time
   * (its state really flaps, or it is buggy) costs at most one read and store write per
   * interval instead of a hot loop.
   */
  minPollIntervalMs: 1_000,
  /** Extra time over the long poll's wait before the relay gives up on an answer. */
  answerGraceMs: 10_000,
} as const;

/** Codes that mean "the customer's approval said no": the stored state is refreshed at once. */
export const PHASE_REFUSAL_CODES: ReadonlySet<string> = new Set([
  'UPLINK_ERR_PHASE_NOT_APPROVED',
  'UPLINK_ERR_WINDOW_EXPIRED',
  'UPLINK_ERR_OUTSIDE_MAINTENANCE_WINDOW',
  'UPLINK_ERR_PHASE_DISABLED',
  'UPLINK_ERR_PHASE_SESSION_ENDED',
]);

/** The part of the agent's answer the relay relies on; the views are stored as given. */
const reportSchema = z.object({
  mode: z.enum(['aws', 'local']),
  summary: z.string().max(4096),
  phases: z.record(z.string(), z.unknown()),
  at: z.string().max(64),
  fingerprint: z.string().min(1).max(64),
});

export type StoredPhaseReport = z.output<typeof reportSchema>;

/** The pause after the `failures`-th failed read in a row: 5 s, 10 s, 20 s … up to the refresh interval. */
export function retryDelay(failures: number, refreshSeconds: number): number {
  const cap = Math.max(PHASE_SUMMARY_LIMITS.retryDelayMs, refreshSeconds * 1000);
  return Math.min(cap, PHASE_SUMMARY_LIMITS.retryDelayMs * 2 ** Math.min(failures - 1, 16));
}

/** One connection's poll loop. */
class PhasePoller {
  private stopped = false;
  private current: ClientHttp2Stream | undefined;
  private fingerprint: string | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private wakeRetry: (() => void) | undefined;
  /** Set by kick(): the next cut-short request is a restart, not a failure. */
  private kicked = false;
  /** Failed reads in a row; sets the retry delay. */
  private failures = 0;

  constructor(
    private readonly session: AgentSession,
    private readonly waitSeconds: number,
    private readonly save: (report: StoredPhaseReport) => Promise<void>,
    private readonly log: Logger,
    /** The fingerprint of the state the store holds for this appliance, if any. */
    stored?: string,
  ) {
    this.fingerprint = stored;
  }

  /** Read again now, even if a poll is being held. */
  kick(): void {
    this.fingerprint = undefined;
    if (this.current) {
      this.kicked = true;
      this.current.close();
    }
    this.wakeRetry?.();
  }

  stop(): void {
    this.stopped = true;
    this.current?.close();
    this.wakeRetry?.();
  }

  async run(): Promise<void> {
    while (!this.stopped && this.session.isOpen) {
      const held = this.fingerprint !== undefined;
      const startedAt = Date.now();
      try {
        const report = await this.fetch(held ? this.waitSeconds : 0, this.fingerprint);
        if (!report || this.stopped) continue;
        this.failures = 0;
        // A held poll that times out answers the same state: nothing to store. With ten
        // thousand agents that is a store write per agent per refresh interval saved.
        const changed = report.fingerprint !== this.fingerprint;
        this.fingerprint = report.fingerprint;
        if (changed) await this.save(report);
        const elapsed = Date.now() - startedAt;
        if (held && elapsed < PHASE_SUMMARY_LIMITS.minPollIntervalMs) await this.pause(PHASE_SUMMARY_LIMITS.minPollIntervalMs - elapsed);
      } catch (err) {
        if (this.stopped || !this.session.isOpen) break;
        const delayMs = retryDelay(++this.failures, this.waitSeconds);
        this.log.info({ err: (err as Error).message, code: (err as UplinkError).code, retryInMs: delayMs }, 'cannot read phase state; retrying');
        await this.pause(delayMs);
      }
    }
  }

  /** Wait `ms`, or less when kick() or stop() wakes the poller. */
  private async pause(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      this.wakeRetry = resolve;
      this.retryTimer = setTimeout(resolve, ms);
      this.retryTimer.unref();
    });
    clearTimeout(this.retryTimer);
    this.wakeRetry = undefined;
  }

  /** One request; undefined when it was cut short by `kick()`. */
  private async fetch(waitSeconds: number, since: string | undefined): Promise<StoredPhaseReport | undefined> {
    const stream = this.session.request(
      {
        ':path': AGENT_PATHS.phases,
        [OP_HEADERS.spec]: encodeSpec({ waitSeconds, ...(since ? { since } : {}) }),
        [OP_HEADERS.actor]: 'uplink-relay',
        [OP_HEADERS.requestId]: randomUUID(),
      },
      'phases',
      { endStream: true },
    );
    this.current = stream;
    const timer = setTimeout(() => stream.close(), waitSeconds * 1000 + PHASE_SUMMARY_LIMITS.answerGraceMs);
    timer.unref();
    try {
      const status = await new Promise<number | undefined>((resolve) => {
        stream.once('response', (h) => resolve(Number(h[':status'])));
        stream.once('close', () => resolve(undefined));
        stream.once('error', () => resolve(undefined));
      });
      if (status === undefined) {
        if (this.stopped || this.kicked) {
          this.kicked = false;
          return undefined;
        }
        throw new UplinkError('UPLINK_ERR_TUNNEL_CLOSED', 'the agent did not answer the phase state request');
      }
      const body = await readSmallBody(stream, PHASE_SUMMARY_LIMITS.maxReportBytes);
      if (Buffer.byteLength(body) >= PHASE_SUMMARY_LIMITS.maxReportBytes) {
        throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `phase state answer exceeds ${PHASE_SUMMARY_LIMITS.maxReportBytes} bytes`);
      }
      if (status !== 200) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `agent answered ${status} to the phase state request: ${body.slice(0, 200)}`);
      let json: unknown;
      try {
        json = JSON.parse(body);
      } catch {
        throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'the agent answered the phase state request with malformed JSON');
      }
      const parsed = reportSchema.safeParse(json);
      if (!parsed.success) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `the agent's phase state does not match the protocol: ${parsed.error.issues[0]?.message ?? ''}`);
      return parsed.data;
    } finally {
      clearTimeout(timer);
      if (this.current === stream) this.current = undefined;
    }
  }
}

/**
 * The relay capability. Keyed by connection id, so a reconnect (new connection) starts a
 * new poll with an immediate read and the old one ends with its session.
 */
export class PhaseSummaryService implements RelayCapability {
  readonly name = 'phase-summary';
  private relay: Relay | undefined;
  private readonly pollers = new Map<string, { poller: PhasePoller; applianceName: string; done: Promise<void> }>();
  private scanTimer: NodeJS.Timeout | undefined;
  /** Appliance id → fingerprint of the state in the store. */
  private stored = new Map<string, string>();

  async start(relay: Relay): Promise<void> {
    this.relay = relay;
    this.stored = await relay.store.appliances.phaseFingerprints();
    relay.ops.onRefused((r) => {
      if (!PHASE_REFUSAL_CODES.has(r.code)) return;
      for (const entry of this.pollers.values()) if (entry.applianceName === r.applianceName) entry.poller.kick();
    });
    this.scanTimer = setInterval(() => this.scan(), PHASE_SUMMARY_LIMITS.scanIntervalMs);
    this.scanTimer.unref();
  }

  /** Start a poll for every new connection; forget the ones that ended. */
  scan(): void {
    const relay = this.relay;
    if (!relay) return;
    const live = new Set<string>();
    for (const session of relay.gateway.all()) {
      if (!session.isOpen) continue;
      live.add(session.connectionId);
      if (this.pollers.has(session.connectionId)) continue;
      const { applianceId, applianceName } = session.info;
      const log = relay.log.child({ component: 'phase-summary', appliance: applianceName });
      const save = async (report: StoredPhaseReport) => {
        await relay.store.appliances.setPhaseSummary(applianceId, { summary: report.summary, phases: report.phases, mode: report.mode, at: report.at, fingerprint: report.fingerprint });
        this.stored.set(applianceId, report.fingerprint);
        log.debug({ summary: report.summary }, 'phase state stored');
      };
      const poller = new PhasePoller(session, relay.cfg.phases.refreshIntervalSeconds, save, log, this.stored.get(applianceId));
      const done = poller.run().catch((err: unknown) => log.error({ err: String(err) }, 'phase poll failed'));
      this.pollers.set(session.connectionId, { poller, applianceName, done });
    }
    for (const [id, entry] of this.pollers) {
      if (!live.has(id)) {
        entry.poller.stop();
        this.pollers.delete(id);
      }
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.scanTimer);
    const entries = [...this.pollers.values()];
    this.pollers.clear();
    for (const e of entries) e.poller.stop();
    await Promise.all(entries.map((e) => e.done));
  }
}
