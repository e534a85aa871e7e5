/**
 * Agent identity: an Ed25519 key made in the appliance, and the signed handshake that
 * proves possession of it on every connection.
 *
 * The signed message binds the mode (enroll or connect), the appliance id, the relay host
 * the agent meant to reach, a timestamp and a fresh nonce, so a captured handshake cannot be
 * replayed later (timestamp + nonce) or against another relay (host).
 */
import nacl from 'tweetnacl';
import { createHash, createPrivateKey, createPublicKey, randomBytes, sign, verify } from 'node:crypto';

/**
 * DER prefixes that turn raw Ed25519 keys into key objects for node:crypto (RFC 8410):
 * SubjectPublicKeyInfo for the 32-byte public key, PKCS#8 for the 32-byte seed. Signing and
 * verifying go through OpenSSL: the pure-JS verify took 10-15 ms per handshake, which a
 * relay taking back ten thousand agents after a restart cannot afford.
 */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const ED25519_KEY_BYTES = 32;
const ED25519_SIGNATURE_BYTES = 64;

export interface KeyPair {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
}

export type HandshakeMode = 'enroll' | 'connect';

export interface HandshakeClaims {
  mode: HandshakeMode;
  /** Appliance id (`apl_…`). */
  appliance: string;
  /** `host[:port]` of the relay URL the agent dialled, lower-cased. */
  relayHost: string;
  /** Milliseconds since the epoch, agent clock. */
  timestamp: number;
  /** At least 16 random bytes, base64url. */
  nonce: string;
  /** The agent's Ed25519 public key, base64. */
  publicKey: string;
}

const HANDSHAKE_CONTEXT = 'uplink-agent-handshake-v1';

export function generateKeyPair(): KeyPair {
  const kp = nacl.sign.keyPair();
  return { publicKey: kp.publicKey, secretKey: kp.secretKey };
}

/** Short, stable fingerprint of a public key: first 16 hex chars of its SHA-256. */
export function keyId(publicKey: Uint8Array | string): string {
  const bytes = typeof publicKey === 'string' ? Buffer.from(publicKey, 'base64') : publicKey;
  return createHash('sha256').update(bytes).digest('hex').slice(0, 16);
}

export function newNonce(): string {
  return randomBytes(16).toString('base64url');
}

export function handshakeMessage(c: HandshakeClaims): Uint8Array {
  const text = [HANDSHAKE_CONTEXT, c.mode, c.appliance, c.relayHost.toLowerCase(), String(c.timestamp), c.nonce, c.publicKey].join('\n');
  return new TextEncoder().encode(text);
}

/** `secretKey` in the 64-byte seed || public key layout the key files use. */
export function signHandshake(c: HandshakeClaims, secretKey: Uint8Array): string {
  const seed = Buffer.from(secretKey.buffer, secretKey.byteOffset, ED25519_KEY_BYTES);
  const key = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  return sign(null, handshakeMessage(c), key).toString('base64');
}

/** Constant-time signature check; false for any malformed input rather than throwing. */
export function verifyHandshake(c: HandshakeClaims, signatureB64: string, publicKeyB64: string): boolean {
  try {
    const sig = Buffer.from(signatureB64, 'base64');
    const pub = Buffer.from(publicKeyB64, 'base64');
    if (sig.length !== ED25519_SIGNATURE_BYTES || pub.length !== ED25519_KEY_BYTES) return false;
    const key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, pub]), format: 'der', type: 'spki' });
    return verify(null, handshakeMessage(c), key, sig);
  } catch {
    return false;
  }
}
