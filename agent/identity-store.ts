/**
 * The agent's identity on disk: its Ed25519 key pair and the appliance it belongs to, in
 * `<stateDir>/identity.json`, mode 0600, written atomically (temp + fsync + rename) so a
 * crash never leaves half a key.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { UplinkError } from '../shared/errors.js';
import { generateKeyPair, keyId } from '../shared/identity.js';

export interface AgentIdentity {
  applianceId: string;
  /** host[:port] of the relay this identity is enrolled with. */
  relayHost: string;
  publicKey: string;
  secretKey: string;
  keyId: string;
  createdAt: string;
  /** Set once the relay accepted the enrollment. */
  enrolledAt: string | null;
  /**
   * The appliance name, learned from the relay at enrollment and pinned: release bindings are
   * checked against it (agent/appliance-name.ts). Absent in identities enrolled before.
   */
  applianceName?: string;
}

export function identityPath(stateDir: string): string {
  return join(stateDir, 'identity.json');
}

export function ensureStateDir(stateDir: string): void {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
}

export function loadIdentity(stateDir: string): AgentIdentity | undefined {
  let text: string;
  try {
    text = readFileSync(identityPath(stateDir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `cannot read ${identityPath(stateDir)}: ${(err as Error).message}`);
  }
  try {
    const id = JSON.parse(text) as AgentIdentity;
    if (typeof id.applianceId !== 'string' || typeof id.publicKey !== 'string' || typeof id.secretKey !== 'string') throw new Error('missing fields');
    return id;
  } catch (err) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `${identityPath(stateDir)} is corrupt (${(err as Error).message}); move it away to re-enroll`);
  }
}

export function writeFileAtomic(path: string, data: string, mode = 0o600): void {
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

export function saveIdentity(stateDir: string, id: AgentIdentity): void {
  ensureStateDir(stateDir);
  writeFileAtomic(identityPath(stateDir), `${JSON.stringify(id, null, 2)}\n`);
}

/** A fresh, not yet enrolled identity for `applianceId`. */
export function createIdentity(applianceId: string, relayHost: string): AgentIdentity {
  const kp = generateKeyPair();
  const publicKey = Buffer.from(kp.publicKey).toString('base64');
  return {
    applianceId,
    relayHost,
    publicKey,
    secretKey: Buffer.from(kp.secretKey).toString('base64'),
    keyId: keyId(kp.publicKey),
    createdAt: new Date().toISOString(),
    enrolledAt: null,
  };
}
