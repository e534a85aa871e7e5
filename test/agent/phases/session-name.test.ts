import t from 'tap';
import { roleSessionName, sanitizeTagValue, sessionTags } from '../../../agent/phases/session-name.js';

const STS = /^[\w+=,.@-]{2,64}$/;

t.test('plain names pass through as actor+request', async (t) => {
  t.equal(roleSessionName('alice@vendor.com', 'req-42'), 'alice@vendor.com+req-42');
  t.equal(roleSessionName('alice@vendor.com', 'req-42'), roleSessionName('alice@vendor.com', 'req-42'), 'deterministic');
});

t.test('disallowed characters are replaced, never rejected', async (t) => {
  t.equal(roleSessionName("Ålice O'Neil (SRE)", 'r 1/2'), '-lice-O-Neil-SRE-+r-1-2');
  t.equal(roleSessionName('a+b', 'r1'), 'a-b+r1', 'a + in the actor cannot fake the separator');
  t.equal(roleSessionName('', 'r1'), 'unknown+r1');
  t.equal(roleSessionName('   ', 'r1'), 'unknown+r1');
  t.equal(roleSessionName('bob', ''), 'bob+none');
  for (const [a, r] of [['x', 'y'], ['日本語', '要求'], ['\u0000\n', '\t']]) t.match(roleSessionName(a!, r!), STS);
});

t.test('long actors are truncated with a hash; the request id suffix survives', async (t) => {
  const long = `${'engineer'.repeat(10)}@vendor.example.com`;
  const name = roleSessionName(long, 'req-0123456789');
  t.match(name, STS);
  t.equal(name.length, 64);
  t.ok(name.endsWith('+req-0123456789'));
  const other = roleSessionName(`${'engineer'.repeat(10)}@vendor.example.org`, 'req-0123456789');
  t.not(name, other, 'actors differing only after the cut still differ');
  const hugeReq = `r-${'9'.repeat(100)}-tail`;
  const n2 = roleSessionName('alice', hugeReq);
  t.match(n2, STS);
  t.ok(n2.endsWith('9-tail'), 'the tail of a very long request id is kept');
});

t.test('session tags carry actor, request and operation with STS-valid values', async (t) => {
  t.same(sessionTags({ actor: 'alice@vendor.com', requestId: 'r-1', operation: 'exec' }), [
    { Key: 'UplinkActor', Value: 'alice@vendor.com' },
    { Key: 'UplinkRequest', Value: 'r-1' },
    { Key: 'UplinkOperation', Value: 'exec' },
  ]);
  t.equal(sanitizeTagValue('a;b<c>'), 'a-b-c-');
  t.equal(sanitizeTagValue('x'.repeat(300)).length, 256);
  t.equal(sanitizeTagValue('Zoë 1:2/3=4+5-6@7_8.9'), 'Zoë 1:2/3=4+5-6@7_8.9');
});
