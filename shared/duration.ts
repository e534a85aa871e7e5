/** Parse and format human durations such as "500ms", "30s", "30m", "2h", "1h30m", "7d". */
import { UplinkError } from './errors.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/y;

export function parseDuration(text: string, field = 'duration'): number {
  const input = text.trim();
  if (/^\d+$/.test(input)) return Number(input) * 1000; // bare number = seconds
  let total = 0;
  let pos = 0;
  PART.lastIndex = 0;
  while (pos < input.length) {
    PART.lastIndex = pos;
    const m = PART.exec(input);
    if (!m) break;
    total += Number(m[1]) * (UNIT_MS[m[2]!] ?? 0);
    pos = PART.lastIndex;
  }
  if (pos !== input.length || input.length === 0) {
    throw new UplinkError('UPLINK_ERR_USAGE', `${field}: "${text}" is not a duration (examples: 30s, 5m, 2h, 1h30m)`);
  }
  return Math.round(total);
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  const s = Math.round(ms / 1000);
  const parts: string[] = [];
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (d) parts.push(`${d}d`);
  if (h) parts.push(`${h}h`);
  if (m) parts.push(`${m}m`);
  if (sec || parts.length === 0) parts.push(`${sec}s`);
  return parts.join('');
}
