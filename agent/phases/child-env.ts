/**
 * The environment of a child process (terraform, exec, shell, kubectl) running under a phase.
 *
 * The agent's own credentials must never reach a child: on ECS they are reachable through
 * AWS_CONTAINER_CREDENTIALS_* (the task role endpoint), elsewhere through AWS_ACCESS_KEY_ID,
 * AWS_PROFILE + ~/.aws, web identity files or the instance metadata service. So the child
 * gets the parent environment minus every AWS_* variable and every variable the SDKs read
 * for credentials, plus only what the PhaseSession provides.
 */

/** Variables that steer AWS credential resolution but do not start with AWS_. */
const EXTRA_CREDENTIAL_VARS = new Set(['ECS_CONTAINER_METADATA_URI', 'ECS_CONTAINER_METADATA_URI_V4']);

/** Whether a variable may carry or locate AWS credentials or AWS profile settings. */
export function isAwsCredentialVariable(name: string): boolean {
  const upper = name.toUpperCase();
  return upper.startsWith('AWS_') || EXTRA_CREDENTIAL_VARS.has(upper);
}

/**
 * `base` (usually process.env) without any AWS variable, overlaid with the session's env.
 * Use this, not `{ ...process.env, ...session.env }`, when spawning a child.
 */
export function childEnvironment(base: Readonly<Record<string, string | undefined>>, sessionEnv: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) {
    if (v !== undefined && !isAwsCredentialVariable(k)) out[k] = v;
  }
  return { ...out, ...sessionEnv };
}
