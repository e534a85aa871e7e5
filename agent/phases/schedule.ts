/**
 * Maintenance windows: when a phase tagged `scheduled` may run.
 *
 * Grammar of one window (case-insensitive day names):
 *
 *     <days> <HH:MM>-<HH:MM> <time zone>
 *     Sat 02:00-06:00 UTC
 *     Mon-Fri 22:00-02:00 Europe/Paris      (crosses midnight: starts on the listed day)
 *     Sat,Sun 00:00-24:00 UTC
 *     Daily 01:00-03:00 America/New_York
 *
 * Windows are evaluated on the wall clock of their time zone, so "02:00" stays 02:00 local
 * across daylight-saving changes; on the night a clock jumps, the window is an hour shorter
 * or longer, which is what an operator reading the config expects.
 */
import { UplinkError } from '../../shared/errors.js';

const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
const MINUTES_PER_DAY = 1440;
const MS_PER_MINUTE = 60_000;
const MS_PER_DAY = 86_400_000;
/** Days to look ahead for the next opening: a weekly window always opens within 8 days. */
const LOOKAHEAD_DAYS = 8;

/** Limits on what a configuration may contain. */
export const SCHEDULE_LIMITS = {
  /** Maximum number of maintenance windows in one schedule. */
  maxWindows: 64,
  /** Maximum length of one window's text. */
  maxWindowTextLength: 200,
} as const;

interface LocalTime {
  year: number;
  month: number; // 1-12
  day: number;
  minuteOfDay: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatterFor(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** Wall-clock fields of an instant in a time zone, as if they were UTC (ms). */
function wallClockAsUtc(instant: number, timeZone: string): number {
  if (timeZone === 'UTC') return Math.floor(instant / 1000) * 1000;
  const parts: Record<string, number> = {};
  for (const p of formatterFor(timeZone).formatToParts(new Date(instant))) {
    if (p.type !== 'literal') parts[p.type] = Number(p.value);
  }
  return Date.UTC(parts.year!, parts.month! - 1, parts.day!, parts.hour!, parts.minute!, parts.second!);
}

function localTime(instant: number, timeZone: string): LocalTime {
  const d = new Date(wallClockAsUtc(instant, timeZone));
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate(), minuteOfDay: d.getUTCHours() * 60 + d.getUTCMinutes() };
}

/**
 * The instant at which the wall clock in `timeZone` shows the given local date plus
 * `minutes` (which may be 1440 for "24:00"). Two passes settle the offset on both sides of a
 * DST change; a wall time that does not exist (spring forward) maps to the instant one
 * offset-change later, which is the first real instant after it.
 */
function instantOf(year: number, month: number, day: number, minutes: number, timeZone: string): number {
  const guess = Date.UTC(year, month - 1, day) + minutes * MS_PER_MINUTE;
  if (timeZone === 'UTC') return guess;
  const offset1 = wallClockAsUtc(guess, timeZone) - guess;
  const t1 = guess - offset1;
  const offset2 = wallClockAsUtc(t1, timeZone) - t1;
  return offset2 === offset1 ? t1 : guess - offset2;
}

function weekdayOf(year: number, month: number, day: number): number {
  return new Date(Date.UTC(year, month - 1, day)).getUTCDay();
}

function parseDays(text: string, source: string): Set<number> {
  const days = new Set<number>();
  const lower = text.toLowerCase();
  if (lower === 'daily' || lower === '*') return new Set([0, 1, 2, 3, 4, 5, 6]);
  for (const item of lower.split(',')) {
    const [from, to, extra] = item.split('-');
    const a = DAY_NAMES.indexOf(from as (typeof DAY_NAMES)[number]);
    const b = to === undefined ? a : DAY_NAMES.indexOf(to as (typeof DAY_NAMES)[number]);
    if (a < 0 || b < 0 || extra !== undefined) {
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `maintenance window "${source}": "${item}" is not a day or day range (Mon, Sat-Sun, Mon-Fri, Daily)`);
    }
    // A range may wrap the week end: Fri-Mon is Fri, Sat, Sun, Mon.
    for (let d = a; ; d = (d + 1) % 7) {
      days.add(d);
      if (d === b) break;
    }
  }
  return days;
}

function parseClock(text: string, source: string): number {
  const m = /^(\d{2}):(\d{2})$/.exec(text);
  const minutes = m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
  if (!m || Number(m[2]) > 59 || minutes > MINUTES_PER_DAY) {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `maintenance window "${source}": "${text}" is not a time HH:MM (00:00 to 24:00)`);
  }
  return minutes;
}

function validTimeZone(tz: string, source: string): string {
  if (tz.toUpperCase() === 'UTC' || tz.toUpperCase() === 'Z') return 'UTC';
  try {
    formatterFor(tz);
  } catch {
    throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `maintenance window "${source}": unknown time zone "${tz}" (use UTC or an IANA name such as Europe/Paris)`);
  }
  return tz;
}

/** One occurrence of a window, as instants. */
interface Occurrence {
  start: number;
  end: number;
}

/** One parsed maintenance window, e.g. `Sat 02:00-06:00 UTC`. */
export class MaintenanceWindow {
  readonly text: string;
  readonly days: ReadonlySet<number>;
  readonly startMinute: number;
  readonly endMinute: number;
  readonly timeZone: string;

