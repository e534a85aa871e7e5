/**
 * One way to validate configuration everywhere: a zod strict schema (unknown keys rejected),
 * errors naming the exact field, and a frozen result.
 */
import { z } from 'zod';
import { readFileSync } from 'node:fs';
import { UplinkError } from './errors.js';

export function formatIssues(error: z.ZodError, source: string): string {
  return error.issues
    .map((i) => {
      const path = i.path.length ? i.path.join('.') : '(root)';
      if (i.code === 'unrecognized_keys') return `${source}: unknown key(s) ${i.keys.map((k) => `"${k}"`).join(', ')} at ${path}`;
      return `${source}: ${path}: ${i.message}`;
    })
    .join('; ');
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as Record<string, unknown>)) deepFreeze(v);
  }
  return value;
}

export function validateConfig<S extends z.ZodType>(schema: S, input: unknown, source: string): Readonly<z.output<S>> {
  const r = schema.safeParse(input);
  if (!r.success) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', formatIssues(r.error, source));
  return deepFreeze(r.data);
}

/** Read a JSON config file; errors name the file. */
export function readJsonFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `cannot read config file ${path}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
}

/** Parse "HOST:PORT" (IPv6 as [::1]:PORT). */
export function parseHostPort(text: string, field: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `${field}: "${text}" is not HOST:PORT`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
