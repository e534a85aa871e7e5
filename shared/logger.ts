/**
 * pino JSON logs. Level from UPLINK_LOG_LEVEL (default "info"); debug output is gated by
 * that variable, never by console.log. Use `logger.child({ appliance, stream, request })`.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

export function createLogger(name: string, opts: { level?: string; destination?: DestinationStream } = {}): Logger {
  const envLevel = process.env.UPLINK_LOG_LEVEL;
  const level = opts.level ?? (envLevel && LEVELS.has(envLevel) ? envLevel : 'info');
  return pino(
    { name, level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    opts.destination ?? pino.destination({ dest: 2, sync: true }),
  );
}

/** A logger that drops everything: for tests and library callers that pass none. */
export const silentLogger: Logger = pino({ level: 'silent' });
