import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { isLoopback, parseHostPort, readJsonFile, validateConfig } from '../../shared/config-validate.js';
import { tempDir } from '../helpers/cluster.js';

const schema = z.strictObject({ port: z.number().int().default(1), nested: z.strictObject({ on: z.boolean().default(false) }).prefault({}) });

t.test('validateConfig: defaults, frozen result, errors name the field', async (t) => {
  const cfg = validateConfig(schema, {}, 'test config');
  t.same(cfg, { port: 1, nested: { on: false } });
  t.ok(Object.isFrozen(cfg) && Object.isFrozen(cfg.nested));
  t.throws(() => validateConfig(schema, { nested: { of: true } }, 'test config'), {
    code: 'UPLINK_ERR_CONFIG_INVALID',
    message: 'test config: unknown key(s) "of" at nested',
  });
  t.throws(() => validateConfig(schema, { porr: 2 }, 'test config'), { message: 'test config: unknown key(s) "porr" at (root)' });
  t.throws(() => validateConfig(schema, { port: 'x' }, 'test config'), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /^test config: port: / });
});

t.test('readJsonFile names the file on every failure', async (t) => {
  const dir = tempDir(t);
  const good = join(dir, 'good.json');
  writeFileSync(good, '{"a":1}');
  t.same(readJsonFile(good), { a: 1 });
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, '{a:');
  t.throws(() => readJsonFile(bad), { code: 'UPLINK_ERR_CONFIG_INVALID', message: new RegExp(`^config file ${bad} is not valid JSON`) });
  t.throws(() => readJsonFile(join(dir, 'missing.json')), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /^cannot read config file / });
});

t.test('parseHostPort and isLoopback', async (t) => {
  t.same(parseHostPort('127.0.0.1:8443', 'x'), { host: '127.0.0.1', port: 8443 });
  t.same(parseHostPort('[::1]:80', 'x'), { host: '::1', port: 80 });
  t.same(parseHostPort(':9000', 'x'), { host: '0.0.0.0', port: 9000 });
  for (const bad of ['host', 'h:70000', 'h:-1', '[::1]', 'a:b']) t.throws(() => parseHostPort(bad, '--listen'), { code: 'UPLINK_ERR_CONFIG_INVALID', message: /^--listen: / }, bad);
  t.equal(isLoopback('127.0.0.1'), true);
  t.equal(isLoopback('127.1.2.3'), true);
  t.equal(isLoopback('::1'), true);
  t.equal(isLoopback('localhost'), true);
  t.equal(isLoopback('0.0.0.0'), false);
  t.equal(isLoopback('10.0.0.1'), false);
  t.equal(isLoopback('127.0.0.1.evil.example'), false);
});
