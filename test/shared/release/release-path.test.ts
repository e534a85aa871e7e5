import t from 'tap';
import { collisionKey, compareReleasePaths, normalizeReleasePath } from '../../../shared/release/release-path.js';
import { RELEASE_LIMIT_DEFAULTS, resolveReleaseLimits } from '../../../shared/release/limits.js';

t.test('safe paths pass and come back NFC', async (t) => {
  t.equal(normalizeReleasePath('modules/net/main.tf', 512), 'modules/net/main.tf');
  t.equal(normalizeReleasePath('cafe\u0301.tf', 512), 'caf\u00e9.tf');
  t.equal(normalizeReleasePath('..hidden/a..b', 512), '..hidden/a..b', 'dots inside names are fine');
});

t.test('unsafe paths are refused with a reason', async (t) => {
  const cases: Array<[string, string]> = [
    ['', 'empty path'],
    ['/etc/passwd', 'absolute path'],
    ['../x', '".." segment'],
    ['a/../../x', '".." segment'],
    ['./a', '"." segment'],
    ['a//b', 'empty segment'],
    ['a/', 'empty segment'],
    ['..\\x', 'backslash'],
    ['C:x', 'drive letter'],
    ['a\u0000b', 'control character'],
    ['a\nb', 'control character'],
    ['a\u009bb', 'control character'],
  ];
  for (const [path, reason] of cases) t.throws(() => normalizeReleasePath(path, 512), { code: 'UPLINK_ERR_RELEASE_UNSAFE_PATH', details: { reason } }, JSON.stringify(path));
  t.throws(() => normalizeReleasePath('a'.repeat(20), 19), { code: 'UPLINK_ERR_RELEASE_PATH_TOO_LONG' });
  t.throws(() => normalizeReleasePath('é'.repeat(10), 19), { code: 'UPLINK_ERR_RELEASE_PATH_TOO_LONG' }, 'bytes, not characters');
  t.throws(() => normalizeReleasePath('a'.repeat(256), 4096), { code: 'UPLINK_ERR_RELEASE_PATH_TOO_LONG' }, 'segment over NAME_MAX');
});

t.test('collision keys fold case and Unicode forms', async (t) => {
  t.equal(collisionKey('Main.TF'), collisionKey('main.tf'));
  t.equal(collisionKey('caf\u00e9'), collisionKey('cafe\u0301'));
  t.equal(collisionKey('STRASSE'), collisionKey('straße'));
  t.equal(collisionKey('\uff41'), collisionKey('a'), 'fullwidth a');
  t.not(collisionKey('a.tf'), collisionKey('b.tf'));
});

t.test('paths order by UTF-8 bytes', async (t) => {
  t.ok(compareReleasePaths('a', 'b') < 0);
  // U+FF41 (EF BD 81) sorts before U+1F600 (F0 9F 98 80) in UTF-8 but after it in UTF-16.
  t.ok(compareReleasePaths('\uff41', '\u{1f600}') < 0);
});

t.test('limits: defaults, overrides, and misspelt keys refused', async (t) => {
  t.same(resolveReleaseLimits(), RELEASE_LIMIT_DEFAULTS);
  t.equal(resolveReleaseLimits({ maxFiles: 5 }).maxFiles, 5);
  t.throws(() => resolveReleaseLimits({ maxFile: 5 }), { code: 'UPLINK_ERR_CONFIG_INVALID', details: { field: 'maxFile' } });
  t.throws(() => resolveReleaseLimits({ maxFiles: 0 }), { code: 'UPLINK_ERR_CONFIG_INVALID', details: { field: 'maxFiles' } });
  t.ok(Object.isFrozen(resolveReleaseLimits({})));
});
