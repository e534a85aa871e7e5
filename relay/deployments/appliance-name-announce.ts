/**
 * After every handshake the relay tells the agent its appliance name (AGENT_PATHS.applianceName):
 * releases are bound to names and only the relay knows them. The agent pins the first name it
 * hears (at enrollment) and refuses a different one later (agent/appliance-name.ts); this side
 * only sends it and logs the answer. An agent that predates the path answers 404 and is left alone.
 */
import { errorFromBody } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import { AGENT_PATHS } from '../../shared/protocol.js';
import type { AgentSession } from '../agent-session.js';

/** Largest answer read back: the pinned name, or an error body. */
const MAX_ANSWER_BYTES = 16 * 1024;

/** Announce the session's appliance name; resolves with the agent's HTTP status (0 when unreachable). */
export function announceApplianceName(session: AgentSession, log: Logger): Promise<number> {
  const { applianceId, applianceName } = session.info;
  return new Promise((resolve) => {
    let stream;
    try {
      stream = session.request({ ':path': AGENT_PATHS.applianceName, 'content-type': 'application/json' }, 'info');
    } catch (err) {
      log.debug({ appliance: applianceName, err: (err as Error).message }, 'cannot announce the appliance name');
      resolve(0);
      return;
    }
    const parts: Buffer[] = [];
    let size = 0;
    let status = 0;
    stream.on('error', () => resolve(0));
    stream.once('response', (h) => (status = Number(h[':status'])));
    stream.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_ANSWER_BYTES) parts.push(c);
    });
    stream.once('end', () => {
      if (status !== 200 && status !== 404) {
        let body: unknown;
        try {
          body = JSON.parse(Buffer.concat(parts).toString('utf8'));
        } catch {
          body = undefined;
        }
        const e = errorFromBody(body, status);
        log.error({ appliance: applianceName, applianceId, code: e.code, reason: e.message }, 'the agent refused the appliance name this relay has for it');
      }
      resolve(status);
    });
    stream.end(JSON.stringify({ applianceId, name: applianceName }));
  });
}
