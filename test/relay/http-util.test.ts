/** relay/http-util.ts listQuery: the `?appliance=&limit=` of the audit and sessions list routes. */
import t from 'tap';
import type { IncomingMessage } from 'node:http';
import { listQuery } from '../../relay/http-util.js';

const req = (url: string) => ({ url }) as IncomingMessage;

t.test('appliance and limit, each optional', async (t) => {
  t.same(listQuery(req('/v1/audit')), { appliance: null });
  t.same(listQuery(req('/v1/sessions?appliance=acme-prod&limit=25')), { appliance: 'acme-prod', limit: 25 });
  t.same(listQuery(req('/v1/audit?limit=999999')), { appliance: null, limit: 999_999 });
  t.same(listQuery(req('/v1/audit?appliance=a%20b')), { appliance: 'a b' });
});

t.test('a limit that is not a positive integer under a million is refused', async (t) => {
  for (const bad of ['0', '-1', '1.5', 'abc', '', '1000000', '01', ' 5']) {
    t.throws(() => listQuery(req(`/v1/audit?limit=${encodeURIComponent(bad)}`)), { code: 'UPLINK_ERR_BAD_REQUEST', message: 'limit must be a positive integer' }, JSON.stringify(bad));
  }
});
