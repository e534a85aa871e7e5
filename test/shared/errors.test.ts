import t from 'tap';
import { readFileSync } from 'node:fs';
import { ERROR_CODES, UplinkError, errorFromBody, isUplinkError, toUplinkError } from '../../shared/errors.js';

const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');

t.test('every code is documented with its status, and every documented code exists', async (t) => {
  const headings = [...doc.matchAll(/^### (UPLINK_ERR_[A-Z0-9_]+)\n(HTTP (\d{3}))?/gm)];
  const documented = new Map(headings.map((m) => [m[1]!, m[3] ? Number(m[3]) : undefined]));
  for (const [code, info] of Object.entries(ERROR_CODES)) {
    t.ok(documented.has(code), `${code} is documented`);
    t.equal(documented.get(code), info.status, `${code} documents HTTP ${info.status}`);
  }
  for (const code of documented.keys()) t.ok(code in ERROR_CODES, `${code} in docs exists in code`);
  t.equal(new Set(headings.map((m) => m[1])).size, headings.length, 'no code documented twice');
});

t.test('codes are well formed', async (t) => {
  for (const code of Object.keys(ERROR_CODES)) t.match(code, /^UPLINK_ERR_[A-Z0-9_]+$/);
});

t.test('UplinkError carries code, status and JSON body', async (t) => {
  const err = new UplinkError('UPLINK_ERR_NOT_FOUND', 'no such appliance', { details: { name: 'x' } });
  t.equal(err.status, 404);
  t.same(err.toJSON(), { code: 'UPLINK_ERR_NOT_FOUND', message: 'no such appliance', details: { name: 'x' } });
  t.ok(isUplinkError(err, 'UPLINK_ERR_NOT_FOUND'));
  t.notOk(isUplinkError(err, 'UPLINK_ERR_CONFLICT'));
});

t.test('errorFromBody keeps known codes and maps unknown ones to UPLINK_ERR_REMOTE', async (t) => {
  t.equal(errorFromBody({ code: 'UPLINK_ERR_FORBIDDEN', message: 'no' }).code, 'UPLINK_ERR_FORBIDDEN');
  const unknown = errorFromBody({ code: 'UPLINK_ERR_FROM_THE_FUTURE', message: 'new' }, 418);
  t.equal(unknown.code, 'UPLINK_ERR_REMOTE');
  t.equal(unknown.details?.remoteCode, 'UPLINK_ERR_FROM_THE_FUTURE');
  t.equal(errorFromBody('garbage', 500).code, 'UPLINK_ERR_REMOTE');
  t.equal(toUplinkError(new Error('boom')).code, 'UPLINK_ERR_INTERNAL');
});
