/**
 * Ordering of release versions, used by the agent to refuse downgrades.
 *
 * Rule (documented in docs/errors.md under UPLINK_ERR_RELEASE_DOWNGRADE):
 * - when both versions are semver 2.0 (an optional leading "v" is allowed), they compare by
 *   semver precedence: major, minor, patch numerically, a pre-release sorts before its
 *   release, pre-release identifiers compare numerically or lexically, build metadata is
 *   ignored;
 * - otherwise both compare in natural order: the strings are split into runs of digits and
 *   runs of other characters; digit runs compare as integers (so "2024.10" > "2024.9"),
 *   other runs by code point, a digit run sorts before a non-digit run, and a version that
 *   is a prefix of the other sorts first ("7" < "7.1").
 * Date-based and build-number versions ("2024.06.01", "build-118") therefore order as a
 * human expects, and a semver version is never compared as a plain string.
 */

const SEMVER =
  /^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$/;

interface SemVer {
  core: [bigint, bigint, bigint];
  pre: string[];
}

function parseSemver(version: string): SemVer | null {
  const m = SEMVER.exec(version);
  if (!m) return null;
  return { core: [BigInt(m[1]!), BigInt(m[2]!), BigInt(m[3]!)], pre: m[4] ? m[4].split('.') : [] };
}

function sign(n: number | bigint): -1 | 0 | 1 {
  return n < 0 ? -1 : n > 0 ? 1 : 0;
}

function compareBig(a: bigint, b: bigint): -1 | 0 | 1 {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareText(a: string, b: string): -1 | 0 | 1 {
  return a < b ? -1 : a > b ? 1 : 0;
}

const NUMERIC = /^\d+$/;

function compareSemver(a: SemVer, b: SemVer): -1 | 0 | 1 {
  for (let i = 0; i < 3; i++) {
    const c = compareBig(a.core[i]!, b.core[i]!);
    if (c !== 0) return c;
  }
  // A version without pre-release has higher precedence than one with.
  if (a.pre.length === 0 || b.pre.length === 0) return sign(b.pre.length - a.pre.length);
  for (let i = 0; i < Math.min(a.pre.length, b.pre.length); i++) {
    const x = a.pre[i]!;
    const y = b.pre[i]!;
    const xn = NUMERIC.test(x);
    const yn = NUMERIC.test(y);
    let c: -1 | 0 | 1;
    if (xn && yn) c = compareBig(BigInt(x), BigInt(y));
    else if (xn !== yn) c = xn ? -1 : 1; // numeric identifiers sort before alphanumeric ones
    else c = compareText(x, y);
    if (c !== 0) return c;
  }
  return sign(a.pre.length - b.pre.length);
}

const RUN = /\d+|\D+/g;

function compareNatural(a: string, b: string): -1 | 0 | 1 {
  const xs = a.match(RUN) ?? [];
  const ys = b.match(RUN) ?? [];
  for (let i = 0; i < Math.min(xs.length, ys.length); i++) {
    const x = xs[i]!;
    const y = ys[i]!;
    const xn = NUMERIC.test(x);
    const yn = NUMERIC.test(y);
    let c: -1 | 0 | 1;
    if (xn && yn) c = compareBig(BigInt(x), BigInt(y));
    else if (xn !== yn) c = xn ? -1 : 1;
    else c = compareText(x, y);
    if (c !== 0) return c;
  }
  return sign(xs.length - ys.length);
}

/** True when the version parses as semver 2.0 (optionally with a leading "v"). */
export function isSemver(version: string): boolean {
  return SEMVER.test(version);
}

/**
 * Compare two release versions: negative when `a` is older than `b`, 0 when they rank the
 * same, positive when `a` is newer. See the module comment for the rule.
 */
export function compareVersions(a: string, b: string): -1 | 0 | 1 {
  const x = parseSemver(a);
  const y = parseSemver(b);
  if (x && y) return compareSemver(x, y);
  return compareNatural(a, b);
}
