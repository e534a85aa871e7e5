import t from 'tap';
import { generateKeyPair, handshakeMessage, keyId, newNonce, signHandshake, verifyHandshake, type HandshakeClaims } from '../../shared/identity.js';

const kp = generateKeyPair();
const pub = Buffer.from(kp.publicKey).toString('base64');
const claims: HandshakeClaims = { mode: 'connect', appliance: 'apl_0123456789abcdef', relayHost: 'Relay.Example:443', timestamp: 1_900_000_000_000, nonce: newNonce(), publicKey: pub };

t.test('a signature verifies only for the exact claims it signed', async (t) => {
  const sig = signHandshake(claims, kp.secretKey);
  t.equal(verifyHandshake(claims, sig, pub), true);
  t.equal(verifyHandshake({ ...claims, relayHost: 'relay.example:443' }, sig, pub), true, 'host is case-insensitive');
  for (const [k, v] of [['mode', 'enroll'], ['appliance', 'apl_0123456789abcdee'], ['relayHost', 'other:443'], ['timestamp', claims.timestamp + 1], ['nonce', newNonce()]] as const) {
    t.equal(verifyHandshake({ ...claims, [k]: v } as HandshakeClaims, sig, pub), false, `changed ${k}`);
  }
  const other = generateKeyPair();
  t.equal(verifyHandshake(claims, sig, Buffer.from(other.publicKey).toString('base64')), false, 'another key');
});

t.test('malformed signature or key is false, never a throw', async (t) => {
  const sig = signHandshake(claims, kp.secretKey);
  t.equal(verifyHandshake(claims, '', pub), false);
  t.equal(verifyHandshake(claims, sig.slice(0, 20), pub), false);
  t.equal(verifyHandshake(claims, sig, 'AAAA'), false);
  t.equal(verifyHandshake(claims, '%%%%', '%%%%'), false);
});

t.test('keyId, nonce and message layout', async (t) => {
  t.match(keyId(pub), /^[0-9a-f]{16}$/);
  t.equal(keyId(pub), keyId(kp.publicKey));
  t.match(newNonce(), /^[A-Za-z0-9_-]{22}$/);
  t.not(newNonce(), newNonce());
  t.equal(Buffer.from(handshakeMessage(claims)).toString(), ['uplink-agent-handshake-v1', 'connect', claims.appliance, 'relay.example:443', '1900000000000', claims.nonce, pub].join('\n'));
});

t.test('signatures are plain Ed25519 (RFC 8032): interchangeable with another implementation', async (t) => {
  // Agents before the switch to node:crypto signed with tweetnacl; both must keep verifying.
  const nacl = (await import('tweetnacl')).default;
  const kp = generateKeyPair();
  const claims: HandshakeClaims = { mode: 'connect', appliance: 'apl_x', relayHost: 'relay.example:443', timestamp: 1_800_000_000_000, nonce: newNonce(), publicKey: Buffer.from(kp.publicKey).toString('base64') };
  const ours = signHandshake(claims, kp.secretKey);
  t.ok(nacl.sign.detached.verify(handshakeMessage(claims), Buffer.from(ours, 'base64'), kp.publicKey), 'ours verifies elsewhere');
  const theirs = Buffer.from(nacl.sign.detached(handshakeMessage(claims), kp.secretKey)).toString('base64');
  t.equal(theirs, ours, 'Ed25519 is deterministic: the same bytes');
  t.equal(verifyHandshake(claims, theirs, claims.publicKey), true);
  const flipped = Buffer.from(theirs, 'base64');
  flipped[10] ^= 1;
  t.equal(verifyHandshake(claims, flipped.toString('base64'), claims.publicKey), false);
});
