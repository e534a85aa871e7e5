/**
 * Enrollment tokens: `uplenr.<applianceId>.<secret>`. The appliance id lets the agent know
 * which appliance it is before it ever connects; the secret (32 random bytes) is what the
 * relay checks, stored only as a SHA-256 hash, consumed on first use.
 */
import { randomBytes } from 'node:crypto';

const TOKEN = /^uplenr\.(apl_[0-9a-f]{16})\.([A-Za-z0-9_-]{20,128})$/;

export function newEnrollmentToken(applianceId: string): string {
  return `uplenr.${applianceId}.${randomBytes(32).toString('base64url')}`;
}

export function parseEnrollmentToken(token: string): { applianceId: string } | undefined {
  const m = TOKEN.exec(token.trim());
  return m ? { applianceId: m[1]! } : undefined;
}
