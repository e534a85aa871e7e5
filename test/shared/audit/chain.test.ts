import t from 'tap';
import { createHash } from 'node:crypto';
import { canonicalJson } from '../../../shared/audit/canonical-json.js';
import { ChainVerifier, chainBrokenError, GENESIS_HASH, hashEvent, sealEvent, verifyChain } from '../../../shared/audit/chain.js';
import { normalizeAuditInput, parseAuditRecord, type AuditInput, type AuditRecord } from '../../../shared/audit/event.js';

const T0 = new Date('2030-01-02T03:04:05.678Z');

function input(i: number): AuditInput {
  return {
    actor: `alice${i}`, appliance: 'acme-prod', operation: 'sql', outcome: 'ok', phase: 'operate',
    requestId: `req-${i}`, target: 'main', start: T0, end: new Date(T0.getTime() + 1000), bytesIn: 10 * i, bytesOut: 7,
    detail: { rows: i, sqlstate: null },
  };
}

function chain(n: number): AuditRecord[] {
  const out: AuditRecord[] = [];
  let prev = GENESIS_HASH;
  for (let i = 1; i <= n; i++) {
    const r = sealEvent(prev, normalizeAuditInput(input(i), i, T0));
    out.push(r);
    prev = r.hash;
  }
  return out;
}

t.test('canonical JSON: sorted keys, no whitespace, refuses values that do not round-trip', async (t) => {
  t.equal(canonicalJson({ b: 1, a: [true, null, 'x'], c: { z: 0, y: -1.5 } }), '{"a":[true,null,"x"],"b":1,"c":{"y":-1.5,"z":0}}');
  t.equal(canonicalJson({ é: 'ü', A: 1 }), '{"A":1,"é":"ü"}');
  for (const bad of [{ a: undefined }, { a: NaN }, { a: Infinity }, { a: new Date(0) }, { a: 1n }, [() => 1]]) {
    t.throws(() => canonicalJson(bad), { name: 'CanonicalJsonError' });
  }
  const v = { k: 'line\n"q"\u2028', n: [1, { x: 'y' }] };
  t.equal(canonicalJson(JSON.parse(canonicalJson(v))), canonicalJson(v), 'stable across a JSON round trip');
});

t.test('hash is sha256 over the domain, previous hash and canonical event', async (t) => {
  const ev = normalizeAuditInput(input(1), 1, T0);
  const expected = createHash('sha256').update(`uplink-audit-v1\n${GENESIS_HASH}\n${canonicalJson(ev)}`).digest('hex');
  t.equal(hashEvent(GENESIS_HASH, ev), expected);
  t.equal(sealEvent(GENESIS_HASH, ev).hash, expected);
  t.equal(hashEvent(GENESIS_HASH, { ...ev, hash: 'ignored' } as AuditRecord), expected, 'the hash field is not hashed');
  t.equal(GENESIS_HASH, '0'.repeat(64));
});

t.test('normalisation: nulls for absent fields, canonical times, limits', async (t) => {
  const ev = normalizeAuditInput({ actor: 'a', appliance: 'b', operation: 'grant', outcome: 'denied', start: '2030-01-02T05:04:05+02:00' }, 7, T0);
  t.same(ev, {
    seq: 7, time: '2030-01-02T03:04:05.678Z', actor: 'a', appliance: 'b', operation: 'grant', phase: null, requestId: null,
    target: null, start: '2030-01-02T03:04:05.000Z', end: null, outcome: 'denied', bytesIn: 0, bytesOut: 0, detail: {},
  });
  const bad: [Partial<AuditInput>, RegExp][] = [
    [{ actor: '' }, /actor/],
    [{ actor: 'x'.repeat(1025) }, /actor/],
    [{ target: 'a\u0000b' }, /target/],
    [{ bytesIn: -1 }, /bytesIn/],
    [{ bytesOut: 1.5 }, /bytesOut/],
    [{ outcome: 'maybe' as never }, /outcome/],
    [{ start: 'yesterday' }, /start/],
    [{ detail: { big: 'x'.repeat(5000) } }, /detail/],
    [{ detail: { when: new Date() as never } }, /detail\.when/],
    [{ detail: { s: 'nul\u0000' } }, /detail/],
  ];
  for (const [patch, message] of bad) {
    t.throws(() => normalizeAuditInput({ ...input(1), ...patch }, 1, T0), { code: 'UPLINK_ERR_AUDIT_EVENT_INVALID', message }, JSON.stringify(patch));
  }
  t.ok(normalizeAuditInput({ ...input(1), detail: { big: 'x'.repeat(5000) } }, 1, T0, { maxFieldChars: 1024, maxDetailBytes: 8192 }), 'limits are configurable');
});

