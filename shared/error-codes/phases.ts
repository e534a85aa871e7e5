/** Codes for the phases area (phase roles, customer approval windows, STS credentials). Keep each documented in docs/errors.md. */
export const PHASE_CODES = {
  UPLINK_ERR_PHASE_NOT_APPROVED: { status: 403, summary: 'The customer has not approved this phase (access tag disabled, missing or invalid).' },
  UPLINK_ERR_WINDOW_EXPIRED: { status: 403, summary: "The customer's approval window for this phase has ended." },
  UPLINK_ERR_OUTSIDE_MAINTENANCE_WINDOW: { status: 403, summary: 'The phase is approved only inside maintenance windows, and none is open now.' },
  UPLINK_ERR_PHASE_DISABLED: { status: 403, summary: 'The customer has disabled the SteadyState phase (telemetry collection).' },
  UPLINK_ERR_PHASE_SESSION_ENDED: { status: 403, summary: 'The phase session ended (access revoked, window closed or session closed); no more credentials are handed out.' },
  UPLINK_ERR_AWS_ACCESS_DENIED: { status: 403, summary: 'AWS IAM denied an action the agent needs on a phase role.' },
  UPLINK_ERR_AWS_ROLE_NOT_FOUND: { status: 424, summary: 'A phase role configured on the agent does not exist in the customer account.' },
  UPLINK_ERR_AWS_UNAVAILABLE: { status: 503, summary: 'AWS STS or IAM could not be reached or failed.' },
} as const;
