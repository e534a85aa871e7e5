/**
 * `/v1/phases`: the customer's current approval of the four phases, for the vendor's
 * appliance list ("deploy: open until 14:00Z; operate: closed").
 *
 * The agent never pushes (the relay pulls everything), so a change is delivered by a long
 * poll: the relay sends the fingerprint of the state it already has and how long it is
 * willing to wait; the agent answers at once when the state differs, otherwise holds the
 * request until `notify()` (a grant/revoke on this host touched the change marker) or the
 * wait runs out, and then answers with whatever is current. A plain request (no spec) is
 * answered at once.
 *
 * The answer is cheap in local mode (a file read) and one ListRoleTags per phase in AWS
 * mode; the relay's refresh interval bounds how often that happens.
 */
import { createHash } from 'node:crypto';
import type { ServerHttp2Stream } from 'node:http2';
import { UplinkError } from '../../shared/errors.js';
import type { RequestContext } from '../tunnel-server.js';
import type { ApprovalView, PhaseMode } from './approval.js';
import { PHASES, type Phase } from './phase.js';
import { formatPhaseSummary } from './summary.js';

/** Bounds on what the relay may ask for. */
export const PHASES_HANDLER_LIMITS = {
  /** Longest a long poll may be held; the relay re-asks after it. */
  maxWaitSeconds: 300,
  /** A fingerprint is a hex SHA-256 prefix; anything longer is not one of ours. */
  maxFingerprintLength: 64,
} as const;

/** The answer of `/v1/phases` (also what the relay stores per appliance). */
export interface PhaseReport {
  mode: PhaseMode;
  /** One line for humans, as `formatPhaseSummary` renders it. */
  summary: string;
  phases: Record<Phase, ApprovalView>;
  /** When the agent read the state. */
  at: string;
  /** Changes whenever anything but the check times changes; sent back as `since`. */
  fingerprint: string;
}

/** What a long poll asks: "answer when the state is no longer `since`, or after waitSeconds". */
export interface PhasesRequest {
  waitSeconds: number;
  since?: string;
}

/** Where the handler reads the state: PhaseAccess in the agent, anything with `state()` in tests. */
export interface PhaseStateSource {
  readonly mode: PhaseMode;
  state(): Promise<Record<Phase, ApprovalView>>;
}

/** Parse the optional spec; a missing spec means "answer now". */
export function parsePhasesRequest(spec: unknown): PhasesRequest {
  if (spec === undefined || spec === null) return { waitSeconds: 0 };
  if (typeof spec !== 'object' || Array.isArray(spec)) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'phases request must be a JSON object');
  const { waitSeconds = 0, since, ...rest } = spec as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `unknown phases request field "${unknown[0]}"`);
  if (typeof waitSeconds !== 'number' || !Number.isInteger(waitSeconds) || waitSeconds < 0 || waitSeconds > PHASES_HANDLER_LIMITS.maxWaitSeconds) {
    throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `waitSeconds must be an integer from 0 to ${PHASES_HANDLER_LIMITS.maxWaitSeconds}`);
  }
  if (since !== undefined && (typeof since !== 'string' || since.length === 0 || since.length > PHASES_HANDLER_LIMITS.maxFingerprintLength)) {
    throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `since must be a fingerprint of 1-${PHASES_HANDLER_LIMITS.maxFingerprintLength} characters`);
  }
  return { waitSeconds, ...(since !== undefined ? { since } : {}) };
}

/**
 * Fingerprint of a state, ignoring when it was read: `checkedAt`, and that same time where
 * a refusal reason quotes it ("... (checked 2026-05-01T14:00:00.000Z)"). Anything else that
 * changes is a change the relay must see.
 */
export function fingerprintOf(mode: PhaseMode, phases: Record<Phase, ApprovalView>): string {
  const stable = PHASES.map((p) => {
    const { checkedAt, ...rest } = phases[p];
    const fields: Record<string, unknown> = { ...rest, reason: rest.reason.split(checkedAt).join('') };
    return [p, Object.keys(fields).sort().map((k) => [k, fields[k]])];
  });
  return createHash('sha256').update(JSON.stringify([mode, stable])).digest('hex').slice(0, 32);
}

/** Read the state now and render the report. */
export async function readPhaseReport(source: PhaseStateSource, now: () => number = Date.now): Promise<PhaseReport> {
  const phases = await source.state();
  return { mode: source.mode, summary: formatPhaseSummary(phases), phases, at: new Date(now()).toISOString(), fingerprint: fingerprintOf(source.mode, phases) };
}

/**
 * The tunnel handler for `/v1/phases`. `notify()` wakes every held long poll; the agent
 * calls it when the access change marker moves.
 */
export class PhasesHandler {
  private readonly waiters = new Set<() => void>();

  constructor(private readonly source: () => PhaseStateSource) {}

  /** Access may have changed: answer every held long poll with the fresh state. */
  notify(): void {
    const wake = [...this.waiters];
    this.waiters.clear();
    for (const w of wake) w();
  }

  /** Long polls being held (tests and diagnostics). */
  get waiting(): number {
    return this.waiters.size;
  }

  readonly handle = async (stream: ServerHttp2Stream, ctx: RequestContext): Promise<void> => {
    const req = parsePhasesRequest(ctx.spec);
    let report = await readPhaseReport(this.source());
    if (req.waitSeconds > 0 && req.since === report.fingerprint) {
      const woke = await this.wait(stream, req.waitSeconds * 1000);
      if (woke === 'closed') return;
      report = await readPhaseReport(this.source());
    }
    if (stream.destroyed || stream.closed) return;
    stream.respond({ ':status': 200, 'content-type': 'application/json' });
    stream.end(JSON.stringify(report));
  };

  /** Hold until notified, the wait ends, or the relay gives up on the stream. */
  private wait(stream: ServerHttp2Stream, ms: number): Promise<'changed' | 'timeout' | 'closed'> {
    return new Promise((resolve) => {
      let done = false;
      const finish = (why: 'changed' | 'timeout' | 'closed') => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.waiters.delete(onChange);
        stream.off('close', onClose);
        resolve(why);
      };
      const onChange = () => finish('changed');
      const onClose = () => finish('closed');
      const timer = setTimeout(() => finish('timeout'), ms);
      timer.unref();
      this.waiters.add(onChange);
      stream.once('close', onClose);
    });
  }
}
