/**
 * The audit sink `uplink-agent grant|revoke` uses when the caller passes none: one JSON line
 * per access change appended to `<stateDir>/access-audit.jsonl` (0600), next to the state it
 * describes. The running agent forwards its own audit log to CloudWatch; this file keeps the
 * customer's record even when the agent is down.
 */
import { appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AccessAuditEvent, AuditSink } from '../phases/grant.js';
import { ensurePrivateDir, PRIVATE_FILE_MODE } from '../phases/private-files.js';

export const ACCESS_AUDIT_FILE = 'access-audit.jsonl';

/** An AuditSink appending JSON lines to `<stateDir>/access-audit.jsonl`. */
export function fileAuditSink(stateDir: string): AuditSink {
  return async (event: AccessAuditEvent) => {
    await ensurePrivateDir(stateDir);
    // O_APPEND writes of one line are atomic with respect to other appenders on local file systems.
    await appendFile(join(stateDir, ACCESS_AUDIT_FILE), `${JSON.stringify(event)}\n`, { mode: PRIVATE_FILE_MODE });
  };
}
