/**
 * Verifies an agent's WebSocket handshake (enroll or connect) before the upgrade completes.
 *
 * Order matters for privacy: the cheap stateless checks come first, an unknown appliance and
 * a bad signature give the same answer (so the relay does not reveal which appliances
 * exist), and facts about a specific appliance (revoked key) are only disclosed to a caller
 * who proved possession of that appliance's key.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { UplinkError } from '../shared/errors.js';
import { HANDSHAKE_HEADERS as H } from '../shared/protocol.js';
import { keyId, verifyHandshake, type HandshakeClaims } from '../shared/identity.js';
import type { Store } from './store/store.js';
import type { Appliance } from './store/appliances-repo.js';
import { hashSecret } from './store/tokens-repo.js';
import { Batcher } from './store/batcher.js';
import { parseEnrollmentToken } from '../shared/enrollment-token.js';

export interface VerifiedAgent {
  appliance: Appliance;
  mode: 'enroll' | 'connect';
  agentVersion: string | null;
}

const APPLIANCE_ID = /^apl_[0-9a-f]{16}$/;
const NONCE = /^[A-Za-z0-9_-]{22,64}$/;
const MAX_HEADER = 512;

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_HEADER) return undefined;
  return v;
}

export class AgentAuthenticator {
  /** The two statements of every handshake, batched across concurrent handshakes (see Batcher). */
  private readonly appliances: Batcher<string, Appliance | undefined>;
  private readonly nonces: Batcher<{ nonce: string; applianceId: string; expiresAt: Date }, boolean>;

  constructor(
    private readonly store: Store,
    private readonly opts: { clockSkewMs: number; now?: () => number },
  ) {
    this.appliances = new Batcher((ids) => store.appliances.byIds(ids));
    this.nonces = new Batcher((list) => store.nonces.useMany(list));
  }

  private now(): number {
    return this.opts.now ? this.opts.now() : Date.now();
  }

  /** Throws an UplinkError with the precise code; the caller logs it and answers the upgrade. */
  async verify(headers: IncomingHttpHeaders, hostHeader: string | undefined): Promise<VerifiedAgent> {
    const mode = header(headers, H.mode);
    const appliance = header(headers, H.appliance);
    const timestamp = header(headers, H.timestamp);
    const nonce = header(headers, H.nonce);
    const publicKey = header(headers, H.publicKey);
    const signature = header(headers, H.signature);
    const agentVersion = header(headers, H.agentVersion) ?? null;
    if ((mode !== 'enroll' && mode !== 'connect') || !appliance || !timestamp || !nonce || !publicKey || !signature || !hostHeader) {
      throw new UplinkError('UPLINK_ERR_AUTH_MALFORMED', 'handshake headers missing or malformed');
    }
    if (!APPLIANCE_ID.test(appliance) || !NONCE.test(nonce) || !/^\d{1,15}$/.test(timestamp)) {
      throw new UplinkError('UPLINK_ERR_AUTH_MALFORMED', 'handshake headers missing or malformed');
    }
    const ts = Number(timestamp);
    const skew = Math.abs(this.now() - ts);
    if (skew > this.opts.clockSkewMs) {
      throw new UplinkError('UPLINK_ERR_AUTH_CLOCK_SKEW', `agent clock differs from the relay's by ${Math.round(skew / 1000)} s (limit ${this.opts.clockSkewMs / 1000} s)`);
    }
    const claims: HandshakeClaims = { mode, appliance, relayHost: hostHeader.toLowerCase(), timestamp: ts, nonce, publicKey };
    if (!verifyHandshake(claims, signature, publicKey)) {
      throw new UplinkError('UPLINK_ERR_AUTH_BAD_SIGNATURE', 'handshake signature did not verify');
    }
    return mode === 'enroll' ? this.enroll(claims, header(headers, H.enrollmentToken), agentVersion) : this.connect(claims, agentVersion);
  }

  private async consumeNonce(claims: HandshakeClaims): Promise<void> {
    // Keep the nonce as long as its timestamp could still pass the skew check.
    const expires = new Date(claims.timestamp + this.opts.clockSkewMs + 1000);
    if (!(await this.nonces.call({ nonce: claims.nonce, applianceId: claims.appliance, expiresAt: expires }))) {
      throw new UplinkError('UPLINK_ERR_AUTH_REPLAY', 'handshake nonce already used');
    }
  }

  private async connect(claims: HandshakeClaims, agentVersion: string | null): Promise<VerifiedAgent> {
    const appliance = await this.appliances.call(claims.appliance);
    // Unknown appliance and a key that is not the enrolled one are indistinguishable on purpose.
    if (!appliance || !appliance.publicKey || appliance.publicKey !== claims.publicKey) {
      throw new UplinkError('UPLINK_ERR_AUTH_BAD_SIGNATURE', 'handshake signature did not verify');
    }
    await this.consumeNonce(claims);
    if (appliance.keyRevokedAt) {
      throw new UplinkError('UPLINK_ERR_AUTH_KEY_REVOKED', `the key ${appliance.keyId ?? ''} was revoked at ${appliance.keyRevokedAt.toISOString()}`);
    }
    return { appliance, mode: 'connect', agentVersion };
  }

  private async enroll(claims: HandshakeClaims, token: string | undefined, agentVersion: string | null): Promise<VerifiedAgent> {
    if (!token) throw new UplinkError('UPLINK_ERR_AUTH_MALFORMED', 'enrollment requires x-uplink-enrollment-token');
    const parsed = parseEnrollmentToken(token);
    if (!parsed) throw new UplinkError('UPLINK_ERR_ENROLL_TOKEN_INVALID', 'enrollment token is not valid');
    await this.consumeNonce(claims);
    const outcome = await this.store.appliances.enroll({
      tokenHash: hashSecret(token),
      claimedApplianceId: claims.appliance,
      publicKey: claims.publicKey,
      keyId: keyId(claims.publicKey),
      now: new Date(this.now()),
    });
    if (outcome.ok) return { appliance: outcome.appliance, mode: 'enroll', agentVersion };
    switch (outcome.reason) {
      case 'used':
        throw new UplinkError('UPLINK_ERR_ENROLL_TOKEN_USED', 'enrollment token was already used');
      case 'expired':
        throw new UplinkError('UPLINK_ERR_ENROLL_TOKEN_EXPIRED', 'enrollment token has expired');
      case 'wrong_appliance':
        throw new UplinkError('UPLINK_ERR_ENROLL_WRONG_APPLIANCE', 'enrollment token belongs to another appliance');
      case 'invalid':
        throw new UplinkError('UPLINK_ERR_ENROLL_TOKEN_INVALID', 'enrollment token is not valid');
    }
  }
}
