import t from 'tap';
import { compareVersions, isSemver } from '../../../shared/release/version-order.js';

t.test('semver precedence (semver.org §11)', async (t) => {
  const ordered = ['1.0.0-alpha', '1.0.0-alpha.1', '1.0.0-alpha.beta', '1.0.0-beta', '1.0.0-beta.2', '1.0.0-beta.11', '1.0.0-rc.1', '1.0.0', '1.0.1', '1.2.0', '1.10.0', '2.0.0'];
  for (let i = 0; i < ordered.length - 1; i++) {
    t.equal(compareVersions(ordered[i]!, ordered[i + 1]!), -1, `${ordered[i]} < ${ordered[i + 1]}`);
    t.equal(compareVersions(ordered[i + 1]!, ordered[i]!), 1);
  }
  t.equal(compareVersions('1.0.0+build.1', '1.0.0+build.2'), 0, 'build metadata is ignored');
  t.equal(compareVersions('v1.2.3', '1.2.3'), 0, 'a leading v is allowed');
  t.equal(compareVersions('1.0.0', '1.0.0'), 0);
  t.equal(compareVersions('99999999999999999999.0.0', '99999999999999999998.0.0'), 1, 'numbers beyond 2^53');
  t.ok(isSemver('1.2.3-rc.1+b5'));
  t.notOk(isSemver('1.02.3'), 'leading zero is not semver');
});

t.test('non-semver versions compare in natural order', async (t) => {
  t.equal(compareVersions('2024.10.01', '2024.9.30'), 1, 'digit runs are numbers');
  t.equal(compareVersions('build-118', 'build-99'), 1);
  t.equal(compareVersions('7', '7.1'), -1, 'a prefix sorts first');
  t.equal(compareVersions('1.02', '1.2'), 0, 'leading zeros do not matter');
  t.equal(compareVersions('1.a', '1.1'), 1, 'digits sort before letters');
  t.equal(compareVersions('1.2', '1.2.0'), -1, 'mixed with semver: natural order');
});
