/**
 * The IAM half of an approval window. IAM cannot compare the current time with a tag value
 * (policy variables are not allowed with Date operators), so the bootstrap stack puts the
 * window itself in the Deploy and Operate trust policies, in the statement
 * `UplinkAgentWithinApprovedWindow` (aws:CurrentTime between two dates), starting closed.
 * `grant` opens it to the approved end time; `revoke` closes it and, with the inline policy
 * `UplinkRevokeOlderSessions`, denies every session issued before the revoke (the "revoke
 * active sessions" pattern), so credentials already handed out stop working at once.
 *
 * Roles without that statement (a customer's own roles) are left alone and reported as
 * such: the agent's own check still applies.
 */
import {
  GetRoleCommand,
  PutRolePolicyCommand,
  UpdateAssumeRolePolicyCommand,
  type IAMClient,
} from '@aws-sdk/client-iam';
import { awsError } from './aws-errors.js';
import { roleNameFromArn } from './approval.js';

export const WINDOW_SID = 'UplinkAgentWithinApprovedWindow';
export const REVOKE_POLICY_NAME = 'UplinkRevokeOlderSessions';
export const CLOSED_WINDOW = '1970-01-01T00:00:00Z';
/** Opening the window a little in the past absorbs clock differences with IAM. */
export const WINDOW_START_SLACK_MS = 5 * 60_000;

interface Statement {
  Sid?: string;
  Condition?: Record<string, Record<string, unknown>>;
  [key: string]: unknown;
}

export type WindowUpdate = 'updated' | 'no-window-statement';

async function readTrustPolicy(iam: IAMClient, roleArn: string): Promise<{ Version?: string; Statement: Statement[] }> {
  let doc: string | undefined;
  try {
    doc = (await iam.send(new GetRoleCommand({ RoleName: roleNameFromArn(roleArn) }))).Role?.AssumeRolePolicyDocument;
  } catch (err) {
    throw awsError(err, { action: 'iam:GetRole', role: roleArn, caller: 'your AWS credentials' });
  }
  const parsed = JSON.parse(decodeURIComponent(doc ?? '%7B%7D')) as { Version?: string; Statement?: Statement | Statement[] };
  const statements = Array.isArray(parsed.Statement) ? parsed.Statement : parsed.Statement ? [parsed.Statement] : [];
  return { ...parsed, Statement: statements };
}

/** Set the trust policy's window to [from, until]. */
export async function setTrustWindow(iam: IAMClient, roleArn: string, from: string, until: string): Promise<WindowUpdate> {
  const policy = await readTrustPolicy(iam, roleArn);
  const stmt = policy.Statement.find((s) => s.Sid === WINDOW_SID);
  if (!stmt) return 'no-window-statement';
  stmt.Condition = {
    ...stmt.Condition,
    DateGreaterThan: { ...stmt.Condition?.DateGreaterThan, 'aws:CurrentTime': from },
    DateLessThan: { ...stmt.Condition?.DateLessThan, 'aws:CurrentTime': until },
  };
  try {
    await iam.send(new UpdateAssumeRolePolicyCommand({ RoleName: roleNameFromArn(roleArn), PolicyDocument: JSON.stringify(policy) }));
  } catch (err) {
    throw awsError(err, { action: 'iam:UpdateAssumeRolePolicy', role: roleArn, caller: 'your AWS credentials' });
  }
  return 'updated';
}

export function closeTrustWindow(iam: IAMClient, roleArn: string): Promise<WindowUpdate> {
  return setTrustWindow(iam, roleArn, CLOSED_WINDOW, CLOSED_WINDOW);
}

/** Deny everything to sessions of this role issued before `at`. */
export async function revokeOlderSessions(iam: IAMClient, roleArn: string, at: string): Promise<void> {
  const policy = {
    Version: '2012-10-17',
    Statement: [{ Sid: 'DenySessionsIssuedBeforeRevoke', Effect: 'Deny', Action: '*', Resource: '*', Condition: { DateLessThan: { 'aws:TokenIssueTime': at } } }],
  };
  try {
    await iam.send(new PutRolePolicyCommand({ RoleName: roleNameFromArn(roleArn), PolicyName: REVOKE_POLICY_NAME, PolicyDocument: JSON.stringify(policy) }));
  } catch (err) {
    throw awsError(err, { action: 'iam:PutRolePolicy', role: roleArn, caller: 'your AWS credentials' });
  }
}
