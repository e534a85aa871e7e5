/**
 * Canonical JSON for hashing: object keys sorted by UTF-16 code unit (JavaScript's default
 * sort), no whitespace, strings and numbers exactly as `JSON.stringify` writes them.
 *
 * The audit chain hashes this text, and the two copies of the chain (the relay's rows and
 * the agent's JSON lines) must produce the same bytes for the same event after a round trip
 * through PostgreSQL or a file. That holds only for values that survive `JSON.parse` and
 * `JSON.stringify` unchanged, so everything else (undefined, NaN, Infinity, bigint,
 * functions, class instances such as Date) is refused here instead of being silently
 * dropped or converted, which would make the stored event hash differently from the one
 * that was sealed.
 */

/** A value that round-trips through JSON unchanged. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Thrown for a value that has no canonical JSON form; `path` names the offending field. */
export class CanonicalJsonError extends Error {
  constructor(readonly path: string, reason: string) {
    super(`${path || '(root)'}: ${reason}`);
    this.name = 'CanonicalJsonError';
  }
}

/** Serialise `value` canonically. Throws CanonicalJsonError for non-JSON values. */
export function canonicalJson(value: unknown): string {
  return write(value, '');
}

function write(value: unknown, path: string): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) throw new CanonicalJsonError(path, `${value} is not a finite number`);
      return JSON.stringify(value);
    case 'string':
      return JSON.stringify(value);
    case 'object':
      break;
    default:
      throw new CanonicalJsonError(path, `${typeof value} has no JSON form`);
  }
  if (Array.isArray(value)) {
    const parts: string[] = [];
    for (let i = 0; i < value.length; i++) parts.push(write(value[i], `${path}[${i}]`));
    return `[${parts.join(',')}]`;
  }
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) {
    throw new CanonicalJsonError(path, 'only plain objects are allowed (convert dates to ISO strings first)');
  }
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  const parts: string[] = [];
  for (const key of keys) {
    const child = path ? `${path}.${key}` : key;
    if (obj[key] === undefined) throw new CanonicalJsonError(child, 'undefined has no JSON form (use null)');
    parts.push(`${JSON.stringify(key)}:${write(obj[key], child)}`);
  }
  return `{${parts.join(',')}}`;
}