t.test('parseAuditRecord rejects unknown fields and non-canonical times', async (t) => {
  const [r] = chain(1);
  t.ok(parseAuditRecord(r).ok);
  t.notOk(parseAuditRecord({ ...r, extra: 1 }).ok);
  t.notOk(parseAuditRecord({ ...r, time: '2030-01-02T03:04:05Z' }).ok);
  t.notOk(parseAuditRecord({ ...r, hash: 'abc' }).ok);
});

t.test('an intact chain verifies, and reports its tail for comparison with the other copy', async (t) => {
  const c = chain(5);
  t.same(verifyChain(c), { ok: true, count: 5, lastSeq: 5, lastHash: c[4]!.hash });
  t.same(verifyChain([]), { ok: true, count: 0, lastSeq: 0, lastHash: GENESIS_HASH });
  t.match(verifyChain(c.slice(2), { lastSeq: 2, prevHash: c[1]!.hash }), { ok: true, count: 3, lastSeq: 5 }, 'from a checkpoint');
});

t.test('edited, deleted, reordered and inserted events are caught at the right seq', async (t) => {
  const c = chain(6);
  const edited = c.map((r) => (r.seq === 3 ? { ...r, actor: 'mallory' } : r));
  t.match(verifyChain(edited), { ok: false, count: 2, firstBadSeq: 3, firstBadIndex: 3, reason: 'hash-mismatch', lastSeq: 2 });

  // Edited and re-hashed: the next event no longer chains.
  const rehashed = c.map((r) => (r.seq === 3 ? sealEvent(c[1]!.hash, { ...r, actor: 'mallory' }) : r));
  t.match(verifyChain(rehashed), { ok: false, firstBadSeq: 4, reason: 'hash-mismatch' });

  const deleted = c.filter((r) => r.seq !== 4);
  t.match(verifyChain(deleted), { ok: false, count: 3, firstBadSeq: 5, reason: 'seq-mismatch', message: /expected seq 4, found 5/ });

  // Deleted and renumbered: seqs line up but the hashes do not.
  const renumbered = deleted.map((r, i) => ({ ...r, seq: i + 1 }));
  t.match(verifyChain(renumbered), { ok: false, firstBadSeq: 4, reason: 'hash-mismatch' });

  const reordered = [c[0], c[1], c[3], c[2], c[4], c[5]];
  t.match(verifyChain(reordered), { ok: false, count: 2, firstBadSeq: 4, reason: 'seq-mismatch' });

  const forged = sealEvent(c[2]!.hash, normalizeAuditInput(input(99), 4, T0));
  const inserted = [...c.slice(0, 3), forged, ...c.slice(3)];
  t.match(verifyChain(inserted), { ok: false, count: 4, firstBadSeq: 4, firstBadIndex: 5, reason: 'seq-mismatch' }, 'the forged event chains, its successor does not');

  const duplicated = [...c.slice(0, 3), c[2], ...c.slice(3)];
  t.match(verifyChain(duplicated), { ok: false, firstBadSeq: 3, firstBadIndex: 4, reason: 'seq-mismatch' });

  t.match(verifyChain([c[0], { ...c[1], seq: 'two' }]), { ok: false, count: 1, reason: 'malformed', firstBadIndex: 2 });
  t.match(verifyChain([c[1]]), { ok: false, firstBadSeq: 2, reason: 'seq-mismatch' }, 'a chain must start at seq 1');
});

t.test('ChainVerifier stops at the first failure', async (t) => {
  const c = chain(3);
  const v = new ChainVerifier();
  t.ok(v.push(c[0]));
  t.notOk(v.pushUnreadable('line 2 is not JSON'));
  t.notOk(v.push(c[1]), 'later entries are ignored');
  t.match(v.result(), { ok: false, count: 1, firstBadIndex: 2, reason: 'malformed', message: 'line 2 is not JSON' });
  t.notOk(v.ok);
});

t.test('chainBrokenError carries the break as details', async (t) => {
  const c = chain(3);
  const r = verifyChain([c[0], { ...c[1], actor: 'x' }, c[2]]);
  const err = chainBrokenError(r, '/var/lib/uplink/audit/audit.log');
  t.equal(err.code, 'UPLINK_ERR_AUDIT_CHAIN_BROKEN');
  t.equal(err.status, 409);
  t.match(err.message, /broken at seq 2: seq 2: stored hash does not match/);
  t.same(err.details, {
    where: '/var/lib/uplink/audit/audit.log', reason: 'hash-mismatch', firstBadSeq: 2, firstBadIndex: 2,
    verifiedCount: 1, lastGoodSeq: 1, lastGoodHash: c[0]!.hash,
  });
});
