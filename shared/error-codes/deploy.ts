/**
 * Codes for the deploy area: release keys, signed release bundles, safe extraction and the
 * terraform/tofu runner. Keep each documented in docs/errors.md under "## Deployments".
 */
export const DEPLOY_CODES = {
  UPLINK_ERR_RELEASE_KEY_INVALID: { status: 400, summary: 'A release key file or a pinned release key is unreadable or malformed.' },
  UPLINK_ERR_RELEASE_SOURCE_INVALID: { status: 400, summary: 'The stack directory holds an entry that cannot be packed (link, device, socket, unsafe name).' },
  UPLINK_ERR_RELEASE_MALFORMED: { status: 400, summary: 'The release manifest or archive is not well formed.' },
  UPLINK_ERR_RELEASE_UNKNOWN_KEY: { status: 403, summary: "The release was signed by a key that is not pinned in the agent's config." },
  UPLINK_ERR_RELEASE_BAD_SIGNATURE: { status: 403, summary: 'The release manifest signature does not verify.' },
  UPLINK_ERR_RELEASE_WRONG_APPLIANCE: { status: 403, summary: 'The release is bound to another appliance.' },
  UPLINK_ERR_APPLIANCE_NAME_MISMATCH: { status: 403, summary: "The relay named the appliance differently from the name the agent pinned at enrollment." },
  UPLINK_ERR_RELEASE_DIGEST_MISMATCH: { status: 422, summary: 'The archive or a file in it does not match the signed manifest.' },
  UPLINK_ERR_RELEASE_DOWNGRADE: { status: 409, summary: 'The release is not newer than the version last applied.' },
  UPLINK_ERR_RELEASE_UNSAFE_PATH: { status: 422, summary: 'An archive entry has an absolute, parent-relative or otherwise unsafe path.' },
  UPLINK_ERR_RELEASE_PATH_TOO_LONG: { status: 422, summary: 'An archive entry path exceeds the path length limit.' },
  UPLINK_ERR_RELEASE_LINK_ESCAPE: { status: 422, summary: 'An archive entry is a symbolic or hard link.' },
  UPLINK_ERR_RELEASE_SPECIAL_FILE: { status: 422, summary: 'An archive entry is a device, FIFO, sparse or other special file.' },
  UPLINK_ERR_RELEASE_NAME_COLLISION: { status: 422, summary: 'Two archive entries map to the same name (case or Unicode normalisation).' },
  UPLINK_ERR_RELEASE_TOO_LARGE: { status: 413, summary: 'The release exceeds a size limit (archive, uncompressed or per entry).' },
  UPLINK_ERR_RELEASE_TOO_MANY_FILES: { status: 413, summary: 'The release holds more entries than the file count limit.' },
  UPLINK_ERR_DEPLOY_TOOL_MISSING: { status: 503, summary: 'Neither tofu nor terraform was found for the agent.' },
  UPLINK_ERR_DEPLOY_FAILED: { status: 422, summary: 'terraform/tofu exited with an error during the deployment.' },
  UPLINK_ERR_DEPLOY_CANCELLED: { status: 409, summary: 'The deployment was cancelled.' },
  UPLINK_ERR_DEPLOY_INTERRUPTED: { status: 500, summary: 'The agent stopped while the deployment was running.' },
  UPLINK_ERR_DEPLOY_BUSY: { status: 409, summary: 'Another deployment is already running on this agent.' },
} as const;
