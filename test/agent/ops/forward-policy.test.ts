/** The forward allowlist: deny by default, ports and ranges, host globs, cidrs on resolved addresses. */
import t from 'tap';
import { ForwardPolicy, forwardConfigSchema, type Resolver } from '../../../agent/ops/forward-policy.js';

const policy = (allow: unknown[], resolver?: Resolver) => new ForwardPolicy(forwardConfigSchema.parse({ allow }), resolver);
// A fixed DNS table: the policy's resolver seam, so names resolve the same everywhere.
const dns: Resolver = async (host) => {
  const table: Record<string, string[]> = { 'orders.db.internal': ['10.0.1.5'], 'evil.db.internal': ['169.254.169.254'], 'mixed.db.internal': ['10.0.1.6', '169.254.169.254'] };
  const found = table[host];
  if (!found) throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
  return found.map((address) => ({ address, family: 4 }));
};

t.test('deny by default', async (t) => {
  await t.rejects(policy([]).check('127.0.0.1', 5432), { code: 'UPLINK_ERR_FORWARD_DENIED', message: 'forward to 127.0.0.1:5432 refused by operations.forward.allow: operations.forward.allow is empty: forwarding is deny by default' });
});

t.test('ports, ranges and cidrs', async (t) => {
  const p = policy([{ name: 'vpc', cidrs: ['10.0.0.0/16'], ports: [5432, '8000-8100'] }], dns);
  t.same(await p.check('10.0.3.4', 8050), { host: '10.0.3.4', port: 8050, address: '10.0.3.4', family: 4, rule: 'rule 1 "vpc"' });
  t.same(await p.check('orders.db.internal', 5432), { host: 'orders.db.internal', port: 5432, address: '10.0.1.5', family: 4, rule: 'rule 1 "vpc"' });
  await t.rejects(p.check('10.0.3.4', 22), { code: 'UPLINK_ERR_FORWARD_DENIED', message: 'forward to 10.0.3.4:22 refused by operations.forward.allow: rule 1 "vpc": port 22 is not in [5432, 8000-8100]' });
  await t.rejects(p.check('10.1.0.1', 5432), { message: 'forward to 10.1.0.1:5432 refused by operations.forward.allow: rule 1 "vpc": address 10.1.0.1, outside its cidrs' });
  await t.rejects(p.check('::ffff:10.1.0.1', 5432), { code: 'UPLINK_ERR_FORWARD_DENIED' });
  t.equal((await p.check('::ffff:10.0.0.9', 5432)).address, '10.0.0.9');
});

t.test('a name cannot smuggle a denied address', async (t) => {
  const p = policy([{ hosts: ['*.db.internal'], cidrs: ['10.0.0.0/8'], ports: [5432] }], dns);
  t.equal((await p.check('orders.db.internal', 5432)).address, '10.0.1.5');
  await t.rejects(p.check('evil.db.internal', 5432), { code: 'UPLINK_ERR_FORWARD_DENIED', message: 'forward to evil.db.internal:5432 refused by operations.forward.allow: rule 1: "evil.db.internal" resolves to 169.254.169.254, outside its cidrs' });
  await t.rejects(p.check('mixed.db.internal', 5432), { message: /resolves to 169\.254\.169\.254, outside its cidrs$/ });
  await t.rejects(p.check('orders.other', 5432), { message: 'forward to orders.other:5432 refused by operations.forward.allow: rule 1: host "orders.other" matches none of its hosts' });
  await t.rejects(p.check('missing.db.internal', 5432), { code: 'UPLINK_ERR_FORWARD_CONNECT', message: 'cannot resolve "missing.db.internal" on the agent: ENOTFOUND' });
});

t.test('config is strict', async (t) => {
  t.throws(() => forwardConfigSchema.parse({ allow: [{ ports: [80] }] }));
  t.throws(() => forwardConfigSchema.parse({ allow: [{ cidrs: ['10.0.0.0/33'], ports: [80] }] }));
  t.throws(() => forwardConfigSchema.parse({ allow: [{ cidrs: ['10.0.0.0/8'], ports: ['90-80'] }] }));
  t.throws(() => forwardConfigSchema.parse({ allow: [{ cidrs: ['10.0.0.0/8'], ports: [80], portz: [1] }] }));
  t.same(forwardConfigSchema.parse({}), { enabled: true, allow: [], connectTimeoutMs: 10_000, maxConnections: 256 });
});
