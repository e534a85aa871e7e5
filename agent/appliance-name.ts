/**
 * The appliance name the agent pins. Releases are bound to an appliance *name* (the
 * manifest's `appliance`), and only the relay knows names: the agent's identity holds the
 * appliance id. So the agent learns its name once, from the relay right after enrollment
 * (AGENT_PATHS.applianceName), stores it in `<stateDir>/identity.json` beside its key, and
 * from then on checks release bindings against that pinned name. A relay that later names
 * the appliance differently, in the announcement or in a deploy request, is refused with
 * UPLINK_ERR_APPLIANCE_NAME_MISMATCH: appliance names never change on the relay, so a
 * different one means a misconfigured or compromised relay.
 *
 * An identity enrolled before names were pinned has none: it learns the name once, at the
 * next connection, and says so in the log. Without an announcement (an older relay), the
 * first deploy request pins it the same way.
 */
import type { ServerHttp2Stream } from 'node:http2';
import { UplinkError } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { APPLIANCE_PATTERN } from '../shared/release/manifest.js';
import { loadIdentity, saveIdentity, type AgentIdentity } from './identity-store.js';

/** Largest announcement body: an id and a name. */
const MAX_BODY_BYTES = 4096;

export class PinnedApplianceName {
  private name: string | null;

  /**
   * `identity` is the agent's identity as loaded at start; `enrolledBefore` says whether it
   * was enrolled before this start (an old identity) or enrolls now.
   */
  constructor(
    private readonly stateDir: string,
    private readonly identity: Pick<AgentIdentity, 'applianceId' | 'keyId' | 'applianceName'>,
    private readonly enrolledBefore: boolean,
    private readonly log: Logger,
  ) {
    this.name = identity.applianceName ?? null;
  }

  /** The pinned name, or null while none was learned. */
  get(): string | null {
    return this.name;
  }

  /**
   * The name to check releases against, given the one the relay `claimed`. Pins `claimed`
   * if nothing is pinned yet; throws UPLINK_ERR_APPLIANCE_NAME_MISMATCH if another one is.
   */
  resolve(claimed: string, source: 'announcement' | 'deploy request'): string {
    if (!APPLIANCE_PATTERN.test(claimed)) throw new UplinkError('UPLINK_ERR_BAD_REQUEST', `the relay named this appliance ${JSON.stringify(claimed.slice(0, 80))}, which is not an appliance name`);
    if (this.name === null) {
      this.pin(claimed, source);
      return claimed;
    }
    if (claimed !== this.name) {
      this.log.error({ pinned: this.name, claimed, source }, 'the relay names this appliance differently from the name pinned at enrollment; refused');
      throw new UplinkError('UPLINK_ERR_APPLIANCE_NAME_MISMATCH', `this agent's appliance is ${this.name} (pinned at enrollment), not ${claimed}`, {
        details: { pinned: this.name, claimed },
      });
    }
    return this.name;
  }

  /** Store the name with the identity on disk (re-read, so nothing the connection wrote is lost). */
  private pin(name: string, source: string): void {
    const onDisk = loadIdentity(this.stateDir);
    if (!onDisk || onDisk.applianceId !== this.identity.applianceId || onDisk.keyId !== this.identity.keyId) {
      throw new UplinkError('UPLINK_ERR_AGENT_STATE_MISMATCH', `${this.stateDir}/identity.json no longer holds this agent's identity; cannot pin the appliance name`);
    }
    saveIdentity(this.stateDir, { ...onDisk, applianceName: name });
    this.name = name;
    if (this.enrolledBefore) {
      this.log.warn(
        { appliance: name, applianceId: this.identity.applianceId, source },
        `this identity was enrolled before the agent kept its appliance name: learned "${name}" once from the relay's ${source} and pinned it in identity.json; releases must be bound to "${name}" or "*" from now on`,
      );
    } else {
      this.log.info({ appliance: name, applianceId: this.identity.applianceId, source }, `pinned appliance name "${name}" at enrollment`);
    }
  }
}

async function readJson(stream: ServerHttp2Stream): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new UplinkError('UPLINK_ERR_PAYLOAD_TOO_LARGE', `appliance name announcement exceeds ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  try {
    const v: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new UplinkError('UPLINK_ERR_BAD_REQUEST', 'appliance name announcement must be a JSON object');
}

/**
 * AGENT_PATHS.applianceName: the relay announces `{applianceId, name}` after every
 * handshake. Answers 200 `{name}` (the pinned name), or the refusal.
 */
export function applianceNameHandler(pinned: PinnedApplianceName, applianceId: string) {
  return async (stream: ServerHttp2Stream): Promise<void> => {
    const body = await readJson(stream);
    if (body.applianceId !== applianceId) {
      throw new UplinkError('UPLINK_ERR_AGENT_STATE_MISMATCH', `this agent belongs to appliance ${applianceId}, not ${String(body.applianceId).slice(0, 80)}`);
    }
    if (typeof body.name !== 'string') throw new UplinkError('UPLINK_ERR_BAD_REQUEST', '"name" must be a string');
    const name = pinned.resolve(body.name, 'announcement');
    stream.respond({ ':status': 200, 'content-type': 'application/json' });
    stream.end(JSON.stringify({ name }));
  };
}
