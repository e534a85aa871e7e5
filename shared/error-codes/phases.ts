/** Codes for the phases area. Keep each documented in docs/errors.md. */
export const PHASE_CODES = {} as const;