  private constructor(text: string, days: Set<number>, start: number, end: number, timeZone: string) {
    this.text = text;
    this.days = days;
    this.startMinute = start;
    this.endMinute = end;
    this.timeZone = timeZone;
  }

  /** Parse one window; throws UPLINK_ERR_CONFIG_INVALID naming the bad part. */
  static parse(text: string): MaintenanceWindow {
    if (typeof text !== 'string' || text.length > SCHEDULE_LIMITS.maxWindowTextLength) {
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `maintenance window must be a string of at most ${SCHEDULE_LIMITS.maxWindowTextLength} characters`);
    }
    const source = text.trim();
    const fields = source.split(/\s+/);
    if (fields.length !== 3) {
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `maintenance window "${source}" must look like "Sat 02:00-06:00 UTC" (days, HH:MM-HH:MM, time zone)`);
    }
    const [daysText, rangeText, tzText] = fields as [string, string, string];
    const days = parseDays(daysText, source);
    const range = rangeText.split('-');
    if (range.length !== 2) {
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `maintenance window "${source}": "${rangeText}" is not a range HH:MM-HH:MM`);
    }
    const start = parseClock(range[0]!, source);
    const end = parseClock(range[1]!, source);
    if (start === end || start === MINUTES_PER_DAY) {
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `maintenance window "${source}": start and end must differ and start must be before 24:00`);
    }
    return new MaintenanceWindow(source, days, start, end, validTimeZone(tzText, source));
  }

  /** The window crosses local midnight (22:00-02:00): it ends on the day after it starts. */
  get crossesMidnight(): boolean {
    return this.endMinute < this.startMinute;
  }

  private occurrenceOn(year: number, month: number, day: number): Occurrence | undefined {
    if (!this.days.has(weekdayOf(year, month, day))) return undefined;
    const endDay = this.crossesMidnight ? day + 1 : day;
    return {
      start: instantOf(year, month, day, this.startMinute, this.timeZone),
      end: instantOf(year, month, endDay, this.endMinute, this.timeZone),
    };
  }

  /** The occurrence that contains `now`, if any. */
  current(now: number): Occurrence | undefined {
    const local = localTime(now, this.timeZone);
    // Yesterday's occurrence may still be open if it crosses midnight.
    for (const offset of [0, -1]) {
      const occ = this.occurrenceOn(local.year, local.month, local.day + offset);
      if (occ && occ.start <= now && now < occ.end) return occ;
    }
    return undefined;
  }

  isWithin(now: number): boolean {
    return this.current(now) !== undefined;
  }

  /** `now` when open, else the start of the next occurrence. */
  nextOpen(now: number): number {
    if (this.isWithin(now)) return now;
    const local = localTime(now, this.timeZone);
    for (let offset = 0; offset <= LOOKAHEAD_DAYS; offset++) {
      const occ = this.occurrenceOn(local.year, local.month, local.day + offset);
      if (occ && occ.start > now) return occ.start;
    }
    // Unreachable for a valid window (non-empty days); kept as a defensive bound.
    return now + LOOKAHEAD_DAYS * MS_PER_DAY;
  }
}

/** A set of maintenance windows: open when any of them is. */
export class MaintenanceSchedule {
  readonly windows: readonly MaintenanceWindow[];

  constructor(windows: readonly MaintenanceWindow[]) {
    this.windows = windows;
  }

  /** Parse every window; throws UPLINK_ERR_CONFIG_INVALID on the first bad one or on too many. */
  static parse(texts: readonly string[]): MaintenanceSchedule {
    if (texts.length > SCHEDULE_LIMITS.maxWindows) {
      throw new UplinkError('UPLINK_ERR_CONFIG_INVALID', `at most ${SCHEDULE_LIMITS.maxWindows} maintenance windows are allowed (got ${texts.length})`);
    }
    return new MaintenanceSchedule(texts.map((t) => MaintenanceWindow.parse(t)));
  }

  get empty(): boolean {
    return this.windows.length === 0;
  }

  /** Whether some window is open at `now` (ms since the epoch or a Date). */
  isWithin(now: number | Date): boolean {
    const t = +now;
    return this.windows.some((w) => w.isWithin(t));
  }

  /** `now` when open, the start of the soonest next window otherwise; undefined with no windows. */
  nextOpen(now: number | Date): Date | undefined {
    if (this.empty) return undefined;
    const t = +now;
    return new Date(Math.min(...this.windows.map((w) => w.nextOpen(t))));
  }

  /**
   * When the open period containing `now` ends, following back-to-back or overlapping
   * windows (Sat 00:00-24:00 plus Sun 00:00-24:00 closes Monday 00:00). Undefined when closed.
   */
  closesAt(now: number | Date): Date | undefined {
    let t = +now;
    let end: number | undefined;
    // Each step moves to a strictly later end; a week's worth of windows bounds the walk.
    for (let step = 0; step <= this.windows.length * LOOKAHEAD_DAYS; step++) {
      const ends = this.windows.map((w) => w.current(t)?.end).filter((e): e is number => e !== undefined);
      if (ends.length === 0) break;
      const next = Math.max(...ends);
      if (end !== undefined && next <= end) break;
      end = next;
      t = next;
    }
    return end === undefined ? undefined : new Date(end);
  }
}
