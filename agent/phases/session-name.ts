/**
 * RoleSessionName and session tags: what the customer's CloudTrail shows for every call the
 * agent makes on a vendor engineer's behalf (`assumed-role/UplinkOperate/alice@vendor.com+r-42`).
 *
 * STS allows RoleSessionName `[\w+=,.@-]{2,64}` and session tag values
 * `[\p{L}\p{Z}\p{N}_.:/=+\-@]{0,256}`; anything else is replaced, never rejected, because a
 * request must not fail over an engineer's display name.
 */
import { createHash } from 'node:crypto';

export const SESSION_NAME_LIMITS = {
  /** STS maximum RoleSessionName length. */
  maxLength: 64,
  /** STS minimum RoleSessionName length. */
  minLength: 2,
  /** Longest request id kept whole; longer ids keep their tail (the random, distinguishing part). */
  maxRequestIdLength: 40,
  /** Hex characters of the actor hash appended when the actor is truncated. */
  actorHashLength: 6,
  /** STS maximum session tag value length. */
  maxTagValueLength: 256,
} as const;

const SEPARATOR = '+';
const UNKNOWN_ACTOR = 'unknown';

/** Replace every character STS rejects with '-', and squeeze runs of them. */
function sanitize(text: string): string {
  return text.replace(/[^\w+=,.@-]/g, '-').replace(/-{2,}/g, '-');
}

/**
 * A RoleSessionName `<actor>+<requestId>`. Deterministic (same input, same name). The request
 * id suffix is always kept (its tail if it is very long); the actor is truncated to fit, and a
 * truncated actor gets a short hash of the full actor so two long names do not collide.
 */
export function roleSessionName(actor: string, requestId: string): string {
  let req = sanitize(requestId).replace(/^[-+]+/, '');
  if (req.length === 0) req = 'none';
  if (req.length > SESSION_NAME_LIMITS.maxRequestIdLength) req = req.slice(-SESSION_NAME_LIMITS.maxRequestIdLength);
  let who = sanitize(actor.trim()).replace(/\+/g, '-');
  if (who.length === 0 || /^-+$/.test(who)) who = UNKNOWN_ACTOR;
  const room = SESSION_NAME_LIMITS.maxLength - req.length - SEPARATOR.length;
  if (who.length > room) {
    const hash = createHash('sha256').update(actor).digest('hex').slice(0, SESSION_NAME_LIMITS.actorHashLength);
    who = `${who.slice(0, room - hash.length - 1)}-${hash}`;
  }
  return `${who}${SEPARATOR}${req}`;
}

/** Session tag keys: customers can use them in policies as aws:PrincipalTag/UplinkActor. */
export const SESSION_TAG_KEYS = {
  actor: 'UplinkActor',
  request: 'UplinkRequest',
  operation: 'UplinkOperation',
} as const;

/** A value STS accepts as a session tag value. */
export function sanitizeTagValue(text: string): string {
  return text.replace(/[^\p{L}\p{Z}\p{N}_.:/=+\-@]/gu, '-').slice(0, SESSION_NAME_LIMITS.maxTagValueLength);
}

/** The session tags for one request. */
export function sessionTags(req: { actor: string; requestId: string; operation: string }): Array<{ Key: string; Value: string }> {
  return [
    { Key: SESSION_TAG_KEYS.actor, Value: sanitizeTagValue(req.actor) },
    { Key: SESSION_TAG_KEYS.request, Value: sanitizeTagValue(req.requestId) },
    { Key: SESSION_TAG_KEYS.operation, Value: sanitizeTagValue(req.operation) },
  ];
}
