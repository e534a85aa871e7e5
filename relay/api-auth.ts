/** Bearer-token authentication and scope checks for the vendor API. */
import type { IncomingMessage } from 'node:http';
import { UplinkError } from '../shared/errors.js';
import type { Store } from './store/store.js';
import { scopeAllows, type ApiToken, type Scope } from './store/tokens-repo.js';

/** last_used_at is written at most this often per token, not on every request. */
const TOUCH_EVERY_MS = 60_000;

export class ApiAuthenticator {
  private readonly touched = new Map<string, number>();

  constructor(private readonly store: Store) {}

  async authenticate(req: IncomingMessage): Promise<ApiToken> {
    const header = req.headers.authorization;
    const m = typeof header === 'string' ? /^Bearer\s+(\S{8,512})$/i.exec(header) : null;
    if (!m) throw new UplinkError('UPLINK_ERR_UNAUTHENTICATED', 'missing "Authorization: Bearer <token>"');
    const token = await this.store.tokens.findActiveByValue(m[1]!);
    if (!token) throw new UplinkError('UPLINK_ERR_UNAUTHENTICATED', 'token is not valid or was revoked');
    const now = Date.now();
    if ((this.touched.get(token.id) ?? 0) + TOUCH_EVERY_MS < now) {
      this.touched.set(token.id, now);
      void this.store.tokens.touch(token.id, new Date(now)).catch(() => {});
    }
    return token;
  }

  static require(token: ApiToken, scope: Scope): void {
    if (!scopeAllows(token.scopes, scope)) {
      throw new UplinkError('UPLINK_ERR_FORBIDDEN', `token "${token.name}" lacks the "${scope}" scope (has: ${token.scopes.join(', ') || 'none'})`);
    }
  }
}
