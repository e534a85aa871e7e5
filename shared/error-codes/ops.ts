/** Codes for the ops area. Keep each documented in docs/errors.md. */
export const OPS_CODES = {} as const;
