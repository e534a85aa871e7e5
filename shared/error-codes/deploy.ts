/** Codes for the deploy area. Keep each documented in docs/errors.md. */
export const DEPLOY_CODES = {} as const;
