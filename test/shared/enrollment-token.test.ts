import t from 'tap';
import { newEnrollmentToken, parseEnrollmentToken } from '../../shared/enrollment-token.js';

t.test('tokens carry the appliance id and parse back', async (t) => {
  const tok = newEnrollmentToken('apl_0123456789abcdef');
  t.match(tok, /^uplenr\.apl_0123456789abcdef\.[A-Za-z0-9_-]{43}$/);
  t.same(parseEnrollmentToken(tok), { applianceId: 'apl_0123456789abcdef' });
  t.same(parseEnrollmentToken(` ${tok}\n`), { applianceId: 'apl_0123456789abcdef' }, 'pasted with whitespace');
  t.not(newEnrollmentToken('apl_0123456789abcdef'), tok);
});

t.test('malformed tokens are refused', async (t) => {
  for (const bad of [
    '',
    'uplenr.apl_0123456789abcdef',
    'uplenr.apl_0123456789ABCDEF.aaaaaaaaaaaaaaaaaaaaaaaa',
    'uplenr.apl_0123.aaaaaaaaaaaaaaaaaaaaaaaa',
    'uplenr.apl_0123456789abcdef.short',
    'xplenr.apl_0123456789abcdef.aaaaaaaaaaaaaaaaaaaaaaaa',
    'uplenr.apl_0123456789abcdef.aaaaaaaaaaaaaaaaaaaa$aaa',
    `uplenr.apl_0123456789abcdef.${'a'.repeat(129)}`,
  ]) {
    t.equal(parseEnrollmentToken(bad), undefined, bad.slice(0, 40));
  }
});
