/**
 * A hand-built agent handshake, so tests can send exactly the headers they want (replayed
 * nonce, skewed clock, wrong key, garbage) and read the relay's status and error code.
 */
import type { IncomingMessage } from 'node:http';
import { WebSocket } from 'ws';
import { generateKeyPair, newNonce, signHandshake, type HandshakeClaims, type HandshakeMode, type KeyPair } from '../../shared/identity.js';
import { HANDSHAKE_HEADERS as H, PATHS } from '../../shared/protocol.js';

export interface HandshakeInput {
  mode: HandshakeMode;
  appliance: string;
  keys?: KeyPair;
  enrollmentToken?: string;
  timestamp?: number;
  nonce?: string;
}

/** The signed headers for `input` against the relay at `relayUrl`. */
export function handshakeHeaders(relayUrl: string, input: HandshakeInput): Record<string, string> {
  const keys = input.keys ?? generateKeyPair();
  const claims: HandshakeClaims = {
    mode: input.mode,
    appliance: input.appliance,
    relayHost: new URL(relayUrl).host,
    timestamp: input.timestamp ?? Date.now(),
    nonce: input.nonce ?? newNonce(),
    publicKey: Buffer.from(keys.publicKey).toString('base64'),
  };
  return {
    [H.mode]: claims.mode,
    [H.appliance]: claims.appliance,
    [H.timestamp]: String(claims.timestamp),
    [H.nonce]: claims.nonce,
    [H.publicKey]: claims.publicKey,
    [H.signature]: signHandshake(claims, keys.secretKey),
    ...(input.enrollmentToken ? { [H.enrollmentToken]: input.enrollmentToken } : {}),
  };
}

export type DialResult = { ok: true; ws: WebSocket } | { ok: false; status: number; code: string | undefined };

/** Dial /v1/agent/connect with these raw headers; resolves with the open socket or the refusal. */
export function dialRaw(relayUrl: string, headers: Record<string, string>, path: string = PATHS.agentConnect): Promise<DialResult> {
  const url = new URL(relayUrl);
  url.protocol = 'ws:';
  url.pathname = path;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false });
    ws.once('open', () => resolve({ ok: true, ws }));
    ws.once('unexpected-response', (_req, res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        let code: string | undefined;
        try {
          code = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { code?: string }).code;
        } catch {
          code = undefined;
        }
        ws.terminate();
        resolve({ ok: false, status: res.statusCode ?? 0, code });
      });
    });
    ws.once('error', reject);
  });
}

/** Close an accepted raw socket and wait for it to be gone. */
export async function closeRaw(r: DialResult): Promise<void> {
  if (!r.ok) return;
  await new Promise<void>((resolve) => {
    if (r.ws.readyState === r.ws.CLOSED) return resolve();
    r.ws.once('close', () => resolve());
    r.ws.terminate();
  });
}
