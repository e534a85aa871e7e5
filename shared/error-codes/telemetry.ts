/** Codes for the telemetry area. Keep each documented in docs/errors.md. */
export const TELEMETRY_CODES = {} as const;
